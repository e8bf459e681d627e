"""LlamaIndex adapters: a node postprocessor and a hybrid retriever.

``RerankNodePostprocessor`` is a ``BaseNodePostprocessor``: put it in
``node_postprocessors=[...]`` of a query engine, or call ``postprocess_nodes``
after any retriever (``QueryFusionRetriever`` included). It emits
``ReRankStartEvent`` and ``ReRankEndEvent`` on every path and returns new
``NodeWithScore`` objects over copied nodes; the caller's are never modified.

Example:
    >>> from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor
    >>> post = RerankNodePostprocessor(top_n=3)  # doctest: +SKIP
    >>> engine = index.as_query_engine(similarity_top_k=20, node_postprocessors=[post])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rerank_plugins._extras import require

require("llama_index.core", "The LlamaIndex adapter")

from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_serializer  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]  # noqa: E402
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

from rerank_plugins.adapters._common import (  # noqa: E402
    RETRIEVAL_SOURCES,
    added_metadata,
    copied_metadata,
    metadata_prefix,
    resolve_adapter_settings,
    sources_of,
)
from rerank_plugins.config import RerankConfig  # noqa: E402
from rerank_plugins.pipeline import Candidate, RerankResult, arerank_candidates, rerank_candidates  # noqa: E402
from rerank_plugins.retrieval.hybrid import HybridSearcher  # noqa: E402
from rerank_plugins.scoring.base import Scorer  # noqa: E402
from rerank_plugins.scoring.cascade import Cascade  # noqa: E402

__all__ = ["HybridNodeRetriever", "RerankNodePostprocessor"]

dispatcher = get_dispatcher(__name__)


def _copy_with_metadata(node: BaseNode, extra: dict[str, Any]) -> BaseNode:
    """A copy of ``node`` with ``extra`` metadata, hidden from the LLM and embedding views."""
    hidden = list(extra)
    return node.model_copy(
        update={
            "metadata": copied_metadata(node.metadata, extra),
            "excluded_llm_metadata_keys": [
                *node.excluded_llm_metadata_keys,
                *(k for k in hidden if k not in node.excluded_llm_metadata_keys),
            ],
            "excluded_embed_metadata_keys": [
                *node.excluded_embed_metadata_keys,
                *(k for k in hidden if k not in node.excluded_embed_metadata_keys),
            ],
        }
    )


class RerankNodePostprocessor(BaseNodePostprocessor):
    """Rerank retrieved nodes with the shared cross-encoder and keep the best.

    ``NodeWithScore.score`` becomes the relevance score; the retriever's score is
    kept in ``node.metadata["retrieval_score"]`` (with ``retrieval_rank``,
    ``retrieval_sources``, ``relevance_score`` and ``rerank_scoring``).

    Example (a toy word-overlap scorer stands in for the cross-encoder; by default
    ``RerankNodePostprocessor(top_n=3)`` uses the shipped model):
        >>> from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
        >>> from rerank_plugins import PairNote, ScoredPairs, Scorer
        >>> class Overlap(Scorer):
        ...     def score_detailed(self, pairs):
        ...         s = [float(len(set(q.split()) & set(p.split()))) for q, p in pairs]
        ...         return ScoredPairs(s, [PairNote()] * len(s))
        >>> nodes = [NodeWithScore(node=TextNode(text="red apples", id_="a"), score=0.9),
        ...          NodeWithScore(node=TextNode(text="green apples are sour", id_="b"), score=0.2)]
        >>> post = RerankNodePostprocessor(model=Overlap(), top_n=1)
        >>> [(n.node.node_id, n.score) for n in post.postprocess_nodes(nodes, QueryBundle("are green apples sour"))]
        [('b', 4.0)]
    """

    model: Any = Field(
        default=None, description="Hugging Face id, local path or Scorer instance (None: configured/default model)."
    )
    top_n: int | None = Field(default=None, ge=1, description="Keep at most this many nodes (overrides config.top_n).")
    score_threshold: float | None = Field(
        default=None, description="Drop nodes scoring below this, before the top-n cut."
    )
    config: RerankConfig | None = Field(default=None, description="Full settings; explicit fields take precedence.")

    _settings: RerankConfig = PrivateAttr()
    _scorer: Scorer = PrivateAttr()
    _cascade: Cascade | None = PrivateAttr()

    @field_serializer("model")
    def _model_name(self, model: Any) -> Any:
        # a Scorer instance is written as its name: the JSON says which model, not how to rebuild it
        return model.name if isinstance(model, Scorer) else model

    def model_post_init(self, context: Any, /) -> None:
        self._settings, self._scorer, self._cascade = resolve_adapter_settings(self)

    @classmethod
    def class_name(cls) -> str:
        return "RerankNodePostprocessor"

    @property
    def settings(self) -> RerankConfig:
        """The resolved configuration in use."""
        return self._settings

    @property
    def scorer(self) -> Scorer:
        """The (shared) scorer in use."""
        return self._scorer

    def _text(self, node: BaseNode) -> str:
        cfg = self._settings
        if cfg.text == "content":
            return node.get_content(metadata_mode=MetadataMode.NONE)
        if not cfg.metadata_keys:
            return node.get_content(metadata_mode=MetadataMode.EMBED)
        prefix = metadata_prefix(node.metadata, cfg.metadata_keys)
        body = node.get_content(metadata_mode=MetadataMode.NONE)
        return f"{prefix}\n{body}" if prefix else body

    def _candidates(self, nodes: Sequence[NodeWithScore]) -> list[Candidate]:
        out = []
        for nws in nodes:
            if not isinstance(nws, NodeWithScore):
                raise TypeError(f"Expected NodeWithScore objects, got {type(nws).__name__}")
            node = nws.node
            sources = sources_of(node.metadata)
            out.append(Candidate(node.node_id, self._text(node), nws, nws.score, sources))
        return out

    def _nodes(self, result: RerankResult) -> list[NodeWithScore]:
        out = []
        for r in result.items:
            original: NodeWithScore = r.candidate.item
            node = _copy_with_metadata(original.node, added_metadata(r, self._scorer.score_kind))
            out.append(NodeWithScore(node=node, score=r.score))
        return out

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | str | None) -> QueryBundle:
        if isinstance(query_bundle, str):  # e.g. RetrieverQueryEngine.retrieve("...") passes the string on
            query_bundle = QueryBundle(query_bundle)
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self._settings.top_n or len(nodes), model_name=self._scorer.name
            )
        )
        if query_bundle is None:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            raise ValueError("A query is required to rerank nodes: pass query_bundle= or query_str=")
        return query_bundle

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes = list(nodes)  # any iterable of nodes (a generator too)
        query = self._start(nodes, query_bundle).query_str
        out: list[NodeWithScore] = []
        try:
            out = self._nodes(
                rerank_candidates(
                    query, self._candidates(nodes), self._scorer, self._settings, cascade=self._cascade or False
                )
            )
        finally:
            dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes = list(nodes)  # any iterable of nodes (a generator too)
        query = self._start(nodes, query_bundle).query_str
        out: list[NodeWithScore] = []
        try:
            out = self._nodes(
                await arerank_candidates(
                    query, self._candidates(nodes), self._scorer, self._settings, cascade=self._cascade or False
                )
            )
        finally:
            dispatcher.event(ReRankEndEvent(nodes=out))
        return out


class HybridNodeRetriever(BaseRetriever):
    """BM25 + dense retrieval over in-memory nodes, fused by RRF or weighted scores.

    ``NodeWithScore.score`` is the fused score; ``retrieval_sources`` in the copied
    node's metadata says which retrievers found it.
    """

    def __init__(self, nodes: Sequence[BaseNode], *, k: int = 20, **searcher_options: Any) -> None:
        super().__init__()
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        self._nodes = list(nodes)
        self._k = k
        self._searcher = HybridSearcher(
            [n.get_content(metadata_mode=MetadataMode.NONE) for n in self._nodes], **searcher_options
        )

    @classmethod
    def from_texts(cls, texts: Sequence[str], *, k: int = 20, **searcher_options: Any) -> HybridNodeRetriever:
        """Build nodes from plain texts (ids ``"0"``, ``"1"``...) and index them."""
        return cls([TextNode(text=t, id_=str(i)) for i, t in enumerate(texts)], k=k, **searcher_options)

    def _hits(self, query: str) -> list[NodeWithScore]:
        out = []
        for hit in self._searcher.search(query, self._k):
            node = self._nodes[hit.position]
            copy = _copy_with_metadata(node, {RETRIEVAL_SOURCES: list(hit.sources)})
            out.append(NodeWithScore(node=copy, score=hit.score))
        return out

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._hits(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._hits, query_bundle.query_str)
