"""``rerank-plugins score-pairs``: score (query, passage) files with Ray Data, resumable."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from rerank_plugins.cli._common import add_model_options, config_from_args


def register(sub: Any) -> None:
    sp = sub.add_parser(
        "score-pairs",
        help="score a JSONL/Parquet file of (query, passage) pairs with Ray Data; resumable",
        description="Scores every row of INPUT (JSONL or Parquet with query and passage columns) in a pool "
        "of Ray Data actors and writes all input columns plus 'row' and 'score' as part files under "
        "OUTPUT/scored/. Run it again on the same OUTPUT after an interruption: rows already written are "
        "not scored again and none is lost. Prints a summary with pairs/s (also OUTPUT/summary.json).",
        epilog="examples:\n"
        "  rerank-plugins score-pairs pairs.jsonl labels/\n"
        "  rerank-plugins score-pairs pairs.parquet labels/ --actors 2 --format jsonl\n"
        "  python -c 'import pyarrow.parquet as pq; print(pq.read_table(\"labels/scored\").num_rows)'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(sp)
    sp.add_argument("input", help="JSONL or Parquet file of pairs, or a folder of them (e.g. a partitioned dataset)")
    sp.add_argument("output", help="output directory (resumed when it holds a previous run)")
    sp.add_argument("--query-field", default="query", help="column of the query (default 'query')")
    sp.add_argument("--passage-field", default="passage", help="column of the passage (default 'passage')")
    sp.add_argument("--actors", type=int, default=1, help="scorer actors, one model copy each (default 1)")
    sp.add_argument("--batch-size-rows", type=int, default=64, help="pairs per scorer call (default 64)")
    sp.add_argument("--rows-per-file", type=int, default=1024, help="rows per output file, the unit kept on resume")
    sp.add_argument("--max-rows", type=int, help="score at most this many more pairs, then stop")
    sp.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="output files (parquet)")
    sp.add_argument("--ray-address", help="existing Ray cluster; default: a local instance on loopback")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rerank_plugins.serving.batch_scoring import score_pairs

    # stdout carries only the JSON summary (scripts parse it). Ray's driver prints cluster warnings
    # ("(raylet) WARNING: 8 PYTHON worker processes have been started ...") to sys.stdout from a
    # background thread, even with log_to_driver=False; send them to stderr until Ray is shut down.
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        try:
            summary = score_pairs(
                args.input,
                args.output,
                config_from_args(args),
                query_field=args.query_field,
                passage_field=args.passage_field,
                actors=args.actors,
                batch_size=args.batch_size_rows,
                rows_per_file=args.rows_per_file,
                max_rows=args.max_rows,
                output_format=args.format,
                ray_address=args.ray_address,
                progress=sys.stderr.isatty(),
            )
        finally:
            _shutdown_ray()
    print(json.dumps(summary, indent=2), file=stdout)
    return 0 if summary["complete"] or args.max_rows is not None else 1


def _shutdown_ray() -> None:
    """Stop the driver's Ray threads (they print) before stdout is restored; the command owns its process."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
