"""What listens where when `rerank-plugins serve` / `score-pairs` start a local Ray node.

Starts Ray as the library does (``init_ray(None)``: node IP 127.0.0.1, no dashboard), lists every
listening TCP socket of the Ray processes (psutil) and prints them as a Markdown table, grouped by
process and interface. docs/serving.md quotes the result.

    python benchmarks/ray_listeners.py
"""

from __future__ import annotations

import os
import platform
import time
from collections import defaultdict
from datetime import date

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def listeners() -> dict[tuple[str, str], int]:
    """(process name, 'loopback' / 'all interfaces' / 'host IP') -> listening TCP ports of the processes of
    the local Ray instance this process starts with ``init_ray(None)`` (or started before)."""
    import psutil

    from rerank_plugins.serving._ray import init_ray

    init_ray(None, extra="serve")
    time.sleep(3)  # the agents start a moment after ray.init returns
    # the processes of the Ray instance this process started: its descendants (not another job's Ray)
    names = {p.pid: p.name() for p in psutil.Process().children(recursive=True)}
    found: dict[tuple[str, str], int] = defaultdict(int)
    for c in psutil.net_connections(kind="inet"):
        if c.status != psutil.CONN_LISTEN or c.pid is None or c.pid == os.getpid():
            continue
        if c.pid not in names:
            continue
        name = names[c.pid]
        ip = c.laddr.ip
        where = "loopback" if ip in {"127.0.0.1", "::1"} else "all interfaces" if ip in {"0.0.0.0", "::"} else "host IP"
        found[(name, where)] += 1
    return dict(found)


def main() -> None:
    import ray

    found = listeners()
    ray.shutdown()
    print(f"ray {ray.__version__}, {platform.machine()}, {date.today().isoformat()}")
    print("| process | listens on | ports |\n| --- | --- | ---: |")
    for (name, where), n in sorted(found.items()):
        print(f"| {name} | {where} | {n} |")


if __name__ == "__main__":
    main()
