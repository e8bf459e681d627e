"""The first-stage guard as pools deepen: every ordering rule compared on the same reads of each pool.

For each query of a row, the first stage's top ``--depth`` candidates are read by the cascade's cheap
pass (the model itself at ``--cheap-tokens``, default 128 as the pipeline), and the candidates any rule
keeps are read in full (windows of 256, as the default pipeline; every candidate with ``--full``). Both
reads go through the library's own pipeline and are cached per pair in ``<out>.cache/``
(``full.sqlite``, ``cheap.sqlite`` or ``cheap-<tokens>.sqlite``; a model_table.py cache of the same
model, backend and model files can be copied in as ``full.sqlite``). ``--cheap-model`` makes another
model the cheap pass instead: a sentence-transformers bi-encoder's cosine (e.g. a static embedding model from
``benchmarks/distillation/static_pick.py``) or a cross-encoder read at ``--cheap-tokens`` (e.g. a distilled
student, as ``cascade.model``); cached in ``cheap-<last two path parts>-<tokens>.sqlite``, and its reads are
never taken as full scores. Rows: SciFact and Cranfield (nDCG@10), and the TrecQA / WikiQA dev lists (MAP).
Each rule is then an ordering of those scores, so the rules differ only in how they order:

* ``cascade K``: the best K by the cheap pass are read in full and ordered by the guard's blend, the
  others follow in the pick's order (pairs the cheap pass read whole keep their score, as in the
  pipeline); ``guarded pick``: the K are picked by the cheap scores blended with the same prior;
* ``first stage K`` (``--first-stage``): no cheap pass; the first stage's top K are read in full and
  ordered by the blend, the others follow in first-stage order;
* ``full read``: every candidate read in full (``--full``);
* ``relative prior``: the first-stage rank score falls to 0 at the last scored candidate (the guard
  until 2026-12-05, ``first_stage_horizon=None``); ``absolute prior``: to 0 at rank ``--horizon``.

The blend is the library's (``rerank_plugins.pipeline.guard.blend``); the pipeline since 2026-12-05 is
``cascade 30 guarded pick, absolute prior``. ``queries up / down`` count the queries whose metric is
above / below the first guarded row of the first keep and prior (with the defaults: the pipeline
before 2026-12-05).

    python benchmarks/guard_depth.py --row scifact/train-rest --out benchmarks/results/guard/scifact-rest-100.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from rerank_plugins.pipeline.guard import blend
from rerank_plugins.pipeline.ordering import best_first

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

logger = logging.getLogger("guard_depth")

#: row -> (folder, split, first stage, metric)
ROWS = {
    "scifact/train-rest": ("scifact", "train-rest", "hybrid", "ndcg@10"),
    "scifact/train-holdout": ("scifact", "train-holdout", "hybrid", "ndcg@10"),
    "cranfield/dev": ("cranfield", "dev", "bm25", "ndcg@10"),
    "scifact/test": ("scifact", "test", "hybrid", "ndcg@10"),
    "trecqa/dev": ("trecqa", "dev", "bm25", "map"),
    "wikiqa/dev": ("wikiqa", "dev", "bm25", "map"),
    "trecqa/dev-hybrid": ("trecqa", "dev", "hybrid", "map"),
    "cranfield/dev-hybrid": ("cranfield", "dev", "hybrid", "ndcg@10"),
}


def read_pools(args: argparse.Namespace) -> tuple[Any, dict[str, list[str]], dict[str, Pool]]:
    """The dataset, each query's pool (first-stage order) and its reads: the cheap pass of every
    candidate, the full read of those some rule keeps (of every one with ``--full``)."""
    from model_table import load
    from tqdm import tqdm

    from rerank_plugins import RerankConfig
    from rerank_plugins.evaluation.harness import first_stage_runs
    from rerank_plugins.evaluation.metrics import ranked_ids
    from rerank_plugins.pipeline import Candidate, rerank_candidates
    from rerank_plugins.scoring.cache import CachedScorer
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade

    folder, split, stage, _ = ROWS[args.row]
    ds = load(args.data, folder, split, None)
    qids = sorted(q for q in ds.queries if q in ds.qrels)
    runs, _ = first_stage_runs(ds, qids, [stage], args.depth)
    cache = args.out.with_suffix(".cache")
    base = get_scorer(RerankConfig(scorer={"model": args.model, "backend": args.backend}))
    full = CachedScorer(base, path=cache / "full.sqlite", max_entries=None)
    resolved = resolve_cascade(RerankConfig(cascade={"max_length": args.cheap_tokens}), base)
    if resolved is None:
        raise SystemExit(
            f"{args.model} on this machine has no cascade (a GPU, or a model of at most {args.cheap_tokens} tokens)"
        )
    name = "cheap.sqlite" if args.cheap_tokens == 128 else f"cheap-{args.cheap_tokens}.sqlite"
    cheap_scorer = resolved.scorer
    if args.cheap_model:  # another model's scores as the cheap pass (not the full model's, even read whole)
        where = Path(args.cheap_model)
        if (where / "modules.json").is_file():  # a sentence-transformers bi-encoder: its cosine
            from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

            cheap_scorer = BiEncoderScorer(args.cheap_model)
        else:  # a cross-encoder (e.g. a distilled student), as the pipeline builds a cascade_model
            own = RerankConfig(
                scorer={"model": args.model, "backend": args.backend},
                cascade={"model": args.cheap_model, "keep": 30, "max_length": args.cheap_tokens},
            )
            student = resolve_cascade(own, base)
            if student is None or student.scorer is None:
                raise SystemExit(f"no cascade with {args.cheap_model} as its cheap pass")
            cheap_scorer = student.scorer
        name = f"cheap-{'-'.join(where.parts[-2:])}-{args.cheap_tokens}.sqlite"
    cheap = CachedScorer(cheap_scorer, path=cache / name, max_entries=None)
    exact = base.cheap_pass_is_exact(cheap_scorer)
    plain = RerankConfig(top_n=None, max_candidates=None, dedupe_by_content=False, first_stage_weight=0.0)

    def read(scorer: Any, query: str, cands: list[Any]) -> tuple[list[float], set[int]]:
        result = rerank_candidates(query, cands, scorer, plain, cascade=False)
        by_rank = {r.first_stage_rank: r.score for r in result.items}
        whole = {r.first_stage_rank - 1 for r in result.items if r.note.how == "whole"}
        return [float(by_rank[i + 1]) for i in range(len(cands))], whole  # type: ignore[arg-type]

    pools: dict[str, list[str]] = {}
    reads: dict[str, Pool] = {}
    for q in tqdm(qids, desc=args.row, mininterval=30):
        pools[q] = ranked_ids(runs[stage][q])[: args.depth]
        cands = [Candidate(d, ds.doc_text(d)) for d in pools[q]]
        cheap_scores, whole = read(cheap, ds.queries[q], cands)
        if not exact:  # as the pipeline: only the full model's own shorter read gives full scores
            whole = set()
        pool = Pool(cheap_scores, whole)
        # a pair the cheap pass read whole has its full score without a second read (the pipeline keeps it)
        need = set(range(len(cands))) if args.full else set(whole)
        if not args.full:
            for keep in args.keep_list:
                for w in args.weight_list:
                    for _, horizon in args.prior_list:
                        need |= set(pick(pool, w, horizon, "guarded")[:keep])
                need |= set(pick(pool, 0.0, None, "cheap")[:keep])
                if args.first_stage:
                    need |= set(range(min(keep, len(cands))))
        todo = sorted(need)
        scores, _ = read(full, ds.queries[q], [cands[i] for i in todo])
        pool.full = dict(zip(todo, scores, strict=True))
        reads[q] = pool
    return ds, pools, reads


@dataclass
class Pool:
    """One query's reads: the cheap pass of every candidate, which of them it read whole, the full reads."""

    cheap: list[float]
    whole: set[int]
    full: dict[int, float] = field(default_factory=dict)


