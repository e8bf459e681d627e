"""The ``rerank-plugins`` command line: one module per subcommand, each with ``register`` (its
parser) and ``run`` (the command).

Subcommands import their heavy dependencies lazily, so ``--help`` is instant.
User mistakes end with a one-line ``error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rerank_plugins.cli import bench, calibrate, demo, distill, export, rerank, score_pairs, serve, train
from rerank_plugins.cli import eval as eval_
from rerank_plugins.cli._common import quiet_frameworks
from rerank_plugins.errors import RerankPluginsError

__all__ = ["build_parser", "main"]

#: Subcommands in the order ``--help`` lists them.
SUBCOMMANDS = (demo, rerank, eval_, calibrate, export, bench, train, distill, serve, score_pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-plugins",
        description="Cross-encoder reranking for RAG pipelines (LangChain, LlamaIndex).",
        epilog="Run 'rerank-plugins <command> --help' for a command's options and examples.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="command")

    for command in SUBCOMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rerank-plugins`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    quiet_frameworks()
    try:
        return int(args.func(args))
    except (RerankPluginsError, ValueError) as exc:
        if args.verbose >= 2:
            raise
        # the whole message on one line: its last sentence is usually the fix
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
