from __future__ import annotations

import pytest

from rerank_plugins.scoring.ensemble import EnsembleScorer, rank_normalize
from tests.conftest import FixedScorer, OverlapScorer


def test_rank_normalize_by_hand() -> None:
    assert rank_normalize([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    assert rank_normalize([5.0, 5.0, 1.0]) == [0.75, 0.75, 0.0]  # tie at ranks 1 and 2 -> 1.5 / 2
    assert rank_normalize([7.0]) == [1.0]


def test_weighted_mean_of_rank_normalised_members() -> None:
    ens = EnsembleScorer([FixedScorer([3.0, 1.0, 2.0]), FixedScorer([0.0, 0.9, 0.5])], weights=[3, 1])
    # member 1 ranks: 1, 0, .5 ; member 2 ranks: 0, 1, .5 ; weights .75 / .25
    assert ens.score([("q", "a")] * 3) == pytest.approx([0.75, 0.25, 0.5])


def test_identity_normalisation_averages_raw_scores() -> None:
    ens = EnsembleScorer([FixedScorer([0.2, 0.8]), FixedScorer([0.4, 0.6])], normalize="identity")
    assert ens.score([("q", "a")] * 2) == pytest.approx([0.3, 0.7])


def test_each_member_is_called_once_per_batch() -> None:
    a, b = OverlapScorer(), OverlapScorer()
    EnsembleScorer([a, b]).score([("x y", "x"), ("x y", "y"), ("x y", "z")])
    assert len(a.calls) == 1
    assert len(b.calls) == 1


def test_bad_settings_and_member_output() -> None:
    with pytest.raises(ValueError, match="at least one"):
        EnsembleScorer([])
    with pytest.raises(ValueError, match="weight"):
        EnsembleScorer([OverlapScorer()], weights=[-1])
    with pytest.raises(ValueError, match="normalize"):
        EnsembleScorer([OverlapScorer()], normalize="zscore")  # type: ignore[arg-type]
    from rerank_plugins import ScorerOutputError

    with pytest.raises(ScorerOutputError):
        EnsembleScorer([FixedScorer([1.0])]).score([("q", "a"), ("q", "b")])


def test_ensemble_from_a_toml_config(tiny_model: str, tiny_model_2labels: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rerank_plugins import RerankConfig
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.factory import get_scorer

    path = tmp_path / "ensemble.toml"
    path.write_text(
        f'scorer = "ensemble"\nmember_weights = [2.0, 1.0]\n'
        f'[[members]]\nmodel = "{tiny_model}"\ndevice = "cpu"\nscorer = "cross-encoder"\n'
        f'[[members]]\nmodel = "{tiny_model_2labels}"\ndevice = "cpu"\nscorer = "windowed"\n'
    )
    cfg = RerankConfig.from_file(path)
    scorer = get_scorer(cfg)
    assert isinstance(scorer, EnsembleScorer)
    assert scorer.weights == pytest.approx([2 / 3, 1 / 3])
    assert isinstance(scorer.members[0], CrossEncoderScorer)
    pairs = [("q", "bread"), ("q", "venus is hot"), ("q", "coffee")]
    first = rank_normalize(scorer.members[0].score(pairs))
    second = rank_normalize(scorer.members[1].score(pairs))
    assert scorer.score(pairs) == pytest.approx([2 / 3 * a + 1 / 3 * b for a, b in zip(first, second, strict=True)])


def test_ensemble_config_needs_members() -> None:
    from pydantic import ValidationError

    from rerank_plugins import RerankConfig

    with pytest.raises(ValidationError, match="needs at least one"):
        RerankConfig(scorer="ensemble")


@pytest.mark.slow
def test_bi_encoder_member_from_the_config(minilm_dir: str) -> None:
    from rerank_plugins import RerankConfig
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer
    from rerank_plugins.scoring.factory import get_scorer

    scorer = get_scorer(RerankConfig(scorer="bi-encoder", model=minilm_dir))
    assert isinstance(scorer, BiEncoderScorer)
    hot, cold = scorer.score(
        [("which planet is hottest", "Venus is the hottest planet"), ("which planet is hottest", "Bread rises")]
    )
    assert hot > cold
