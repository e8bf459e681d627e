from __future__ import annotations

import asyncio
import copy

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from rerank_plugins import RerankConfig
from rerank_plugins.adapters.langchain import HybridRetriever, RerankCompressor
from tests.conftest import OverlapScorer, SlowScorer, ticks_while

DOCS = [
    Document(page_content="green apples are sour", metadata={"source": "a.txt", "retrieval_score": 0.2}, id="a"),
    Document(page_content="red apples are sweet", metadata={"source": "b.txt"}, id="b"),
    Document(page_content="bananas are yellow", metadata={"source": "c.txt"}, id="c"),
    Document(page_content="green apples are sour", metadata={"source": "a.txt", "retrieval_score": 0.9}, id="a"),
]
QUERY = "are green apples sour"


class FixedRetriever(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return list(self.docs)


def test_rerank_scores_dedupes_and_keeps_metadata() -> None:
    out = RerankCompressor(model=OverlapScorer(), top_n=2).compress_documents(DOCS, QUERY)
    assert [d.id for d in out] == ["a", "b"]
    first = out[0]
    assert first.page_content == "green apples are sour"
    assert first.metadata["source"] == "a.txt"
    assert first.metadata["relevance_score"] == 4.0
    assert first.metadata["retrieval_score"] == 0.9  # the best of the two copies
    assert first.metadata["retrieval_rank"] == 1
    assert first.metadata["rerank_scoring"] == "whole"


def test_empty_documents_with_their_own_ids_and_metadata_are_all_returned() -> None:
    """Issue 22 #7: two Document("") with different ids were merged and one's metadata lost."""
    docs = [
        Document("", id="a", metadata={"image": "a.png"}),
        Document("", id="b", metadata={"image": "b.png"}),
        Document("green apples", id="c"),
    ]
    out = RerankCompressor(model=OverlapScorer(), top_n=None).compress_documents(docs, "green apples")
    assert sorted(d.metadata.get("image", "-") for d in out) == ["-", "a.png", "b.png"]


def test_returned_documents_share_no_nested_metadata_with_the_callers() -> None:
    """Issue 22 #11: appending to an output's tags changed the input document."""
    doc = Document("green apples", id="a", metadata={"tags": ["fruit"], "nested": {"k": [1]}})
    out = RerankCompressor(model=OverlapScorer()).compress_documents([doc], "green apples")
    out[0].metadata["tags"].append("changed")
    out[0].metadata["nested"]["k"].append(2)
    assert doc.metadata == {"tags": ["fruit"], "nested": {"k": [1]}}


def test_numpy_metadata_values_in_the_scored_text() -> None:
    """Issue 22 #11: text='content_with_metadata' with a numpy value raised a raw ValueError."""
    np = pytest.importorskip("numpy")
    doc = Document("green apples", id="a", metadata={"vec": np.array([1.0, 2.0]), "title": "Fruit"})
    compressor = RerankCompressor(model=OverlapScorer(), config=RerankConfig(text="content_with_metadata"))
    assert [d.id for d in compressor.compress_documents([doc], "green apples")] == ["a"]


def test_the_environment_applies_below_keywords_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23 #5: RerankCompressor() with RERANK_PLUGINS_TOP_N=1 kept 5."""
    monkeypatch.setenv("RERANK_PLUGINS_TOP_N", "1")
    assert RerankCompressor(model=OverlapScorer()).settings.top_n == 1
    assert len(RerankCompressor(model=OverlapScorer()).compress_documents(DOCS, QUERY)) == 1
    assert RerankCompressor(model=OverlapScorer(), top_n=2).settings.top_n == 2
    assert RerankCompressor(model=OverlapScorer(), config=RerankConfig(top_n=3)).settings.top_n == 3


def test_callers_documents_are_never_mutated() -> None:
    docs = copy.deepcopy(DOCS)
    compressor = RerankCompressor(model=OverlapScorer(), top_n=3)
    out1 = compressor.compress_documents(docs, QUERY)
    assert [d.model_dump() for d in docs] == [d.model_dump() for d in DOCS]
    out2 = compressor.compress_documents(docs, QUERY)  # a second call does not corrupt the first result
    assert [d.model_dump() for d in out1] == [d.model_dump() for d in out2]
    assert all(o is not d for o in out1 for d in docs)


def test_keyword_settings_override_the_config() -> None:
    cfg = RerankConfig(top_n=1, score_threshold=0.5, activation="raw")
    compressor = RerankCompressor(model=OverlapScorer(), config=cfg, top_n=3)
    assert compressor.settings.top_n == 3
    assert compressor.settings.score_threshold == 0.5
    out = compressor.compress_documents(DOCS, QUERY)
    assert [d.id for d in out] == ["a", "b", "c"]  # top_n=3 from the keyword, not 1 from the config
    assert [d.metadata["relevance_score"] for d in out] == [4.0, 2.0, 1.0]


def test_threshold_drops_and_empty_input() -> None:
    compressor = RerankCompressor(model=OverlapScorer(), config=RerankConfig(activation="raw", score_threshold=3.5))
    assert [d.id for d in compressor.compress_documents(DOCS, QUERY)] == ["a"]
    assert compressor.compress_documents([], QUERY) == []


def test_content_with_metadata_is_scored() -> None:
    scorer = OverlapScorer()
    cfg = RerankConfig(text="content_with_metadata", metadata_keys=("source",))
    RerankCompressor(model=scorer, config=cfg).compress_documents(DOCS[:1], QUERY)
    assert scorer.calls[0][0][1] == "source: a.txt\ngreen apples are sour"


def test_non_documents_are_rejected() -> None:
    with pytest.raises(TypeError, match="Document"):
        RerankCompressor(model=OverlapScorer()).compress_documents(["plain string"], QUERY)  # type: ignore[list-item]


def test_inside_contextual_compression_retriever_and_pipeline() -> None:
    pytest.importorskip("langchain_classic")
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline

    compressor = RerankCompressor(model=OverlapScorer(), top_n=2)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=FixedRetriever(docs=DOCS))
    assert [d.id for d in retriever.invoke(QUERY)] == ["a", "b"]
    pipeline = DocumentCompressorPipeline(transformers=[compressor])
    assert [d.id for d in pipeline.compress_documents(DOCS, QUERY)] == ["a", "b"]
    assert [d.id for d in asyncio.run(retriever.ainvoke(QUERY))] == ["a", "b"]


