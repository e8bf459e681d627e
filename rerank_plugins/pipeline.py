"""The rerank pipeline both adapters share.

candidates (one or several first-stage lists) -> merge and drop duplicates -> cap
-> score -> stable sort -> threshold -> top-n.

Every input candidate ends up either in :attr:`RerankResult.items` or in
:attr:`RerankResult.dropped` with the reason, and the caller's objects are never
touched: adapters build new framework objects from the result.

Example:
    >>> from rerank_plugins.scoring.base import PairNote, Scorer, ScoredPairs
    >>> class Overlap(Scorer):
    ...     def score_detailed(self, pairs):
    ...         s = [float(len(set(q.split()) & set(p.split()))) for q, p in pairs]
    ...         return ScoredPairs(s, [PairNote()] * len(s))
    >>> cands = [Candidate("a", "red apples"), Candidate("b", "green apples are sour"),
    ...          Candidate("a", "red apples")]
    >>> result = rerank_candidates("are green apples sour", cands, Overlap(), RerankConfig(top_n=1))
    >>> [(r.candidate.id, r.score) for r in result.items]
    [('b', 4.0)]
    >>> sorted(reason for _, reason in result.dropped)
    ['duplicate', 'top_n']
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import RerankInputError
from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer, check_scores

__all__ = [
    "Candidate",
    "RankedCandidate",
    "RerankResult",
    "arerank_candidates",
    "merge_candidates",
    "rerank_candidates",
]

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


@dataclass(frozen=True)
class RankedCandidate:
    """A kept candidate with its relevance score.

    Attributes:
        candidate: The (merged) candidate.
        score: Relevance score from the scorer (after the configured activation); None when the
            candidate was left unscored because ``time_budget_ms`` ran out (``note.how == "unscored"``).
        rank: 1-based position in the reranked output.
        first_stage_rank: 1-based position in first-stage order (after merging).
        note: How the pair was scored (whole, truncated, windowed).
        rank_score: The key the output is sorted by: ``score`` itself, or its blend with
            the first-stage rank when ``first_stage_weight`` > 0.
    """

    candidate: Candidate
    score: float | None
    rank: int
    first_stage_rank: int
    note: PairNote = field(default_factory=PairNote)
    rank_score: float | None = None


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
        unscored = sum(1 for r in self.items if r.score is None)
        if unscored:
            out["unscored"] = unscored
        for _, reason in self.dropped:
            out[f"dropped_{reason}"] = out.get(f"dropped_{reason}", 0) + 1
        return out


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
    text. The first occurrence is kept with the best first-stage score of all
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
        if target is None and (c.id is None or by_content):
            target = by_text.get(text_key)
        if target is None:
            if c.id is not None:
                by_id_and_text[(c.id, text_key)] = len(kept)
                ids_seen.add(c.id)
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
class _Prepared:
    query: str
    received: int
    pool: list[Candidate]
    dropped: list[tuple[Candidate, str]]
    started: float


def _prepare(
    query: Any, candidates: Sequence[Candidate] | Sequence[Sequence[Candidate]], config: RerankConfig
) -> _Prepared:
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
    return _Prepared(query, received, pool, dropped, started)


def _blend(scores: list[float], weight: float) -> list[float]:
    """The ordering key: the scores themselves, or their blend with first-stage rank."""
    n = len(scores)
    if weight <= 0 or n < 2:
        return scores
    lo, hi = min(scores), max(scores)
    relevance = [(s - lo) / (hi - lo) if hi > lo else 1.0 for s in scores]
    return [(1 - weight) * r + weight * (1 - i / (n - 1)) for i, r in enumerate(relevance)]


#: Pairs per scorer call under a time budget: small enough that the budget is kept to within about one
#: such call (8 long passages take ~0.4 s on 2 CPU cores), large enough to batch.
_BUDGET_CHUNK = 8


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class _Budget:
    """Decides, chunk by chunk in first-stage order, whether the next chunk fits in time_budget_ms."""

    def __init__(self, prep: _Prepared, config: RerankConfig) -> None:
        assert config.time_budget_ms is not None
        self.deadline = prep.started + config.time_budget_ms / 1000
        self.first = time.perf_counter()
        self.done = 0

    def next_fits(self) -> bool:
        if self.done == 0:
            return True  # the first chunk is always scored
        now = time.perf_counter()
        return now + (now - self.first) / self.done <= self.deadline


def _collect(
    parts: list[ScoredPairs], n: int, scorer_name: str, chunks: list[range]
) -> tuple[list[float | None], list[PairNote]]:
    scores: list[float | None] = [None] * n
    notes = [PairNote("unscored")] * n
    for part, idx in zip(parts, chunks, strict=False):
        for i, s, note in zip(idx, check_scores(part.scores, len(idx), scorer_name), part.notes, strict=False):
            scores[i], notes[i] = s, note
    return scores, notes


def _score(prep: _Prepared, scorer: Scorer, config: RerankConfig) -> tuple[list[float | None], list[PairNote]]:
    pairs = [(prep.query, c.text) for c in prep.pool]
    if config.time_budget_ms is None or not pairs:
        out = scorer.score_detailed(pairs) if pairs else ScoredPairs([], [])
        return _collect([out], len(pairs), scorer.name, [range(len(pairs))])
    chunks, parts, budget = _chunks(len(pairs), min(config.batch_size, _BUDGET_CHUNK)), [], _Budget(prep, config)
    for idx in chunks:
        if not budget.next_fits():
            break
        parts.append(scorer.score_detailed([pairs[i] for i in idx]))
        budget.done += 1
    return _collect(parts, len(pairs), scorer.name, chunks)


async def _ascore(prep: _Prepared, scorer: Scorer, config: RerankConfig) -> tuple[list[float | None], list[PairNote]]:
    pairs = [(prep.query, c.text) for c in prep.pool]
    if config.time_budget_ms is None or not pairs:
        out = await scorer.ascore_detailed(pairs) if pairs else ScoredPairs([], [])
        return _collect([out], len(pairs), scorer.name, [range(len(pairs))])
    chunks, parts, budget = _chunks(len(pairs), min(config.batch_size, _BUDGET_CHUNK)), [], _Budget(prep, config)
    for idx in chunks:
        if not budget.next_fits():
            break
        parts.append(await scorer.ascore_detailed([pairs[i] for i in idx]))
        budget.done += 1
    return _collect(parts, len(pairs), scorer.name, chunks)


def _finish(
    prep: _Prepared, scored: tuple[list[float | None], list[PairNote]], config: RerankConfig, scorer_name: str
) -> RerankResult:
    all_scores, notes = scored
    n = len(prep.pool)
    have = [i for i in range(n) if all_scores[i] is not None]
    unscored = [i for i in range(n) if all_scores[i] is None]
    if unscored:
        logger.info("time_budget_ms=%s: scored %d of %d candidates", config.time_budget_ms, len(have), n)
    blended = _blend([all_scores[i] or 0.0 for i in have], config.first_stage_weight)
    rank_key: list[float | None] = [None] * n
    for i, b in zip(have, blended, strict=True):
        rank_key[i] = b
    scores = [s if s is not None else float("-inf") for s in all_scores]
    # Stable sort: ties keep first-stage order; unscored candidates follow in first-stage order.
    order = sorted(have, key=lambda i: -(rank_key[i] or 0.0)) + unscored
    dropped = list(prep.dropped)
    keep = order
    if config.score_threshold is not None:
        passing = [i for i in order if i in unscored or scores[i] >= config.score_threshold]
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
        RankedCandidate(prep.pool[i], all_scores[i], rank + 1, i + 1, notes[i], rank_key[i])
        for rank, i in enumerate(keep)
    ]
    truncated = sum(1 for x in notes if x.how == "truncated")
    if truncated:
        logger.info("%d of %d passages were truncated to fit max_length=%d", truncated, n, config.max_length)
    seconds = time.perf_counter() - prep.started
    return RerankResult(prep.query, items, dropped, prep.received, len(have), seconds, scorer_name)


def rerank_candidates(
    query: str,
    candidates: Sequence[Candidate] | Sequence[Sequence[Candidate]],
    scorer: Scorer,
    config: RerankConfig | None = None,
) -> RerankResult:
    """Rerank ``candidates`` (one list, or several first-stage lists to merge) for ``query``.

    Raises:
        RerankInputError: empty query, non-string content, bytes.
        ScorerOutputError: the scorer returned the wrong number of scores or non-finite ones.
    """
    config = config or RerankConfig()
    prep = _prepare(query, candidates, config)
    return _finish(prep, _score(prep, scorer, config), config, scorer.name)


async def arerank_candidates(
    query: str,
    candidates: Sequence[Candidate] | Sequence[Sequence[Candidate]],
    scorer: Scorer,
    config: RerankConfig | None = None,
) -> RerankResult:
    """Async :func:`rerank_candidates`: scoring runs off the event loop."""
    config = config or RerankConfig()
    prep = _prepare(query, candidates, config)
    return _finish(prep, await _ascore(prep, scorer, config), config, scorer.name)
