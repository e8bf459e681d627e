"""Hard-negative mining for cross-encoder training.

Two sources:

* official candidate lists (WikiQA, TrecQA): every candidate labelled 0;
* a first-stage retriever over the corpus (BM25 here): the top hits that are not
  positives, skipping the very top ranks and anything scoring within a margin of
  the positives, because those are the likeliest unlabelled relevant passages
  (false negatives) in sparsely judged collections such as SciFact.

``pseudo_query`` makes unlabelled queries from the corpus itself (the inverse cloze
task): one sentence of a document is the query, the rest of the document its
positive; negatives are then mined from a retriever like those of real queries.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["TrainingGroup", "mine_from_candidates", "mine_from_retriever", "pseudo_query"]

# a sentence ends at . ! or ? followed by space and an upper-case letter, digit or bracket
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")

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


def pseudo_query(
    text: str,
    rng: random.Random,
    *,
    min_sentences: int = 4,
    min_words: int = 8,
    keep_probability: float = 0.1,
) -> tuple[str, str] | None:
    """An inverse-cloze pair from one document: (a sentence of it, the document without that sentence).

    The sentence is drawn uniformly from those of at least ``min_words`` words; it stays in
    the passage with ``keep_probability`` (so that exact matches are not unknown to the
    model, but are not the rule). Documents with fewer than ``min_sentences`` sentences, or
    no sentence long enough, give None.
    """
    sentences = [s for s in _SENTENCE_BREAK.split(text.strip()) if s]
    if len(sentences) < min_sentences:
        return None
    eligible = [i for i, s in enumerate(sentences) if len(s.split()) >= min_words]
    if not eligible:
        return None
    pick = rng.choice(eligible)
    keep = rng.random() < keep_probability
    rest = sentences if keep else sentences[:pick] + sentences[pick + 1 :]
    return sentences[pick], " ".join(rest)
