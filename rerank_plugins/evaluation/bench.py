"""Speed, memory and quality of rerankers side by side, on the same weights and the same candidates.

``rerank-plugins bench`` (or ``python benchmarks/peers.py``) builds a workload once (SciFact test
queries with their hybrid BM25 + dense top-``depth`` candidates, or WikiQA test candidate lists),
then runs each system in its own fresh process, one after the other, so each one's peak memory
is its own and every timing comes from the same run on the same machine:

* peers: LangChain's ``CrossEncoderReranker`` over ``HuggingFaceCrossEncoder``, LlamaIndex's
  ``SentenceTransformerRerank``, sentence-transformers ``CrossEncoder.predict``, and FlashRank
  pointed at an ONNX export of the same model;
* ours: each backend (torch, ONNX Runtime fp32 / int8) through our LangChain and LlamaIndex adapters,
  plus variants (shorter ``max_length``, ``time_budget_ms``).

Every system gets an fp32 copy of the model (the shipped one stores fp16 weights, which some peers
would otherwise run in half precision: several times slower on a CPU). Per system: pairs/s, p50 /
p95 latency per query, peak RSS, nDCG@10 of its ranking, ratios to the slowest system and to our
torch baseline. Also: latency against candidate count and passage length, both adapters vs one in a
process, 1,000 vs 100 candidates of 512 tokens, and the fp32 path's FLOP/s against a measured matmul
rate. Results go to JSON, a markdown table and PNG plots.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

__all__ = ["SYSTEMS", "Workload", "build_workload", "build_workloads", "parse_systems", "run_benchmark"]

logger = logging.getLogger(__name__)

#: Our default settings (backend="auto": on a CPU, the backend the model's folder names (the shipped model:
#: int8 ONNX), else fp32 ONNX; cascade_keep="auto", scorer="windowed"), through each adapter.
DEFAULT_LC = "ours default (auto backend + cascade + windows), langchain"
DEFAULT_LI = "ours default (auto backend + cascade + windows), llamaindex"
#: The same work as the peers: every candidate read once, truncated at 512 tokens (the library's
#: default reads long passages in windows of 256 tokens instead, which is more work and ranks better).
FULL_READ: dict[str, Any] = {"scorer": "cross-encoder", "max_length": 512, "cascade_keep": None}
#: name -> (kind, settings). Kinds are implemented in :func:`_make_system`. "pairs/s" counts the
#: candidates reranked per second (with a cascade, fewer of them reach the full model).
SYSTEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "langchain CrossEncoderReranker": ("langchain-peer", {}),
    "llamaindex SentenceTransformerRerank": ("llamaindex-peer", {}),
    "sentence-transformers predict": ("st-predict", {}),
    "flashrank (onnx fp32 export)": ("flashrank", {}),
    "ours torch, langchain": ("ours-langchain", {**FULL_READ, "backend": "torch"}),
    "ours onnx, langchain": ("ours-langchain", {**FULL_READ, "backend": "onnx"}),
    "ours old default (onnx + cascade, truncated at 512), langchain": (
        "ours-langchain",
        {**FULL_READ, "cascade_keep": "auto"},
    ),
    DEFAULT_LC: ("ours-langchain", {}),
    DEFAULT_LI: ("ours-llamaindex", {}),
    "ours onnx-int8, langchain": ("ours-langchain", {**FULL_READ, "backend": "onnx-int8"}),
    "ours onnx fp32 + cascade + windows, langchain": ("ours-langchain", {"backend": "onnx"}),
    "ours onnx-int8 + cascade + windows, langchain": ("ours-langchain", {"backend": "onnx-int8"}),
    "ours onnx-int8-ffn + cascade + windows, langchain": ("ours-langchain", {"backend": "onnx-int8-ffn"}),
    # the default with one cascade knob turned: fewer full reads, a cheaper pass, or none (docs/benchmarks.md)
    "ours default + cascade keep 20, langchain": ("ours-langchain", {"cascade": {"keep": 20}}),
    "ours default + 64-token cheap pass, langchain": ("ours-langchain", {"cascade": {"max_length": 64}}),
    "ours default + first-stage pick, langchain": ("ours-langchain", {"cascade": {"pick": "first-stage"}}),
    "ours default + cheap-pass pick, langchain": ("ours-langchain", {"cascade": {"pick": "cheap-pass"}}),
    "ours onnx-int8 + time_budget_ms=1500, langchain": (
        "ours-langchain",
        {**FULL_READ, "backend": "onnx-int8", "time_budget_ms": 1500},
    ),
}
BASELINE = "ours torch, langchain"
#: Each system's queries are timed again until this many seconds were timed (at most MAX_ROUNDS rounds):
#: a single pass over 20 short WikiQA lists lasts about a second and varied 1.5x between identical systems.
MIN_TIMED_SECONDS = 10.0
MAX_ROUNDS = 10
#: The peers the targets compare the default path with.
PEERS = {"x langchain": "langchain CrossEncoderReranker", "x llamaindex": "llamaindex SentenceTransformerRerank"}


@dataclass
class Workload:
    """Queries with their candidates (first-stage order) and relevance judgements."""

    name: str
    queries: list[tuple[str, str]]  # (query id, text)
    candidates: dict[str, list[tuple[str, str]]]  # query id -> [(doc id, text)]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    #: query id -> doc id -> the retrievers that returned it (``retrieval_sources`` of a hybrid first stage)
    sources: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Workload:
        raw = json.loads(text)
        return cls(
            raw["name"],
            [tuple(q) for q in raw["queries"]],  # type: ignore[misc]
            {q: [tuple(c) for c in cs] for q, cs in raw["candidates"].items()},  # type: ignore[misc]
            raw["qrels"],
            raw.get("sources", {}),
        )


def parse_systems(text: str) -> list[str]:
    """Split a comma-separated list of system names, which themselves contain ", " ("ours onnx, langchain").

    Consecutive pieces are joined into the longest known name; an unknown piece raises.
    """
    from rerank_plugins.errors import RerankPluginsError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    out: list[str] = []
    i = 0
    while i < len(parts):
        for j in range(len(parts), i, -1):  # longest match first
            name = ", ".join(parts[i:j])
            if name in SYSTEMS:
                out.append(name)
                i = j
                break
        else:
            raise RerankPluginsError(f"unknown system {parts[i]!r} in --systems; known: {'; '.join(SYSTEMS)}")
    return out


def build_workload(data: Path, kind: str, n_queries: int, depth: int) -> Workload:
    """SciFact test (hybrid top-``depth``) or WikiQA test (official candidate lists).

    ``kind`` may name its own depth, ``scifact@30``: the depths RAG pipelines use (20, 30, 50) are
    compared with 100 in one run that way.
    """
    return build_workloads(data, [kind], n_queries, depth)[0]


def _workload_depth(kind: str, depth: int) -> tuple[str, int]:
    folder, _, own_depth = kind.partition("@")
    if own_depth:
        if not own_depth.isdigit() or int(own_depth) < 1:
            raise ValueError(f"workload {kind!r}: the depth after '@' must be a positive number, e.g. scifact@30")
        depth = int(own_depth)
    return folder, depth


def build_workloads(data: Path, kinds: Sequence[str], n_queries: int, depth: int) -> list[Workload]:
    """:func:`build_workload` of each of ``kinds``; the workloads of one collection share its first stage.

    BM25 and the dense retriever run once per collection, at the deepest depth asked for; each
    workload fuses their first ``depth`` hits (as the hybrid stage of that depth would), so
    ``scifact@20,scifact@30,scifact@50,scifact@100`` encodes the corpus once, not four times.
    """
    from rerank_plugins.evaluation.datasets import load_beir
    from rerank_plugins.evaluation.harness import first_stage_runs, hybrid_run
    from rerank_plugins.evaluation.metrics import ranked_ids

    wanted = [(kind, *_workload_depth(kind, depth)) for kind in kinds]
    deepest: dict[str, int] = {}
    for _, folder, own in wanted:
        deepest[folder] = max(deepest.get(folder, 0), own)
    collections: dict[str, tuple[Any, list[str], dict[str, Any]]] = {}
    out = []
    for kind, folder, own in wanted:
        if folder not in collections:
            ds = load_beir(data / folder, "test")
            qids = [q for q in ds.queries if any(g > 0 for g in ds.qrels.get(q, {}).values())][:n_queries]
            runs = {} if ds.candidates else first_stage_runs(ds, qids, ["bm25", "dense"], deepest[folder])[0]
            collections[folder] = (ds, qids, runs)
        ds, qids, runs = collections[folder]
        sources: dict[str, dict[str, list[str]]] = {}
        if ds.candidates:
            cands = {q: [(d, ds.doc_text(d)) for d, _ in ds.candidates[q]] for q in qids}
        else:
            hybrid = hybrid_run(runs["bm25"], runs["dense"], qids, own)
            cands = {q: [(d, ds.doc_text(d)) for d in ranked_ids(hybrid[q])[:own]] for q in qids}
            for q in qids:  # as a hybrid retriever marks its hits (retrieval_sources)
                hits = {r: set(ranked_ids(runs[r][q])[:own]) for r in ("bm25", "dense")}
                sources[q] = {d: [r for r in ("bm25", "dense") if d in hits[r]] for d, _ in cands[q]}
        out.append(Workload(kind, [(q, ds.queries[q]) for q in qids], cands, {q: ds.qrels[q] for q in qids}, sources))
    return out


class RankFn(Protocol):
    """One system: (query, [(doc id, text)], doc id -> retrievers) -> doc ids in ranked order."""

    def __call__(
        self, query: str, cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None = None
    ) -> list[str]: ...


def _metadata(doc_id: str, sources: Mapping[str, list[str]] | None) -> dict[str, Any]:
    """A candidate's metadata: its retrievers under ``retrieval_sources``, as a hybrid retriever sets it."""
    from rerank_plugins.adapters._common import RETRIEVAL_SOURCES

    return {RETRIEVAL_SOURCES: sources[doc_id]} if sources and doc_id in sources else {}


