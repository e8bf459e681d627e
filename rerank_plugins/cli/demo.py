"""``rerank-plugins demo``: the bundled questions through a LangChain pipeline and a LlamaIndex query engine."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

from rerank_plugins.cli._common import add_model_options, config_from_args
from rerank_plugins.config import RerankConfig
from rerank_plugins.data import load_demo_corpus, load_demo_questions


def register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="rerank questions over the bundled corpus through LangChain and LlamaIndex (offline)",
        description="Runs the bundled questions through a LangChain pipeline and a LlamaIndex query engine "
        "(hybrid BM25 + dense candidates -> rerank -> top-k) and prints first-stage vs reranked results.",
        epilog="examples:\n  rerank-plugins demo\n  rerank-plugins demo --model path/to/cross-encoder --top-k 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(demo)
    demo.add_argument("--top-k", type=int, default=3, help="results kept after reranking (default 3)")
    demo.add_argument("--candidates", type=int, default=10, help="hybrid candidates per question (default 10)")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = config_from_args(args)
    return run_demo(cfg, top_k=args.top_k, candidates=args.candidates, out=sys.stdout)


def _line(rank: int, doc_id: str, score: float | None, text: str, answer: str) -> str:
    mark = "*" if doc_id == answer else " "
    s = "   -  " if score is None else f"{score:6.3f}"
    return f"   {mark} {rank}. [{doc_id:<10}] {s}  {text[:70]}"


def run_demo(config: RerankConfig, *, top_k: int = 3, candidates: int = 10, out: TextIO) -> int:
    """Run every bundled question through both pipelines and print the comparison."""
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.schema import TextNode

    from rerank_plugins.adapters.langchain import HybridRetriever, RerankCompressor
    from rerank_plugins.adapters.llamaindex import HybridNodeRetriever, RerankNodePostprocessor

    corpus = load_demo_corpus()
    questions = load_demo_questions()
    cfg = config.merged(top_n=top_k)
    t0 = time.perf_counter()
    compressor = RerankCompressor(config=cfg)
    postprocessor = RerankNodePostprocessor(config=cfg)
    load_s = time.perf_counter() - t0
    shared = compressor.scorer is postprocessor.scorer

    docs = [Document(page_content=p.text, metadata={"title": p.title}, id=p.id) for p in corpus]
    retriever = HybridRetriever.from_documents(docs, k=candidates)
    # LCEL: fetch candidates and pass the query along, then rerank.
    chain = RunnableParallel(docs=retriever, query=RunnablePassthrough()) | RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["query"])
    )
    nodes = [TextNode(text=p.text, id_=p.id, metadata={"title": p.title}) for p in corpus]
    engine = RetrieverQueryEngine.from_args(
        HybridNodeRetriever(nodes, k=candidates), llm=MockLLM(), node_postprocessors=[postprocessor]
    )

    out.write(
        f"rerank-plugins demo: {len(corpus)} passages, {len(questions)} questions, "
        f"{candidates} hybrid (BM25 + all-MiniLM-L6-v2, RRF) candidates -> top {top_k}\n"
    )
    backend = getattr(compressor.scorer, "backend", None)  # what backend="auto" chose (int8 for the shipped model)
    out.write(f"cross-encoder: {compressor.scorer.name}{f' ({backend})' if backend else ''}\n")
    out.write(f"loaded in {load_s:.1f} s; one shared scorer for both adapters: {shared}\n")
    out.write("'*' marks the passage that answers the question\n\n")

    hits = {"first stage": 0, "LangChain": 0, "LlamaIndex": 0}
    times = {"LangChain": 0.0, "LlamaIndex": 0.0}
    for question, answer in questions:
        first = retriever.invoke(question)
        t = time.perf_counter()
        lc = chain.invoke(question)
        times["LangChain"] += time.perf_counter() - t
        t = time.perf_counter()
        li = engine.query(question).source_nodes
        times["LlamaIndex"] += time.perf_counter() - t
        hits["first stage"] += bool(first) and first[0].id == answer
        hits["LangChain"] += bool(lc) and lc[0].id == answer
        hits["LlamaIndex"] += bool(li) and li[0].node.node_id == answer
        out.write(f"Q: {question}\n  first stage (hybrid):\n")
        for i, d in enumerate(first[:top_k], 1):
            out.write(_line(i, d.id or "", d.metadata.get("retrieval_score"), d.page_content, answer) + "\n")
        out.write("  reranked (LangChain):\n")
        for i, d in enumerate(lc, 1):
            out.write(_line(i, d.id or "", d.metadata["relevance_score"], d.page_content, answer) + "\n")
        same = [d.id for d in lc] == [n.node.node_id for n in li]
        out.write(f"  reranked (LlamaIndex): {'same order' if same else [n.node.node_id for n in li]}\n\n")

    n = len(questions)
    out.write("answer ranked first:\n")
    for name, h in hits.items():
        out.write(f"  {name:<12} {h:>2}/{n}\n")
    out.write(
        f"mean time per question (candidates + rerank): LangChain {1000 * times['LangChain'] / n:.0f} ms, "
        f"LlamaIndex {1000 * times['LlamaIndex'] / n:.0f} ms\n"
    )
    return 0
