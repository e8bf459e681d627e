"""First-stage recall with a bi-encoder before and after distillation (issue 25, the first-stage student).

For each collection retrieved from its whole corpus it reports Recall@100 and nDCG@10 of BM25, dense
(each bi-encoder) and hybrid (BM25 + that dense run fused by reciprocal rank, as the library's hybrid
retriever does), all to depth 100:

* SciFact test (the test split, as in the README's quality table), once per shipped choice;
* 100 SciFact train claims held out of training (``benchmarks/scifact_holdout.py``'s seed 13), dev;
* Cranfield dev (long descriptive queries, title + abstract documents), dev;
* NQ-QED dev (400 questions, seeded) over all 38,754 sentences of the corpus, not its candidate lists.

    python benchmarks/distillation/recall.py --model base= --model distilled=runs/distill/bi \\
        --out benchmarks/results/distill/recall.json

``--model NAME=`` (empty path) is the default all-MiniLM-L6-v2. Writes the JSON and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("recall")

#: (folder, split, most queries)
SETS = [
    ("scifact", "test", None),
    ("scifact", "train-holdout", None),
    ("cranfield", "dev", None),
    ("nq-qed-sentences", "dev", 400),
]


def load(data: Path, name: str, split: str, most: int | None) -> Any:
    """The split with its candidate lists dropped (retrieval is from the whole corpus)."""
    from rerank_plugins.evaluation.datasets import load_beir

    if split == "train-holdout":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from scifact_holdout import held_out_claims

        ds = load_beir(data / name, "train")
        keep = set(held_out_claims(ds, 100, 13))
    else:
        ds = load_beir(data / name, split)
        keep = {q for q in ds.qrels if q in ds.queries}
        if most is not None and len(keep) > most:
            keep = set(random.Random(f"13 {name} {split}").sample(sorted(keep), most))
    return replace(
        ds,
        split=split,
        queries={q: t for q, t in ds.queries.items() if q in keep},
        qrels={q: r for q, r in ds.qrels.items() if q in keep},
        candidates={},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH (empty PATH: the default)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--only", help="comma-separated folder/split names, e.g. scifact/test,cranfield/dev")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("bm25s", "sentence_transformers", "rerank_plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from rerank_plugins.evaluation.harness import first_stage_runs
    from rerank_plugins.evaluation.metrics import evaluate

    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {"cells": {}}
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    results["date"] = date.today().isoformat()
    wanted = set(args.only.split(",")) if args.only else None
    for folder, split, most in SETS:
        if wanted is not None and f"{folder}/{split}" not in wanted:
            continue
        ds = load(args.data, folder, split, most)
        qids = sorted(ds.queries)
        qrels = {q: ds.qrels[q] for q in qids}
        for spec in args.model:
            name, path = spec.split("=", 1)
            t = time.perf_counter()
            runs, _ = first_stage_runs(ds, qids, ["bm25", "dense", "hybrid"], 100, path or None)
            cell = {stage: evaluate(qrels, run, ["recall@100", "ndcg@10"]) for stage, run in runs.items()}
            cell["queries"] = len(qids)
            cell["seconds"] = round(time.perf_counter() - t, 1)
            results["cells"][f"{name} | {folder}/{split}"] = cell
            logger.info("%s %s/%s: %s", name, folder, split, {k: v for k, v in cell.items() if k != "queries"})
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))
    print(table(results))


def table(results: dict[str, Any]) -> str:
    """Recall@100 / nDCG@10 of BM25, and of dense and hybrid per model, one row per collection."""
    models = list(dict.fromkeys(k.split(" | ")[0] for k in results["cells"]))
    sets = list(dict.fromkeys(k.split(" | ")[1] for k in results["cells"]))
    head = ["collection (queries)", "BM25", *(f"dense {m}" for m in models), *(f"hybrid {m}" for m in models)]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for s in sets:
        cells = {m: results["cells"].get(f"{m} | {s}") for m in models}
        first = next(c for c in cells.values() if c)

        def fmt(c: dict[str, Any] | None, stage: str) -> str:
            return f"{c[stage]['recall@100']:.4f} / {c[stage]['ndcg@10']:.4f}" if c else "-"

        row = [f"{s} ({first['queries']})", fmt(first, "bm25")]
        row += [fmt(cells[m], "dense") for m in models] + [fmt(cells[m], "hybrid") for m in models]
        lines.append("| " + " | ".join(row) + " |")
    return "Recall@100 / nDCG@10, depth 100\n\n" + "\n".join(lines)


if __name__ == "__main__":
    main()
