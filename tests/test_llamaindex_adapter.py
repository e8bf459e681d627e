from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rerank_plugins import RerankConfig
from rerank_plugins.adapters.llamaindex import HybridNodeRetriever, RerankNodePostprocessor
from tests.conftest import OverlapScorer

QUERY = "are green apples sour"


def nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text="green apples are sour", id_="a", metadata={"file": "a.txt"}), score=0.2),
        NodeWithScore(node=TextNode(text="red apples are sweet", id_="b"), score=0.0),
        NodeWithScore(node=TextNode(text="bananas are yellow", id_="c"), score=None),
        NodeWithScore(node=TextNode(text="green apples are sour", id_="a", metadata={"file": "a.txt"}), score=0.7),
    ]


class Recorder(BaseEventHandler):
    events: list[Any] = []  # noqa: RUF012 (a pydantic field, copied per instance)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, ReRankStartEvent | ReRankEndEvent):
            self.events.append(event)


@pytest.fixture
def recorder() -> Recorder:
    handler = Recorder(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


def test_scores_dedupe_and_metadata() -> None:
    out = RerankNodePostprocessor(model=OverlapScorer(), top_n=2).postprocess_nodes(nodes(), query_str=QUERY)
    assert [n.node.node_id for n in out] == ["a", "b"]
    assert out[0].score == 4.0
    meta = out[0].node.metadata
    assert meta["file"] == "a.txt"
    assert meta["retrieval_score"] == 0.7
    assert meta["relevance_score"] == 4.0
    assert meta["retrieval_rank"] == 1
    # our keys stay out of the LLM prompt and the embeddings
    assert "relevance_score" in out[0].node.excluded_llm_metadata_keys
    assert "retrieval_score" not in out[0].node.get_content(metadata_mode="llm")  # type: ignore[arg-type]


def test_zero_and_none_retrieval_scores_are_ordered_by_relevance() -> None:
    out = RerankNodePostprocessor(model=OverlapScorer(), top_n=3).postprocess_nodes(nodes(), query_str=QUERY)
    assert [n.score for n in out] == [4.0, 2.0, 1.0]


def test_callers_nodes_are_never_mutated() -> None:
    given = nodes()
    before = copy.deepcopy(given)
    post = RerankNodePostprocessor(model=OverlapScorer(), top_n=3)
    first = post.postprocess_nodes(given, query_str=QUERY)
    assert [n.model_dump() for n in given] == [n.model_dump() for n in before]
    second = post.postprocess_nodes(given, query_str=QUERY)
    assert [n.model_dump() for n in first] == [n.model_dump() for n in second]


def test_any_iterable_of_nodes_and_no_shared_nested_metadata() -> None:
    """Issue 22 #11: a generator of nodes raised TypeError; outputs shared nested metadata with inputs."""
    tagged = NodeWithScore(node=TextNode(text="green apples are sour", id_="t", metadata={"tags": ["x"]}), score=0.1)
    post = RerankNodePostprocessor(model=OverlapScorer(), top_n=None)
    out = post.postprocess_nodes((n for n in [tagged, *nodes()[1:3]]), query_str=QUERY)
    assert next(n.node.node_id for n in out) == "t"
    assert len(out) == 3
    out[0].node.metadata["tags"].append("changed")
    assert tagged.node.metadata["tags"] == ["x"]
    assert len(asyncio.run(post.apostprocess_nodes(iter(nodes()), query_str=QUERY))) == 3


def test_to_json_with_a_scorer_instance_names_its_model() -> None:
    """Issue 23 #7: RerankNodePostprocessor(model=<Scorer>).to_json() raised TypeError."""
    import json

    assert json.loads(RerankNodePostprocessor(model=OverlapScorer(), top_n=2).to_json())["model"] == "overlap"


def test_events_on_every_path(recorder: Recorder) -> None:
    post = RerankNodePostprocessor(model=OverlapScorer(), top_n=2)
    post.postprocess_nodes(nodes(), query_str=QUERY)
    post.postprocess_nodes([], query_str=QUERY)
    with pytest.raises(ValueError, match="query is required"):
        post.postprocess_nodes(nodes())
    asyncio.run(post.apostprocess_nodes(nodes(), query_str=QUERY))
    kinds = [type(e).__name__ for e in recorder.events]
    assert kinds == ["ReRankStartEvent", "ReRankEndEvent"] * 4
    assert recorder.events[0].top_n == 2
    assert recorder.events[0].model_name == "overlap"
    assert [n.node.node_id for n in recorder.events[1].nodes] == ["a", "b"]
    assert recorder.events[3].nodes == []


def test_end_event_even_when_scoring_fails(recorder: Recorder) -> None:
    from tests.conftest import FixedScorer

    post = RerankNodePostprocessor(model=FixedScorer([float("nan")] * 3))
    with pytest.raises(Exception, match="non-finite"):
        post.postprocess_nodes(nodes(), query_str=QUERY)
    assert [type(e).__name__ for e in recorder.events] == ["ReRankStartEvent", "ReRankEndEvent"]


def test_class_name_and_async() -> None:
    post = RerankNodePostprocessor(model=OverlapScorer(), top_n=2)
    assert post.class_name() == "RerankNodePostprocessor"
    out = asyncio.run(post.apostprocess_nodes(nodes(), QueryBundle(QUERY)))
    assert [n.node.node_id for n in out] == ["a", "b"]


def test_both_adapters_share_one_scorer(tiny_model: str) -> None:
    from rerank_plugins.adapters.langchain import RerankCompressor

    cfg = RerankConfig(model=tiny_model, device="cpu")
    lc = RerankCompressor(config=cfg, top_n=2)
    li = RerankNodePostprocessor(config=cfg, top_n=4)
    assert lc.scorer is li.scorer


def test_in_a_retriever_query_engine_with_mock_llm(tiny_model: str) -> None:
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    from rerank_plugins.data import load_demo_corpus

    corpus = load_demo_corpus()
    retriever = HybridNodeRetriever([TextNode(text=p.text, id_=p.id) for p in corpus], k=8, use_dense=False)
    post = RerankNodePostprocessor(model=tiny_model, config=RerankConfig(device="cpu"), top_n=3)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), node_postprocessors=[post])
    response = engine.query("Which planet is the hottest?")
    assert len(response.source_nodes) == 3
    scores = [n.score for n in response.source_nodes]
    assert scores == sorted(scores, reverse=True)
    assert all(n.node.metadata["retrieval_sources"] == ["bm25"] for n in response.source_nodes)