#: how a rule picks the candidates it reads in full
PICKS = ("cheap", "guarded", "first stage")


def pick(pool: Pool, weight: float, horizon: int | None, by: str) -> list[int]:
    """Every candidate in the order a rule picks from: by the cheap pass alone (``cheap``), by its blend
    with the first-stage prior (``guarded``), or in first-stage order (``first stage``, no cheap pass);
    the first ``keep`` go on to the full read."""
    if by == "cheap":
        return best_first(pool.cheap)
    if by == "guarded":
        return best_first(blend(pool.cheap, weight, None, len(pool.cheap), horizon))
    if by == "first stage":
        return list(range(len(pool.cheap)))
    raise ValueError(f"pick by {by!r}: expected one of {PICKS}")


def order(pool: Pool, *, keep: int | None, weight: float, by: str, horizon: int | None) -> list[int]:
    """Pool positions, best first, under one rule."""
    n = len(pool.cheap)
    if keep is None or n <= keep:
        kept, rest = list(range(n)), []
    else:
        sel = pick(pool, weight, horizon, by)
        # in first-stage order, as the pipeline holds them; a cheap pass's whole reads are kept
        kept = sorted(set(sel[:keep]) | (pool.whole if by != "first stage" else set()))
        rest = [i for i in sel if i not in set(kept)]
    keys = blend([pool.full[i] for i in kept], weight, kept, n, horizon)
    return [kept[j] for j in best_first(keys)] + rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", choices=sorted(ROWS), required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", default="rerank_plugins/models/minilm-l6-rerank")
    parser.add_argument("--backend", default="onnx-int8")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument(
        "--keep",
        default="30",
        help="how many the cascade reads in full (a list compares several; the first is the baseline)",
    )
    parser.add_argument(
        "--cheap-tokens",
        type=int,
        default=128,
        help="the cheap pass's token budget (the pipeline's cascade max_length)",
    )
    parser.add_argument(
        "--cheap-model",
        help="the cheap pass's model: a sentence-transformers bi-encoder (its cosine) or a cross-encoder",
    )
    parser.add_argument(
        "--first-stage", action="store_true", help="also rows 'first stage K': no cheap pass, the top K read in full"
    )
    parser.add_argument(
        "--priors",
        default="relative,absolute",
        help="priors to compare: relative (to the pool's end), absolute (to --horizon)",
    )
    parser.add_argument("--horizon", type=int, default=30, help="the absolute prior reaches 0 at this rank")
    parser.add_argument("--weights", default="0.3,0.5", help="guard weights to compare (0 is always a row)")
    parser.add_argument("--full", action="store_true", help="also read every candidate in full (rows 'full')")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.weight_list = [float(x) for x in args.weights.split(",")]
    args.keep_list = [int(x) for x in args.keep.split(",")]
    priors = {"relative": None, "absolute": args.horizon}
    args.prior_list = [(p, priors[p]) for p in args.priors.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("bm25s", "httpx", "sentence_transformers", "rerank_plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    from rerank_plugins.evaluation.metrics import evaluate, per_query

    ds, pools, reads = read_pools(args)
    _, _, stage, metric = ROWS[args.row]
    qrels = {q: ds.qrels[q] for q in pools}

    def as_run(orders: dict[str, list[int]]) -> dict[str, dict[str, float]]:
        return {q: {pools[q][p]: float(len(o) - r) for r, p in enumerate(o)} for q, o in orders.items()}

    def rule(keep: int | None, w: float, horizon: int | None, by: str) -> dict[str, dict[str, float]]:
        return as_run({q: order(reads[q], keep=keep, weight=w, by=by, horizon=horizon) for q in pools})

    runs = {stage: as_run({q: list(range(len(pools[q]))) for q in pools})}
    keeps: list[int | None] = [*args.keep_list, None] if args.full else [*args.keep_list]
    for keep in keeps:
        where = "full read" if keep is None else f"cascade {keep}"
        runs[f"{where}, unguarded"] = rule(keep, 0.0, None, "cheap")
        for w in args.weight_list:
            # the prior falling to 0 at the last scored candidate (first_stage_horizon=None) or at --horizon
            for prior, horizon in args.prior_list:
                runs[f"{where}, w {w}, {prior} prior"] = rule(keep, w, horizon, "cheap")
                if keep is not None:
                    runs[f"{where} guarded pick, w {w}, {prior} prior"] = rule(keep, w, horizon, "guarded")
                    if args.first_stage:
                        runs[f"first stage {keep}, w {w}, {prior} prior"] = rule(keep, w, horizon, "first stage")
    prior0 = args.prior_list[0][0]
    default = f"cascade {args.keep_list[0]}, w {args.weight_list[0]}, {prior0} prior"
    base = per_query(qrels, runs[default], metric)
    rows = []
    for name, run in runs.items():
        pq = per_query(qrels, run, metric)
        up = sum(1 for q in pq if pq[q] > base[q] + 1e-9)
        down = sum(1 for q in pq if pq[q] < base[q] - 1e-9)
        rows.append(
            {
                "system": name,
                metric: round(evaluate(qrels, run, [metric])[metric], 4),
                "queries up / down": f"{up} / {down}",
            }
        )
    result = {
        "row": args.row,
        "depth": args.depth,
        "keep": args.keep_list,
        "cheap tokens": args.cheap_tokens,
        "cheap model": args.cheap_model,
        "horizon": args.horizon,
        "queries": len(pools),
        "model": args.model,
        "backend": args.backend,
        "compared with": default,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "date": date.today().isoformat(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for r in rows:
        print(f"{r['system']:<52} {r[metric]:.4f}  {r['queries up / down']}")


if __name__ == "__main__":
    main()
