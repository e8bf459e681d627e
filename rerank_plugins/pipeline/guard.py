"""The first-stage guard: the model's relevance blended with the first stage's rank.

``first_stage_weight`` (or the model's own guard) orders candidates by ``(1 - w) x`` min-max
normalised relevance ``+ w x`` a rank prior. The prior falls from 1 at first-stage rank 1 to 0 at rank
``first_stage_horizon`` (or at the last candidate, whichever comes first) and is 0 below it, so a
weight means the same for a pool of 30 and of 100 candidates. With ``first_stage_horizon=None`` it falls
to 0 at the last scored candidate whatever the pool's size, which weakens the guard as pools deepen:
at 100 candidates ranks 1 and 10 differ by 0.09 instead of 0.31 at 30.

The cascade's cheap pass is guarded the same way: with a guard in force it keeps the best ``keep`` by
the blend of its cheap scores with the prior, so a passage that only looks good in its first 128 tokens
and sat deep in the first stage does not take the place of one the first stage ranked high.
"""

from __future__ import annotations

from collections.abc import Sequence

from rerank_plugins.config import RerankConfig
from rerank_plugins.scoring.base import Scorer

__all__ = ["blend", "guard_weight", "rank_prior"]


def rank_prior(positions: Sequence[int], pool_size: int, horizon: int | None) -> list[float]:
    """The first-stage prior of candidates at 0-based ``positions`` of a pool of ``pool_size``.

    Example:
        >>> rank_prior([0, 1, 2, 5], pool_size=100, horizon=3)
        [1.0, 0.5, 0.0, 0.0]
        >>> rank_prior([0, 4, 9], pool_size=100, horizon=None)  # the last of these three scores 0
        [1.0, 0.5, 0.0]
    """
    m = len(positions)
    if horizon is None:
        return [1 - i / (m - 1) if m > 1 else 1.0 for i in range(m)]
    h = min(pool_size, horizon)
    return [max(0.0, 1 - p / (h - 1)) if h > 1 else 1.0 for p in positions]


def blend(
    scores: Sequence[float],
    weight: float,
    positions: Sequence[int] | None = None,
    pool_size: int | None = None,
    horizon: int | None = None,
) -> list[float]:
    """The ordering key: the scores themselves, or their blend with the first-stage prior.

    ``scores`` are in first-stage order; ``positions`` their 0-based first-stage positions in a pool of
    ``pool_size`` (default: ``0..n-1`` of a pool of ``n``).

    Example:
        >>> blend([0.0, 1.0, 0.5], 0.5)  # b: 0.5 x 1 + 0.5 x 0.5; a: 0.5 x 0 + 0.5 x 1
        [0.5, 0.75, 0.25]
    """
    n = len(scores)
    if weight <= 0 or n < 2:
        return list(scores)
    where = list(range(n)) if positions is None else list(positions)
    prior = rank_prior(where, n if pool_size is None else pool_size, horizon)
    lo, hi = min(scores), max(scores)
    relevance = [(s - lo) / (hi - lo) if hi > lo else 1.0 for s in scores]
    return [(1 - weight) * r + weight * p for r, p in zip(relevance, prior, strict=True)]


def guard_weight(config: RerankConfig, scorer: Scorer) -> float:
    """The ``first_stage_weight`` in force: the configured one, or (None) the scorer's model's own guard."""
    if config.first_stage_weight is not None:
        return config.first_stage_weight
    return scorer.recommended_first_stage_weight
