"""A cascade: a cheap pass scores every candidate, and only the best ``keep`` reach the full scorer
(or, with ``pick="first-stage"``, the first stage's top ``keep``, with no cheap pass; with
``pick="auto"``, the default, the latter only for a pool fused from two or more retrievers).

A :class:`Cascade` is resolved once, when a rerank step is set up
(:func:`rerank_plugins.scoring.factory.resolve_cascade`), and handed to the pipeline, which
only follows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rerank_plugins.config import RerankConfig
from rerank_plugins.scoring.base import Scorer

__all__ = ["AUTO_CASCADE_KEEP", "Cascade", "cascade_with", "fused"]

#: cascade_keep="auto": candidates the full model re-reads after the cheap 128-token pass. 30 keeps the
#: full model's nDCG@10 within noise on SciFact train queries (hybrid top 100) with a margin; 20 looked as
#: good there but lost 0.08 on 20 test queries (the model was trained on those train queries, so they
#: overstate how well the cheap pass agrees). See docs/benchmarks.md, "The cascade". With the default windowed read
#: (256-token windows) keep 30 after the 128-token pass is above the hybrid first stage on SciFact train
#: claims held out of two training runs (docs/model-history.md, "Long abstracts in windows").
AUTO_CASCADE_KEEP = 30


@dataclass(frozen=True)
class Cascade:
    """The cascade of a rerank step, resolved once when the step is set up.

    Attributes:
        keep: Candidates the full model re-scores after the cheap pass (a pool of at most ``keep``
            candidates skips the cheap pass).
        scorer: The cheap pass; None: the first stage's top ``keep`` are read, with no cheap pass.
        exact: True when the cheap pass is the full model's own cross-encoder at a shorter length, so
            a pair it read whole already has its full-model score.
        first_stage_when_fused: True (``pick="auto"``): a pool whose candidates name two or more
            retrievers (a hybrid first stage) skips the cheap pass, and the first stage's top ``keep``
            are read.
    """

    keep: int
    scorer: Scorer | None
    exact: bool = False
    first_stage_when_fused: bool = False

    def picks_first_stage(self, sources: Iterable[Sequence[str]]) -> bool:
        """Whether a pool whose candidates came from ``sources`` (each candidate's retrievers) is picked
        in first-stage order, with no cheap pass."""
        if self.scorer is None:
            return True
        return self.first_stage_when_fused and fused(sources)


def fused(sources: Iterable[Sequence[str]]) -> bool:
    """True when the candidates' retrievers (``Candidate.sources``) name two or more retrievers.

    Example:
        >>> fused([("bm25",), ("dense", "bm25")]), fused([("bm25",), ()]), fused([])
        (True, False, False)
    """
    return len({name for names in sources for name in names}) >= 2


def cascade_with(config: RerankConfig, scorer: Scorer, pruner: Scorer | None) -> Cascade | None:
    """The cascade of ``config`` with ``pruner`` as its cheap pass (None when ``cascade_keep`` is off;
    a ``pruner`` of None picks the first stage's top ``keep``)."""
    keep = config.cascade_keep
    if keep is None:
        return None
    exact = pruner is not None and scorer.cheap_pass_is_exact(pruner)
    when_fused = pruner is not None and config.cascade.pick == "auto"
    return Cascade(AUTO_CASCADE_KEEP if keep == "auto" else keep, pruner, exact, when_fused)
