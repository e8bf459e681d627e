"""The contract every scorer backend passes (add new backends to BACKENDS)."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable

import pytest

from rerank_plugins import RerankConfig, Scorer
from rerank_plugins.scoring.bi_encoder import BiEncoderScorer
from rerank_plugins.scoring.cache import CachedScorer
from rerank_plugins.scoring.ensemble import EnsembleScorer
from rerank_plugins.scoring.seq2seq import MonoT5Scorer, RankT5Scorer
from rerank_plugins.scoring.windowed import WindowedScorer
from tests.conftest import OverlapScorer

PAIRS = [
    ("how much caffeine is in coffee", "An 8-ounce cup of brewed coffee contains roughly 95 milligrams of caffeine."),
    ("how much caffeine is in coffee", "Black tea contains about 47 milligrams of caffeine."),
    ("which planet is the hottest", "Venus is the hottest planet in the solar system."),
    ("which planet is the hottest", "Mercury is the planet closest to the Sun. " * 30),
    ("what makes bread rise", ""),
    ("what makes bread rise", "Bread rises because yeast releases carbon dioxide gas."),
    ("unicode: café, 東京, émoji 🚀", "RTL שלום עליכם, zero\u200bwidth, combining e\u0301, NUL \x00 end"),
]


def _cross_encoder(fixture: str, **settings: object) -> Callable[[pytest.FixtureRequest], Scorer]:
    def make(request: pytest.FixtureRequest) -> Scorer:
        from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

        return CrossEncoderScorer(request.getfixturevalue(fixture), config=RerankConfig(device="cpu"), **settings)

    return make


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Scorer]] = {
    "overlap-reference": lambda request: OverlapScorer(),
    "bi-encoder": lambda request: BiEncoderScorer(request.getfixturevalue("minilm_dir")),
    # rank normalisation is relative to the batch by design; identity keeps the contract per pair
    "ensemble": lambda request: EnsembleScorer(
        [OverlapScorer(), _cross_encoder("tiny_model", max_length=64)(request)], normalize="identity"
    ),
    "cached-cross-encoder": lambda request: CachedScorer(_cross_encoder("tiny_model", max_length=64)(request)),
    "cross-encoder-1-logit": _cross_encoder("tiny_model", batch_size=3, max_length=64),
    "cross-encoder-2-logits": _cross_encoder("tiny_model_2labels", batch_size=2, max_length=64),
    "cross-encoder-raw": _cross_encoder("tiny_model", activation="raw", max_length=128),
    "cross-encoder-cut-student": _cross_encoder("tiny_student", batch_size=3, max_length=64),
    "cross-encoder-onnx": _cross_encoder("tiny_model", backend="onnx", batch_size=3, max_length=64),
    "cross-encoder-onnx-int8": _cross_encoder("tiny_model", backend="onnx-int8", batch_size=3, max_length=64),
    "cross-encoder-onnx-int8-ffn": _cross_encoder("tiny_model", backend="onnx-int8-ffn", batch_size=3, max_length=64),
    "monot5": lambda request: MonoT5Scorer(
        RerankConfig(model=request.getfixturevalue("tiny_t5"), device="cpu", max_length=48)
    ),
    "rankt5": lambda request: RankT5Scorer(
        RerankConfig(model=request.getfixturevalue("tiny_t5"), device="cpu", max_length=48)
    ),
    "windowed": lambda request: WindowedScorer(_cross_encoder("tiny_model", max_length=32)(request), window=12),
}


@pytest.fixture(params=sorted(BACKENDS))
def scorer(request: pytest.FixtureRequest) -> Scorer:
    return BACKENDS[request.param](request)


def test_one_finite_float_per_pair(scorer: Scorer) -> None:
    scores = scorer.score(PAIRS)
    assert len(scores) == len(PAIRS)
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)


def test_empty_in_empty_out(scorer: Scorer) -> None:
    assert scorer.score([]) == []
    detailed = scorer.score_detailed([])
    assert detailed.scores == []
    assert detailed.notes == []


def test_order_follows_input_under_permutation(scorer: Scorer) -> None:
    base = dict(zip(PAIRS, scorer.score(PAIRS), strict=True))
    shuffled = PAIRS[:]
    random.Random(3).shuffle(shuffled)
    for pair, s in zip(shuffled, scorer.score(shuffled), strict=True):
        assert s == pytest.approx(base[pair], abs=1e-5)


#: int8 dynamic quantization computes activation scales per batch tensor, so a score moves a
#: little with the batch it is in (documented on RerankConfig.backend); everything else is exact.
BATCH_TOLERANCE = {"cross-encoder-onnx-int8": 1e-3, "cross-encoder-onnx-int8-ffn": 1e-3}


def test_batch_size_invariance(scorer: Scorer, request: pytest.FixtureRequest) -> None:
    full = scorer.score(PAIRS)
    one_by_one = [scorer.score([p])[0] for p in PAIRS]
    assert one_by_one == pytest.approx(full, abs=BATCH_TOLERANCE.get(request.node.callspec.params["scorer"], 1e-5))


def test_deterministic(scorer: Scorer) -> None:
    assert scorer.score(PAIRS) == scorer.score(PAIRS)


def test_inputs_not_mutated(scorer: Scorer) -> None:
    pairs = [list(p) for p in PAIRS[:3]]
    before = copy.deepcopy(pairs)
    scorer.score([tuple(p) for p in pairs])  # type: ignore[misc]
    assert pairs == before


def test_one_note_per_pair(scorer: Scorer) -> None:
    detailed = scorer.score_detailed(PAIRS)
    assert len(detailed.notes) == len(PAIRS)
    assert {n.how for n in detailed.notes} <= {"whole", "truncated", "windowed"}


def test_async_matches_sync(scorer: Scorer) -> None:
    import asyncio

    assert asyncio.run(scorer.ascore(PAIRS)) == pytest.approx(scorer.score(PAIRS), abs=1e-6)
