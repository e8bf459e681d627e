"""Hard-negative mining for cross-encoder training.

Two sources:

* official candidate lists (WikiQA, TrecQA): every candidate labelled 0;
* a first-stage retriever over the corpus (BM25 here): the top hits that are not
  positives, skipping the very top ranks and anything scoring within a margin of
  the positives, because those are the likeliest unlabelled relevant passages
  (false negatives) in sparsely judged collections such as SciFact.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["TrainingGroup", "mine_from_candidates", "mine_from_retriever"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingGroup:
    """One query with one positive passage and its negatives (texts)."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    source: str


def mine_from_candidates(
    query: str,
    candidates: Sequence[tuple[str, int]],
    *,
    n_negatives: int,
    rng: random.Random,
    source: str,
) -> list[TrainingGroup]:
    """One group per positive candidate; negatives sampled from the labelled-0 ones.

    ``candidates`` holds (text, label) pairs. A question with no positive or no
    negative yields no group.
    """
    positives = [t for t, label in candidates if label > 0]
    negatives = [t for t, label in candidates if label <= 0 and t not in positives]
    if not positives or not negatives:
        return []
    groups = []
    for pos in positives:
        picked = rng.sample(negatives, min(n_negatives, len(negatives)))
        groups.append(TrainingGroup(query, pos, tuple(picked), source))
    return groups


def mine_from_retriever(
    query: str,
    positive_ids: set[str],
    hits: Sequence[tuple[str, float]],
    text_of: Callable[[str], str],
    *,
    n_negatives: int,
    skip_top: int,
    margin: float,
    rng: random.Random,
    source: str,
) -> list[TrainingGroup]:
    """Negatives from a retriever's ranked ``hits`` (doc id, score), best first.

    A hit is never a negative when it is a positive, ranks in the first
    ``skip_top`` places, or scores at least ``margin`` times the best positive's
    score (a likely false negative). The remaining hits are sampled uniformly; a
    positive with no usable hit yields no group.
    """
    positive_scores = [s for d, s in hits if d in positive_ids]
    ceiling = margin * max(positive_scores) if positive_scores else float("inf")
    pool = [d for rank, (d, s) in enumerate(hits) if d not in positive_ids and rank >= skip_top and s < ceiling]
    if not pool:
        return []
    groups = []
    for pid in sorted(positive_ids):
        picked = rng.sample(pool, min(n_negatives, len(pool)))
        groups.append(TrainingGroup(query, text_of(pid), tuple(text_of(d) for d in picked), source))
    return groups
