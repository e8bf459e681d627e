"""The rerank pipeline the adapters, the CLI and the server share. It only orders: the scorers
it runs are handed to it.

candidates (one or several first-stage lists) -> merge and drop duplicates -> cap
(:mod:`.candidates`) -> [cascade: a cheap pass over all, the best ``keep`` go on] -> score
(:mod:`.plan`) -> stable sort -> threshold -> top-n (:mod:`.ordering`).

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

from collections.abc import Sequence
from typing import Literal

from rerank_plugins.config import RerankConfig
from rerank_plugins.pipeline.candidates import Candidate, merge_candidates, prepare
from rerank_plugins.pipeline.guard import guard_weight
from rerank_plugins.pipeline.ordering import RankedCandidate, RerankResult, order_pool
from rerank_plugins.pipeline.plan import ascore_pool, score_pool
from rerank_plugins.scoring.base import Scorer
from rerank_plugins.scoring.cascade import AUTO_CASCADE_KEEP, Cascade, cascade_with

__all__ = [
    "AUTO_CASCADE_KEEP",
    "Candidate",
    "Cascade",
    "RankedCandidate",
    "RerankResult",
    "arerank_candidates",
    "guard_weight",
    "merge_candidates",
    "rerank_candidates",
]


def _cascade(
    config: RerankConfig, scorer: Scorer, cascade: Cascade | Literal[False] | None, pruner: Scorer | None
) -> Cascade | None:
    if cascade is False:
        return None
    if cascade is not None:
        return cascade
    if pruner is not None:
        return cascade_with(config, scorer, pruner)
    if config.cascade_keep is None:
        return None
    # a direct call without a resolved cascade: resolve the one the settings describe (shared, so cheap)
    from rerank_plugins.scoring.factory import resolve_cascade

    return resolve_cascade(config, scorer)


def rerank_candidates(
    query: str,
    candidates: Sequence[Candidate] | Sequence[Sequence[Candidate]],
    scorer: Scorer,
    config: RerankConfig | None = None,
    *,
    cascade: Cascade | Literal[False] | None = None,
    pruner: Scorer | None = None,
) -> RerankResult:
    """Rerank ``candidates`` (one list, or several first-stage lists to merge) for ``query``.

    ``cascade``: the step's cascade, resolved when it was set up
    (:func:`rerank_plugins.scoring.factory.resolve_cascade`; the adapters, the CLI and the server
    pass theirs), or False for none. ``pruner``: a cheap scorer to use as the cascade of
    ``config.cascade_keep``. With neither, the cascade ``config`` describes is resolved on this call.

    Raises:
        RerankInputError: empty query, non-string content, bytes.
        ScorerOutputError: the scorer returned the wrong number of scores or non-finite ones.
    """
    config = config or RerankConfig()
    prep = prepare(query, candidates, config)
    return order_pool(prep, score_pool(prep, scorer, config, _cascade(config, scorer, cascade, pruner)), config, scorer)


async def arerank_candidates(
    query: str,
    candidates: Sequence[Candidate] | Sequence[Sequence[Candidate]],
    scorer: Scorer,
    config: RerankConfig | None = None,
    *,
    cascade: Cascade | Literal[False] | None = None,
    pruner: Scorer | None = None,
) -> RerankResult:
    """Async :func:`rerank_candidates`: scoring runs off the event loop."""
    config = config or RerankConfig()
    prep = prepare(query, candidates, config)
    scored = await ascore_pool(prep, scorer, config, _cascade(config, scorer, cascade, pruner))
    return order_pool(prep, scored, config, scorer)
