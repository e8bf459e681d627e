"""Candidates: what a first stage hands in, merged into one pool without duplicates.

Several first-stage lists (BM25, vectors...) interleave by rank; copies of one passage (same id,
or same text) keep their first position, best first-stage score and every source; the copies
are returned as dropped, never lost. A cap (``max_candidates``) drops the tail in first-stage order.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import RerankInputError

__all__ = ["Candidate", "PreparedQuery", "merge_candidates", "prepare"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One first-stage candidate.

    Attributes:
        id: Stable identifier (document or node id), or None to dedupe by content.
        text: The text the scorer reads.
        item: The caller's original object (a Document, a NodeWithScore...), untouched.
        first_stage_score: The retriever's score, if any (never used for ordering
            across retrievers: scales differ).
        sources: Names of the retrievers that returned it.
    """

    id: str | None
    text: str
    item: Any = None
    first_stage_score: float | None = None
    sources: tuple[str, ...] = ()


def _content_key(text: str) -> str:
    return "sha1:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _check_candidate(c: Any, position: int) -> Candidate:
    if not isinstance(c, Candidate):
        raise RerankInputError(f"Candidate #{position} is a {type(c).__name__}, expected rerank_plugins.Candidate")
    if isinstance(c.text, bytes | bytearray):
        raise RerankInputError(
            f"Candidate #{position} (id={c.id!r}) has bytes content; decode it to str first (e.g. data.decode('utf-8'))"
        )
    if not isinstance(c.text, str):
        raise RerankInputError(
            f"Candidate #{position} (id={c.id!r}) has content of type {type(c.text).__name__}; "
            "the text to score must be a str"
        )
    if c.id is not None and not isinstance(c.id, str):
        return replace(c, id=str(c.id))
    return c


def merge_candidates(
    lists: Sequence[Sequence[Candidate]],
    *,
    by_content: bool = True,
) -> tuple[list[Candidate], list[tuple[Candidate, str]]]:
    """Merge first-stage lists into one, dropping duplicates.

    First-stage order interleaves the lists by rank (rank 1 of every list, then
    rank 2...), list order breaking ties. Two candidates are duplicates when they
    share an id, or, when either has no id (or ``by_content`` is set), the same
    non-blank text (candidates with empty or whitespace-only text, such as image
    nodes, are never merged by content). The first occurrence is kept with the best first-stage score of all
    copies and the union of their sources; later copies are returned as dropped.
    Two candidates with the same id but different texts are *not* duplicates:
    both are kept (and a warning is logged), since dropping one would lose content.

    Returns:
        (merged candidates in first-stage order, [(dropped copy, "duplicate")]).
    """
    order: list[tuple[int, int, Candidate]] = []
    for li, cands in enumerate(lists):
        for rank, c in enumerate(cands):
            order.append((rank, li, _check_candidate(c, rank)))
    order.sort(key=lambda t: (t[0], t[1]))
    kept: list[Candidate] = []
    by_id_and_text: dict[tuple[str, str], int] = {}
    ids_seen: set[str] = set()
    by_text: dict[str, int] = {}
    dropped: list[tuple[Candidate, str]] = []
    for _, _, c in order:
        text_key = _content_key(c.text)
        target: int | None = None
        if c.id is not None:
            target = by_id_and_text.get((c.id, text_key))
            if target is None and c.id in ids_seen:
                logger.warning("candidates share id %r but differ in text; keeping both", c.id)
        # text without content (an image node, an empty Document) says nothing about sameness: such
        # candidates are merged only by id, never by their (empty) text
        has_content = bool(c.text.strip())
        if target is None and has_content and (c.id is None or by_content):
            target = by_text.get(text_key)
        if target is None:
            if c.id is not None:
                by_id_and_text[(c.id, text_key)] = len(kept)
                ids_seen.add(c.id)
            if has_content:
                by_text.setdefault(text_key, len(kept))
            kept.append(c)
            continue
        if c.id is not None:
            by_id_and_text.setdefault((c.id, text_key), target)
        first = kept[target]
        scores = [s for s in (first.first_stage_score, c.first_stage_score) if s is not None]
        sources = first.sources + tuple(s for s in c.sources if s not in first.sources)
        kept[target] = replace(first, first_stage_score=max(scores) if scores else None, sources=sources)
        dropped.append((c, "duplicate"))
    return kept, dropped


@dataclass
class PreparedQuery:
    query: str
    received: int
    pool: list[Candidate]
    dropped: list[tuple[Candidate, str]]
    started: float


def prepare(
    query: Any, candidates: Sequence[Candidate] | Sequence[Sequence[Candidate]], config: RerankConfig
) -> PreparedQuery:
    started = time.perf_counter()
    if isinstance(query, bytes | bytearray):
        raise RerankInputError("The query is bytes; decode it to str first (e.g. query.decode('utf-8'))")
    if not isinstance(query, str):
        raise RerankInputError(f"The query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise RerankInputError("The query is empty or whitespace only; pass the user's question as a non-empty string")
    if isinstance(candidates, str | bytes):
        raise RerankInputError("Candidates must be a sequence of Candidate objects, not a single string")
    items: list[Any] = list(candidates)
    lists: list[Sequence[Candidate]]
    if items and all(isinstance(x, Sequence) and not isinstance(x, str | bytes) for x in items):
        lists = items  # several first-stage lists
    else:
        lists = [items]
    received = sum(len(x) for x in lists)
    pool, dropped = merge_candidates(lists, by_content=config.dedupe_by_content)
    cap = config.max_candidates
    if cap is not None and len(pool) > cap:
        logger.warning(
            "%d candidates exceed max_candidates=%d; scoring the first %d in first-stage order and dropping %d",
            len(pool),
            cap,
            cap,
            len(pool) - cap,
        )
        dropped += [(c, "max_candidates") for c in pool[cap:]]
        pool = pool[:cap]
    return PreparedQuery(query, received, pool, dropped, started)
