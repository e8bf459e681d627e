"""Ray Data batch scoring (``rerank-plugins score-pairs``): pairs/s and an interrupted run.

Usage (from the repository root; the machine should be otherwise idle)::

    python benchmarks/batch_scoring.py --data ../shared/data --pairs 3000 --out benchmarks/results/batch

The workload is the first ``--pairs`` (question, candidate sentence) pairs of WikiQA's *train*
candidate lists (the labeling path for distillation scores train data), scored by the shipped
model on the default backend:

* in-process: ``get_scorer().score`` in chunks of 64, one process;
* ``score-pairs`` with 1 and 2 Ray Data actors (end to end: staging, a local Ray instance,
  actor start-up, writing Parquet);
* an interrupted run: SIGKILL of the whole process group once a third of the part files are
  written, then a resume; the output is checked to hold every input row exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _write_pairs(data: Path, n: int, path: Path) -> int:
    from rerank_plugins.evaluation.datasets import load_beir

    ds = load_beir(data / "wikiqa", "train")
    rows = []
    for qid, cands in ds.candidates.items():
        for did, label in cands:
            rows.append({"qid": qid, "query": ds.queries[qid], "passage": ds.doc_text(did), "label": label})
            if len(rows) == n:
                break
        if len(rows) == n:
            break
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def _in_process(path: Path) -> dict[str, Any]:
    from rerank_plugins.scoring.factory import get_scorer

    pairs = [(r["query"], r["passage"]) for r in map(json.loads, path.open())]
    started = time.perf_counter()
    scorer = get_scorer()
    scorer.score(pairs[:8])
    load = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(0, len(pairs), 64):
        scorer.score(pairs[i : i + 64])
    seconds = time.perf_counter() - started
    return {
        "pairs": len(pairs),
        "load_s": round(load, 1),
        "score_s": round(seconds, 1),
        "pairs_per_s": round(len(pairs) / seconds, 1),
    }


def _cli(src: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rerank_plugins.cli",
        "score-pairs",
        str(src),
        str(out),
        "--rows-per-file",
        "200",
        *extra,
    ]


def _run(src: Path, out: Path, *extra: str) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run(_cli(src, out, *extra), capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    summary: dict[str, Any] = json.loads(proc.stdout)
    summary["wall_s_end_to_end"] = round(time.perf_counter() - started, 1)
    return summary


def _interrupted(src: Path, out: Path, total: int) -> dict[str, Any]:
    from rerank_plugins.serving.batch_scoring import read_scored

    files_at_kill = max(1, total // 200 // 3)
    proc = subprocess.Popen(
        _cli(src, out), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while len(list((out / "scored").glob("*.parquet"))) < files_at_kill:
        if proc.poll() is not None:
            raise RuntimeError("the run ended before the kill")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(20)  # Ray's worker processes of the killed run exit once they lose their raylet
    kept = read_scored(out).num_rows
    resumed = _run(src, out)
    table = read_scored(out)
    rows = table["row"].to_pylist()
    return {
        "rows_kept_after_kill": kept,
        "rows_scored_by_resume": resumed["rows_scored_this_run"],
        "rows_in_output": len(rows),
        "distinct_rows": len(set(rows)),
        "exactly_once": rows == list(range(total)),
        "resume_wall_s": resumed["wall_s_end_to_end"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--out", default="benchmarks/results/batch")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="score-pairs-bench-"))
    try:
        src = work / "wikiqa_train_pairs.jsonl"
        total = _write_pairs(Path(args.data), args.pairs, src)
        report: dict[str, Any] = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "date": date.today().isoformat(),
            "workload": f"first {total} pairs of WikiQA train candidate lists, shipped model, default backend",
            "in_process": _in_process(src),
            "score_pairs_1_actor": _run(src, work / "a1", "--actors", "1"),
            "score_pairs_2_actors": _run(src, work / "a2", "--actors", "2"),
            "interrupted": _interrupted(src, work / "killed", total),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "batch.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
