"""Ray Serve deployment (start, batch, scale, survive a killed replica, stop) and Ray Data batch scoring
(interrupted by SIGKILL, a file cut short, resumed: every pair exactly once)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytest.importorskip("fastapi")
pytest.importorskip("pyarrow")
import httpx

from rerank_plugins.config import RerankConfig
from rerank_plugins.scoring.factory import get_scorer
from rerank_plugins.scoring.remote import RemoteScorer
from rerank_plugins.serving.settings import ServeSettings
from tests.conftest import build_tiny_cross_encoder

pytestmark = pytest.mark.ray

WORDS = ["cat", "dog", "pet", "animal", "market", "stock", "river", "bank", "tree", "leaf", "sun", "moon"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ray-model"))


def _pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    import random

    rng = random.Random(seed)
    return [
        (" ".join(rng.sample(WORDS, 2)), " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))))
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def served(tiny_model: Path) -> Iterator[tuple[str, RerankConfig]]:
    from rerank_plugins.serving import ray_deployment

    config = RerankConfig(model=str(tiny_model), backend="torch")
    port = _free_port()
    ray_deployment.start(config, ServeSettings(port=port, replicas=1, batch_wait_timeout_ms=100, max_batch_pairs=512))
    try:
        yield f"http://127.0.0.1:{port}", config
    finally:
        ray_deployment.stop()


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_serve_scores_like_the_local_scorer_and_batches_concurrent_requests(
    served: tuple[str, RerankConfig],
) -> None:
    from rerank_plugins.serving import ray_deployment

    url, config = served
    assert ray_deployment.replica_count() == 1
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    pairs = _pairs(24)
    remote = RemoteScorer(url=url, max_documents=4)
    local = get_scorer(config).score(pairs)
    assert remote.score(pairs) == pytest.approx(local, abs=1e-5)

    requests_before = _metric(url, "rerank_batch_requests_sum")
    batches_before = _metric(url, "rerank_batch_requests_count")

    one_query = [("cat pet", p) for _, p in pairs[:8]]  # one query: one request per scorer call
    expected = get_scorer(config).score(one_query)

    async def burst() -> list[list[float]]:
        scorers = [RemoteScorer(url=url, protocol="cohere", max_documents=8) for _ in range(16)]
        return await asyncio.gather(*(s.ascore(one_query) for s in scorers))

    results = asyncio.run(burst())
    assert all(r == pytest.approx(expected, abs=1e-5) for r in results)
    requests = _metric(url, "rerank_batch_requests_sum") - requests_before
    batches = _metric(url, "rerank_batch_requests_count") - batches_before
    assert requests == 16
    assert batches < 16, "16 concurrent requests should share scorer calls"


def test_serve_scales_to_two_replicas_and_survives_a_killed_replica(served: tuple[str, RerankConfig]) -> None:
    import ray
    from ray import serve

    from rerank_plugins.serving import ray_deployment

    url, config = served
    port = int(url.rsplit(":", 1)[1])
    ray_deployment.start(config, ServeSettings(port=port, replicas=2))
    assert ray_deployment.replica_count() == 2

    pairs = _pairs(6, seed=3)
    expected = get_scorer(config).score(pairs)
    scorer = RemoteScorer(RerankConfig(scorer="remote", remote_url=url, remote_retries=8, remote_max_documents=6))
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    assert len(replicas) == 2
    victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])

    answered = 0
    for i in range(30):
        if i == 5:
            ray.kill(victim, no_restart=True)
        assert scorer.score(pairs) == pytest.approx(expected, abs=1e-5)
        answered += 1
    assert answered == 30  # none lost
    deadline = time.monotonic() + 90
    while ray_deployment.replica_count() < 2:  # Serve replaces the dead replica
        assert time.monotonic() < deadline, serve.status()
        time.sleep(1)

    ray_deployment.stop()  # and stop closes the port
    assert ray_deployment.replica_count() == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)


def test_cli_serve_on_ray_answers_and_stops_on_sigterm(tiny_model: Path) -> None:
    port = _free_port()
    env = {**os.environ, "RERANK_PLUGINS_BACKEND": "torch", "RERANK_PLUGINS_SERVE_MAX_DOCUMENTS": "3"}
    cmd = [*_cli("serve", "--model", str(tiny_model), "--port", str(port), "--replicas", "1")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the deployment is up
        assert f"127.0.0.1:{port}" in line
        assert "1 replica(s) on Ray" in line
        r = httpx.post(f"http://127.0.0.1:{port}/v1/rerank", json={"query": "cat", "documents": ["a cat", "a dog"]})
        assert r.status_code == 200
        assert sorted(x["index"] for x in r.json()["results"]) == [0, 1]
        over = httpx.post(f"http://127.0.0.1:{port}/rerank", json={"query": "cat", "texts": ["a", "b", "c", "d"]})
        assert over.status_code == 413  # RERANK_PLUGINS_SERVE_* reached the replica
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


# ---------------------------------------------------------------- Ray Data: score-pairs
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rerank_plugins.cli", *args]


def test_score_pairs_survives_a_kill_and_a_cut_file_and_resumes_exactly_once(tmp_path: Path, tiny_model: Path) -> None:
    import pyarrow as pa

    from rerank_plugins.serving.batch_scoring import read_scored

    pairs = _pairs(2400, seed=7)
    src = tmp_path / "pairs.jsonl"
    src.write_text(
        "".join(json.dumps({"query": q, "passage": p, "label": i % 3}) + "\n" for i, (q, p) in enumerate(pairs))
    )
    out = tmp_path / "labels"
    common = ["--model", str(tiny_model), "--batch-size-rows", "8", "--rows-per-file", "100"]
    env = {**os.environ, "RERANK_PLUGINS_BACKEND": "torch"}

    # 1. a bounded run
    first = subprocess.run(
        _cli("score-pairs", str(src), str(out), "--max-rows", "300", *common),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads(first.stdout)
    assert (summary["rows_done"], summary["complete"]) == (300, False)

    # 2. killed (SIGKILL, the whole process group) once a few more files are written
    proc = subprocess.Popen(
        _cli("score-pairs", str(src), str(out), *common),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while len(list((out / "scored").glob("*.parquet"))) < 6:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    survived = read_scored(out).num_rows  # a lower bound: workers of the killed run may still finish a write
    assert 300 < survived < len(pairs)
    assert (out / "_RUNNING").exists()  # left behind by the killed run

    # 3. a file cut short, as by a crash in the middle of a write
    victim = sorted((out / "scored").glob("*.parquet"))[-1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])

    # 4. resume (it first waits until the killed run's workers have stopped writing)
    last = subprocess.run(
        _cli("score-pairs", str(src), str(out), *common), env=env, capture_output=True, text=True, timeout=300
    )
    assert last.returncode == 0, last.stderr[-2000:]
    summary = json.loads(last.stdout)
    assert summary["complete"]
    assert summary["unreadable_files_set_aside"] >= 1
    assert summary["rows_done_before"] >= 300
    assert summary["rows_done_before"] + summary["rows_scored_this_run"] == len(pairs)
    assert not (out / "_RUNNING").exists()

    table = read_scored(out)
    assert table.num_rows == len(pairs)
    assert table["row"].to_pylist() == list(range(len(pairs)))  # each pair exactly once
    assert table["label"].to_pylist() == [i % 3 for i in range(len(pairs))]  # other columns kept
    sample = list(range(0, len(pairs), 97))
    local = get_scorer(RerankConfig(model=str(tiny_model), backend="torch")).score([pairs[i] for i in sample])
    assert pa.compute.take(table["score"], sample).to_pylist() == pytest.approx(local, abs=1e-5)


def test_score_pairs_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    from rerank_plugins.errors import RerankInputError
    from rerank_plugins.serving.batch_scoring import score_pairs

    src = tmp_path / "p.jsonl"
    src.write_text('{"question": "q", "passage": "p"}\n')
    with pytest.raises(RerankInputError, match=r"no column 'query'.*--query-field"):
        score_pairs(src, tmp_path / "o")
    src.write_text('{"query": "q", "passage": "p"}\n{"query": null, "passage": "p"}\n')
    with pytest.raises(RerankInputError, match=r"rows without .query. \(first: row 1\)"):
        score_pairs(src, tmp_path / "o2")
    with pytest.raises(RerankInputError, match="does not exist"):
        score_pairs(tmp_path / "missing.jsonl", tmp_path / "o3")
    (tmp_path / "p.csv").write_text("query,passage\n")
    with pytest.raises(RerankInputError, match="unsupported input type"):
        score_pairs(tmp_path / "p.csv", tmp_path / "o4")


def test_score_pairs_refuses_a_folder_it_did_not_start_and_leaves_its_files_alone(tmp_path: Path) -> None:
    """Issue 22 #2: a folder holding the user's own files is refused; nothing in it changes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rerank_plugins.errors import RerankInputError
    from rerank_plugins.serving.batch_scoring import score_pairs

    src = tmp_path / "p.jsonl"
    src.write_text('{"query": "q", "passage": "p"}\n')
    out = tmp_path / "out"
    (out / "staged").mkdir(parents=True)
    (out / "scored").mkdir()
    (out / "staged" / "README").write_text("mine")
    (out / "scored" / "notes.jsonl").write_text('{"a": 1}\n')
    pq.write_table(pa.table({"x": [1]}), out / "scored" / "table.parquet")
    (out / "scored" / "meta.json").write_text("{}")
    (out / "summary.json").write_text('{"mine": true}')
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RerankInputError, match="not started by score-pairs"):
        score_pairs(src, out, max_rows=0)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(RerankInputError, match="is a file"):
        score_pairs(src, src, max_rows=0)


