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
