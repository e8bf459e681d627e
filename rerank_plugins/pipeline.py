"""The rerank pipeline both adapters share.

candidates (one or several first-stage lists) -> merge and drop duplicates -> cap
-> [cascade: a cheap pass over all, the best ``cascade_keep`` go on] -> score -> stable sort
-> threshold -> top-n.

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
from collections.abc import Generator, Sequence
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


@dataclass
class _Scored:
    """Scores of one query's pool: full-model scores (None where not scored), notes, and what orders the rest."""

    scores: list[float | None]
    notes: list[PairNote]
    rest: list[int]  # candidates without a full-model score, in the order they follow the scored ones
    cascade: list[float | None]  # the cascade's cheap-pass scores (None without a cascade)


#: What the scoring plan asks its driver for: (scorer, pairs), answered with ScoredPairs (or the
#: RerankInputError the scorer raised, thrown back into the plan).
_Request = tuple[Scorer, list[tuple[str, str]]]


def _plan(
    prep: _Prepared,
    config: RerankConfig,
    scorer: Scorer,
    cascade_pass: tuple[int, Scorer] | None = None,
) -> Generator[_Request, ScoredPairs, _Scored]:
    """Decide what to score, in which order (shared by the sync and async drivers).

    Without a cascade or a time budget every candidate is scored in one call. With ``cascade_keep``
    a cheap pass scores every candidate first and only the best ``cascade_keep`` reach the full
    model. With ``time_budget_ms`` the full model scores chunks (in cheap-pass order with a
    cascade, else in first-stage order) while the next chunk is expected to end in time.

    ``cascade_pass`` is (cascade_keep, cheap scorer). When the cheap scorer is the full model itself at
    a shorter max_length, a pair it read whole already has its full-model score; only truncated
    survivors are scored again.
    """
    scorer_name = scorer.name
    pairs = [(prep.query, c.text) for c in prep.pool]
    n = len(pairs)
    cascade: list[float | None] = [None] * n
    order = list(range(n))
    todo = order
    cheap: ScoredPairs | None = None
    exact_prefix = False
    if cascade_pass is not None and n > cascade_pass[0]:
        keep, cheap_scorer = cascade_pass
        exact_prefix = _reads_prefix_of(cheap_scorer, scorer)
        try:
            cheap = yield (cheap_scorer, pairs)
        except RerankInputError as exc:  # e.g. a query too long for cascade_max_length: the full model copes
            logger.warning("cascade skipped, the full model scores all %d candidates: %s", n, exc)
            cheap = None
        if cheap is not None and any(note.query_dropped_tokens for note in cheap.notes):
            # the cheap pass had to cut the query: its order would rank on part of the question
            logger.warning(
                "cascade skipped, the full model scores all %d candidates: the query is too long for "
                "cascade_max_length=%d",
                n,
                config.cascade_max_length,
            )
            cheap = None
        if cheap is not None:
            cascade = list(check_scores(cheap.scores, n, f"{scorer_name} (cascade pass)"))
            order = sorted(order, key=lambda i: -(cascade[i] or 0.0))  # stable: ties keep first-stage order
            todo = order[:keep]
            logger.info("cascade: %d of %d candidates go on to the full model (cascade_keep=%d)", keep, n, keep)
    scores: list[float | None] = [None] * n
    survivors = set(todo)
    notes = [PairNote("unscored") if i in survivors else PairNote("pruned") for i in range(n)]
    if exact_prefix and cheap is not None:
        for i, note in enumerate(cheap.notes):
            if note.how == "whole":  # read whole by the same model: this is its full-model score
                scores[i], notes[i] = cascade[i], note
        todo = [i for i in todo if scores[i] is None]
    chunks = [todo]
    budget = _Budget(prep, config) if config.time_budget_ms is not None and todo else None
    if budget is not None:
        size = min(config.batch_size, _BUDGET_CHUNK)
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    for idx in chunks:
        if budget is not None and not budget.next_fits():
            break
        part = (yield (scorer, [pairs[i] for i in idx])) if idx else ScoredPairs([], [])
        for i, s, note in zip(idx, check_scores(part.scores, len(idx), scorer_name), part.notes, strict=False):
            scores[i], notes[i] = s, note
        if budget is not None:
            budget.done += 1
    if budget is not None and any(scores[i] is None for i in todo):
        logger.info("time_budget_ms=%s: scored %d of %d candidates", config.time_budget_ms, len(todo), n)
    rest = [i for i in order if scores[i] is None]
    return _Scored(scores, notes, rest, cascade)


