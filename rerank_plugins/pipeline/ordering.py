"""Ordering: scores in, the kept candidates out, in order, and every other one with its reason.

Sort by relevance (optionally blended with the first-stage rank: ``first_stage_weight`` or the
model's own guard, :mod:`.guard`), then the score threshold (``min_keep`` protects the best), then ``top_n``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rerank_plugins.config import RerankConfig
from rerank_plugins.pipeline.candidates import Candidate, PreparedQuery
from rerank_plugins.pipeline.guard import blend, guard_weight
from rerank_plugins.pipeline.plan import ScoredPool
from rerank_plugins.scoring.base import PairNote, Scorer

__all__ = ["RankedCandidate", "RerankResult", "best_first", "blend", "guard_weight", "order_pool"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankedCandidate:
    """A kept candidate with its relevance score.

    Attributes:
        candidate: The (merged) candidate.
        score: Relevance score from the scorer (after the configured activation); None when the
            candidate was left unscored because ``time_budget_ms`` ran out (``note.how == "unscored"``)
            or pruned by the cascade's cheap pass (``note.how == "pruned"``).
        rank: 1-based position in the reranked output.
        first_stage_rank: 1-based position in first-stage order (after merging).
        note: How the pair was scored (whole, truncated, windowed).
        rank_score: The key the output is sorted by: ``score`` itself, or its blend with
            the first-stage rank when ``first_stage_weight`` > 0.
        cascade_score: The cascade's cheap-pass score (``cascade_keep``), None without a cascade.
    """

    candidate: Candidate
    score: float | None
    rank: int
    first_stage_rank: int
    note: PairNote = field(default_factory=PairNote)
    rank_score: float | None = None
    cascade_score: float | None = None


@dataclass
class RerankResult:
    """What the pipeline returns: kept items, dropped candidates with reasons, counts."""

    query: str
    items: list[RankedCandidate]
    dropped: list[tuple[Candidate, str]]
    received: int
    scored: int
    seconds: float
    scorer_name: str

    @property
    def counts(self) -> dict[str, int]:
        """How many candidates were received, scored, kept and dropped for each reason."""
        out = {"received": self.received, "scored": self.scored, "kept": len(self.items)}
        for how in ("unscored", "pruned"):
            count = sum(1 for r in self.items if r.note.how == how)
            if count:
                out[how] = count
        for _, reason in self.dropped:
            out[f"dropped_{reason}"] = out.get(f"dropped_{reason}", 0) + 1
        return out


def best_first(keys: Sequence[float], top_n: int | None = None) -> list[int]:
    """Positions of ``keys`` from the highest key down (stable: ties keep input order), at most ``top_n``.

    The one ordering rule of the package: the adapters' pipeline and the server's protocols both use it.

    Example:
        >>> best_first([0.2, 0.9, 0.2, 0.5], top_n=3)
        [1, 3, 0]
    """
    order = sorted(range(len(keys)), key=lambda i: -keys[i])
    return order if top_n is None else order[:top_n]


def order_pool(prep: PreparedQuery, scored: ScoredPool, config: RerankConfig, scorer: Scorer) -> RerankResult:
    """Sort a scored pool (stable: ties keep first-stage order), blend in the guard, apply the threshold and
    ``top_n``; every candidate ends up kept or dropped with its reason."""
    scorer_name = scorer.name
    all_scores, notes, cascade = scored.scores, scored.notes, scored.cascade
    n = len(prep.pool)
    have = [i for i in range(n) if all_scores[i] is not None]
    weight = guard_weight(config, scorer)
    blended = blend([all_scores[i] or 0.0 for i in have], weight, have, n, config.first_stage_horizon)
    rank_key: list[float | None] = [None] * n
    for i, b in zip(have, blended, strict=True):
        rank_key[i] = b
    # Stable sort: ties keep first-stage order. Candidates without a full-model score follow: pruned ones
    # in the cascade's order, unscored ones (time budget) in first-stage (or cascade) order.
    order = [have[j] for j in best_first([rank_key[i] or 0.0 for i in have])] + scored.rest
    dropped = list(prep.dropped)
    keep = order
    threshold = config.score_threshold
    if threshold is not None:
        # a pruned candidate is judged by its cheap-pass score; an unscored one (time budget) is kept
        judged = [all_scores[i] if all_scores[i] is not None else cascade[i] for i in range(n)]
        passing = [i for i in order if judged[i] is None or judged[i] >= threshold]  # type: ignore[operator]
        if len(passing) < config.min_keep:
            rest = [i for i in order if i not in passing]
            passing = passing + rest[: config.min_keep - len(passing)]
        kept = set(passing)
        dropped += [(prep.pool[i], "score_threshold") for i in order if i not in kept]
        keep = [i for i in order if i in kept]
    if config.top_n is not None and len(keep) > config.top_n:
        dropped += [(prep.pool[i], "top_n") for i in keep[config.top_n :]]
        keep = keep[: config.top_n]
    items = [
        RankedCandidate(prep.pool[i], all_scores[i], rank + 1, i + 1, notes[i], rank_key[i], cascade[i])
        for rank, i in enumerate(keep)
    ]
    truncated = sum(1 for x in notes if x.how == "truncated")
    if truncated:
        logger.info("%d of %d passages were truncated to fit max_length=%d", truncated, n, config.max_length)
    seconds = time.perf_counter() - prep.started
    return RerankResult(prep.query, items, dropped, prep.received, len(have), seconds, scorer_name)
