"""What the default rerank of long abstracts costs: old default vs new default vs full reads, same run.

Usage (from the repository root; the machine should be otherwise idle)::

    python benchmarks/default_cost.py --data ../shared/data/scifact --claims 20 \\
        --out benchmarks/results/default-cost/scifact-train.json

Takes ``--claims`` SciFact *train* claims (timing needs no test data), their hybrid top 100
(the library's first stage), and reranks each claim with every settings file under
``rerank_plugins/evaluation/variants/`` named by ``--variants`` through ``rerank_candidates``
(the adapters' code path), the settings interleaved claim by claim so that machine noise hits
them alike. Scores are never cached between settings. Reports seconds per claim of the rerank
alone (the first stage is shared) and each setting's ratio to the first one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
VARIANTS = REPO / "rerank_plugins" / "evaluation" / "variants"
logger = logging.getLogger("default_cost")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/scifact", help="SciFact in BEIR layout")
    ap.add_argument("--claims", type=int, default=20, help="train claims to rerank")
    ap.add_argument("--seed", type=int, default=7, help="which claims")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["cascade", "cascade-windows-256", "windows-256", "cross-encoder"],
        help="settings files in rerank_plugins/evaluation/variants (without .toml); the first is the baseline",
    )
    ap.add_argument("--out", type=Path, required=True, help="JSON with per-claim seconds and the summary")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from tqdm.auto import tqdm

    from rerank_plugins import Candidate, RerankConfig, rerank_candidates
    from rerank_plugins.evaluation.datasets import load_beir
    from rerank_plugins.evaluation.harness import first_stage_runs
    from rerank_plugins.evaluation.metrics import ranked_ids
    from rerank_plugins.scoring.factory import get_scorer

    ds = load_beir(Path(args.data), "train")
    qids = sorted(q for q in ds.qrels if q in ds.queries)
    qids = sorted(random.Random(args.seed).sample(qids, min(args.claims, len(qids))))
    runs, _ = first_stage_runs(ds, qids, ["hybrid"], 100)
    cands = {q: [Candidate(d, ds.doc_text(d)) for d in ranked_ids(runs["hybrid"][q])[:100]] for q in qids}
    configs = {
        v: RerankConfig.from_file(VARIANTS / f"{v}.toml").merged(device="cpu", top_n=None, max_candidates=None)
        for v in args.variants
    }
    scorers = {v: get_scorer(c) for v, c in configs.items()}
    for v in args.variants:  # load and warm up every model and its cheap pass before timing
        rerank_candidates(ds.queries[qids[0]], cands[qids[0]][:40], scorers[v], configs[v])
    seconds: dict[str, list[float]] = {v: [] for v in args.variants}
    for q in tqdm(qids, desc="claims", unit="claim"):
        for v in args.variants:
            start = time.perf_counter()
            rerank_candidates(ds.queries[q], cands[q], scorers[v], configs[v])
            seconds[v].append(time.perf_counter() - start)
    base = statistics.mean(seconds[args.variants[0]])
    summary: dict[str, Any] = {
        v: {
            "mean s/claim": statistics.mean(s),
            "median s/claim": statistics.median(s),
            "vs first": statistics.mean(s) / base,
        }
        for v, s in seconds.items()
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"claims": qids, "candidates": 100, "threads": os.cpu_count(), "seconds": seconds,
                    "summary": summary, "date": time.strftime("%Y-%m-%d")}, indent=1)
    )  # fmt: skip
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