#: cascade_keep="auto": candidates the full model re-reads after the cheap 128-token pass. 30 keeps the
#: full model's nDCG@10 within noise on SciFact train queries (hybrid top 100) with a margin; 20 looked as
#: good there but lost 0.08 on 20 test queries (the model was trained on those train queries, so they
#: overstate how well the cheap pass agrees). See README "The cascade". With the default windowed read
#: (256-token windows) keep 30 after the 128-token pass is above the hybrid first stage on SciFact train
#: claims held out of two training runs (docs/model-history.md, "Long abstracts in windows").
AUTO_CASCADE_KEEP = 30


def _unwrap(scorer: Scorer) -> Scorer:
    from rerank_plugins.scoring.cache import CachedScorer

    return scorer.inner if isinstance(scorer, CachedScorer) else scorer


def _reader(scorer: Scorer) -> Scorer:
    """The cross-encoder that reads the pairs: through a cache and a windowed scorer's windows."""
    from rerank_plugins.scoring.windowed import WindowedScorer

    base = _unwrap(scorer)
    return base.inner if isinstance(base, WindowedScorer) else base


def resolve_cascade(config: RerankConfig, scorer: Scorer, pruner: Scorer | None = None) -> tuple[int, Scorer] | None:
    """``(cascade_keep, cheap scorer)`` of the cascade for these settings, or None when there is none.

    ``cascade_keep="auto"`` turns the cascade on only for a cross-encoder (plain or windowed) on a CPU
    whose max_length exceeds ``cascade_max_length``; its cheap pass is then that very model reading the
    first ``cascade_max_length`` tokens of each pair (one copy of the weights).
    """
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer, get_scorer

    keep = config.cascade_keep
    if keep is None:
        return None
    if keep == "auto":
        base = _reader(scorer)
        if pruner is not None:
            return AUTO_CASCADE_KEEP, pruner
        usable = (
            isinstance(base, CrossEncoderScorer)
            and base.device == "cpu"
            and config.cascade_model is None
            and base.config.max_length > config.cascade_max_length
        )
        if not usable:
            return None
        assert isinstance(base, CrossEncoderScorer)
        own = base.config.merged(cascade_max_length=config.cascade_max_length, cascade_keep=None)
        return AUTO_CASCADE_KEEP, get_scorer(own.cascade_config())
    return keep, pruner if pruner is not None else get_scorer(config.cascade_config())


def _reads_prefix_of(cheap: Scorer, full: Scorer) -> bool:
    """True when ``cheap`` is ``full``'s own cross-encoder (same weights and activation) at a shorter max_length.

    A windowed ``full`` counts too: a pair that fits the cheap pass fits one window, which is read whole.
    """
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.windowed import WindowedScorer

    outer = _unwrap(full)
    if isinstance(outer, WindowedScorer) and outer.window is not None:
        return False  # fixed windows may split a pair the cheap pass read whole
    a, b = _unwrap(cheap), _reader(full)
    return isinstance(a, CrossEncoderScorer) and isinstance(b, CrossEncoderScorer) and a.shares_weights_with(b)


def _start(prep: _Prepared, scorer: Scorer, config: RerankConfig, pruner: Scorer | None) -> Any:
    """The scoring plan of one query (with the cascade when its pool is larger than the keep)."""
    keep = AUTO_CASCADE_KEEP if config.cascade_keep == "auto" else config.cascade_keep
    cascade = resolve_cascade(config, scorer, pruner) if keep is not None and len(prep.pool) > keep else None
    return _plan(prep, config, scorer, cascade)