def test_after_query_fusion_retriever(tiny_model: str) -> None:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever

    from rerank_plugins.data import load_demo_corpus

    text_nodes = [TextNode(text=p.text, id_=p.id) for p in load_demo_corpus()]
    vector = VectorStoreIndex(text_nodes, embed_model=MockEmbedding(embed_dim=8)).as_retriever(similarity_top_k=5)
    bm25 = HybridNodeRetriever(text_nodes, k=5, use_dense=False)
    fusion = QueryFusionRetriever(
        [vector, bm25], mode="reciprocal_rerank", num_queries=1, similarity_top_k=8, use_async=False, llm=MockLLM()
    )
    candidates = fusion.retrieve("Why does bread go stale?")
    post = RerankNodePostprocessor(model=tiny_model, config=RerankConfig(device="cpu"), top_n=4)
    out = post.postprocess_nodes(candidates, query_str="Why does bread go stale?")
    assert len(out) == 4
    assert {n.node.node_id for n in out} <= {n.node.node_id for n in candidates}
    assert all(isinstance(n.node.metadata["retrieval_score"], float) for n in out)


def test_a_plain_string_query_is_accepted_like_a_query_bundle() -> None:
    post = RerankNodePostprocessor(model=OverlapScorer(), top_n=2)
    # RetrieverQueryEngine.retrieve("...") hands the string straight to the postprocessors
    by_string = post._postprocess_nodes(nodes(), QUERY)  # type: ignore[arg-type]
    by_bundle = post.postprocess_nodes(nodes(), QueryBundle(QUERY))
    assert [(n.node.node_id, n.score) for n in by_string] == [(n.node.node_id, n.score) for n in by_bundle]
