"""``rerank-plugins bench``: speed and quality of the default path against the peers' rerankers, in one run."""

from __future__ import annotations

import argparse
from typing import Any

from rerank_plugins.errors import RerankPluginsError


def register(sub: Any) -> None:
    be = sub.add_parser(
        "bench",
        help="speed, memory and nDCG@10 of our paths and the peers' rerankers on the same candidates",
        description="Builds the workload once (SciFact test: hybrid top-DEPTH candidates; WikiQA test: the "
        "official candidate lists), then runs each system (LangChain CrossEncoderReranker, LlamaIndex "
        "SentenceTransformerRerank, sentence-transformers predict, FlashRank, our backends through both "
        "adapters) in a fresh process on the same fp32 weights. Writes bench.json, bench.md, latency.png "
        "and speed_quality.png into --output.",
        epilog="examples:\n"
        "  rerank-plugins bench --data ../shared/data --output bench-results\n"
        "  rerank-plugins bench --data ../shared/data --workloads scifact@20,scifact@30,scifact@50,scifact@100\n"
        "  rerank-plugins bench --data ../shared/data --queries 5 --workloads wikiqa --no-extras \\\n"
        "      --systems 'ours onnx, langchain,langchain CrossEncoderReranker'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    be.add_argument("--data", required=True, help="folder holding scifact/ and wikiqa/ (BEIR layout)")
    be.add_argument("--output", default="bench-results", help="folder for JSON, markdown and plots")
    be.add_argument("--model", help="model id or path (default: the shipped model)")
    be.add_argument(
        "--workloads",
        default="scifact,wikiqa",
        help="comma-separated: scifact, wikiqa; scifact@N sets that workload's depth (scifact@20,scifact@30,...)",
    )
    be.add_argument("--queries", type=int, default=20, help="test queries per workload (default 20)")
    be.add_argument("--depth", type=int, default=100, help="hybrid candidates per SciFact query (default 100)")
    be.add_argument("--systems", help="comma-separated subset of systems (default: all)")
    be.add_argument("--no-extras", action="store_true", help="skip the latency curves, memory probes and FLOP/s")
    be.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.evaluation.bench import format_report, parse_systems, run_benchmark

    systems = parse_systems(args.systems) if args.systems else None
    data = Path(args.data)
    if not data.is_dir():
        raise RerankPluginsError(
            f"--data {data} is not a directory (it should hold scifact/ and wikiqa/ in BEIR layout)"
        )
    report = run_benchmark(
        data,
        Path(args.output),
        model=args.model,
        workloads=[x.strip() for x in args.workloads.split(",")],
        n_queries=args.queries,
        depth=args.depth,
        systems=systems,
        extras=not args.no_extras,
    )
    print(format_report(report))
    return 0
