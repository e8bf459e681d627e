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

import gzip
import json
import logging
import lzma
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

__all__ = ["TrainingGroup", "load_groups", "mine_from_candidates", "mine_from_retriever", "pseudo_query", "save_groups"]

# a sentence ends at . ! or ? followed by space and an upper-case letter, digit or bracket
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")

logger = logging.getLogger(__name__)

#: The ``format`` field of a groups file written by :func:`save_groups`.
GROUPS_FORMAT = "rerank-plugins training groups 1"


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


def _open(path: Path, mode: str) -> IO[str]:
    """A text handle on ``path``, compressed as its suffix says (``.xz``, ``.gz`` or none)."""
    text_mode: Any = mode + "t"  # the overloads of lzma.open and gzip.open for text need a literal
    if path.suffix == ".xz":
        return cast(IO[str], lzma.open(path, text_mode, encoding="utf-8", preset=9 if mode == "w" else None))
    if path.suffix == ".gz":
        return cast(IO[str], gzip.open(path, text_mode, encoding="utf-8"))
    return path.open(mode, encoding="utf-8")


def save_groups(groups: Sequence[TrainingGroup], path: Path | str, meta: dict[str, Any] | None = None) -> Path:
    """Write ``groups`` to one JSON file (``.xz`` / ``.gz`` compress it), each distinct text stored once.

    Mined groups repeat their passages (one paragraph is a negative of many questions), so the file
    holds a table of distinct texts and the groups as indices into it. ``meta`` (the settings that
    mined them, a data summary) travels with the groups and is returned by :func:`load_groups`.
    """
    path = Path(path)
    index: dict[str, int] = {}

    def at(text: str) -> int:
        return index.setdefault(text, len(index))

    rows = [[at(g.query), at(g.positive), [at(t) for t in g.negatives], g.source] for g in groups]
    payload = {"format": GROUPS_FORMAT, "meta": meta or {}, "texts": list(index), "groups": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "w") as fh:
        json.dump(payload, fh, ensure_ascii=False, separators=(",", ":"))
    logger.info("wrote %d groups (%d distinct texts) to %s", len(rows), len(index), path)
    return path


def load_groups(path: Path | str) -> tuple[list[TrainingGroup], dict[str, Any]]:
    """The groups and the ``meta`` dict of a file written by :func:`save_groups`."""
    path = Path(path)
    try:
        with _open(path, "r") as fh:
            payload = json.load(fh)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:  # a bad gzip file is an OSError
        raise ValueError(f"{path} is not a readable groups file ({exc}); mine it again") from exc
    if not isinstance(payload, dict) or payload.get("format") != GROUPS_FORMAT:
        raise ValueError(f"{path} is not a groups file written by save_groups (format {GROUPS_FORMAT!r})")
    texts = payload["texts"]
    groups = [
        TrainingGroup(texts[q], texts[p], tuple(texts[n] for n in negs), source)
        for q, p, negs, source in payload["groups"]
    ]
    return groups, payload["meta"]
