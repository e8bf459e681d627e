from __future__ import annotations

import copy
import logging
import math

import pytest

from rerank_plugins import (
    Candidate,
    RerankConfig,
    RerankInputError,
    ScorerOutputError,
    arerank_candidates,
    merge_candidates,
    rerank_candidates,
)
from tests.conftest import FixedScorer, OverlapScorer


def cands(*texts: str) -> list[Candidate]:
    return [Candidate(str(i), t) for i, t in enumerate(texts)]


def ids(result) -> list[str | None]:  # type: ignore[no-untyped-def]
    return [r.candidate.id for r in result.items]


def test_sorted_by_score_and_top_n() -> None:
    result = rerank_candidates("q", cands("a", "b", "c", "d"), FixedScorer([0.1, 0.9, 0.5, 0.7]), RerankConfig(top_n=2))
    assert ids(result) == ["1", "3"]
    assert [r.rank for r in result.items] == [1, 2]
    assert [r.first_stage_rank for r in result.items] == [2, 4]
    assert sorted(c.id for c, reason in result.dropped if reason == "top_n") == ["0", "2"]


def test_ties_keep_first_stage_order() -> None:
    result = rerank_candidates("q", cands("a", "b", "c"), FixedScorer([0.5, 0.5, 0.5]), RerankConfig(top_n=None))
    assert ids(result) == ["0", "1", "2"]


def test_zero_and_none_first_stage_scores_do_not_jump_the_queue() -> None:
    items = [
        Candidate("a", "a", first_stage_score=None),
        Candidate("b", "b", first_stage_score=0.0),
        Candidate("c", "c", first_stage_score=3.0),
    ]
    result = rerank_candidates("q", items, FixedScorer([0.2, 0.0, 0.9]), RerankConfig(top_n=None))
    assert ids(result) == ["c", "a", "b"]
    assert [r.score for r in result.items] == [0.9, 0.2, 0.0]


def test_threshold_applies_before_top_n() -> None:
    scorer = FixedScorer([0.9, 0.3, 0.6, 0.8])
    result = rerank_candidates("q", cands("a", "b", "c", "d"), scorer, RerankConfig(top_n=3, score_threshold=0.7))
    # Only 0.9 and 0.8 pass; top_n=3 does not refill with below-threshold items.
    assert ids(result) == ["0", "3"]
    reasons = {c.id: reason for c, reason in result.dropped}
    assert reasons == {"1": "score_threshold", "2": "score_threshold"}


def test_min_keep_refills_below_threshold_in_score_order() -> None:
    scorer = FixedScorer([0.1, 0.3, 0.2])
    result = rerank_candidates(
        "q", cands("a", "b", "c"), scorer, RerankConfig(top_n=3, score_threshold=0.5, min_keep=2)
    )
    assert ids(result) == ["1", "2"]


def test_threshold_is_inclusive() -> None:
    result = rerank_candidates("q", cands("a"), FixedScorer([0.5]), RerankConfig(score_threshold=0.5))
    assert ids(result) == ["0"]


def test_duplicates_by_id_keep_best_first_stage_score_and_all_sources() -> None:
    bm25 = [
        Candidate("x", "text x", first_stage_score=3.0, sources=("bm25",)),
        Candidate("y", "text y", sources=("bm25",)),
    ]
    dense = [
        Candidate("y", "text y", first_stage_score=0.8, sources=("dense",)),
        Candidate("x", "text x", first_stage_score=7.0, sources=("dense",)),
    ]
    merged, dropped = merge_candidates([bm25, dense])
    assert [c.id for c in merged] == ["x", "y"]  # interleaved by rank: x (bm25 #1), y (dense #1)
    assert merged[0].first_stage_score == 7.0
    assert merged[0].sources == ("bm25", "dense")
    assert merged[1].first_stage_score == 0.8
    assert merged[1].sources == ("dense", "bm25")
    assert len(dropped) == 2
    assert {reason for _, reason in dropped} == {"duplicate"}


def test_duplicates_without_id_by_content() -> None:
    merged, dropped = merge_candidates([[Candidate(None, "same"), Candidate(None, "other"), Candidate(None, "same")]])
    assert [c.text for c in merged] == ["same", "other"]
    assert [c.text for c, _ in dropped] == ["same"]


