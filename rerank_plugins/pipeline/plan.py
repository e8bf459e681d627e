"""The scoring plan of one query: what is scored, by which scorer, in which order.

Without a cascade or a time budget every candidate is scored in one call. A :class:`Cascade`
(resolved once when the rerank step is set up, see
:func:`rerank_plugins.scoring.factory.resolve_cascade`) first scores every candidate with a
cheap pass and sends only the best ``keep`` to the full model (by the cheap scores blended with the
first-stage rank when a guard is in force, :mod:`.guard`), or (``pick="first-stage"``, and with the
default ``pick="auto"`` for a pool fused from two or more retrievers) sends the first stage's top
``keep`` with no cheap pass. ``time_budget_ms`` scores in
chunks while the next one is expected to end in time. The plan is a generator that asks its
driver for scores, so the blocking and the async drivers share it. No scorer is built here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import RerankInputError
from rerank_plugins.pipeline.candidates import PreparedQuery
from rerank_plugins.pipeline.guard import blend, guard_weight
from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer, check_scores
from rerank_plugins.scoring.cascade import Cascade

__all__ = ["ScoredPool", "ascore_pool", "score_pool"]

logger = logging.getLogger(__name__)

#: Pairs per scorer call under a time budget: small enough that the budget is kept to within about one
#: such call (8 long passages take ~0.4 s on 2 CPU cores), large enough to batch.
_BUDGET_CHUNK = 8


class _Budget:
    """Decides, chunk by chunk in first-stage order, whether the next chunk fits in time_budget_ms."""

    def __init__(self, prep: PreparedQuery, config: RerankConfig) -> None:
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
class ScoredPool:
    """Scores of one query's pool: full-model scores (None where not scored), notes, and what orders the rest."""

    scores: list[float | None]
    notes: list[PairNote]
    rest: list[int]  # candidates without a full-model score, in the order they follow the scored ones
    cascade: list[float | None]  # the cascade's cheap-pass scores (None without a cascade)


#: What the scoring plan asks its driver for: (scorer, pairs), answered with ScoredPairs (or the
#: RerankInputError the scorer raised, thrown back into the plan).
_Request = tuple[Scorer, list[tuple[str, str]]]


def _plan(
    prep: PreparedQuery,
    config: RerankConfig,
    scorer: Scorer,
    cascade_pass: Cascade | None = None,
) -> Generator[_Request, ScoredPairs, ScoredPool]:
    """Decide what to score, in which order (shared by the sync and async drivers).

    Without a cascade or a time budget every candidate is scored in one call. With ``cascade_keep``
    a cheap pass scores every candidate first and only the best ``cascade_keep`` reach the full
    model. With ``time_budget_ms`` the full model scores chunks (in cheap-pass order with a
    cascade, else in first-stage order) while the next chunk is expected to end in time.

    When the cascade's cheap pass is exact (the full model itself at a shorter max_length), a pair it
    read whole already has its full-model score; only truncated survivors are scored again.
    """
    scorer_name = scorer.name
    pairs = [(prep.query, c.text) for c in prep.pool]
    n = len(pairs)
    cascade: list[float | None] = [None] * n
    order = list(range(n))
    todo = order
    cheap: ScoredPairs | None = None
    exact_prefix = False
    if cascade_pass is not None and n > cascade_pass.keep:
        keep, cheap_scorer, exact_prefix = cascade_pass.keep, cascade_pass.scorer, cascade_pass.exact
        if cheap_scorer is None or cascade_pass.picks_first_stage(c.sources for c in prep.pool):  # no cheap pass
            todo = order[:keep]
            logger.info("cascade: the first stage's top %d of %d candidates go on to the full model", keep, n)
        else:
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
                # the guard in force blends the cheap scores with the first-stage rank as it will the full ones
                keys = blend(
                    [c or 0.0 for c in cascade], guard_weight(config, scorer), None, n, config.first_stage_horizon
                )
                order = sorted(order, key=lambda i: -keys[i])  # stable: ties keep first-stage order
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
    return ScoredPool(scores, notes, rest, cascade)


def _start(prep: PreparedQuery, scorer: Scorer, config: RerankConfig, cascade: Cascade | None) -> Any:
    """The scoring plan of one query (with the cascade when its pool is larger than the keep)."""
    return _plan(prep, config, scorer, cascade if cascade is not None and len(prep.pool) > cascade.keep else None)


def _advance(plan: Any, outcome: ScoredPairs | RerankInputError | None) -> _Request:
    """Start the plan, or answer its last request; a scorer's input error is the plan's to handle."""
    if outcome is None:
        return next(plan)  # type: ignore[no-any-return]
    if isinstance(outcome, RerankInputError):
        return plan.throw(outcome)  # type: ignore[no-any-return]
    return plan.send(outcome)  # type: ignore[no-any-return]


def score_pool(prep: PreparedQuery, scorer: Scorer, config: RerankConfig, cascade: Cascade | None) -> ScoredPool:
    """Run the plan of one query with blocking scorer calls."""
    plan = _start(prep, scorer, config, cascade)
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


async def ascore_pool(prep: PreparedQuery, scorer: Scorer, config: RerankConfig, cascade: Cascade | None) -> ScoredPool:
    """Run the plan of one query with awaited scorer calls (off the event loop)."""
    plan = _start(prep, scorer, config, cascade)
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
