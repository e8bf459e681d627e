"""LangChain adapters: a document compressor and a hybrid retriever.

``RerankCompressor`` is a ``langchain_core`` ``BaseDocumentCompressor``: use it in
``ContextualCompressionRetriever``, ``DocumentCompressorPipeline`` (langchain-classic)
or in an LCEL chain. It returns *new* ``Document`` objects; the caller's are never
modified.

Importing this module also registers every :class:`~rerank_plugins.scoring.base.Scorer`
as a virtual subclass of LangChain's ``BaseCrossEncoder``, so a scorer can be handed
to LangChain's own ``CrossEncoderReranker`` too.

Example:
    >>> from langchain_core.documents import Document
    >>> from rerank_plugins.adapters.langchain import RerankCompressor
    >>> compressor = RerankCompressor(top_n=3)  # doctest: +SKIP
    >>> docs = compressor.compress_documents([Document("BM25 ranks documents")], "what is BM25?")  # doctest: +SKIP
    >>> docs[0].metadata["relevance_score"]  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rerank_plugins._extras import require

require("langchain_core", "The LangChain adapter")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
    Callbacks,
)
from langchain_core.cross_encoders import BaseCrossEncoder  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import ConfigDict, Field, PrivateAttr, field_serializer  # noqa: E402

from rerank_plugins.adapters._common import (  # noqa: E402
    RETRIEVAL_SCORE,
    RETRIEVAL_SOURCES,
    added_metadata,
    copied_metadata,
    first_stage_score,
    metadata_prefix,
    resolve_adapter_settings,
    sources_of,
)
from rerank_plugins.config import RerankConfig  # noqa: E402
from rerank_plugins.pipeline import Candidate, RerankResult, arerank_candidates, rerank_candidates  # noqa: E402
from rerank_plugins.retrieval.hybrid import HybridSearcher  # noqa: E402
from rerank_plugins.scoring.base import Scorer  # noqa: E402
from rerank_plugins.scoring.cascade import Cascade  # noqa: E402

__all__ = ["HybridRetriever", "RerankCompressor"]

BaseCrossEncoder.register(Scorer)  # type: ignore[type-abstract]


class RerankCompressor(BaseDocumentCompressor):
    """Rerank retrieved documents with the shared cross-encoder and keep the best.

    Duplicates (same ``Document.id``, else same text) are scored once; every
    returned document carries ``relevance_score``, ``retrieval_score``,
    ``retrieval_rank``, ``retrieval_sources`` and ``rerank_scoring`` in its metadata.

    Example (a toy word-overlap scorer stands in for the cross-encoder; by default
    ``RerankCompressor(top_n=3)`` uses the shipped model):
        >>> from langchain_core.documents import Document
        >>> from rerank_plugins import PairNote, ScoredPairs, Scorer
        >>> class Overlap(Scorer):
        ...     def score_detailed(self, pairs):
        ...         s = [float(len(set(q.split()) & set(p.split()))) for q, p in pairs]
        ...         return ScoredPairs(s, [PairNote()] * len(s))
        >>> docs = [Document(page_content="red apples", metadata={"src": "a"}),
        ...         Document(page_content="green apples are sour", metadata={"src": "b"}),
        ...         Document(page_content="green apples are sour", metadata={"src": "b"})]
        >>> out = RerankCompressor(model=Overlap(), top_n=1).compress_documents(docs, "are green apples sour")
        >>> [(d.page_content, d.metadata["src"], d.metadata["relevance_score"]) for d in out]
        [('green apples are sour', 'b', 4.0)]
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str | Scorer | None = None
    """Hugging Face id, local path or a Scorer instance (None: the configured/default model)."""
    top_n: int | None = Field(default=None, ge=1)
    """Keep at most this many documents (overrides ``config.top_n`` when given)."""
    score_threshold: float | None = None
    """Drop documents scoring below this, before the top-n cut (overrides the config when given)."""
    config: RerankConfig | None = None
    """Full settings; the explicit fields above take precedence."""

    _settings: RerankConfig = PrivateAttr()
    _scorer: Scorer = PrivateAttr()
    _cascade: Cascade | None = PrivateAttr()

    @field_serializer("model")
    def _model_name(self, model: Any) -> Any:
        # a Scorer instance is written as its name: the JSON says which model, not how to rebuild it
        return model.name if isinstance(model, Scorer) else model

    def model_post_init(self, context: Any, /) -> None:
        self._settings, self._scorer, self._cascade = resolve_adapter_settings(self)

    @property
    def settings(self) -> RerankConfig:
        """The resolved configuration in use."""
        return self._settings

    @property
    def scorer(self) -> Scorer:
        """The (shared) scorer in use."""
        return self._scorer

    def _candidates(self, documents: Sequence[Document]) -> list[Candidate]:
        cfg = self._settings
        out = []
        for doc in documents:
            if not isinstance(doc, Document):
                raise TypeError(f"Expected langchain_core Document objects, got {type(doc).__name__}")
            text: Any = doc.page_content
            if cfg.text == "content_with_metadata" and isinstance(text, str):
                prefix = metadata_prefix(doc.metadata, cfg.metadata_keys)
                text = f"{prefix}\n{text}" if prefix else text
            out.append(Candidate(doc.id, text, doc, first_stage_score(doc.metadata), sources_of(doc.metadata)))
        return out

    def _documents(self, result: RerankResult) -> list[Document]:
        docs = []
        for r in result.items:
            original: Document = r.candidate.item
            metadata = copied_metadata(original.metadata, added_metadata(r, self._scorer.score_kind))
            docs.append(Document(page_content=original.page_content, metadata=metadata, id=original.id))
        return docs

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; returns new documents, best first."""
        result = rerank_candidates(
            query, self._candidates(documents), self._scorer, self._settings, cascade=self._cascade or False
        )
        return self._documents(result)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`; scoring runs off the event loop."""
        result = await arerank_candidates(
            query, self._candidates(documents), self._scorer, self._settings, cascade=self._cascade or False
        )
        return self._documents(result)