def test_candidates_without_text_are_never_merged_by_content() -> None:
    """Issue 22 #7: image nodes or empty documents are distinct candidates; only a shared id merges them."""
    merged, dropped = merge_candidates(
        [[Candidate("img-1", ""), Candidate("img-2", ""), Candidate(None, " "), Candidate(None, " ")]]
    )
    assert [c.id for c in merged] == ["img-1", "img-2", None, None]
    assert dropped == []
    merged, dropped = merge_candidates([[Candidate("img-1", "")], [Candidate("img-1", "", sources=("dense",))]])
    assert [c.id for c in merged] == ["img-1"]
    assert [r for _, r in dropped] == ["duplicate"]


def test_same_text_different_ids_dedupe_is_configurable() -> None:
    items = [Candidate("a", "same"), Candidate("b", "same")]
    assert len(merge_candidates([items])[0]) == 1
    assert len(merge_candidates([items], by_content=False)[0]) == 2


def test_same_id_different_text_keeps_both_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        merged, dropped = merge_candidates([[Candidate("a", "one"), Candidate("a", "two")]])
    assert [c.text for c in merged] == ["one", "two"]
    assert dropped == []
    assert "share id 'a'" in caplog.text


def test_max_candidates_caps_in_first_stage_order_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    scorer = OverlapScorer()
    with caplog.at_level(logging.WARNING):
        result = rerank_candidates("q", cands("a", "b", "c", "d"), scorer, RerankConfig(max_candidates=2, top_n=None))
    assert [p for _, p in scorer.calls[0]] == ["a", "b"]
    assert sorted(c.id for c, reason in result.dropped if reason == "max_candidates") == ["2", "3"]
    assert "max_candidates=2" in caplog.text


def test_every_candidate_is_returned_or_dropped_with_a_reason() -> None:
    items = [*cands("a", "b", "c", "d", "e"), Candidate("0", "a")]
    result = rerank_candidates(
        "q",
        items,
        FixedScorer([0.9, 0.1, 0.5, 0.7, 0.3]),
        RerankConfig(top_n=2, score_threshold=0.2, max_candidates=5),
    )
    assert len(result.items) + len(result.dropped) == result.received == 6
    assert result.counts == {
        "received": 6,
        "scored": 5,
        "kept": 2,
        "dropped_duplicate": 1,
        "dropped_score_threshold": 1,
        "dropped_top_n": 2,
    }


def test_callers_objects_are_not_mutated() -> None:
    payload = {"meta": {"k": [1, 2]}}
    items = [Candidate("a", "x", payload), Candidate("b", "y", payload)]
    before = copy.deepcopy(items)
    rerank_candidates("q", items, FixedScorer([0.1, 0.2]))
    assert items == before


def test_empty_candidates_give_empty_result_and_no_scorer_call() -> None:
    scorer = OverlapScorer()
    result = rerank_candidates("q", [], scorer)
    assert result.items == []
    assert result.dropped == []
    assert scorer.calls == []


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_rejected(query: str) -> None:
    with pytest.raises(RerankInputError, match="empty"):
        rerank_candidates(query, cands("a"), OverlapScorer())


def test_bytes_and_non_string_content_are_rejected_clearly() -> None:
    with pytest.raises(RerankInputError, match="decode"):
        rerank_candidates("q", [Candidate("a", b"bytes")], OverlapScorer())  # type: ignore[arg-type]
    with pytest.raises(RerankInputError, match="type NoneType"):
        rerank_candidates("q", [Candidate("a", None)], OverlapScorer())  # type: ignore[arg-type]
    with pytest.raises(RerankInputError, match="query is bytes"):
        rerank_candidates(b"q", cands("a"), OverlapScorer())  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [[math.nan, 1.0], [math.inf, 1.0], [1.0], [1.0, 2.0, 3.0]])
def test_misbehaving_scorer_is_caught(bad: list[float]) -> None:
    with pytest.raises(ScorerOutputError):
        rerank_candidates("q", cands("a", "b"), FixedScorer(bad))


def test_async_matches_sync() -> None:
    import asyncio

    items = cands("red apples", "green apples are sour", "bananas")
    sync = rerank_candidates("are green apples sour", items, OverlapScorer(), RerankConfig(top_n=2))
    async_ = asyncio.run(arerank_candidates("are green apples sour", items, OverlapScorer(), RerankConfig(top_n=2)))
    assert ids(sync) == ids(async_) == ["1", "0"]