def _advance(plan: Any, outcome: ScoredPairs | RerankInputError | None) -> _Request:
    """Start the plan, or answer its last request; a scorer's input error is the plan's to handle."""
    if outcome is None:
        return next(plan)  # type: ignore[no-any-return]
    if isinstance(outcome, RerankInputError):
        return plan.throw(outcome)  # type: ignore[no-any-return]
    return plan.send(outcome)  # type: ignore[no-any-return]


def _score(prep: _Prepared, scorer: Scorer, config: RerankConfig, pruner: Scorer | None) -> _Scored:
    plan = _start(prep, scorer, config, pruner)
    outcome: ScoredPairs | RerankInputError | None = None
    try:
        while True:
            use, pairs = _advance(plan, outcome)
            try:
                outcome = use.score_detailed(pairs)
            except RerankInputError as exc:
                outcome = exc
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _ascore(prep: _Prepared, scorer: Scorer, config: RerankConfig, pruner: Scorer | None) -> _Scored:
    plan = _start(prep, scorer, config, pruner)
    outcome: ScoredPairs | RerankInputError | None = None
    try:
        while True:
            use, pairs = _advance(plan, outcome)
            try:
                outcome = await use.ascore_detailed(pairs)
            except RerankInputError as exc:
                outcome = exc
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def guard_weight(config: RerankConfig, scorer: Scorer) -> float:
    """The ``first_stage_weight`` in force: the configured one, or (None) the scorer's model's own guard."""
    if config.first_stage_weight is not None:
        return config.first_stage_weight
    return scorer.recommended_first_stage_weight


def _finish(prep: _Prepared, scored: _Scored, config: RerankConfig, scorer: Scorer) -> RerankResult:
    scorer_name = scorer.name
    all_scores, notes, cascade = scored.scores, scored.notes, scored.cascade
    n = len(prep.pool)
    have = [i for i in range(n) if all_scores[i] is not None]
    blended = _blend([all_scores[i] or 0.0 for i in have], guard_weight(config, scorer))
    rank_key: list[float | None] = [None] * n
    for i, b in zip(have, blended, strict=True):
        rank_key[i] = b
    # Stable sort: ties keep first-stage order. Candidates without a full-model score follow: pruned ones
    # in the cascade's order, unscored ones (time budget) in first-stage (or cascade) order.
    order = sorted(have, key=lambda i: -(rank_key[i] or 0.0)) + scored.rest
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


def rerank_candidates(
    query: str,
    candidates: Sequence[Candidate] | Sequence[Sequence[Candidate]],
    scorer: Scorer,
    config: RerankConfig | None = None,
    *,
    pruner: Scorer | None = None,
) -> RerankResult:
    """Rerank ``candidates`` (one list, or several first-stage lists to merge) for ``query``.

    ``pruner`` is the cheap scorer of the cascade (``cascade_keep``); None takes the shared
    cross-encoder described by ``config.cascade_config()``.

    Raises:
        RerankInputError: empty query, non-string content, bytes.
        ScorerOutputError: the scorer returned the wrong number of scores or non-finite ones.
    """
    config = config or RerankConfig()
    prep = _prepare(query, candidates, config)
    return _finish(prep, _score(prep, scorer, config, pruner), config, scorer)


async def arerank_candidates(
    query: str,
    candidates: Sequence[Candidate] | Sequence[Sequence[Candidate]],
    scorer: Scorer,
    config: RerankConfig | None = None,
    *,
    pruner: Scorer | None = None,
) -> RerankResult:
    """Async :func:`rerank_candidates`: scoring runs off the event loop."""
    config = config or RerankConfig()
    prep = _prepare(query, candidates, config)
    return _finish(prep, await _ascore(prep, scorer, config, pruner), config, scorer)