def _documents(cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None) -> list[Any]:
    """LangChain documents of the candidates."""
    from langchain_core.documents import Document

    return [Document(page_content=t, id=d, metadata=_metadata(d, sources)) for d, t in cands]


def _nodes(cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None) -> list[Any]:
    """LlamaIndex nodes of the candidates."""
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t, id_=d, metadata=_metadata(d, sources))) for d, t in cands]


def _make_system(kind: str, settings: dict[str, Any], model: str, onnx_dir: str) -> RankFn:
    """A function (query, [(doc id, text)], sources) -> doc ids in ranked order, for one system. Every
    LangChain / LlamaIndex system gets the same documents, with the workload's ``retrieval_sources``."""
    if kind == "langchain-peer":
        from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder

        reranker = CrossEncoderReranker(
            model=HuggingFaceCrossEncoder(model_name=model, model_kwargs={"device": "cpu"}), top_n=10_000
        )

        def lc_peer(
            query: str, cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None = None
        ) -> list[str]:
            return [str(d.id) for d in reranker.compress_documents(_documents(cands, sources), query)]

        return lc_peer
    if kind == "llamaindex-peer":
        from llama_index.core.postprocessor import SentenceTransformerRerank
        from llama_index.core.schema import QueryBundle

        post = SentenceTransformerRerank(model=model, top_n=10_000, device="cpu")

        def li_peer(
            query: str, cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None = None
        ) -> list[str]:
            return [n.node.node_id for n in post.postprocess_nodes(_nodes(cands, sources), QueryBundle(query))]

        return li_peer
    if kind == "st-predict":
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(model, device="cpu")

        def st(
            query: str, cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None = None
        ) -> list[str]:
            scores = ce.predict([(query, t) for _, t in cands], show_progress_bar=False)
            order = sorted(range(len(cands)), key=lambda i: -float(scores[i]))
            return [cands[i][0] for i in order]

        return st
    if kind == "flashrank":
        import sys

        from flashrank import Ranker, RerankRequest

        # FlashRank only loads models named in its own table; register our export under its file name.
        sys.modules["flashrank.Ranker"].model_file_map["local-export"] = "model.onnx"
        ranker = Ranker(model_name="local-export", cache_dir=onnx_dir, max_length=512, log_level="WARNING")

        def fr(
            query: str, cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None = None
        ) -> list[str]:
            out = ranker.rerank(RerankRequest(query=query, passages=[{"id": d, "text": t} for d, t in cands]))
            return [str(p["id"]) for p in out]

        return fr
    from rerank_plugins.config import RerankConfig

    config = RerankConfig.resolve(environ={}, model=model, device="cpu", top_n=None, max_candidates=None, **settings)
    if kind == "ours-langchain":
        from rerank_plugins.adapters.langchain import RerankCompressor

        compressor = RerankCompressor(config=config)

        def ours_lc(
            query: str, cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None = None
        ) -> list[str]:
            return [str(d.id) for d in compressor.compress_documents(_documents(cands, sources), query)]

        return ours_lc
    if kind == "ours-llamaindex":
        from llama_index.core.schema import QueryBundle

        from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor

        node_post = RerankNodePostprocessor(config=config)

        def ours_li(
            query: str, cands: Sequence[tuple[str, str]], sources: Mapping[str, list[str]] | None = None
        ) -> list[str]:
            return [n.node.node_id for n in node_post.postprocess_nodes(_nodes(cands, sources), QueryBundle(query))]

        return ours_li
    raise ValueError(f"unknown system kind {kind!r}")


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _run_system(name: str, workload_path: str, model: str, onnx_dir: str, out: Any) -> None:
    """Child process: load one system, warm it up, time every query, report."""
    logging.basicConfig(level=logging.WARNING)
    try:
        from rerank_plugins.evaluation.metrics import evaluate

        wl = Workload.from_json(Path(workload_path).read_text())
        kind, settings = SYSTEMS[name]
        t = time.perf_counter()
        rank = _make_system(kind, settings, model, onnx_dir)
        load_s = time.perf_counter() - t
        first_q, first_text = wl.queries[0]
        rank(first_text, wl.candidates[first_q][:8], wl.sources.get(first_q))  # warm-up
        # a small workload (WikiQA: about a second) is timed over several rounds, each query's median kept
        times: dict[str, list[float]] = {q: [] for q, _ in wl.queries}
        run, pairs, rounds, spent = {}, 0, 0, 0.0
        while rounds == 0 or (spent < MIN_TIMED_SECONDS and rounds < MAX_ROUNDS):
            for q, text in wl.queries:
                cands = wl.candidates[q]
                t = time.perf_counter()
                ranked = rank(text, cands, wl.sources.get(q))
                times[q].append(time.perf_counter() - t)
                spent += times[q][-1]
                if rounds == 0:
                    assert sorted(ranked) == sorted(d for d, _ in cands), f"{name} lost or invented candidates"
                    run[q] = {d: float(len(ranked) - i) for i, d in enumerate(ranked)}
                    pairs += len(cands)
            rounds += 1
        latencies = [statistics.median(v) for v in times.values()]
        quality = evaluate(wl.qrels, run, ["ndcg@10"])["ndcg@10"]
        out.put(
            {
                "system": name,
                "pairs/s": pairs / sum(latencies),
                "p50 s": _percentile(latencies, 0.5),
                "p95 s": _percentile(latencies, 0.95),
                "peak RSS MiB": _peak_rss_mib(),
                "ndcg@10": quality,
                "load s": load_s,
                "queries": len(latencies),
                "pairs": pairs,
                "rounds": rounds,
            }
        )
    except Exception as exc:  # reported, not raised: one broken peer must not hide the others
        out.put({"system": name, "error": f"{type(exc).__name__}: {exc}"})