def test_first_stage_weight_blends_relevance_with_first_stage_rank() -> None:
    scores = [0.0, 1.0, 0.4]  # normalised relevance: 0, 1, 0.4 ; first-stage rank score: 1, 0.5, 0
    cfg = RerankConfig(top_n=None, first_stage_weight=0.6)
    result = rerank_candidates("q", cands("a", "b", "c"), FixedScorer(scores), cfg)
    # blended: a = 0.6 * 1 = 0.6 ; b = 0.4 * 1 + 0.6 * 0.5 = 0.7 ; c = 0.4 * 0.4 + 0 = 0.16
    assert ids(result) == ["1", "0", "2"]
    assert [r.rank_score for r in result.items] == pytest.approx([0.7, 0.6, 0.16])
    assert [r.score for r in result.items] == [1.0, 0.0, 0.4]  # relevance is reported unchanged
    plain = rerank_candidates("q", cands("a", "b", "c"), FixedScorer(scores), RerankConfig(top_n=None))
    assert ids(plain) == ["1", "2", "0"]


class _Clock:
    """A fake perf_counter that only the scorer advances (so budget tests do not depend on machine speed)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _TimedScorer(OverlapScorer):
    def __init__(self, clock: _Clock, seconds_per_call: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds_per_call

    def score_detailed(self, pairs):  # type: ignore[no-untyped-def]
        self.clock.now += self.seconds
        return super().score_detailed(pairs)


TEN = cands(*(f"apple passage {i}" if i % 3 else f"green apples passage {i}" for i in range(10)))


def test_time_budget_scores_in_first_stage_order_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr("rerank_plugins.pipeline.plan.time.perf_counter", clock)
    scorer = _TimedScorer(clock, seconds_per_call=0.040)
    cfg = RerankConfig(batch_size=2, top_n=None, time_budget_ms=100)
    result = rerank_candidates("green apples", TEN, scorer, cfg)
    # 40 ms per call of 2: after two calls (80 ms) a third would end at 120 ms > 100 ms
    assert [len(c) for c in scorer.calls] == [2, 2]
    assert result.counts == {"received": 10, "scored": 4, "kept": 10, "unscored": 6}
    scored = [r for r in result.items if r.score is not None]
    assert {r.candidate.id for r in scored} == {"0", "1", "2", "3"}
    assert [r.score for r in scored] == sorted((r.score for r in scored), reverse=True)
    tail = result.items[4:]
    assert [r.candidate.id for r in tail] == ["4", "5", "6", "7", "8", "9"]
    assert all(r.score is None and r.note.how == "unscored" for r in tail)


def test_time_budget_always_scores_the_first_batch_and_generous_budgets_score_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr("rerank_plugins.pipeline.plan.time.perf_counter", clock)
    tight = rerank_candidates(
        "green apples", TEN, _TimedScorer(clock, 1.0), RerankConfig(batch_size=3, time_budget_ms=1)
    )
    assert tight.scored == 3
    full = rerank_candidates(
        "green apples", TEN, _TimedScorer(clock, 0.001), RerankConfig(batch_size=3, top_n=None, time_budget_ms=1000)
    )
    plain = rerank_candidates("green apples", TEN, OverlapScorer(), RerankConfig(top_n=None))
    assert full.scored == 10
    assert [(r.candidate.id, r.score) for r in full.items] == [(r.candidate.id, r.score) for r in plain.items]


def test_time_budget_with_threshold_keeps_unscored_and_async_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    clock = _Clock()
    monkeypatch.setattr("rerank_plugins.pipeline.plan.time.perf_counter", clock)
    cfg = RerankConfig(batch_size=2, top_n=None, time_budget_ms=100, activation="raw", score_threshold=2.0)
    sync = rerank_candidates("green apples", TEN, _TimedScorer(clock, 0.040), cfg)
    asyn = asyncio.run(arerank_candidates("green apples", TEN, _TimedScorer(clock, 0.040), cfg))
    assert [(r.candidate.id, r.score) for r in sync.items] == [(r.candidate.id, r.score) for r in asyn.items]
    assert [r.candidate.id for r in sync.items] == ["0", "3", "4", "5", "6", "7", "8", "9"]
    assert {c.id for c, reason in sync.dropped if reason == "score_threshold"} == {"1", "2"}


def test_unscored_candidates_reach_both_adapters_with_no_score(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor

    clock = _Clock()
    monkeypatch.setattr("rerank_plugins.pipeline.plan.time.perf_counter", clock)
    cfg = RerankConfig(batch_size=2, top_n=None, time_budget_ms=50)
    docs = [Document(page_content=c.text, id=c.id) for c in TEN]
    out = RerankCompressor(model=_TimedScorer(clock, 0.040), config=cfg).compress_documents(docs, "green apples")
    assert [d.metadata["relevance_score"] for d in out[2:]] == [None] * 8
    assert {d.metadata["rerank_scoring"] for d in out[2:]} == {"unscored"}
    nodes = [NodeWithScore(node=TextNode(text=c.text, id_=c.id)) for c in TEN]
    post = RerankNodePostprocessor(model=_TimedScorer(clock, 0.040), config=cfg)
    got = post.postprocess_nodes(nodes, QueryBundle("green apples"))
    assert [n.score for n in got[2:]] == [None] * 8
    assert len(got) == 10


def test_first_stage_weight_none_uses_the_models_own_guard_and_a_number_overrides_it() -> None:
    from rerank_plugins.pipeline import guard_weight

    class Guarded(FixedScorer):
        recommended_first_stage_weight = 1.0  # the model's guard: keep the first stage's order

    scorer = Guarded([0.1, 0.9, 0.5])
    cands = [Candidate("a", "x"), Candidate("b", "y"), Candidate("c", "z")]
    by_default = rerank_candidates("q", cands, scorer, RerankConfig())
    assert [r.candidate.id for r in by_default.items] == ["a", "b", "c"]  # None: the model's weight, 1.0
    alone = rerank_candidates("q", cands, scorer, RerankConfig(first_stage_weight=0.0))
    assert [r.candidate.id for r in alone.items] == ["b", "c", "a"]  # 0: relevance alone
    assert guard_weight(RerankConfig(), FixedScorer([0.0])) == 0.0  # a scorer without a guard: none
    assert guard_weight(RerankConfig(first_stage_weight=0.3), scorer) == 0.3


def test_the_guard_means_the_same_at_any_depth() -> None:
    from rerank_plugins.pipeline.guard import blend, rank_prior

    # ranks 1..30 get the same prior in a pool of 30 and of 100; ranks past the horizon get none
    deep = rank_prior(range(100), pool_size=100, horizon=30)
    assert deep[:30] == rank_prior(range(30), pool_size=30, horizon=30)
    assert deep[29:] == [0.0] * 71
    # None: the prior falls to 0 at the last candidate, so ranks 1 and 10 differ less in a deeper pool
    old = rank_prior(range(100), pool_size=100, horizon=None)
    assert old[0] - old[9] == pytest.approx(9 / 99)
    assert deep[0] - deep[9] == pytest.approx(9 / 29)
    # a pool shorter than the horizon: the prior still spans it (1 at the first, 0 at the last)
    assert rank_prior([0, 1, 2], pool_size=3, horizon=30) == [1.0, 0.5, 0.0]
    assert blend([1.0, 0.0], 0.5, positions=[0, 40], pool_size=100, horizon=30) == [1.0, 0.0]


def test_first_stage_horizon_orders_a_deep_pool_by_absolute_rank() -> None:
    # 100 candidates: the model likes rank 61 most and rank 11 less (0.42); the rest score 0. Over 30 ranks
    # the prior separates 11 from 61 by 0.655 (11 wins at weight 0.5); spread over the 100, by 0.505 (61 wins)
    scores = [0.0] * 100
    scores[10], scores[60] = 0.42, 1.0
    cands = [Candidate(str(i), f"passage {i}") for i in range(100)]
    deep = rerank_candidates("q", cands, FixedScorer(scores), RerankConfig(first_stage_weight=0.5, top_n=1))
    assert [r.candidate.id for r in deep.items] == ["10"]
    loose = RerankConfig(first_stage_weight=0.5, first_stage_horizon=None, top_n=1)
    assert [r.candidate.id for r in rerank_candidates("q", cands, FixedScorer(scores), loose).items] == ["60"]
