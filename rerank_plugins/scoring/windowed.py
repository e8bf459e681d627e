"""Sliding-window (MaxP-style) scoring of passages longer than the token budget.

A passage that does not fit next to the query is split into overlapping windows
of ``window`` tokens every ``stride`` tokens; every window of every candidate is
scored in one batched call, and the window scores are aggregated (``max`` by
default, as in MaxP, Dai and Callan, SIGIR 2019; ``first`` or ``mean-top2``).
Windows are cut at token boundaries but taken from the original text through
the tokenizer's character offsets, so no text is altered. Each pair's note says
``windowed`` with the number of windows, or ``whole`` when it fitted.

Example:
    >>> split_windows(10, window=4, stride=3)
    [(0, 4), (3, 7), (6, 10)]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, Protocol

from rerank_plugins.config import RerankConfig
from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer, check_pairs
from rerank_plugins.scoring.loading import PassageLayout

__all__ = ["WindowedScorer", "aggregate", "split_windows"]

logger = logging.getLogger(__name__)

Aggregate = Literal["max", "first", "mean-top2"]


def split_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Token spans [start, end) covering ``n_tokens`` with windows of ``window`` every ``stride``.

    The last window ends exactly at ``n_tokens``; an empty passage gives one empty window.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got window={window}, stride={stride}")
    if stride > window:
        raise ValueError(f"stride={stride} > window={window} would skip text between windows")
    if n_tokens <= window:
        return [(0, n_tokens)]
    spans = []
    start = 0
    while True:
        end = min(start + window, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += stride


def aggregate(scores: Sequence[float], how: Aggregate) -> float:
    """Combine window scores: ``max``, ``first``, or the mean of the best two."""
    if not scores:
        raise ValueError("no window scores to aggregate")
    if how == "max":
        return max(scores)
    if how == "first":
        return scores[0]
    if how == "mean-top2":
        top = sorted(scores, reverse=True)[:2]
        return sum(top) / len(top)
    raise ValueError(f"unknown aggregate {how!r}; use 'max', 'first' or 'mean-top2'")


class WindowReader(Protocol):
    """What :class:`WindowedScorer` needs from the scorer that reads each window (a cross-encoder)."""

    name: str
    config: RerankConfig
    recommended_first_stage_weight: float

    @property
    def backend(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def count_tokens(self, texts: Sequence[str]) -> int: ...

    def layout(self, pairs: Sequence[tuple[str, str]]) -> PassageLayout: ...

    @property
    def unwrapped(self) -> Scorer: ...

    def cheap_pass_is_exact(self, cheap: Scorer) -> bool: ...

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs: ...


class WindowedScorer(Scorer):
    """Score long passages window by window with a cross-encoder.

    Args:
        inner: The cross-encoder that scores each (query, window) pair.
        window: Passage tokens per window (None: as many as fit next to the query).
        stride: Tokens between window starts (None: half a window).
        how: Aggregation of window scores.
        limit: Most windows per passage (None: no limit); the text after the last window is cut, and the
            pair's note counts the cut tokens (``dropped_tokens``).
    """

    inner: WindowReader  # type: ignore[assignment]  # a cross-encoder, typed by what is used of it

    def __init__(
        self,
        inner: WindowReader,
        *,
        window: int | None = None,
        stride: int | None = None,
        how: Aggregate = "max",
        limit: int | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit={limit} must be at least 1 window (or None for no limit)")
        self.inner = inner
        self.name = inner.name
        self.recommended_first_stage_weight = inner.recommended_first_stage_weight
        self.window = window
        self.stride = stride
        self.how = how
        self.limit = limit
        aggregate([0.0], how)  # fail early on an unknown aggregate

    @property
    def config(self) -> RerankConfig:
        """The settings of the cross-encoder that reads the windows."""
        return self.inner.config

    @property
    def backend(self) -> str:
        """The inner cross-encoder's backend ('torch', 'onnx', 'onnx-int8' or 'onnx-int8-ffn')."""
        return self.inner.backend

    @property
    def device(self) -> str:
        """The inner cross-encoder's device."""
        return self.inner.device

    def count_tokens(self, texts: Sequence[str]) -> int:
        return self.inner.count_tokens(texts)

    def cheap_pass_is_exact(self, cheap: Scorer) -> bool:
        # a pair the cheap pass read whole fits one window, read whole too; fixed windows may split it
        return self.window is None and self.inner.cheap_pass_is_exact(cheap)

    @property
    def fingerprint(self) -> str:
        """Settings that change a score (a cache key part)."""
        return f"windowed({self.window},{self.stride},{self.how},{self.limit})|{self.inner.fingerprint}"

    def spans(self, n_tokens: int, room: int) -> list[tuple[int, int]]:
        """The token spans this scorer reads of a passage of ``n_tokens`` next to a query that leaves ``room``."""
        window = min(self.window or room, room)
        stride = self.stride or max(1, window // 2)
        return split_windows(n_tokens, window, min(stride, window))[: self.limit]

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        pairs = check_pairs(pairs)
        if not pairs:
            return ScoredPairs([], [])
        layout = self.inner.layout(pairs)
        expanded: list[tuple[str, str]] = []
        owners: list[int] = []
        notes: list[PairNote] = []
        for i, ((q, passage), offsets) in enumerate(zip(pairs, layout.offsets, strict=True)):
            q_text, q_len, q_cut = layout.queries[q]
            spans = self.spans(len(offsets), layout.budget - layout.special_tokens - q_len)
            for start, end in spans:
                text = passage[offsets[start][0] : offsets[end - 1][1]] if end > start else passage
                expanded.append((q_text, text))
                owners.append(i)
            dropped = len(offsets) - spans[-1][1]  # past the window limit
            if len(spans) > 1:
                notes.append(PairNote("windowed", dropped, len(spans), q_cut))
            else:  # one window: read whole, or cut by a limit of one window
                notes.append(PairNote("truncated" if dropped else "whole", dropped, query_dropped_tokens=q_cut))
        inner = self.inner.score_detailed(expanded)
        per_pair: list[list[float]] = [[] for _ in pairs]
        for owner, s in zip(owners, inner.scores, strict=True):
            per_pair[owner].append(s)
        scores = [aggregate(s, self.how) for s in per_pair]
        if cut := sum(n.cut for n in notes):
            logger.info("window_limit=%s: %d passage(s) cut after their last window", self.limit, cut)
        return ScoredPairs(scores, notes)