def test_score_pairs_claims_an_empty_folder_and_resumes_in_its_own(tmp_path: Path, tiny_model: Path) -> None:
    from rerank_plugins.serving.batch_scoring import score_pairs

    src = tmp_path / "p.jsonl"
    src.write_text('{"query": "q", "passage": "p"}\n')
    out = tmp_path / "out"
    out.mkdir()
    cfg = RerankConfig(model=str(tiny_model), device="cpu")
    first = score_pairs(src, out, cfg, max_rows=0, progress=False)
    assert (out / "_SCORE_PAIRS.json").is_file()
    assert first["rows_done"] == 0
    assert score_pairs(src, out, cfg, max_rows=0, progress=False)["rows_total"] == 1  # its own folder: resumed


@pytest.mark.ray
def test_docs_name_every_ray_process_that_listens_beyond_loopback() -> None:
    """Issue 23 #9: a local Ray start opens ports beyond loopback (Ray's behaviour); docs/serving.md says
    exactly which processes, and this test fails when a Ray version adds another."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from ray_listeners import listeners

    table = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    exposed = {name for (name, where), _ in listeners().items() if where != "loopback"}
    agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
    # a worker or actor process is covered by the table's "ray::* workers and actors" row
    documented = {
        name
        for name in exposed
        if f"| {name}" in table or (name.startswith("ray::") and name not in agents and "| ray::* workers" in table)
    }
    assert exposed == documented, f"listening beyond loopback but not in docs/serving.md: {exposed - documented}"


@pytest.mark.ray
def test_rows_per_file_holds_below_the_batch_size(tmp_path: Path, tiny_model: Path) -> None:
    """Issue 23 #7: --rows-per-file was ignored when smaller than the scorer's batch."""
    import pyarrow.parquet as pq

    from rerank_plugins.serving.batch_scoring import score_pairs

    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"query": "q", "passage": f"p {i}"}) + "\n" for i in range(30)))
    cfg = RerankConfig(model=str(tiny_model), device="cpu", backend="torch")
    summary = score_pairs(src, tmp_path / "out", cfg, rows_per_file=5, batch_size=64, progress=False)
    assert summary["complete"]
    sizes = [pq.read_metadata(f).num_rows for f in (tmp_path / "out" / "scored").glob("*.parquet")]
    assert sum(sizes) == 30
    assert max(sizes) <= 5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_staging_streams_the_input_and_numbers_rows_across_parts(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rerank_plugins.serving import batch_scoring

    rows = [{"query": f"q{i}", "passage": f"p{i}", "extra": i} for i in range(250)]
    src = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        monkeypatch.setattr(batch_scoring, "_batches", _small_json_blocks)
    else:
        pq.write_table(pa.Table.from_pylist(rows), src)
        monkeypatch.setattr(batch_scoring, "_STAGE_ROWS", 64)
    stage = tmp_path / "staged"
    assert batch_scoring._stage(src, stage, "query", "passage") == 250
    parts = sorted(stage.glob("*.parquet"))
    assert len(parts) > 2  # streamed in several parts
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    assert table["row"].to_pylist() == list(range(250))
    assert table["extra"].to_pylist() == list(range(250))
    # staged once: a second call reads the marker; a changed input is refused
    assert batch_scoring._stage(src, stage, "query", "passage") == 250
    src.write_bytes(src.read_bytes() + (b'{"query": "q", "passage": "p", "extra": 1}\n' if fmt == "jsonl" else b""))
    if fmt == "jsonl":
        with pytest.raises(batch_scoring.RerankInputError, match="changed since"):
            batch_scoring._stage(src, stage, "query", "passage")


def _small_json_blocks(path: Path) -> Any:
    import pyarrow.json as pj

    yield from pj.open_json(path, read_options=pj.ReadOptions(block_size=2048))


def test_staging_a_folder_numbers_rows_across_its_files_in_path_order(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rerank_plugins.serving import batch_scoring

    src = tmp_path / "pairs"
    (src / "part=b").mkdir(parents=True)
    (src / "part=a").mkdir()
    (src / "part=a" / "x.jsonl").write_text(
        "".join(json.dumps({"query": "q", "passage": f"a{i}"}) + "\n" for i in range(3))
    )
    pq.write_table(
        pa.Table.from_pylist([{"query": "q", "passage": f"b{i}"} for i in range(2)]), src / "part=b" / "y.parquet"
    )
    (src / "README.txt").write_text("not data")
    stage = tmp_path / "staged"
    assert batch_scoring._stage(src, stage, "query", "passage") == 5
    table = pa.concat_tables([pq.read_table(p) for p in sorted(stage.glob("*.parquet"))])
    assert table["passage"].to_pylist() == ["a0", "a1", "a2", "b0", "b1"]
    assert table["row"].to_pylist() == list(range(5))
    os.utime(src / "part=b" / "y.parquet", ns=(1, 1))  # any file of the folder changing is noticed
    with pytest.raises(batch_scoring.RerankInputError, match="changed since"):
        batch_scoring._stage(src, stage, "query", "passage")
    (tmp_path / "empty").mkdir()
    with pytest.raises(batch_scoring.RerankInputError, match=r"no \.jsonl or \.parquet"):
        batch_scoring._input_files(tmp_path / "empty")


def test_rows_written_twice_are_kept_once_and_unreadable_files_set_aside(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rerank_plugins.serving.batch_scoring import _done_rows, read_scored

    scored = tmp_path / "scored"
    scored.mkdir()
    old = scored / "a.parquet"
    pq.write_table(pa.table({"row": [0, 1, 2], "score": [0.0, 0.1, 0.2]}), old)
    os.utime(old, ns=(1, 1))
    pq.write_table(pa.table({"row": [2, 3], "score": [9.0, 0.3]}), scored / "b.parquet")  # a late duplicate of row 2
    pq.write_table(pa.table({"row": [1], "score": [9.0]}), scored / "c.parquet")  # nothing new
    (scored / "d.parquet").write_bytes(b"PAR1 cut")
    rows, removed = _done_rows(scored)
    assert sorted(rows.tolist()) == [0, 1, 2, 3]
    assert removed == 1
    assert sorted(p.name for p in scored.iterdir()) == ["a.parquet", "b.parquet"]
    assert (tmp_path / "unreadable" / "d.parquet").read_bytes() == b"PAR1 cut"  # set aside, not deleted
    table = read_scored(tmp_path)
    assert table["row"].to_pylist() == [0, 1, 2, 3]
    assert table["score"].to_pylist() == [0.0, 0.1, 0.2, 0.3]  # the older copy of row 2 kept
