"""One table for a model decision: every dataset of ../shared/data, first stage vs reranked.

Each (model, dataset) cell is the library's default pipeline (``RerankConfig(scorer={"model": ...})``: windows of
256 tokens after the CPU cascade) reranking a first stage, plus, with ``--guard W``, the same scores
blended with the first-stage rank at ``first_stage_weight=W`` (no extra reads). Dev rows are for
choices; ``--split test`` runs the test splits (WikiQA, TrecQA, SciFact), once per shipped model.

Dev rows (``--split dev``):

* candidate lists (WikiQA, TrecQA, NQ-QED, SQuAD sentences / passages dev): the list reranked, MAP;
  first stage: BM25 over the list;
* Cranfield (dev qrels; never trained on): BM25 top-30, nDCG@10;
* 100 SciFact train claims (``--holdout 100 --seed 13``, as ``benchmarks/scifact_holdout.py`` and
  ``train --holdout-queries 100`` pick them): hybrid top-30, nDCG@10. Unseen by a model trained
  without SciFact (v2) or with those claims held out (the research variant); v1 trained on them.

    python benchmarks/model_table.py --model v2=runs/v2/export --model v1=rerank_plugins/models/minilm-l6-rerank \\
        --split dev --out benchmarks/results/v2/dev.json

Scores are cached per model in ``<out>.cache/<name>.sqlite`` (ignored by git), so a rerun, or a
second guard weight, rereads nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("model_table")

# (folder, split, first stage, depth, metric, most queries: a seeded sample of the large dev sets)
DEV = [
    ("wikiqa", "dev", "bm25", 0, "map", None),
    ("trecqa", "dev", "bm25", 0, "map", None),
    ("nq-qed-sentences", "dev", "bm25", 0, "map", 400),
    ("squad-sentences", "dev", "bm25", 0, "map", 300),
    ("squad-passages", "dev", "bm25", 0, "map", 150),
    ("cranfield", "dev", "bm25", 30, "ndcg@10", None),
    ("scifact", "train-holdout", "hybrid", 30, "ndcg@10", None),
]
#: ``--split scifact-rest``: the SciFact train claims outside the 100 held out (about 700), a wider dev
#: set for a model that never trained on SciFact (the shipped one), for choices the 100 cannot separate.
SCIFACT_REST = [("scifact", "train-rest", "hybrid", 30, "ndcg@10", None)]
TEST = [
    ("wikiqa", "test", "bm25", 0, "map", None),
    ("trecqa", "test", "bm25", 0, "map", None),
    ("scifact", "test", "hybrid", 100, "ndcg@10", None),
]


def load(data: Path, name: str, split: str, most: int | None) -> Any:
    """The split as a BeirDataset; 'train-holdout' is SciFact's 100 train claims held out with seed 13,
    'train-rest' the other train claims."""
    import random

    from rerank_plugins.evaluation.datasets import load_beir

    if split in ("train-holdout", "train-rest"):
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from scifact_holdout import held_out_claims

        ds = load_beir(data / name, "train")
        keep = set(held_out_claims(ds, 100, 13))
        if split == "train-rest":
            keep = set(ds.queries) - keep
        return replace(
            ds,
            split=split,
            queries={q: t for q, t in ds.queries.items() if q in keep},
            qrels={q: r for q, r in ds.qrels.items() if q in keep},
        )
    ds = load_beir(data / name, split)
    if most is not None and len(ds.candidates) > most:
        keep = set(random.Random(f"13 {name} {split}").sample(sorted(ds.candidates), most))
        ds = replace(
            ds,
            queries={q: t for q, t in ds.queries.items() if q in keep},
            qrels={q: r for q, r in ds.qrels.items() if q in keep},
            candidates={q: c for q, c in ds.candidates.items() if q in keep},
        )
    return ds


def markdown(results: dict[str, Any]) -> str:
    """The cells as one Markdown table: a row per dataset, the first stage, then each model's rows."""
    by_set: dict[str, dict[str, Any]] = {}
    for key, cell in results["cells"].items():
        name, dataset = key.split(" | ")
        by_set.setdefault(dataset, {})[name] = cell
    models = list(dict.fromkeys(k.split(" | ")[0] for k in results["cells"]))
    systems: list[str] = []
    for name in models:
        for cell in (c for k, c in results["cells"].items() if k.startswith(f"{name} | ")):
            for row in cell["rows"]:
                label = row["system"].split(" + ", 1)[1] if " + " in row["system"] else None
                if label is not None and f"{name} {label}" not in systems:
                    systems.append(f"{name} {label}")
    head = ["dataset (metric, queries)", "list order", "first stage", *systems]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for dataset, cells in by_set.items():
        any_cell = next(iter(cells.values()))
        metric = any_cell["metric"]
        stages = {r["system"]: r for r in any_cell["rows"] if " + " not in r["system"]}
        listed = stages.pop("list order", None)
        first = next(iter(stages.values()))
        out = [
            f"{dataset} ({metric}, {any_cell['queries']})",
            f"{listed[metric]:.4f}" if listed else "-",
            f"{first['system']} {first[metric]:.4f}",
        ]
        for system in systems:
            name, label = system.split(" ", 1)
            rows = {r["system"].split(" + ", 1)[-1]: r for r in cells.get(name, {}).get("rows", [])}
            out.append(f"{rows[label][metric]:.4f}" if label in rows else "-")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH (repeat to compare)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--split",
        choices=["dev", "scifact-rest", "test"],
        default="dev",
        help="dev rows; scifact-rest: the SciFact train claims outside the 100 held out (dev for a model never "
        "trained on SciFact); test splits (once per shipped model)",
    )
    parser.add_argument("--only", help="comma-separated dataset folders (default: all of the split's)")
    parser.add_argument("--guard", type=float, action="append", default=[], help="first_stage_weight rows")
    parser.add_argument(
        "--cascade",
        action="append",
        default=[],
        metavar="LABEL=MODEL:KEEP[:MAX_LENGTH]",
        help="a row whose cascade's cheap pass is MODEL (e.g. a distilled student) keeping KEEP candidates for "
        "the full read; MAX_LENGTH is the cheap pass's token budget (default 128); MODEL 'first-stage': no cheap "
        "pass, the first stage's top KEEP are read. Repeat to compare; with --guard, each also under each weight.",
    )
    parser.add_argument(
        "--depth",
        type=int,
        help="first-stage depth of the collections without candidate lists (default: 30 dev, 100 test)",
    )
    parser.add_argument("--full", action="store_true", help="also a row without a cascade (every pair read in full)")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument(
        "--backend",
        default="auto",
        help="the model's backend (e.g. onnx-int8; default auto); the default cascade's cheap pass, the model "
        "itself at 128 tokens, runs on it too",
    )
    parser.add_argument(
        "--window-stride",
        type=int,
        help="tokens between window starts of the windowed read (default: half a window; a value of at "
        "least max_length gives windows that do not overlap)",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", action="store_true", help="only print --out's cells as a Markdown table")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("bm25s", "httpx", "sentence_transformers", "rerank_plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from rerank_plugins import RerankConfig
    from rerank_plugins.evaluation.harness import run_evaluation
    from rerank_plugins.scoring.cache import CachedScorer
    from rerank_plugins.scoring.factory import get_scorer

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {"dev": DEV, "scifact-rest": SCIFACT_REST, "test": TEST}[args.split]
    if args.only:
        wanted = set(args.only.split(","))
        rows = [r for r in rows if r[0] in wanted]
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.setdefault("cells", {})
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    results["date"] = date.today().isoformat()
    cache_dir = args.out.with_suffix(".cache")
    for spec in args.model:
        name, path = spec.split("=", 1)
        section: dict[str, Any] = {"model": path, "backend": args.backend}
        if args.window_stride:
            section["windows"] = {"stride": args.window_stride}
        base = get_scorer(RerankConfig(scorer=section))
        scorer = CachedScorer(base, path=cache_dir / f"{name}.sqlite", max_entries=None)
        for folder, split, stage, depth, metric, most in rows:
            ds = load(args.data, folder, split, most)
            depth = args.depth if args.depth and depth else depth
            t = time.perf_counter()
            cascades = {"rerank": RerankConfig()}  # the default cascade (the cache is seen through)
            scorers: dict[str, Any] = {"rerank": scorer}
            for w in args.guard:
                scorers[f"guard {w}"] = scorer
                cascades[f"guard {w}"] = RerankConfig(first_stage_weight=w)
            if args.full:
                scorers["full"] = scorer
                cascades["full"] = RerankConfig(cascade={"keep": None})
            for spec in args.cascade:
                label, rest = spec.split("=", 1)
                model, keep, *length = rest.rsplit(":", 2) if rest.count(":") >= 2 else rest.rsplit(":", 1)
                if model == "first-stage":  # no cheap pass: the first stage's top KEEP are read
                    own: dict[str, Any] = {"pick": "first-stage", "keep": int(keep)}
                else:
                    own = {"model": model, "keep": int(keep), "max_length": int(length[0]) if length else 128}
                scorers[label] = scorer
                cascades[label] = RerankConfig(cascade=own)
                for w in args.guard:  # the same cascade under each guard weight
                    scorers[f"{label}, guard {w}"] = scorer
                    cascades[f"{label}, guard {w}"] = RerankConfig(cascade=own, first_stage_weight=w)
            report = run_evaluation(
                ds,
                scorers,
                stages=[stage],
                rerank_stages=[stage],
                depth=depth or 100,
                metrics=[metric, "mrr" if metric == "map" else "recall@100"],
                cascades=cascades,
            )
            seconds = time.perf_counter() - t
            cell = {"queries": report.queries, "seconds": round(seconds, 1), "rows": report.rows, "metric": metric}
            suffix = f"@{depth}" if args.depth and depth else ""
            results["cells"][f"{name} | {folder}/{split}{suffix}"] = cell
            first = report.rows[[r["system"] for r in report.rows].index(stage)][metric]
            ranked = {r["system"]: r[metric] for r in report.rows}
            others = {k: round(v, 4) for k, v in ranked.items() if k != stage}
            logger.info(
                "%s %s/%s (%d q, %.0f s): %s %.4f | %s",
                name,
                folder,
                split,
                report.queries,
                seconds,
                stage,
                first,
                others,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
