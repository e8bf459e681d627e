"""``rerank-plugins eval``: first stages vs reranked on a BEIR-layout dataset (nDCG, MAP, MRR, recall)."""

from __future__ import annotations

import argparse
from typing import Any

from rerank_plugins.cli._common import add_model_options, config_from_args
from rerank_plugins.config import RerankConfig, deep_merge, load_settings_file
from rerank_plugins.errors import RerankPluginsError


def register(sub: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="first stages (BM25, dense, hybrid) and each + reranker on a BEIR-layout split",
        description="Reports the metrics of each first stage and of each first stage reranked by the "
        "cross-encoder, with time per query; prints a table and optionally writes JSON. Datasets with "
        "candidate lists (WikiQA, TrecQA) rank each question's own list, and report its list order too.",
        epilog="examples:\n"
        "  rerank-plugins eval --data ../shared/data/scifact --split test --output scifact.json\n"
        "  rerank-plugins eval --data ../shared/data/wikiqa --split dev --stages bm25,dense\n"
        "  rerank-plugins eval --data ../shared/data/scifact --split test --no-rerank",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--data", required=True, help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--stages", default="bm25,dense,hybrid", help="first stages, comma-separated")
    ev.add_argument("--rerank-stages", help="first stages to rerank (default: all of --stages)")
    ev.add_argument("--depth", type=int, default=100, help="candidates per query (default 100)")
    ev.add_argument("--limit", type=int, help="evaluate only the first N queries")
    ev.add_argument("--no-rerank", action="store_true", help="first stages only")
    ev.add_argument(
        "--dense-model",
        help="bi-encoder of the dense and hybrid first stages (default all-MiniLM-L6-v2), e.g. one `distill` wrote",
    )
    ev.add_argument(
        "--variants",
        nargs="+",
        help="settings files (.toml/.yaml/.json), each a scorer variant compared on the same candidates",
    )
    ev.add_argument(
        "--first-stage-weight",
        type=float,
        default=0.0,
        help="blend relevance with first-stage rank (0..1, default 0: relevance alone, the model's guard off)",
    )
    ev.add_argument("--output", help="write the report as JSON here")
    ev.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    add_model_options(ev)
    ev.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.evaluation.datasets import load_beir
    from rerank_plugins.evaluation.harness import format_table, run_evaluation, write_report
    from rerank_plugins.scoring.factory import get_scorer

    if args.depth <= 0:
        raise RerankPluginsError(f"--depth must be positive, got {args.depth}")
    ds = load_beir(Path(args.data), args.split)
    scorer: Any = None
    cascades: dict[str, RerankConfig] = {}
    if args.variants:
        base = config_from_args(args)
        cascades = {
            Path(f).stem: RerankConfig.from_mapping(
                deep_merge(base.model_dump(exclude_unset=True), load_settings_file(f))
            )
            for f in args.variants
        }
        scorer = {label: get_scorer(c) for label, c in cascades.items()}
    elif not args.no_rerank:
        cascades = {"rerank": config_from_args(args)}
        scorer = get_scorer(cascades["rerank"])
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    rerank_stages = [s.strip() for s in args.rerank_stages.split(",")] if args.rerank_stages else None
    unknown = set(stages) - {"bm25", "dense", "hybrid", "list order"}
    if unknown:
        raise RerankPluginsError(f"unknown first stage(s) {sorted(unknown)}; use bm25, dense, hybrid")
    report = run_evaluation(
        ds,
        scorer,
        stages=stages,
        rerank_stages=rerank_stages,
        depth=args.depth,
        limit=args.limit,
        first_stage_weight=args.first_stage_weight,
        cascades=cascades,
        dense_model=args.dense_model,
    )
    print(f"{ds.name}/{ds.split}: {report.queries} queries, depth {report.depth}, reranker: {report.model or 'none'}")
    print(format_table(report.rows, markdown=args.markdown))
    if args.output:
        write_report(report, Path(args.output))
        print(f"wrote {args.output}")
    return 0
