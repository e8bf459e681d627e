"""Re-run the peers benchmark with the settings behind the README's table.

Usage (from the repository root, with ../shared/data beside it)::

    pip install "torch==2.13.0" -e ".[bench]"
    python benchmarks/peers.py                  # writes benchmarks/results/bench/
    python benchmarks/peers.py --queries 5      # any `rerank-plugins bench` option

It is `rerank-plugins bench --data ../shared/data --output benchmarks/results/bench --queries 20`
plus whatever you add. The run takes about 45 minutes on 2 CPU cores (most of it in the three
slowest peers); keep the machine otherwise idle, since systems run one after the other.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.path.insert(0, str(REPO))
    from rerank_plugins.cli import main

    defaults = ["--data", str(REPO.parent / "shared" / "data"), "--output", str(REPO / "benchmarks/results/bench")]
    raise SystemExit(main(["bench", *defaults, "--queries", "20", *sys.argv[1:]]))
