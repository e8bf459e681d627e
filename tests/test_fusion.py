from __future__ import annotations

import pytest

from rerank_plugins.fusion import min_max_normalize, reciprocal_rank_fusion, weighted_score_fusion


def test_rrf_hand_computed() -> None:
    fused = dict(reciprocal_rank_fusion({"bm25": ["a", "b", "c"], "dense": ["c", "a"]}, k=60))
    assert fused["a"] == pytest.approx(1 / (60 + 1) + 1 / (60 + 2))
    assert fused["b"] == pytest.approx(1 / (60 + 2))
    assert fused["c"] == pytest.approx(1 / (60 + 3) + 1 / (60 + 1))


def test_rrf_order_and_ties_keep_first_appearance() -> None:
    # x and y both appear once at rank 1: equal scores, x was seen first.
    assert [d for d, _ in reciprocal_rank_fusion({"one": ["x"], "two": ["y"]})] == ["x", "y"]
    assert [d for d, _ in reciprocal_rank_fusion({"one": ["y"], "two": ["x"]})] == ["y", "x"]


def test_rrf_weights_and_duplicates_within_a_list() -> None:
    fused = dict(reciprocal_rank_fusion({"bm25": ["a", "a", "b"], "dense": ["b"]}, k=0, weights={"dense": 3.0}))
    assert fused["a"] == pytest.approx(1.0)  # the repeated 'a' counts once, at rank 1
    assert fused["b"] == pytest.approx(1 / 3 + 3.0)  # 'b' is rank 3 in bm25 (the duplicate keeps its slot)


def test_rrf_rejects_unknown_weights_and_negative_k() -> None:
    with pytest.raises(ValueError, match="unknown result lists"):
        reciprocal_rank_fusion({"bm25": ["a"]}, weights={"dense": 1.0})
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion({"bm25": ["a"]}, k=-1)


def test_min_max_normalize() -> None:
    assert min_max_normalize({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert min_max_normalize({"a": 5.0, "b": 5.0}) == {"a": 1.0, "b": 1.0}
    assert min_max_normalize({}) == {}


def test_weighted_score_fusion_hand_computed() -> None:
    fused = dict(
        weighted_score_fusion(
            {"bm25": {"a": 10.0, "b": 0.0, "c": 5.0}, "dense": {"b": 0.9, "c": 0.5}},
            weights={"bm25": 0.5, "dense": 1.0},
        )
    )
    assert fused["a"] == pytest.approx(0.5 * 1.0)
    assert fused["b"] == pytest.approx(0.5 * 0.0 + 1.0 * 1.0)
    assert fused["c"] == pytest.approx(0.5 * 0.5 + 1.0 * 0.0)
    order = [
        d
        for d, _ in weighted_score_fusion(
            {"bm25": {"a": 10.0, "b": 0.0, "c": 5.0}, "dense": {"b": 0.9, "c": 0.5}},
            weights={"bm25": 0.5, "dense": 1.0},
        )
    ]
    assert order == ["b", "a", "c"]


def test_negative_weights_rejected() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        weighted_score_fusion({"bm25": {"a": 1.0}}, weights={"bm25": -1.0})
