"""``rerank-plugins export``: a trained checkpoint as a compact, shippable model folder."""

from __future__ import annotations

import argparse
from typing import Any

from rerank_plugins.errors import RerankPluginsError


def register(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        help="write a trained checkpoint as a compact safetensors folder (float16 by default)",
        description="Copies config and tokenizer and writes the weights as safetensors in the given dtype; "
        "no optimizer state or pickles. The scorer loads them back in its configured dtype.",
        epilog="examples:\n  rerank-plugins export runs/v1/best my-reranker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("checkpoint", help="a trained checkpoint directory (e.g. runs/v1/best)")
    ex.add_argument("output", help="directory to write (replaced if present)")
    ex.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.training.export import export_checkpoint

    if not Path(args.checkpoint).is_dir():
        raise RerankPluginsError(f"checkpoint directory {args.checkpoint} does not exist")
    out = export_checkpoint(args.checkpoint, args.output, dtype=args.dtype)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"exported {args.checkpoint} -> {out} ({args.dtype}, {size:.1f} MB)")
    return 0
