"""Rank fusion of several first-stage result lists (pure functions).

Example:
    >>> reciprocal_rank_fusion({"bm25": ["a", "b"], "dense": ["b", "c"]}, k=60)[0]
    ('b', 0.03252247488101534)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["min_max_normalize", "reciprocal_rank_fusion", "weighted_score_fusion"]


def _weights(names: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    weights = dict(weights or {})
    unknown = set(weights) - set(names)
    if unknown:
        raise ValueError(f"weights name unknown result lists {sorted(unknown)}; lists are {list(names)}")
    out = {n: float(weights.get(n, 1.0)) for n in names}
    if any(w < 0 for w in out.values()):
        raise ValueError(f"fusion weights must be >= 0, got {out}")
    return out


def _ordered(scores: dict[str, float], first_seen: dict[str, int]) -> list[tuple[str, float]]:
    # Ties are broken by first appearance (list order, then rank), never by id.
    return sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[str]],
    *,
    k: float = 60.0,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    """Reciprocal-rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009).

    ``score(d) = sum_r w_r / (k + rank_r(d))`` with 1-based ranks, over the lists
    that contain ``d``. A list's duplicates count once, at their best rank.

    Args:
        rankings: List name -> ids, best first.
        k: Smoothing constant (60 in the paper).
        weights: Optional per-list weights (default 1).

    Returns:
        (id, fused score) pairs, best first; ties keep first appearance order.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    w = _weights(list(rankings), weights)
    scores: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    position = 0
    for name, ids in rankings.items():
        seen: set[str] = set()
        for rank, doc_id in enumerate(ids, start=1):
            if doc_id in seen:
                continue
            seen.add(doc_id)
            scores[doc_id] = scores.get(doc_id, 0.0) + w[name] / (k + rank)
            first_seen.setdefault(doc_id, position)
            position += 1
    return _ordered(scores, first_seen)


def min_max_normalize(scores: Mapping[str, float]) -> dict[str, float]:
    """Scale scores to [0, 1]; all-equal scores map to 1.0 (each is the best)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return {d: 1.0 for d in scores}
    return {d: (s - lo) / (hi - lo) for d, s in scores.items()}


def weighted_score_fusion(
    results: Mapping[str, Mapping[str, float]],
    *,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    """Convex combination of min-max normalised scores.

    ``score(d) = sum_r w_r * norm_r(d)``; a list that does not contain ``d``
    contributes 0 for it.

    Args:
        results: List name -> {id: score}, in the list's own scale.
        weights: Optional per-list weights (default 1).

    Returns:
        (id, fused score) pairs, best first; ties keep first appearance order.
    """
    w = _weights(list(results), weights)
    fused: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    position = 0
    for name, scores in results.items():
        for doc_id, s in min_max_normalize(scores).items():
            fused[doc_id] = fused.get(doc_id, 0.0) + w[name] * s
            first_seen.setdefault(doc_id, position)
            position += 1
    return _ordered(fused, first_seen)
