"""Offline scoring of (query, passage) files with Ray Data: the labeling path for distillation.

``score_pairs(input, output_dir, config)`` reads a JSONL or Parquet file of pairs, scores
them with the shared scorer in a pool of Ray actors (``map_batches``) and writes every input
column plus ``row`` (the pair's 0-based position in the input) and ``score`` as Parquet (or
JSONL) part files under ``output_dir/scored/``.

Resumable: the input is first staged (once) as Parquet with its ``row`` numbers; each run
reads the part files already written, sets unreadable ones aside in ``unreadable/`` (a file
cut short by a crash: its rows are scored again) and scores only the rows not yet in a
readable file. So after any number of interruptions the output holds every input row exactly
once. Pairs an actor had scored but not yet written when a run died are scored again by the
next run.

The output folder is its own: a run starts only in a missing or empty folder, or in one a
previous run marked as its own (``_SCORE_PAIRS.json``); it refuses any other folder, so it
never deletes or overwrites files it did not write.

Example (the CLI does the same):
    >>> from rerank_plugins.config import RerankConfig
    >>> summary = score_pairs("pairs.jsonl", "out/", RerankConfig())  # doctest: +SKIP
    >>> summary["rows_total"] == summary["rows_done"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from rerank_plugins._extras import require
from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import RerankInputError

__all__ = ["read_scored", "score_pairs"]

logger = logging.getLogger(__name__)

_STAGE_ROWS = 50_000  # rows per staged Parquet part (Parquet input); JSONL is staged per 8 MB block


_SUFFIXES = {".jsonl", ".json", ".ndjson", ".parquet", ".pq"}


def _input_files(path: Path) -> list[Path]:
    """``path`` itself, or the JSONL / Parquet files of a folder (e.g. a partitioned dataset), sorted."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
        if not files:
            raise RerankInputError(f"folder {path} holds no .jsonl or .parquet files")
        return files
    return [path]


def _fingerprint(path: Path) -> list[dict[str, Any]]:
    out = []
    for f in _input_files(path):
        st = f.stat()
        out.append(
            {
                "input": f.relative_to(path).as_posix() if f != path else f.name,
                "bytes": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
        )
    return out


def _batches(path: Path) -> Iterator[Any]:
    """The input as a stream of Arrow record batches (memory stays bounded for any file size)."""
    for f in _input_files(path):
        yield from _file_batches(f)


def _file_batches(path: Path) -> Iterator[Any]:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json", ".ndjson"}:
        import pyarrow.json as pj

        yield from pj.open_json(path, read_options=pj.ReadOptions(block_size=8 << 20))
    elif suffix in {".parquet", ".pq"}:
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=_STAGE_ROWS)
    else:
        raise RerankInputError(f"{path}: unsupported input type {suffix!r}; use .jsonl or .parquet")


def _check_batch(batch: Any, path: Path, offset: int, fields: tuple[str, str]) -> None:
    import pyarrow as pa

    names = batch.schema.names
    for name in fields:
        if name not in names:
            raise RerankInputError(
                f"{path} has no column {name!r} (columns: {', '.join(names)}); "
                "name the columns with --query-field / --passage-field"
            )
        col = batch.column(name)
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            raise RerankInputError(f"{path}: column {name!r} holds {col.type}, not text")
        if col.null_count:
            first = offset + next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
            raise RerankInputError(f"{path}: rows without {name!r} (first: row {first})")
    if "row" in names or "score" in names:
        raise RerankInputError(
            f"{path} already has a 'row' or 'score' column; rename it (both are written by score-pairs)"
        )


def _stage(src: Path, stage: Path, query_field: str, passage_field: str) -> int:
    """Copy the input as Parquet parts with row numbers (once, streaming); returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    marker = stage / "_STAGED.json"
    if marker.is_file():
        meta = json.loads(marker.read_text())
        if meta["fingerprint"] != _fingerprint(src):
            raise RerankInputError(
                f"{src} changed since this output directory was started; use a new output directory "
                "(or delete it to start over)"
            )
        return int(meta["rows"])
    tmp = stage.with_name(stage.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = 0
    try:
        for k, batch in enumerate(_batches(src)):
            _check_batch(batch, src, rows, (query_field, passage_field))
            numbered = batch.append_column("row", pa.array(range(rows, rows + batch.num_rows), pa.int64()))
            pq.write_table(pa.Table.from_batches([numbered]), tmp / f"part-{k:05d}.parquet")
            rows += batch.num_rows
    except pa.ArrowInvalid as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RerankInputError(f"{src} could not be read (near row {rows}): {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "_STAGED.json").write_text(json.dumps({"fingerprint": _fingerprint(src), "rows": rows}))
    shutil.rmtree(stage, ignore_errors=True)
    tmp.rename(stage)
    return rows


_OWNER = "_SCORE_PAIRS.json"


def _claim(out: Path) -> None:
    """Make ``out`` this tool's folder, or refuse it when it holds files another program wrote."""
    marker = out / _OWNER
    if marker.is_file():
        return
    if out.exists() and not out.is_dir():
        raise RerankInputError(f"output {out} is a file; name a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise RerankInputError(
            f"output folder {out} is not empty and was not started by score-pairs (no {_OWNER}); "
            "name a new or empty folder: score-pairs never deletes or overwrites files it did not write"
        )
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"written_by": "rerank-plugins score-pairs", "version": 1}) + "\n")


