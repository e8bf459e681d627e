"""The ONNX Runtime backends: equal to torch (fp32), close in ranking (int8), cached exports."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from rerank_plugins import RerankConfig
from rerank_plugins.errors import MissingExtraError, ModelLoadError
from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
from rerank_plugins.scoring.factory import clear_model_cache
from rerank_plugins.scoring.loading import BACKEND_FILE, resolve_backend
from rerank_plugins.scoring.onnx_backend import export_dir_for, ffn_matmuls
from tests.test_scorer_contract import PAIRS


def _scorer(model: str, cache: Path, **settings: object) -> CrossEncoderScorer:
    return CrossEncoderScorer(model, config=RerankConfig(device="cpu", onnx_cache_dir=str(cache)), **settings)


def test_onnx_fp32_scores_equal_torch(tiny_model: str, tmp_path: Path) -> None:
    torch_scores = _scorer(tiny_model, tmp_path, backend="torch", activation="raw").score(PAIRS)
    onnx = _scorer(tiny_model, tmp_path, backend="onnx", activation="raw")
    assert onnx.backend == "onnx"
    assert onnx.score(PAIRS) == pytest.approx(torch_scores, abs=1e-4)


def test_export_is_cached_and_reused(tiny_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rerank_plugins.scoring.onnx_backend")
    first = _scorer(tiny_model, tmp_path, backend="onnx").score(PAIRS)
    export = export_dir_for(Path(tiny_model), tmp_path) / "model.onnx"
    assert export.is_file()
    stamp = export.stat().st_mtime_ns
    assert any("exported" in r.getMessage() for r in caplog.records)
    caplog.clear()
    clear_model_cache()
    assert _scorer(tiny_model, tmp_path, backend="onnx").score(PAIRS) == first
    assert export.stat().st_mtime_ns == stamp
    assert not any("exported" in r.getMessage() for r in caplog.records)


def test_changed_model_gets_a_new_export(tiny_model: str, tmp_path: Path) -> None:
    from tests.conftest import build_tiny_cross_encoder

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    before_dir = export_dir_for(model, tmp_path / "cache")
    before = _scorer(str(model), tmp_path / "cache", backend="onnx").score(PAIRS)
    clear_model_cache()
    build_tiny_cross_encoder(model, seed=7)  # new weights in the same directory
    after_dir = export_dir_for(model, tmp_path / "cache")
    assert after_dir != before_dir
    after = _scorer(str(model), tmp_path / "cache", backend="onnx").score(PAIRS)
    torch_after = _scorer(str(model), tmp_path / "cache", backend="torch").score(PAIRS)
    assert after != before
    assert after == pytest.approx(torch_after, abs=1e-4)


def test_corrupt_cached_export_is_rebuilt_with_a_warning(
    tiny_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = _scorer(tiny_model, tmp_path, backend="onnx").score(PAIRS)
    export = export_dir_for(Path(tiny_model), tmp_path) / "model.onnx"
    export.write_bytes(export.read_bytes()[:5000])
    clear_model_cache()
    assert _scorer(tiny_model, tmp_path, backend="onnx").score(PAIRS) == pytest.approx(good, abs=1e-6)
    assert any("rebuilding" in r.getMessage() for r in caplog.records)


def test_unwritable_cache_is_bypassed_with_a_warning(
    tiny_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    scorer = _scorer(tiny_model, blocker / "cache", backend="onnx")
    assert len(scorer.score(PAIRS)) == len(PAIRS)
    assert any("not writable" in r.getMessage() for r in caplog.records)


def test_int8_ffn_quantizes_the_feed_forward_layers_only(tiny_model: str, tmp_path: Path) -> None:
    import onnx

    fp32 = _scorer(tiny_model, tmp_path, backend="onnx", activation="raw").score(PAIRS)
    ffn = _scorer(tiny_model, tmp_path, backend="onnx-int8-ffn", activation="raw")
    assert ffn.backend == "onnx-int8-ffn"
    scores = ffn.score(PAIRS)
    export = export_dir_for(Path(tiny_model), tmp_path)
    assert (export / "model-int8-ffn.onnx").is_file()
    assert not (export / "model-int8.onnx").exists()  # its own file: the full int8 export is a different model
    graph = onnx.load(str(export / "model-int8-ffn.onnx")).graph
    fp32_graph = onnx.load(str(export / "model.onnx")).graph
    layers = sum(1 for n in fp32_graph.node if n.name.endswith("/intermediate/dense/MatMul"))
    assert layers >= 1
    assert len(ffn_matmuls(fp32_graph)) == 2 * layers  # intermediate and output dense of every layer
    quantized = [n.name for n in graph.node if n.op_type == "MatMulInteger"]
    assert len(quantized) == 2 * layers
    assert all("/attention/" not in name for name in quantized)
    still_fp32 = [n.name for n in graph.node if n.op_type == "MatMul" and "/attention/self/query/" in n.name]
    assert len(still_fp32) == layers  # the attention projections were left in fp32
    assert scores != fp32
    assert scores == pytest.approx(fp32, abs=0.1)


def test_ffn_matmuls_finds_nothing_in_a_graph_without_bert_feed_forward_names() -> None:
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1.0, 0.0, 0.0, 1.0])
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="/decoder/block.0/mlp/MatMul")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight],
    )
    assert ffn_matmuls(graph) == []
    attention = helper.make_node("MatMul", ["x", "w"], ["z"], name="/l.0/attention/output/dense/MatMul")
    ffn = helper.make_node("MatMul", ["x", "w"], ["v"], name="/l.0/output/dense/MatMul")
    graph.node.extend([attention, ffn])
    assert ffn_matmuls(graph) == ["/l.0/output/dense/MatMul"]


@pytest.mark.slow
def test_int8_ranks_like_fp32_on_the_shipped_model(tmp_path: Path) -> None:
    from scipy.stats import spearmanr

    from rerank_plugins.data import load_demo_corpus, load_demo_questions

    passages = [p.text for p in load_demo_corpus()][:30]
    pairs = [(q, p) for q, *_ in load_demo_questions()[:8] for p in passages]
    fp32 = _scorer(None, tmp_path, backend="torch", activation="raw").score(pairs)  # type: ignore[arg-type]
    int8 = _scorer(None, tmp_path, backend="onnx-int8", activation="raw").score(pairs)  # type: ignore[arg-type]
    assert spearmanr(fp32, int8).statistic >= 0.98


@pytest.mark.auto_backend
def test_auto_picks_onnx_on_cpu_when_onnxruntime_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend("auto", "cpu") == "onnx"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(ModelLoadError, match="CPU only"):
        resolve_backend("onnx-int8", "cuda")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert resolve_backend("auto", "cpu") == "torch"


def test_missing_onnxruntime_names_the_extra(tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r'pip install "rerank-plugins\[onnx\]"'):
        _scorer(tiny_model, tmp_path / "fresh", backend="onnx")


def test_export_writes_a_graph_onnx_runtime_fuses(tiny_model: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    torch_scores = _scorer(tiny_model, tmp_path, backend="torch", activation="raw").score(PAIRS)
    onnx = _scorer(tiny_model, tmp_path, backend="onnx", activation="raw")
    assert onnx.score(PAIRS) == pytest.approx(torch_scores, abs=1e-4)  # padding included: pairs differ in length
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(export_dir_for(Path(tiny_model), tmp_path) / "model.onnx"), options)
    import onnx as onnx_lib

    ops = {n.op_type for n in onnx_lib.load(str(tmp_path / "optimized.onnx")).graph.node}
    # eager attention, traced: ONNX Runtime fuses the GELU and the attention scaling into its kernels; the
    # dynamo export of SDPA attention kept an unfused Erf GELU and IsNaN/Where masking (1.67x slower at 512 tokens)
    assert {"BiasGelu", "FusedMatMul"} <= ops
    assert not ops & {"IsNaN", "Erf"}


def test_export_falls_back_to_the_dynamo_exporter(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    real_export = torch.onnx.export

    def no_torchscript(*args: object, **kwargs: object) -> object:
        if kwargs.get("dynamo") is False:
            raise RuntimeError("tracer unavailable")
        return real_export(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.onnx, "export", no_torchscript)
    caplog.set_level(logging.INFO, logger="rerank_plugins.scoring.onnx_backend")
    torch_scores = _scorer(tiny_model, tmp_path, backend="torch", activation="raw").score(PAIRS)
    assert _scorer(tiny_model, tmp_path, backend="onnx", activation="raw").score(PAIRS) == pytest.approx(
        torch_scores, abs=1e-4
    )
    messages = [r.getMessage() for r in caplog.records]
    assert any("using the dynamo exporter" in m for m in messages)
    assert any("(dynamo exporter)" in m for m in messages)


def test_int8_ffn_on_a_graph_without_feed_forward_names_says_what_to_use(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rerank_plugins.scoring.onnx_backend.ffn_matmuls", lambda graph: [])
    with pytest.raises(ModelLoadError, match=r"backend='onnx-int8'"):
        _scorer(tiny_model, tmp_path, backend="onnx-int8-ffn")
    assert not (export_dir_for(Path(tiny_model), tmp_path) / "model-int8-ffn.onnx").exists()


@pytest.mark.auto_backend
def test_auto_runs_the_backend_the_model_folder_names(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rerank_plugins.scoring.loading.has_int8_dot_product", lambda: True)  # a VNNI CPU
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    assert resolve_backend("auto", "cpu", model) == "onnx"  # no file: fp32 ONNX
    (model / BACKEND_FILE).write_text(json.dumps({"cpu_backend": "onnx-int8", "chosen_on": "a test"}))
    assert resolve_backend("auto", "cpu", model) == "onnx-int8"
    assert resolve_backend("auto", "cuda", model) == "torch"  # a CPU choice only
    assert resolve_backend("onnx", "cpu", model) == "onnx"  # an explicit backend wins
    assert resolve_backend("auto", "cpu", tmp_path / "not-a-folder") == "onnx"  # e.g. a Hub id
    auto = _scorer(str(model), tmp_path / "cache", backend="auto", activation="raw")
    assert auto.backend == "onnx-int8"
    assert (export_dir_for(model, tmp_path / "cache") / "model-int8.onnx").is_file()


@pytest.mark.auto_backend
def test_a_broken_backend_file_names_itself(tiny_model: str, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / BACKEND_FILE).write_text(json.dumps({"cpu_backend": "int4"}))
    with pytest.raises(ModelLoadError, match=r"rerank_backend\.json is not a valid backend file.*int4"):
        _scorer(str(model), tmp_path / "cache", backend="auto")


def test_int8_scores_have_their_own_cache_key(tiny_model: str, tmp_path: Path) -> None:
    fp32 = _scorer(tiny_model, tmp_path, backend="torch").fingerprint
    assert _scorer(tiny_model, tmp_path, backend="onnx").fingerprint == fp32  # equal within 1e-4: shared
    int8 = _scorer(tiny_model, tmp_path, backend="onnx-int8").fingerprint
    ffn = _scorer(tiny_model, tmp_path, backend="onnx-int8-ffn").fingerprint
    assert len({fp32, int8, ffn}) == 3


@pytest.mark.auto_backend
def test_auto_keeps_fp32_where_the_cpu_has_no_int8_dot_product(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("rerank_plugins.scoring.loading.has_int8_dot_product", lambda: False)  # AVX2 only
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / BACKEND_FILE).write_text(json.dumps({"cpu_backend": "onnx-int8", "chosen_on": "a test"}))
    with caplog.at_level(logging.INFO, logger="rerank_plugins.scoring.loading"):
        assert resolve_backend("auto", "cpu", model) == "onnx"
    assert "no int8 dot-product instructions" in caplog.text
    assert "forces int8" in caplog.text
    assert resolve_backend("onnx-int8", "cpu", model) == "onnx-int8"  # asked for by name: int8 on any CPU
    (model / BACKEND_FILE).write_text(json.dumps({"cpu_backend": "torch", "chosen_on": "a test"}))
    assert resolve_backend("auto", "cpu", model) == "torch"  # only an int8 choice depends on the CPU


def test_int8_dot_product_is_read_from_the_cpu_flags() -> None:
    from rerank_plugins.scoring.loading import cpu_flags, has_int8_dot_product

    avx2 = cpu_flags("processor : 0\nflags : fpu sse4_2 avx2 fma\nprocessor : 1\nflags : fpu sse4_2 avx2 fma\n")
    assert avx2 == {"fpu", "sse4_2", "avx2", "fma"}
    assert not has_int8_dot_product(avx2)
    assert has_int8_dot_product(cpu_flags("flags : avx2 avx512f avx512_vnni\n"))  # Cascade Lake, Zen 4
    assert has_int8_dot_product(cpu_flags("flags : avx2 avx_vnni\n"))  # Alder Lake
    assert has_int8_dot_product(cpu_flags("Features : fp asimd asimddp\n"))  # Arm with dot product
    assert not has_int8_dot_product(cpu_flags("Features : fp asimd\n"))
