"""rerank_plugins: cross-encoder reranking as a drop-in step of RAG pipelines.

The core (config, pipeline, fusion, scorer contract) imports only the standard
library and pydantic. Names that need torch, sentence-transformers, LangChain or
LlamaIndex are resolved lazily on first access, so ``import rerank_plugins`` stays
light.

Example:
    >>> import rerank_plugins
    >>> rerank_plugins.RerankConfig(top_n=3).top_n
    3
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rerank_plugins._extras import lazy_attribute
from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import (
    ConfigError,
    MissingExtraError,
    ModelLoadError,
    RerankInputError,
    RerankPluginsError,
    ScorerOutputError,
)
from rerank_plugins.fusion import reciprocal_rank_fusion, weighted_score_fusion
from rerank_plugins.models import default_model_path
from rerank_plugins.pipeline import (
    Candidate,
    RankedCandidate,
    RerankResult,
    arerank_candidates,
    merge_candidates,
    rerank_candidates,
)
from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer

if TYPE_CHECKING:
    from rerank_plugins.adapters.langchain import HybridRetriever, RerankCompressor
    from rerank_plugins.adapters.llamaindex import HybridNodeRetriever, RerankNodePostprocessor
    from rerank_plugins.retrieval.hybrid import HybridSearcher
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.factory import get_scorer

__version__ = "0.1.0"

_LAZY = {
    "CrossEncoderScorer": "rerank_plugins.scoring.cross_encoder",
    "get_scorer": "rerank_plugins.scoring.factory",
    "HybridSearcher": "rerank_plugins.retrieval.hybrid",
    "RerankCompressor": "rerank_plugins.adapters.langchain",
    "HybridRetriever": "rerank_plugins.adapters.langchain",
    "RerankNodePostprocessor": "rerank_plugins.adapters.llamaindex",
    "HybridNodeRetriever": "rerank_plugins.adapters.llamaindex",
}

__all__ = [
    "Candidate",
    "ConfigError",
    "CrossEncoderScorer",
    "HybridNodeRetriever",
    "HybridRetriever",
    "HybridSearcher",
    "MissingExtraError",
    "ModelLoadError",
    "PairNote",
    "RankedCandidate",
    "RerankCompressor",
    "RerankConfig",
    "RerankInputError",
    "RerankNodePostprocessor",
    "RerankPluginsError",
    "RerankResult",
    "ScoredPairs",
    "Scorer",
    "ScorerOutputError",
    "__version__",
    "arerank_candidates",
    "default_model_path",
    "get_scorer",
    "merge_candidates",
    "reciprocal_rank_fusion",
    "rerank_candidates",
    "weighted_score_fusion",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)