def _set_aside(f: Path, out: Path) -> None:
    """Move an unreadable output file into ``out/unreadable/`` (kept, never deleted)."""
    target = out / "unreadable" / f.name
    target.parent.mkdir(exist_ok=True)
    n = 1
    while target.exists():
        target = target.with_name(f"{f.name}.{n}")
        n += 1
    os.replace(f, target)


def _scored_files(scored: Path) -> list[Path]:
    return sorted(p for p in scored.glob("*") if p.suffix in {".parquet", ".json", ".jsonl"} and p.is_file())


def _read_file(path: Path, columns: list[str] | None = None) -> Any:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=columns)
    import pyarrow.json as pj

    table = pj.read_json(path)
    return table.select(columns) if columns else table


def _write_atomically(table: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
    else:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    os.replace(tmp, path)


def _done_rows(scored: Path) -> tuple[Any, int]:
    """Rows already in readable output files, each once. Returns (rows, files removed).

    Unreadable files (cut short by a crash) are moved to ``unreadable/``: their rows get scored again. A row found in
    two files (a worker of a killed run that finished its write after the next run had started) is
    kept in the older file and dropped from the newer one, which is rewritten atomically.
    """
    import numpy as np

    parts = []
    removed = 0
    seen: set[int] = set()
    for f in sorted(_scored_files(scored), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        try:
            rows = _read_file(f, ["row"])["row"].to_numpy()
        except Exception as exc:
            logger.warning(
                "moving unreadable output %s to unreadable/ (%s); its rows will be scored again", f.name, exc
            )
            _set_aside(f, scored.parent)
            removed += 1
            continue
        fresh = np.fromiter((int(r) not in seen for r in rows), dtype=bool, count=len(rows))
        if not fresh.all():
            logger.warning("%s repeats %d row(s) of older output; keeping them once", f.name, int((~fresh).sum()))
            if fresh.any():
                import pyarrow as pa

                _write_atomically(_read_file(f).filter(pa.array(fresh)), f)
            else:
                f.unlink()
            rows = rows[fresh]
        seen.update(int(r) for r in rows)
        parts.append(rows)
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return out, removed


def _wait_for_writers_of_a_killed_run(out: Path, quiet_s: float = 20.0, cap_s: float = 180.0) -> None:
    """A run that did not end cleanly may still have Ray workers finishing writes for a few seconds:
    wait until the output has been quiet for ``quiet_s``."""
    marker = out / "_RUNNING"
    if not marker.exists():
        return
    scored = out / "scored"
    started = time.monotonic()
    while time.monotonic() - started < cap_s:
        newest = max((p.stat().st_mtime for p in scored.iterdir()), default=0.0)
        age = time.time() - max(newest, marker.stat().st_mtime)
        if age >= quiet_s:
            return
        logger.warning("the previous run did not end cleanly; waiting for its writers to stop (%.0f s)", quiet_s - age)
        time.sleep(min(quiet_s - age, 5.0))


class _PairScorer:
    """A Ray Data actor: one scorer per actor process, loaded once."""

    def __init__(self, config: RerankConfig, query_field: str, passage_field: str) -> None:
        from rerank_plugins.scoring.factory import get_scorer

        self.scorer = get_scorer(config)
        self.query_field = query_field
        self.passage_field = passage_field

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        pairs = list(zip(batch[self.query_field].to_pylist(), batch[self.passage_field].to_pylist(), strict=True))
        return batch.append_column("score", pa.array(self.scorer.score(pairs), pa.float64()))


def _drop_done(batch: Any, done: Any) -> Any:
    import pyarrow.compute as pc

    if len(done) == 0:
        return batch
    return batch.filter(pc.invert(pc.is_in(batch["row"], value_set=done)))


def score_pairs(
    input_path: str | Path,
    output_dir: str | Path,
    config: RerankConfig | None = None,
    *,
    query_field: str = "query",
    passage_field: str = "passage",
    actors: int = 1,
    cpus_per_actor: float | None = None,
    batch_size: int = 64,
    rows_per_file: int = 1024,
    max_rows: int | None = None,
    output_format: Literal["parquet", "jsonl"] = "parquet",
    ray_address: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the pairs of ``input_path`` into ``output_dir/scored/``; resumes a previous run there.

    Args:
        input_path: A JSONL or Parquet file, or a folder of them (read in sorted path order; rows are
            numbered across the files).
        actors: Scorer actors (each holds one model copy).
        cpus_per_actor: CPUs Ray reserves per actor (default: the cores less one, shared by the actors);
            the actors' compute threads are cores / actors unless ``config.threads`` says otherwise.
        batch_size: Pairs handed to the scorer at a time.
        rows_per_file: Rows per output part file: the work an interruption can lose.
        max_rows: Score at most this many more pairs in this run (None: all that are left).

    Returns:
        A summary (also written to ``output_dir/summary.json``): rows in total, done, scored by this
        run, seconds and pairs/s of this run, files set aside as unreadable (moved to ``unreadable/``).
    """
    require("pyarrow", "score-pairs", extra="batch")
    require("ray", "score-pairs", extra="batch")
    src = Path(input_path)
    if not src.exists():
        raise RerankInputError(f"input {src} does not exist (a .jsonl or .parquet file, or a folder of them)")
    out = Path(output_dir)
    _claim(out)
    scored_dir = out / "scored"
    scored_dir.mkdir(exist_ok=True)
    _wait_for_writers_of_a_killed_run(out)
    (out / "_RUNNING").write_text(str(os.getpid()))  # stays behind only if this run is killed
    try:
        return _score_staged(
            src,
            out,
            scored_dir,
            config,
            query_field,
            passage_field,
            actors,
            cpus_per_actor,
            batch_size,
            rows_per_file,
            max_rows,
            output_format,
            ray_address,
            progress,
        )
    except Exception:
        (out / "_RUNNING").unlink(missing_ok=True)
        raise


def _score_staged(
    src: Path,
    out: Path,
    scored_dir: Path,
    config: RerankConfig | None,
    query_field: str,
    passage_field: str,
    actors: int,
    cpus_per_actor: float | None,
    batch_size: int,
    rows_per_file: int,
    max_rows: int | None,
    output_format: str,
    ray_address: str | None,
    progress: bool,
) -> dict[str, Any]:
    ray = require("ray", "score-pairs", extra="batch")
    from rerank_plugins.serving._ray import init_ray

    total = _stage(src, out / "staged", query_field, passage_field)
    done, removed = _done_rows(scored_dir)
    left = total - len(done)
    cfg = config or RerankConfig()
    cores = os.cpu_count() or 1
    # Ray's CPU reservations are logical: the actors leave one core to Ray Data's file listing (1 CPU)
    # and the read / filter / write tasks (0.25 CPU each), or those starve and the pipeline stalls.
    # The compute threads still use every core.
    cpus = cpus_per_actor if cpus_per_actor is not None else max(0.25, (cores - 1) / max(actors, 1))
    if cfg.threads is None:
        cfg = cfg.merged(threads=max(1, round(cores / max(actors, 1))))
    todo = left if max_rows is None else min(left, max_rows)
    logger.info("%d pairs in %s: %d done before, %d to score now", total, src.name, len(done), todo)

    seconds = 0.0
    if todo > 0:
        import pyarrow as pa

        init_ray(ray_address, extra="batch")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.execution_options.preserve_order = False
        started = time.perf_counter()
        io = {"num_cpus": 0.25}
        ds = ray.data.read_parquet(str(out / "staged"), **io)
        done_set = pa.array(done, pa.int64())
        ds = ds.map_batches(_drop_done, fn_kwargs={"done": done_set}, batch_format="pyarrow", **io)
        if max_rows is not None:
            ds = ds.limit(todo)
        # small blocks: each becomes one actor task and one output file, the unit a resume keeps
        ds = ds.repartition(target_num_rows_per_block=rows_per_file)
        ds = ds.map_batches(
            _PairScorer,
            fn_constructor_args=(cfg, query_field, passage_field),
            # a batch larger than a block would merge blocks into one bigger output file
            batch_size=min(batch_size, rows_per_file),
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus,
        )
        if output_format == "parquet":
            ds.write_parquet(str(scored_dir), ray_remote_args=io)
        else:
            ds.write_json(str(scored_dir), ray_remote_args=io)
        seconds = time.perf_counter() - started

    done_after, _ = _done_rows(scored_dir)
    (out / "_RUNNING").unlink(missing_ok=True)
    summary = {
        "input": src.name,
        "rows_total": total,
        "rows_done": len(done_after),
        "rows_done_before": len(done),
        "rows_scored_this_run": int(len(done_after) - len(done)),
        "unreadable_files_set_aside": removed,
        "seconds": round(seconds, 2),
        "pairs_per_s": round((len(done_after) - len(done)) / seconds, 2) if seconds else None,
        "actors": actors,
        "model": cfg.model or "(shipped default)",
        "complete": len(done_after) == total,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def read_scored(output_dir: str | Path) -> Any:
    """All scored rows of ``output_dir`` as one pyarrow Table, in input order."""
    require("pyarrow", "read_scored", extra="batch")
    import pyarrow as pa

    files = _scored_files(Path(output_dir) / "scored")
    if not files:
        raise RerankInputError(f"{output_dir} has no scored files yet; run score-pairs first")
    table = pa.concat_tables([_read_file(f) for f in files], promote_options="default")
    return table.sort_by("row")
