from __future__ import annotations

import math

import pytest

from rerank_plugins import ModelLoadError, RerankConfig
from rerank_plugins.scoring.seq2seq import DuoT5Scorer, MonoT5Scorer, RankT5Scorer, duo_aggregate, monot5_scores


def test_monot5_arithmetic_by_hand() -> None:
    # softmax over (true, false) logits (3, 1): p(true) = e^3 / (e^3 + e^1)
    p = math.exp(3) / (math.exp(3) + math.exp(1))
    assert monot5_scores([3.0], [1.0], "prob") == pytest.approx([p])
    assert monot5_scores([3.0], [1.0], "log_prob") == pytest.approx([math.log(p)])
    assert monot5_scores([1000.0, -1000.0], [0.0, 0.0], "log_prob") == pytest.approx([0.0, -1000.0])  # stable


def test_duo_symmetric_sum_by_hand() -> None:
    prefs = [[0.0, 0.8, 0.6], [0.3, 0.0, 0.9], [0.5, 0.2, 0.0]]
    # s_0 = (0.8 + 1 - 0.3) + (0.6 + 1 - 0.5)
    # s_1 = (0.3 + 1 - 0.8) + (0.9 + 1 - 0.2)
    # s_2 = (0.5 + 1 - 0.6) + (0.2 + 1 - 0.9)
    assert duo_aggregate(prefs) == pytest.approx([2.6, 2.2, 1.2])


def test_monot5_scores_with_a_local_model_and_never_cuts_the_prompt_tail(tiny_t5: str) -> None:
    cfg = RerankConfig(model=tiny_t5, device="cpu", max_length=48)
    scorer = MonoT5Scorer(cfg)
    prompts, notes = scorer._prompts([("why does bread rise", "yeast makes gas " * 40), ("q", "short")])
    assert all(p.endswith("Relevant:") for p in prompts)
    tok = scorer._t5.tokenizer
    assert all(len(tok(p)["input_ids"]) <= 48 for p in prompts)
    assert notes[0].how == "truncated"
    assert notes[0].dropped_tokens > 0
    assert notes[1].how == "whole"
    # the score is log p(true) from the first decoding step, checked against a manual forward pass
    import torch

    enc = tok([prompts[1]], return_tensors="pt")
    model = scorer._t5.model
    with torch.inference_mode():
        logits = model(**enc, decoder_input_ids=torch.tensor([[model.config.decoder_start_token_id]])).logits[0, 0]
    expected = monot5_scores([float(logits[scorer.true_id])], [float(logits[scorer.false_id])], "log_prob")[0]
    assert scorer.score([("q", "short")])[0] == pytest.approx(expected, abs=1e-5)


def test_rankt5_reads_one_logit(tiny_t5: str) -> None:
    cfg = RerankConfig(model=tiny_t5, device="cpu", max_length=48)
    mono, rank = MonoT5Scorer(cfg, mode="prob"), RankT5Scorer(cfg, token="true")
    pairs = [("q", "venus is hot"), ("q", "bread")]
    assert all(0 < s < 1 for s in mono.score(pairs))
    assert len(rank.score(pairs)) == 2


def test_token_pair_must_be_single_tokens(tiny_t5: str) -> None:
    with pytest.raises(ModelLoadError, match="single token"):
        MonoT5Scorer(RerankConfig(model=tiny_t5, device="cpu"), tokens=("relevantissimo", "false"))


def test_duot5_reorders_only_the_top_k_and_keeps_them_on_top(tiny_t5: str) -> None:
    from tests.conftest import FixedScorer

    cfg = RerankConfig(model=tiny_t5, device="cpu", max_length=64)
    first = FixedScorer([0.9, 0.1, 0.8, 0.7, 0.2])
    duo = DuoT5Scorer(first, cfg, top_k=3)
    pairs = [("q", f"passage {i}") for i in range(5)]
    scores = duo.score(pairs)
    top = {0, 2, 3}
    assert min(scores[i] for i in top) > max(scores[i] for i in set(range(5)) - top)
    assert scores[1] == 0.1
    assert scores[4] == 0.2  # outside the top 3: first-stage scores kept
    with pytest.raises(ValueError, match="at least 2"):
        DuoT5Scorer(first, cfg, top_k=1)


def test_selected_from_the_config(tiny_t5: str, tiny_model: str) -> None:
    from rerank_plugins.scoring.factory import get_scorer

    assert isinstance(get_scorer(RerankConfig(model=tiny_t5, device="cpu", scorer="monot5")), MonoT5Scorer)
    assert isinstance(get_scorer(RerankConfig(model=tiny_t5, device="cpu", scorer="rankt5")), RankT5Scorer)
    duo = get_scorer(RerankConfig(model=tiny_model, device="cpu", duo_model=tiny_t5, duo_top_k=2))
    assert isinstance(duo, DuoT5Scorer)
    assert duo.top_k == 2


def test_missing_t5_model_names_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError, match="not-cached-monot5"):
        MonoT5Scorer(RerankConfig(model="example-org/not-cached-monot5", device="cpu"))
