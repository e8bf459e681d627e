"""Where the default path's time goes: the model's forward passes (cheap pass, full read) vs the rest.

Reranks the hybrid top ``--depths`` of ``--claims`` SciFact train claims with the default settings
(``RerankConfig()``: on a CPU the int8 ONNX model, the 128-token cheap pass over pools larger than 30,
the best 30 read in windows of 256 tokens) through ``rerank_candidates`` (the adapters' code path),
and splits each rerank's seconds into the model's forward passes, counted apart for the cheap pass
and the full read, and everything else (tokenising, windowing, ordering). Also counts the rows
(pairs or windows) and padded tokens each part feeds the model, so the rate the model reads at on this
machine (tokens/s) says how many tokens a time target allows.

    python benchmarks/time_split.py --out benchmarks/results/time-split/scifact-train.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("time_split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--claims", type=int, default=12, help="train claims (the first is a warm-up, not counted)")
    parser.add_argument("--depths", default="30,100")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("bm25s", "httpx", "sentence_transformers", "rerank_plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from rerank_plugins import Candidate, RerankConfig, rerank_candidates
    from rerank_plugins.evaluation.bench import _cpu_name
    from rerank_plugins.evaluation.datasets import load_beir
    from rerank_plugins.evaluation.harness import first_stage_runs
    from rerank_plugins.evaluation.metrics import ranked_ids
    from rerank_plugins.scoring import onnx_backend
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade

    depths = [int(x) for x in args.depths.split(",")]
    ds = load_beir(args.data, "train")
    qids = sorted(q for q in ds.qrels if q in ds.queries)
    qids = sorted(random.Random(args.seed).sample(qids, min(args.claims, len(qids))))
    runs, _ = first_stage_runs(ds, qids, ["hybrid"], max(depths))
    config = RerankConfig()
    scorer = get_scorer(config)
    cascade = resolve_cascade(config, scorer)
    if cascade is None or cascade.scorer is None:
        raise SystemExit("the default settings have no cheap pass here (a GPU?): nothing to split")

    phase = ["full"]
    spent: dict[str, float] = defaultdict(float)
    fed: dict[str, int] = defaultdict(int)
    original = onnx_backend.OnnxRunner.logits

    def timed(self: Any, encoding: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, encoding)
        finally:
            spent[phase[0]] += time.perf_counter() - start
            fed[f"{phase[0]} rows"] += int(encoding["input_ids"].shape[0])
            fed[f"{phase[0]} tokens"] += int(encoding["input_ids"].numel())

    cheap = cascade.scorer
    cheap_score = cheap.score_detailed

    def cheap_pass(pairs: Any) -> Any:
        phase[0] = "cheap"
        try:
            return cheap_score(pairs)
        finally:
            phase[0] = "full"

    onnx_backend.OnnxRunner.logits = timed  # type: ignore[method-assign]
    cheap.score_detailed = cheap_pass  # type: ignore[method-assign]
    rows = []
    for depth in depths:
        per: dict[str, list[float]] = defaultdict(list)
        for i, q in enumerate(qids):
            cands = [Candidate(d, ds.doc_text(d)) for d in ranked_ids(runs["hybrid"][q])[:depth]]
            spent.clear()
            fed.clear()
            start = time.perf_counter()
            rerank_candidates(ds.queries[q], cands, scorer, config, cascade=cascade)
            total = time.perf_counter() - start
            if i == 0:
                continue  # warm-up
            per["total s"].append(total)
            per["cheap pass s"].append(spent["cheap"])
            per["full read s"].append(spent["full"])
            per["other s"].append(total - spent["cheap"] - spent["full"])
            for k, v in fed.items():
                per[k].append(v)
        row: dict[str, Any] = {"candidates": depth, "claims": len(per["total s"])}
        row.update({f"p50 {k}" if k.endswith(" s") else f"mean {k}": _mid(k, v) for k, v in per.items()})
        model_s = sum(per["cheap pass s"]) + sum(per["full read s"])
        tokens = sum(per.get("cheap tokens", [])) + sum(per.get("full tokens", []))
        row["model tokens/s"] = round(tokens / model_s) if model_s else None
        row["model share of time"] = round(model_s / sum(per["total s"]), 3)
        rows.append(row)
        logger.info("%s", row)
    result = {
        "settings": "RerankConfig() (the default path)",
        "backend": getattr(scorer, "backend", None),
        "claims": qids[1:],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_cpu_name()}",
        "date": date.today().isoformat(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def _mid(key: str, values: list[float]) -> float:
    return round(statistics.median(values), 3) if key.endswith(" s") else round(statistics.mean(values), 1)


if __name__ == "__main__":
    main()
