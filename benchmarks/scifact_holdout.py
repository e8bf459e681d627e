"""Rerank the SciFact *train* claims a model was trained without (``rerank-plugins train --holdout-queries N``).

SciFact has no dev split, so a model trained with ``--holdout-queries N --seed S`` leaves N train
claims unseen (the same N this script picks with the same seed). On them, with hybrid top-100
candidates, it reports nDCG@10 of: the hybrid first stage; full reads reranking the first
10/20/30/50/100 candidates; ``first_stage_weight`` blends; cascades (cheap pass at a short
``max_length``, the best ``keep`` read in full); and, with ``--windows``, the windowed scorer (each
abstract read in overlapping windows that fit the given ``max_length``, the best window counts).
These are dev figures: use them for choices, never a test split.

    python benchmarks/scifact_holdout.py --model runs/v3/export --data ../shared/data/scifact \\
        --holdout 100 --seed 13 --out benchmarks/results/holdout/v3.json

Scores are kept in the JSON; a rerun reuses them and only recomputes the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("scifact_holdout")


def held_out_claims(ds: Any, n: int, seed: int) -> list[str]:
    """The claims ``rerank_plugins.training.trainer.build_groups`` holds out for the same n and seed."""
    qids = [q for q in ds.qrels if q in ds.queries]
    shuffled = sorted(qids)
    random.Random(seed).shuffle(shuffled)
    return sorted(shuffled[:n])


def ndcg10(ranked: list[str], rel: dict[str, int]) -> float:
    """nDCG@10 of one ranked list, by the library's metric."""
    from rerank_plugins.evaluation.metrics import per_query

    return per_query({"q": rel}, {"q": {d: -float(i) for i, d in enumerate(ranked)}}, "ndcg@10")["q"]


def pass_key(length: int, windowed: bool) -> str:
    """JSON key of a pass: ``"512"`` for a truncating read, ``"w128"`` for windows at 128 tokens."""
    return f"w{length}" if windowed else str(length)


def score_passes(
    model: str, ds: Any, qids: list[str], cands: dict[str, list[str]], lengths: list[int], windowed: bool = False
) -> dict:
    from tqdm.auto import tqdm

    from rerank_plugins.config import RerankConfig
    from rerank_plugins.scoring.factory import get_scorer

    out: dict[str, Any] = {}
    for length in lengths:
        kind = "windowed" if windowed else "cross-encoder"
        settings = {"model": model, "device": "cpu", "backend": "onnx", "max_length": length}
        scorer = get_scorer(RerankConfig(scorer={**settings, "windows": {} if windowed else None}))
        start, scores = time.perf_counter(), {}
        for q in tqdm(qids, desc=f"{kind} at {length} tokens", unit="claim", mininterval=30):
            scores[q] = scorer.score([(ds.queries[q], ds.doc_text(d)) for d in cands[q]])
        key = pass_key(length, windowed)
        out[key] = {"seconds": time.perf_counter() - start, "scores": scores}
        logger.info("%s: %.0f s", key, out[key]["seconds"])
    return out


def tables(ds: Any, qids: list[str], cands: dict[str, list[str]], passes: dict[str, Any]) -> dict[str, Any]:
    from rerank_plugins.pipeline.ordering import blend

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    def order(ids: list[str], key: list[float]) -> list[str]:
        return [ids[i] for i in sorted(range(len(ids)), key=lambda i: -key[i])]

    full_len = max((k for k in passes if k.isdigit()), key=int)
    report: dict[str, Any] = {"claims": len(qids), "hybrid": mean([ndcg10(cands[q], ds.qrels[q]) for q in qids])}
    for length, p in passes.items():
        s = p["scores"]
        report[f"read {length}: rerank top d"] = {
            d: mean([ndcg10(order(cands[q][:d], s[q][:d]) + cands[q][d:], ds.qrels[q]) for q in qids])
            for d in (10, 20, 30, 50, 100)
        }
        report[f"read {length}: blend w (top 100)"] = {
            w: mean([ndcg10(order(cands[q], blend(s[q], w)), ds.qrels[q]) for q in qids])
            for w in (0.0, 0.2, 0.4, 0.6, 0.8, 0.9)
        }
        report[f"read {length}: seconds vs full"] = p["seconds"] / passes[full_len]["seconds"]
        if length == full_len or not length.isdigit():
            continue
        # a cascade: this pass reads every candidate, the best ``keep`` are read again by the full read
        # (or by a windowed pass); the rest keep the cheap order below them
        for target in [full_len, *(k for k in passes if not k.isdigit())]:
            final = passes[target]["scores"]
            cascade = {}
            for keep in (15, 20, 25, 30, 40):
                values = []
                for q in qids:
                    cheap = sorted(range(len(cands[q])), key=lambda i: -s[q][i])
                    survivors = sorted(cheap[:keep], key=lambda i: -final[q][i])
                    values.append(ndcg10([cands[q][i] for i in survivors + cheap[keep:]], ds.qrels[q]))
                cascade[keep] = mean(values)
            report[f"cascade read {length} -> keep k read {target}"] = cascade
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model trained with --holdout-queries (its export folder)")
    ap.add_argument("--data", default="../shared/data/scifact", help="SciFact in BEIR layout")
    ap.add_argument("--holdout", type=int, default=100, help="the --holdout-queries of the training run")
    ap.add_argument("--seed", type=int, default=13, help="the --seed of the training run")
    ap.add_argument("--lengths", default="512,128", help="max_length of each pass; the largest is the full read")
    ap.add_argument("--windows", default="", help="max_length of each windowed pass, e.g. 128,256 (none by default)")
    ap.add_argument("--out", type=Path, required=True, help="JSON with scores and tables")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from rerank_plugins.evaluation.datasets import load_beir
    from rerank_plugins.evaluation.harness import first_stage_runs
    from rerank_plugins.evaluation.metrics import ranked_ids

    ds = load_beir(Path(args.data), "train")
    qids = held_out_claims(ds, args.holdout, args.seed)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    if saved.get("claims") == qids:
        cands, passes = saved["candidates"], saved["passes"]
    else:
        runs, _ = first_stage_runs(ds, qids, ["hybrid"], 100)
        cands, passes = {q: ranked_ids(runs["hybrid"][q])[:100] for q in qids}, {}
    wanted = [int(x) for x in args.lengths.split(",")]
    passes.update(score_passes(args.model, ds, qids, cands, [n for n in wanted if str(n) not in passes]))
    windows = [int(x) for x in args.windows.split(",") if x]
    todo = [n for n in windows if pass_key(n, True) not in passes]
    passes.update(score_passes(args.model, ds, qids, cands, todo, windowed=True))
    report = tables(ds, qids, cands, passes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": Path(args.model).name, "claims": qids, "candidates": cands,
                                    "passes": passes, "report": report}))  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
