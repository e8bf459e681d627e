"""BM25 candidate generation on bm25s (sparse-matrix BM25, Lucene variant)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rerank_plugins._extras import require

__all__ = ["BM25Index"]

logger = logging.getLogger(__name__)


def _quiet_bm25s() -> None:
    """bm25s sets its own logger to DEBUG when imported, so its index chatter reached every handler
    (the CLI printed it without -v). Its level goes back to WARNING unless someone changed it since."""
    log = logging.getLogger("bm25s")
    if log.level == logging.DEBUG:
        log.setLevel(logging.WARNING)


class BM25Index:
    """An in-memory BM25 index over a list of texts.

    Args:
        texts: The passages to index, in id order (``search`` returns positions).
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        stopwords: A bm25s stopword language (``"en"``) or ``None``.

    Example:
        >>> index = BM25Index(["dogs bark loudly", "stock markets fell today", "a cat sat on the mat"])
        >>> [i for i, _ in index.search("why did markets fall", k=2)]
        [1]
    """

    def __init__(
        self,
        texts: Sequence[str],
        *,
        k1: float = 1.2,
        b: float = 0.75,
        stopwords: str | None = "en",
    ) -> None:
        self._bm25s: Any = require("bm25s", "BM25 retrieval")
        _quiet_bm25s()
        self._stopwords = stopwords
        self.size = len(texts)
        self._retriever = self._bm25s.BM25(k1=k1, b=b)
        if self.size:
            tokens = self._bm25s.tokenize(list(texts), stopwords=stopwords, show_progress=False)
            self._retriever.index(tokens, show_progress=False)
        logger.debug("BM25 index built over %d passages", self.size)

    def search(self, query: str, k: int = 100) -> list[tuple[int, float]]:
        """Top-``k`` (position, score) pairs, best first; only passages with score > 0."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 100) -> list[list[tuple[int, float]]]:
        """:meth:`search` for several queries at once (one vectorised call)."""
        if not queries:
            return []
        k = min(k, self.size)
        if k <= 0:
            return [[] for _ in queries]
        tokens = self._bm25s.tokenize(list(queries), stopwords=self._stopwords, show_progress=False)
        docs, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        out: list[list[tuple[int, float]]] = []
        for row_docs, row_scores in zip(docs, scores, strict=True):
            out.append([(int(d), float(s)) for d, s in zip(row_docs, row_scores, strict=True) if s > 0])
        return out
