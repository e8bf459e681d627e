"""Hybrid BM25 + dense candidate generation with rank fusion (framework-free core).

The LangChain and LlamaIndex retrievers in :mod:`rerank_plugins.adapters` wrap
:class:`HybridSearcher`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rerank_plugins.fusion import reciprocal_rank_fusion, weighted_score_fusion
from rerank_plugins.retrieval.bm25 import BM25Index
from rerank_plugins.retrieval.dense import DenseIndex

__all__ = ["HybridHit", "HybridSearcher"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HybridHit:
    """One fused hit.

    Attributes:
        position: Index of the passage in the searcher's corpus.
        score: Fused score (RRF or weighted), best first.
        sources: Retrievers that returned it (``"bm25"``, ``"dense"``).
        source_scores: Each retriever's own score for it.
    """

    position: int
    score: float
    sources: tuple[str, ...]
    source_scores: dict[str, float] = field(default_factory=dict)


class HybridSearcher:
    """BM25 (bm25s) and dense (bi-encoder) search fused into one ranking.

    Args:
        texts: Passages to index.
        fusion: ``"rrf"`` (reciprocal-rank fusion) or ``"weighted"`` (min-max normalised scores).
        weights: Per-retriever weights, e.g. ``{"bm25": 1.0, "dense": 1.0}``.
        depth: Hits taken from each retriever before fusion.
        rrf_k: RRF smoothing constant.
        dense_model: Bi-encoder id or path (default: the shipped all-MiniLM-L6-v2).
        use_dense: Set False for BM25 alone.
    """

    def __init__(
        self,
        texts: Sequence[str],
        *,
        fusion: Literal["rrf", "weighted"] = "rrf",
        weights: Mapping[str, float] | None = None,
        depth: int = 100,
        rrf_k: float = 60.0,
        dense_model: str | None = None,
        use_dense: bool = True,
    ) -> None:
        if fusion not in ("rrf", "weighted"):
            raise ValueError(f"fusion must be 'rrf' or 'weighted', got {fusion!r}")
        if depth <= 0:
            raise ValueError(f"depth must be positive, got {depth}")
        self.fusion = fusion
        self.weights = dict(weights or {})
        self.depth = depth
        self.rrf_k = rrf_k
        self.bm25 = BM25Index(texts)
        self.dense: DenseIndex | None = DenseIndex(texts, model=dense_model) if use_dense else None
        self.size = len(texts)

    def search(self, query: str, k: int = 20) -> list[HybridHit]:
        """The fused top-``k`` hits for ``query``."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        per: dict[str, list[tuple[int, float]]] = {"bm25": self.bm25.search(query, self.depth)}
        if self.dense is not None:
            per["dense"] = self.dense.search(query, self.depth)
        weights: dict[str, Any] = {n: w for n, w in self.weights.items() if n in per}
        if self.fusion == "rrf":
            fused = reciprocal_rank_fusion(
                {n: [str(i) for i, _ in hits] for n, hits in per.items()}, k=self.rrf_k, weights=weights
            )
        else:
            fused = weighted_score_fusion({n: {str(i): s for i, s in hits} for n, hits in per.items()}, weights=weights)
        by_source = {n: {i: s for i, s in hits} for n, hits in per.items()}
        out = []
        for doc, score in fused[:k]:
            pos = int(doc)
            srcs = {n: by_source[n][pos] for n in per if pos in by_source[n]}
            out.append(HybridHit(pos, score, tuple(srcs), srcs))
        return out