def test_in_an_lcel_chain() -> None:
    compressor = RerankCompressor(model=OverlapScorer(), top_n=1)
    chain = RunnableParallel(docs=FixedRetriever(docs=DOCS), query=RunnablePassthrough()) | RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["query"])
    )
    assert [d.id for d in chain.invoke(QUERY)] == ["a"]
    assert [[d.id for d in r] for r in chain.batch([QUERY, "bananas yellow"])] == [["a"], ["c"]]


def test_async_does_not_block_the_event_loop() -> None:
    compressor = RerankCompressor(model=SlowScorer(), top_n=2)
    ticks, out = ticks_while(lambda: compressor.acompress_documents(DOCS, QUERY))
    assert ticks >= 5  # the loop kept running while scoring took 0.3 s
    assert [d.id for d in out] == ["a", "b"]


def test_many_concurrent_async_calls_match_sequential(tiny_model: str) -> None:
    compressor = RerankCompressor(model=tiny_model, config=RerankConfig(device="cpu"), top_n=3)
    queries = [f"question {i} about apples" for i in range(40)]
    expected = [[d.model_dump() for d in compressor.compress_documents(DOCS, q)] for q in queries]

    async def main() -> list[list[dict[str, object]]]:
        results = await asyncio.gather(*(compressor.acompress_documents(DOCS, q) for q in queries))
        return [[d.model_dump() for d in r] for r in results]

    assert asyncio.run(main()) == expected


@pytest.mark.slow
def test_hybrid_retriever_end_to_end_with_real_encoder(tiny_model: str) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever

    from rerank_plugins.data import load_demo_corpus

    docs = [Document(page_content=p.text, id=p.id, metadata={"title": p.title}) for p in load_demo_corpus()]
    retriever = HybridRetriever.from_documents(docs, k=10)
    hits = retriever.invoke("Which vitamin does the skin make from sunlight?")
    assert len(hits) == 10
    assert len({d.id for d in hits}) == 10
    assert "health-02" in [d.id for d in hits[:3]]
    assert set(hits[0].metadata["retrieval_sources"]) <= {"bm25", "dense"}
    assert docs[0].metadata == {"title": docs[0].metadata["title"]}  # originals untouched
    compressor = RerankCompressor(model=tiny_model, config=RerankConfig(device="cpu"), top_n=3)
    pipeline = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever)
    out = pipeline.invoke("Which vitamin does the skin make from sunlight?")
    assert len(out) == 3
    assert {d.id for d in out} <= {d.id for d in hits}
    assert all(d.metadata["retrieval_sources"] for d in out)


def test_after_langchains_own_ensemble_retriever() -> None:
    pytest.importorskip("langchain_classic")
    from langchain_classic.retrievers import EnsembleRetriever

    first = FixedRetriever(docs=[DOCS[2], DOCS[0]])
    second = FixedRetriever(docs=[DOCS[1], DOCS[3]])
    ensemble = EnsembleRetriever(retrievers=[first, second], weights=[0.5, 0.5])
    candidates = ensemble.invoke(QUERY)
    out = RerankCompressor(model=OverlapScorer(), top_n=3).compress_documents(candidates, QUERY)
    assert [d.id for d in out] == ["a", "b", "c"]
    assert len({d.id for d in out}) == len(out)