class HybridRetriever(BaseRetriever):
    """BM25 + dense retrieval over in-memory documents, fused by RRF or weighted scores.

    Returned documents are copies carrying ``retrieval_score`` (fused) and
    ``retrieval_sources`` in their metadata, which :class:`RerankCompressor` reads.

    Example:
        >>> retriever = HybridRetriever.from_documents(docs, k=20)  # doctest: +SKIP
        >>> pipeline = retriever | (lambda d: d)  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    documents: list[Document]
    """The indexed documents."""
    k: int = Field(default=20, ge=1)
    """Fused hits returned per query."""
    searcher_options: dict[str, Any] = Field(default_factory=dict)
    """Options of :class:`~rerank_plugins.retrieval.hybrid.HybridSearcher` (fusion, weights, depth...)."""

    _searcher: HybridSearcher = PrivateAttr()

    @classmethod
    def from_documents(cls, documents: Sequence[Document], *, k: int = 20, **searcher_options: Any) -> HybridRetriever:
        """Index ``documents``; ``searcher_options`` go to :class:`HybridSearcher`."""
        return cls(documents=list(documents), k=k, searcher_options=searcher_options)

    def model_post_init(self, context: Any, /) -> None:
        self._searcher = HybridSearcher([d.page_content for d in self.documents], **self.searcher_options)

    def _hits(self, query: str) -> list[Document]:
        out = []
        for hit in self._searcher.search(query, self.k):
            doc = self.documents[hit.position]
            metadata = copied_metadata(doc.metadata, {RETRIEVAL_SCORE: hit.score, RETRIEVAL_SOURCES: list(hit.sources)})
            out.append(Document(page_content=doc.page_content, metadata=metadata, id=doc.id))
        return out

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self._hits(query)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        import asyncio

        return await asyncio.to_thread(self._hits, query)
