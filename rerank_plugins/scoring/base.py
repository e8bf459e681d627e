"""The scorer contract every backend implements.

A scorer turns (query, passage) pairs into one finite float per pair, in input
order; an empty batch gives an empty list. Sorting, ties, dedupe, thresholds and
top-k are not its business: they happen once, in :mod:`rerank_plugins.pipeline`.

Besides the scores a backend reports *how* each pair was scored (whole, truncated
with the number of tokens dropped, or windowed), so nothing is cut silently.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rerank_plugins.errors import ModelLoadError, RerankInputError, ScorerOutputError, ScoringCancelledError

#: Set (in the worker thread's copied context) by :meth:`Scorer.ascore_detailed` when its caller is cancelled.
_CANCELLED: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("rerank_cancelled", default=None)


def check_same_process(loaded_in: int, name: str) -> None:
    """Raise :class:`ModelLoadError` in a process forked after ``name`` was loaded in process ``loaded_in``.

    A forked child inherits the model but not the threads behind it: torch's and ONNX Runtime's
    thread pools, and any lock another thread held at the fork, are dead copies, so the child
    would hang at its first forward pass. It gets this error instead.
    """
    if os.getpid() != loaded_in:
        raise ModelLoadError(
            f"model {name!r} was loaded in process {loaded_in} before this process was forked from it; its "
            "thread pools and locks do not survive a fork. Start worker processes with the 'spawn' or "
            "'forkserver' method (multiprocessing.get_context('spawn')), or load the model only in the workers."
        )


def raise_if_cancelled() -> None:
    """Raise :class:`ScoringCancelledError` when the async call this thread works for was cancelled.

    Scorers call it before each forward pass, so a cancelled or timed-out ``await`` stops its
    queued batches instead of holding the model for callers that are still waiting.
    """
    event = _CANCELLED.get()
    if event is not None and event.is_set():
        raise ScoringCancelledError("the caller stopped waiting for these scores; the remaining batches were skipped")


__all__ = ["PairNote", "Scorer", "ScoredPairs", "check_pairs", "check_scores"]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class PairNote:
    """How one pair was scored.

    Attributes:
        how: ``"whole"`` (fit in the budget), ``"truncated"``, ``"windowed"``, ``"unscored"``
            (left out by the pipeline's ``time_budget_ms``) or ``"pruned"`` (left to the cascade's
            cheap pass by ``cascade_keep``); the last two are never set by a scorer.
        dropped_tokens: Passage tokens cut off to fit (``"truncated"``, or ``"windowed"`` past its window limit).
        windows: Number of windows scored (``"windowed"`` only, else 1).
        query_dropped_tokens: Tokens cut from the end of a query too long to leave the passage a fair
            share of max_length (see :func:`rerank_plugins.scoring.cross_encoder.fit_query`).
    """

    how: Literal["whole", "truncated", "windowed", "unscored", "pruned"] = "whole"
    dropped_tokens: int = 0
    windows: int = 1
    query_dropped_tokens: int = 0

    @property
    def cut(self) -> bool:
        """True when part of the pair was not read (passage truncated or past a windowed scorer's window
        limit, or the query's tail cut)."""
        return self.how == "truncated" or self.dropped_tokens > 0 or self.query_dropped_tokens > 0


@dataclass(frozen=True)
class ScoredPairs:
    """Scores in input order, with one :class:`PairNote` per pair."""

    scores: list[float]
    notes: list[PairNote]


def _tokenizable(text: str) -> str:
    # Lone surrogates (e.g. from text decoded with errors="surrogateescape") are not valid Unicode and make
    # the Rust tokenizers raise a TypeError; they are scored as U+FFFD. The caller's text is returned unchanged.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text)
    return text


def check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` as a list of (query, passage) string tuples ready for a tokenizer.

    Raises :class:`RerankInputError` for anything but pairs of two strings; lone surrogate
    code points (invalid Unicode a tokenizer cannot take) are replaced by U+FFFD for scoring.

    Example:
        >>> check_pairs([("q", "bad \\udc80 byte")])
        [('q', 'bad \ufffd byte')]
    """
    out: list[tuple[str, str]] = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RerankInputError(f"Pair #{i} must be a (query: str, passage: str) tuple, got {pair!r:.80}")
        out.append((_tokenizable(pair[0]), _tokenizable(pair[1])))
    return out


def check_scores(scores: Sequence[float], expected: int, scorer_name: str) -> list[float]:
    """Return ``scores`` as floats, or raise :class:`ScorerOutputError` if the contract is broken."""
    if len(scores) != expected:
        raise ScorerOutputError(
            f"Scorer {scorer_name!r} returned {len(scores)} scores for {expected} pairs; "
            "a scorer must return exactly one score per pair"
        )
    out = [float(s) for s in scores]
    bad = [i for i, s in enumerate(out) if not math.isfinite(s)]
    if bad:
        raise ScorerOutputError(
            f"Scorer {scorer_name!r} returned non-finite scores (NaN or inf) at positions {bad[:10]}; "
            "check the model weights and inputs"
        )
    return out


class Scorer(ABC):
    """Base class of scorer backends.

    Subclasses implement :meth:`score_detailed`. :meth:`score` has the signature of
    LangChain's ``BaseCrossEncoder.score`` so any scorer can be handed to LangChain's
    own ``CrossEncoderReranker`` as well.

    Example:
        >>> class LengthScorer(Scorer):
        ...     name = "length"
        ...     def score_detailed(self, pairs):
        ...         return ScoredPairs([float(len(p)) for _, p in pairs], [PairNote()] * len(pairs))
        >>> LengthScorer().score([("q", "ab"), ("q", "abc")])
        [2.0, 3.0]
    """

    #: A human-readable name (model id or path for model-backed scorers).
    name: str = "scorer"
    #: The ``first_stage_weight`` this scorer's model recommends (``first_stage_weight=None`` uses it).
    recommended_first_stage_weight: float = 0.0
    #: True when a pair's score depends on the other pairs of the call (rank normalisation, pairwise
    #: re-scoring): such scores cannot be cached per pair.
    set_dependent: bool = False
    #: The scorer a wrapper delegates to (the score cache's, the windows' cross-encoder...); None for a backend.
    inner: Scorer | None = None

    @property
    def unwrapped(self) -> Scorer:
        """The scorer beneath wrappers that keep its scores as they are (the score cache); else itself."""
        return self

    def cheap_pass_is_exact(self, cheap: Scorer) -> bool:
        """True when a pair ``cheap`` read whole already has the score this scorer would give it, because
        ``cheap`` is this scorer's own model read at a shorter length: the cascade then keeps that score
        instead of reading the pair again."""
        return False

    @property
    def fingerprint(self) -> str:
        """Everything besides ``name`` that changes a score (a cache key part); model-backed scorers
        include the identity of their model files."""
        return ""

    @property
    def score_kind(self) -> str:
        """The scale of the scores: 'calibrated' (probabilities fitted on labelled data), 'sigmoid'
        (of the logit), 'raw' (logits), 'probability' (a model's own softmax), 'rank' (normalised
        ranks of an ensemble) or 'unknown'. Adapters and the server report it as
        ``relevance_score_kind``, so a threshold is read on the right scale."""
        return self.inner.score_kind if isinstance(self.inner, Scorer) else "unknown"

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        """Tokens of ``texts`` under the model's tokenizer, or None when the scorer has none to count with."""
        return None

    @abstractmethod
    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        """Scores and notes for ``pairs``, in input order."""

    def score(self, text_pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One float per (query, passage) pair, in input order."""
        pairs = list(text_pairs)
        return check_scores(self.score_detailed(pairs).scores, len(pairs), self.name)

    async def ascore_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        """:meth:`score_detailed` in a worker thread, so the event loop keeps running.

        Cancelling the await (``asyncio.wait_for`` timing out, a client going away) stops the
        worker at its next batch: abandoned work does not delay the calls behind it.
        """
        event = threading.Event()
        token = _CANCELLED.set(event)  # asyncio.to_thread copies this context into the worker
        try:
            return await asyncio.to_thread(self.score_detailed, list(pairs))
        except asyncio.CancelledError:
            event.set()
            raise
        finally:
            _CANCELLED.reset(token)

    async def ascore(self, text_pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Async :meth:`score`."""
        pairs = list(text_pairs)
        return check_scores((await self.ascore_detailed(pairs)).scores, len(pairs), self.name)