def _in_child(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def _curves(workload_path: str, model: str, systems: Sequence[str], out: Any) -> None:
    """Child process: latency vs candidate count and vs passage length, per system."""
    logging.basicConfig(level=logging.WARNING)
    wl = Workload.from_json(Path(workload_path).read_text())
    pool = [c for q, _ in wl.queries for c in wl.candidates[q]]
    query = wl.queries[0][1]
    result: dict[str, Any] = {"counts": [10, 25, 50, 100, 200], "lengths": [32, 64, 128, 256, 512]}
    for name in systems:
        kind, settings = SYSTEMS[name]
        rank = _make_system(kind, settings, model, "")
        rank(query, pool[:8])
        by_count = []
        for n in result["counts"]:
            times = []
            for rep in range(2):
                cands = pool[rep * 7 : rep * 7 + n]
                t = time.perf_counter()
                rank(query, cands)
                times.append(time.perf_counter() - t)
            by_count.append(min(times))
        by_length = []
        words = " ".join(t for _, t in pool).split()
        for length in result["lengths"]:
            n_words = int(length * 0.75)  # ~1.3 word pieces per word in SciFact text
            cands = [(f"d{i}", " ".join(words[i * 97 : i * 97 + n_words])) for i in range(50)]
            t = time.perf_counter()
            rank(query, cands)
            by_length.append(time.perf_counter() - t)
        result[name] = {"by_count": by_count, "by_length": by_length}
    out.put(result)


def _memory_probe(workload_path: str, model: str, mode: str, out: Any) -> None:
    """Child process: peak RSS of the default path in one of several set-ups."""
    logging.basicConfig(level=logging.WARNING)
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor
    from rerank_plugins.config import RerankConfig

    wl = Workload.from_json(Path(workload_path).read_text())
    pool = [c for q, _ in wl.queries for c in wl.candidates[q]]
    query = wl.queries[0][1]
    n = 1000 if mode == "1000 candidates" else 100
    long_pool = [(f"{i}-{d}", t) for i in range(n // len(pool) + 1) for d, t in pool][:n]
    config = RerankConfig(scorer={"model": model, "device": "cpu"}, top_n=5, max_candidates=None)
    docs = [Document(page_content=t, id=d) for d, t in long_pool]
    RerankCompressor(config=config).compress_documents(docs, query)
    if mode == "both adapters":
        nodes = [NodeWithScore(node=TextNode(text=t, id_=d)) for d, t in long_pool]
        RerankNodePostprocessor(config=config).postprocess_nodes(nodes, QueryBundle(query))
    out.put({"mode": mode, "peak RSS MiB": _peak_rss_mib(), "candidates": n})


def _ort_matmul_rate(threads: int) -> float | None:
    """FLOP/s of a 2048x2048 fp32 matmul in ONNX Runtime (best of 5 rounds of 5), None without it."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    n = 2048
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    return _matmul_rate(lambda: session.run(None, {"a": a, "b": a}), n)


def _matmul_rate(product: Callable[[], object], n: int) -> float:
    """FLOP/s of an n x n matmul ``product``: one warm-up, then the best of 5 rounds of 5."""
    product()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(5):
            product()
        best = min(best, (time.perf_counter() - t) / 5)
    return 2 * n**3 / best


def _flops(workload_path: str, model: str, seconds_by_backend: dict[str, float], out: Any) -> None:
    """Child process: analytic FLOPs of the workload vs a measured fp32 matmul rate."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from rerank_plugins.config import RerankConfig
    from rerank_plugins.scoring.loading import token_budget_batches

    wl = Workload.from_json(Path(workload_path).read_text())
    cfg = AutoConfig.from_pretrained(model)
    tok = AutoTokenizer.from_pretrained(model)
    defaults = RerankConfig()
    max_length = int(FULL_READ["max_length"])  # the FLOPs are those of the full-read systems
    h, layers, ffn = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    total = 0.0
    for q, text in wl.queries:
        enc = tok([text] * len(wl.candidates[q]), [t for _, t in wl.candidates[q]], truncation="only_second")
        lengths = [min(len(ids), max_length) for ids in enc["input_ids"]]
        cap = 1024 if defaults.max_batch_tokens == "auto" else defaults.max_batch_tokens  # as on a CPU
        for batch in token_budget_batches(lengths, defaults.batch_size, cap):
            b, s = len(batch), max(lengths[i] for i in batch)
            total += 2 * b * s * layers * (4 * h * h + 2 * h * ffn) + 4 * b * layers * s * s * h
    a = torch.randn(2048, 2048)
    torch_rate = _matmul_rate(lambda: torch.mm(a, a), 2048)
    # ONNX Runtime's own GEMM kernels can beat torch's on the same CPU: the reference is the faster of the two
    ort_rate = _ort_matmul_rate(torch.get_num_threads())
    matmul = max(torch_rate, ort_rate or 0.0)
    out.put(
        {
            "workload GFLOP": total / 1e9,
            "matmul GFLOP/s (torch fp32, 2048x2048)": torch_rate / 1e9,
            "matmul GFLOP/s (onnxruntime fp32, 2048x2048)": ort_rate / 1e9 if ort_rate else None,
            "achieved": {
                k: {"GFLOP/s": total / s / 1e9, "of matmul": total / s / matmul} for k, s in seconds_by_backend.items()
            },
            "torch threads": torch.get_num_threads(),
        }
    )


def _fp32_copy(model: str, target: Path) -> str:
    """Save ``model`` in float32 (with its tokenizer, calibration, guard and CPU backend) into ``target``."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerank_plugins.scoring.calibration import CALIBRATION_FILE
    from rerank_plugins.scoring.loading import BACKEND_FILE, GUARD_FILE

    if (target / "config.json").exists():
        return str(target)
    m = AutoModelForSequenceClassification.from_pretrained(model, dtype=torch.float32)
    m.save_pretrained(target)
    AutoTokenizer.from_pretrained(model).save_pretrained(target)
    for extra in (CALIBRATION_FILE, GUARD_FILE, BACKEND_FILE):  # the model's own settings, as users get them
        if (Path(model) / extra).exists():
            shutil.copy(Path(model) / extra, target / extra)
    return str(target)


def _onnx_for_flashrank(model: str, target: Path) -> str:
    """An fp32 ONNX export of ``model`` laid out the way FlashRank reads a model directory."""
    import shutil

    from rerank_plugins.config import RerankConfig
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(model, config=RerankConfig(scorer={"device": "cpu", "backend": "onnx"}))
    source = scorer.onnx_path
    assert source is not None  # backend="onnx" above
    folder = target / "local-export"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / "model.onnx")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(model) / name).exists():
            shutil.copy(Path(model) / name, folder / name)
    if not (folder / "special_tokens_map.json").exists():
        (folder / "special_tokens_map.json").write_text(
            json.dumps({k: v for k, v in scorer.tokenizer.special_tokens_map.items() if isinstance(v, str)})
        )
    return str(target)


def run_benchmark(
    data: Path,
    out_dir: Path,
    *,
    model: str | None = None,
    workloads: Sequence[str] = ("scifact", "wikiqa"),
    n_queries: int = 20,
    depth: int = 100,
    systems: Sequence[str] | None = None,
    extras: bool = True,
) -> dict[str, Any]:
    """Run the benchmark; write ``bench.json``, ``bench.md`` and PNG plots into ``out_dir``."""
    from tqdm import tqdm

    from rerank_plugins.scoring.loading import resolve_model

    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "_work"
    work.mkdir(exist_ok=True)
    model_fp32 = _fp32_copy(resolve_model(model), work / "model-fp32")
    onnx_dir = _onnx_for_flashrank(model_fp32, work / "flashrank")
    names = list(systems or SYSTEMS)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "cpu": _cpu_name(),
        "date": date.today().isoformat(),
        "model": str(model or "shipped minilm-l6-rerank"),
        "workloads": {},
    }
    for kind, wl in zip(workloads, build_workloads(data, workloads, n_queries, depth), strict=True):
        path = work / f"workload-{kind}.json"
        path.write_text(wl.to_json())
        rows = []
        for name in tqdm(names, desc=f"bench {kind}", unit="system", disable=None):
            row = _in_child(_run_system, name, str(path), model_fp32, onnx_dir)
            logger.info("%s", row)
            rows.append(row)
        _add_ratios(rows)
        report["workloads"][kind] = {
            "queries": len(wl.queries),
            "pairs": sum(len(c) for c in wl.candidates.values()),
            "rows": rows,
        }
    if extras:
        path = work / f"workload-{workloads[0]}.json"
        rows = report["workloads"][workloads[0]]["rows"]
        curve_names = ("langchain CrossEncoderReranker", BASELINE, "ours onnx, langchain", DEFAULT_LC)
        curve_systems = [s for s in (*curve_names, "ours onnx-int8, langchain") if s in names]
        report["curves"] = _in_child(_curves, str(path), model_fp32, curve_systems)
        report["memory"] = [
            _in_child(_memory_probe, str(path), model_fp32, m)
            for m in ("one adapter", "both adapters", "1000 candidates")
        ]
        seconds = {
            r["system"]: r["pairs"] / r["pairs/s"]
            for r in rows
            if "pairs/s" in r and r["system"] in (BASELINE, "ours onnx, langchain")
        }
        report["flops"] = _in_child(_flops, str(path), model_fp32, seconds)
        _plot(report, out_dir)
    _plot_depths(report, out_dir)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "bench.md").write_text(format_report(report))
    return report


def _cpu_name(cpuinfo: str | None = None) -> str:
    r"""The CPU's model name and the flags that decide what int8 gains (from ``/proc/cpuinfo`` unless given).

    Example:
        >>> _cpu_name("model name : AMD EPYC\nflags : fpu avx2 avx512f avx512_vnni sse4_2\n")
        'AMD EPYC (avx2, avx512f, avx512_vnni)'
    """
    from rerank_plugins.scoring.loading import INT8_DOT_FLAGS, cpu_flags, read_cpuinfo

    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    names = [
        v.strip() for k, _, v in (line.partition(":") for line in cpuinfo.splitlines()) if k.strip() == "model name"
    ]
    flags = cpu_flags(cpuinfo)
    present = [f for f in ("avx2", "avx512f", *INT8_DOT_FLAGS) if f in flags]
    name = names[0] if names else platform.processor() or "unknown"
    return f"{name} ({', '.join(present)})" if present else name


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    ok = [r for r in rows if "pairs/s" in r]
    if not ok:
        return
    slowest = min(r["pairs/s"] for r in ok)
    base = next((r for r in ok if r["system"] == BASELINE), None)
    peers = {col: next((r for r in ok if r["system"] == name), None) for col, name in PEERS.items()}
    for r in ok:
        r["x slowest"] = r["pairs/s"] / slowest
        if base:
            r["x ours torch"] = r["pairs/s"] / base["pairs/s"]
            r["ndcg@10 - ours torch"] = r["ndcg@10"] - base["ndcg@10"]
        for col, peer in peers.items():
            if peer:
                r[col] = r["pairs/s"] / peer["pairs/s"]


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables of a benchmark report."""
    from rerank_plugins.evaluation.harness import format_table

    lines = [f"Machine: {report['cpu']} ({report['machine']}); date {report['date']}; model {report['model']}.", ""]
    lines += [
        "Each system runs in a fresh process: one warm-up call, then every query is timed, in rounds until "
        f"{MIN_TIMED_SECONDS:.0f} s were timed (at most {MAX_ROUNDS} rounds; `rounds`); a query's latency is its "
        "median over the rounds.",
        "",
    ]
    cols = [
        "system",
        "pairs/s",
        "p50 s",
        "p95 s",
        "peak RSS MiB",
        "ndcg@10",
        "x slowest",
        "x ours torch",
        *PEERS,
        "rounds",
    ]
    for kind, block in report["workloads"].items():
        lines += [f"### {kind}: {block['queries']} test queries, {block['pairs']} pairs", ""]
        table = [{c: r.get(c, r.get("error", "")) for c in cols} for r in block["rows"]]
        lines += [format_table(table, markdown=True), ""]
    if "memory" in report:
        mem = {m["mode"]: m["peak RSS MiB"] for m in report["memory"]}
        lines += [
            "Memory (default path, peak RSS of a fresh process): "
            f"one adapter {mem['one adapter']:.0f} MiB, both adapters {mem['both adapters']:.0f} MiB "
            f"(x{mem['both adapters'] / mem['one adapter']:.3f}); 1,000 candidates {mem['1000 candidates']:.0f} MiB "
            f"(+{mem['1000 candidates'] - mem['one adapter']:.0f} MiB over 100).",
            "",
        ]
    if "flops" in report:
        f = report["flops"]
        achieved = "; ".join(
            f"{k}: {v['GFLOP/s']:.1f} GFLOP/s ({v['of matmul']:.0%})" for k, v in f["achieved"].items()
        )
        ort_rate = f.get("matmul GFLOP/s (onnxruntime fp32, 2048x2048)")
        rates = f"torch {f['matmul GFLOP/s (torch fp32, 2048x2048)']:.1f}" + (
            f", ONNX Runtime {ort_rate:.1f}" if ort_rate else ""
        )
        lines += [
            f"Compute: measured fp32 2048x2048 matmul rate ({f['torch threads']} threads): {rates} GFLOP/s "
            f"(percentages are of the faster); achieved on the workload: {achieved}.",
            "",
        ]
    return "\n".join(lines)


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None (with a warning) when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; no plots (pip install matplotlib)")
        return None
    return plt


def _plot(report: dict[str, Any], out_dir: Path) -> None:
    plt = _pyplot()
    if plt is None:
        return
    curves = report["curves"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, data in curves.items():
        if not isinstance(data, dict):
            continue
        axes[0].plot(curves["counts"], data["by_count"], marker="o", label=name)
        axes[1].plot(curves["lengths"], data["by_length"], marker="o", label=name)
    axes[0].set(xlabel="candidates per query", ylabel="seconds per query", title="Latency vs candidate count")
    axes[1].set(
        xlabel="passage length (tokens, approx.)", ylabel="seconds for 50 candidates", title="Latency vs passage length"
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report['cpu']}, {report['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "latency.png", dpi=110)
    plt.close(fig)
    block = next(iter(report["workloads"].values()))
    rows = [r for r in block["rows"] if "pairs/s" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        ax.scatter(r["pairs/s"], r["ndcg@10"], s=40)
        ax.annotate(r["system"], (r["pairs/s"], r["ndcg@10"]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set(
        xlabel="pairs / s (higher is faster)",
        ylabel="nDCG@10",
        title=f"{next(iter(report['workloads']))}: speed vs quality",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "speed_quality.png", dpi=110)
    plt.close(fig)


def depth_series(report: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """collection -> system -> [(depth, p50 seconds)], for collections run at two depths or more (``scifact@N``)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for kind, block in report["workloads"].items():
        folder, _, depth = kind.partition("@")
        if not depth.isdigit():
            continue
        for row in block["rows"]:
            if "p50 s" in row:
                out.setdefault(folder, {}).setdefault(row["system"], []).append((int(depth), row["p50 s"]))
    return {
        folder: {name: sorted(points) for name, points in systems.items()}
        for folder, systems in out.items()
        if len({d for points in systems.values() for d, _ in points}) >= 2
    }


def _plot_depths(report: dict[str, Any], out_dir: Path) -> None:
    """``depths.png``: p50 latency against the number of candidates, one line per system."""
    series = depth_series(report)
    plt = _pyplot() if series else None
    if plt is None:
        return
    fig, axes = plt.subplots(1, len(series), figsize=(8 * len(series), 4.8), squeeze=False)
    for ax, (folder, systems) in zip(axes[0], series.items(), strict=True):
        for name, points in systems.items():
            ax.plot([d for d, _ in points], [p for _, p in points], marker="o", label=name)
        ax.set(xlabel="candidates per query", ylabel="p50 seconds per query", title=f"{folder}: latency vs depth")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['cpu']}, {report['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "depths.png", dpi=110)
    plt.close(fig)
