"""Property-based invariants of the pipeline and both adapters (bounded example counts)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank_plugins import Candidate, RerankConfig, rerank_candidates
from tests.conftest import OverlapScorer

WORDS = ["apple", "green", "sour", "red", "sweet", "banana", "yellow", "bread", "rise", "x"]
text = st.lists(st.sampled_from(WORDS), min_size=0, max_size=6).map(" ".join) | st.text(max_size=20)
candidate = st.builds(
    Candidate,
    id=st.one_of(st.none(), st.sampled_from(list("abcdefgh"))),
    text=text,
    first_stage_score=st.one_of(st.none(), st.just(0.0), st.floats(-5, 5, allow_nan=False)),
)
query = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
configs = st.builds(
    RerankConfig,
    top_n=st.one_of(st.none(), st.integers(1, 6)),
    score_threshold=st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.0, 3.0])),
    min_keep=st.integers(0, 1),
    max_candidates=st.one_of(st.none(), st.integers(1, 10)),
    activation=st.just("raw"),
    dedupe_by_content=st.booleans(),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(q=query, items=st.lists(candidate, max_size=12), cfg=configs)
def test_pipeline_invariants(q: str, items: list[Candidate], cfg: RerankConfig) -> None:
    before = copy.deepcopy(items)
    result = rerank_candidates(q, items, OverlapScorer(), cfg)
    assert items == before  # nothing mutated
    kept = [r.candidate for r in result.items]
    # every candidate returned or deliberately dropped
    assert len(kept) + len(result.dropped) == len(items)
    # subset of the input, no duplicates
    assert all(any(c.id == i.id and c.text == i.text for i in items) for c in kept)
    # (candidates with neither an id nor text, such as image nodes, are never merged: nothing says they are one)
    keys = [(c.id, c.text) for c in kept if c.id is not None or c.text.strip()]
    assert len(keys) == len(set(keys))
    # ordered by score; limits respected
    scores = [r.score for r in result.items]
    assert scores == sorted(scores, reverse=True)
    if cfg.top_n is not None:
        assert len(kept) <= cfg.top_n
    if cfg.score_threshold is not None:
        below = [s for s in scores if s < cfg.score_threshold]
        assert len(below) <= cfg.min_keep
    # deterministic
    again = rerank_candidates(q, items, OverlapScorer(), cfg)
    assert [(r.candidate, r.score) for r in again.items] == [(r.candidate, r.score) for r in result.items]


@FAST
@given(q=query, texts=st.lists(text, max_size=8), top_n=st.integers(1, 5))
def test_langchain_adapter_invariants(q: str, texts: list[str], top_n: int) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from rerank_plugins.adapters.langchain import RerankCompressor

    docs = [Document(page_content=t, metadata={"n": i, "tags": ["x"]}, id=f"d{i}") for i, t in enumerate(texts)]
    before = [d.model_dump() for d in docs]
    out = RerankCompressor(model=OverlapScorer(), top_n=top_n).compress_documents(docs, q)
    assert [d.model_dump() for d in docs] == before
    assert len(out) <= top_n
    assert len({d.id for d in out}) == len(out)
    by_id = {d.id: d for d in docs}
    for d in out:
        original = by_id[d.id]
        assert d.page_content == original.page_content
        assert {k: d.metadata[k] for k in original.metadata} == original.metadata
        assert "relevance_score" in d.metadata
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True)


@FAST
@given(q=query, texts=st.lists(text, max_size=8), top_n=st.integers(1, 5))
def test_llamaindex_adapter_invariants(q: str, texts: list[str], top_n: int) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor

    nodes = [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"n": i}), score=[None, 0.0, 1.5][i % 3])
        for i, t in enumerate(texts)
    ]
    before = [n.model_dump() for n in nodes]
    out = RerankNodePostprocessor(model=OverlapScorer(), top_n=top_n).postprocess_nodes(nodes, query_str=q)
    assert [n.model_dump() for n in nodes] == before
    assert len(out) <= top_n
    assert len({n.node.node_id for n in out}) == len(out)
    by_id = {n.node.node_id: n for n in nodes}
    for n in out:
        original = by_id[n.node.node_id]
        assert n.node.get_content() == original.node.get_content()
        assert n.node.metadata["n"] == original.node.metadata["n"]
        # duplicates (same non-blank text) were merged keeping the best first-stage score of the copies
        content = original.node.get_content()
        same = [m for m in nodes if m.node.get_content() == content] if content.strip() else [original]
        copies = [m.score for m in same if m.score is not None]
        assert n.node.metadata["retrieval_score"] == (max(copies) if copies else None)
    scores = [n.score for n in out]
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
