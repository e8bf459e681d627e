"""ONNX Runtime execution of a cross-encoder: export once, cache on disk, run on the CPU.

The export uses torch's TorchScript exporter over eager attention, whose graph ONNX Runtime
fuses into its BERT kernels (the dynamo exporter, which needs ``onnxscript``, is the fallback);
int8 weights come from ONNX Runtime's ``quantize_dynamic`` (per channel), either for every linear
layer (``quantize="all"``) or for the feed-forward layers only (``quantize="ffn"``: the attention
projections stay fp32, which keeps the scores closer to fp32 for part of the speed-up). Exports are
kept under ``<onnx cache>/<model>-<hash>/`` where the hash covers the model's config and
weight files, so a changed model gets a new export and a stale one is never used. A cached
file that does not load is rebuilt with a warning; a cache directory that cannot be written
is bypassed (the export lives in a temporary directory for this process) with a warning.

optimum is not used: its ONNX exporter (``optimum-onnx``) pins ``transformers<4.58``, which
conflicts with sentence-transformers 6 (``transformers>=5``).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from rerank_plugins._extras import require
from rerank_plugins.errors import ModelLoadError
from rerank_plugins.scoring.identity import files_digest

__all__ = [
    "QUANTIZE_FILES",
    "OnnxRunner",
    "default_cache_dir",
    "export_dir_for",
    "ffn_matmuls",
    "onnxruntime_available",
]

logger = logging.getLogger(__name__)

_EXPORT_VERSION = "2"  # bump when the export recipe changes (2: TorchScript exporter, fusable graph)
_WEIGHT_FILES = ("config.json", "*.safetensors", "*.bin")

#: What ``quantize`` names -> the export's file name (None: fp32).
QUANTIZE_FILES = {None: "model.onnx", "all": "model-int8.onnx", "ffn": "model-int8-ffn.onnx"}
#: An ONNX backend -> its ``quantize`` (the weights' dtype label is the backend's name less ``onnx-``).
BACKEND_QUANTIZE = {"onnx": None, "onnx-int8": "all", "onnx-int8-ffn": "ffn"}

# A BERT-style feed-forward MatMul: ``.../layer.N/intermediate/dense/MatMul`` and ``.../layer.N/output/dense/MatMul``
# (``.../attention/output/dense`` is the attention's output projection, not the feed-forward block).
_FFN_NODE = re.compile(r"/(intermediate|output)/dense/MatMul")


def onnxruntime_available() -> bool:
    """True when onnxruntime and onnxscript (the exporter's dependency) are importable."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))


def default_cache_dir() -> Path:
    """``$RERANK_PLUGINS_ONNX_CACHE_DIR``, else ``$XDG_CACHE_HOME/rerank_plugins/onnx`` (``~/.cache/...``)."""
    explicit = os.environ.get("RERANK_PLUGINS_ONNX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rerank_plugins" / "onnx"


def _model_files_hash(model_dir: Path) -> str:
    return files_digest(model_dir, _WEIGHT_FILES, salt=_EXPORT_VERSION)


def export_dir_for(model_dir: Path, cache_dir: Path | None = None) -> Path:
    """The cache directory of ``model_dir``'s exports (depends on the content of its files)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_dir.resolve().name)[:60] or "model"
    return (cache_dir or default_cache_dir()) / f"{slug}-{_model_files_hash(model_dir)}"


def _export_graph(torch: Any, model: Any, sample: Any, path: Path) -> str:
    """Write ``model``'s fp32 graph to ``path``; returns the exporter that made it.

    First choice: the TorchScript exporter over eager attention. It writes the classic BERT
    attention pattern whose GELU and attention scaling ONNX Runtime's graph optimizer fuses into its
    kernels (BiasGelu, FusedMatMul); the dynamo export of SDPA attention keeps an Erf GELU and
    IsNaN/Where masking and ran markedly slower on a CPU (docs/benchmarks.md), with the same
    scores. Fallback (a model the TorchScript tracer cannot handle, or a torch without it): the
    dynamo exporter.
    """
    names = list(sample.keys())

    class _Logits(torch.nn.Module):  # type: ignore[misc]  # positional inputs in ``names`` order, whatever forward's signature
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).logits

    previous = getattr(model.config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(model, "set_attn_implementation")
    try:
        if switch:
            model.set_attn_implementation("eager")
        torch.onnx.export(
            _Logits().eval(),
            tuple(sample[k] for k in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in names}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        return "torchscript"
    except Exception as exc:  # any tracer failure: the dynamo exporter is the fallback
        logger.warning("TorchScript ONNX export failed (%s); using the dynamo exporter (slower graph)", exc)
    finally:
        if switch:
            model.set_attn_implementation(previous)
    require("onnxscript", "ONNX export")
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    torch.onnx.export(
        model,
        (),
        str(path),
        kwargs=dict(sample),
        input_names=names,
        output_names=["logits"],
        dynamic_shapes={k: {0: batch, 1: seq} for k in names},
        opset_version=18,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return "dynamo"


def ffn_matmuls(graph: Any) -> list[str]:
    """Names of the feed-forward MatMul nodes (weights as initializers) of an exported BERT-style graph."""
    weights = {i.name for i in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul"
        and any(i in weights for i in n.input)
        and _FFN_NODE.search(n.name)
        and "/attention/" not in n.name
    ]


def _export(model: Any, tokenizer: Any, target: Path, quantize: str | None) -> None:
    torch = require("torch", "ONNX export")
    target.parent.mkdir(parents=True, exist_ok=True)
    fp32 = target.parent / "model.onnx"
    if not fp32.exists():
        start = time.perf_counter()
        sample = tokenizer(
            ["a query", "another query"], ["a passage", "a longer passage here"], return_tensors="pt", padding=True
        )
        was_dtype = next(model.parameters()).dtype
        model = model.float().eval()
        tmp = fp32.with_suffix(f".tmp{os.getpid()}")
        exporter_log = logging.getLogger("torch.onnx")
        level = exporter_log.level
        exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." and such
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                exporter = _export_graph(torch, model, sample, tmp)
            os.replace(tmp, fp32)
        finally:
            exporter_log.setLevel(level)
            tmp.unlink(missing_ok=True)
            model.to(was_dtype)
        logger.info(
            "exported %s to ONNX (%s exporter) in %.1f s", target.parent.name, exporter, time.perf_counter() - start
        )
    if quantize:
        from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

        tmp = target.with_suffix(f".tmp{os.getpid()}")
        prepared = target.with_suffix(f".prep{os.getpid()}")
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            nodes = None
            if quantize == "ffn":
                import onnx

                nodes = ffn_matmuls(onnx.load(str(prepared)).graph)
                if not nodes:
                    raise ModelLoadError(
                        f"No feed-forward layers (.../intermediate/dense, .../output/dense) found in the ONNX graph of "
                        f"{target.parent.name}: backend='onnx-int8-ffn' knows BERT-style encoders only; use "
                        "backend='onnx-int8' (every linear layer) or 'onnx'."
                    )
            quantize_dynamic(
                str(prepared), str(tmp), weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=nodes
            )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
            prepared.unlink(missing_ok=True)
        logger.info("quantized %s to int8 (%s)", target.parent.name, quantize)


class OnnxRunner:
    """An ONNX Runtime session over an exported cross-encoder; call it with a tokenizer's output.

    Args:
        name: The model's id or path (for messages).
        model_dir: Local directory of the model (its files are hashed for the cache key).
        model: The loaded torch model, used only when an export has to be made.
        tokenizer: Its tokenizer (for the export's sample input).
        quantize: int8 dynamically quantized weights: "all" (every linear layer), "ffn" (the
            feed-forward layers only) or None (fp32).
        cache_dir: Where exports live (None: :func:`default_cache_dir`).
        threads: ONNX Runtime intra-op threads (None: one per physical core).
    """

    def __init__(
        self,
        name: str,
        model_dir: Path,
        model: Any,
        tokenizer: Any,
        *,
        quantize: str | None,
        cache_dir: Path | None,
        threads: int | None,
    ) -> None:
        self._ort = require("onnxruntime", "The ONNX backend")
        if quantize not in QUANTIZE_FILES:
            raise ValueError(f"quantize must be one of {sorted(QUANTIZE_FILES, key=str)}, not {quantize!r}")
        self.quantize = quantize
        directory = export_dir_for(model_dir, cache_dir)
        filename = QUANTIZE_FILES[quantize]
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
        except OSError as exc:
            self._tmp = tempfile.TemporaryDirectory(prefix="rerank-onnx-")
            logger.warning(
                "ONNX cache %s is not writable (%s); exporting to a temporary directory for this process. "
                "Set onnx_cache_dir (or RERANK_PLUGINS_ONNX_CACHE_DIR) to a writable place to keep the export.",
                directory,
                exc,
            )
            directory = Path(self._tmp.name)
        self.path = directory / filename
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = self._open(name, model, tokenizer, options)
        self.input_names = {i.name for i in self.session.get_inputs()}

    def _open(self, name: str, model: Any, tokenizer: Any, options: Any) -> Any:
        for attempt in range(2):
            if not self.path.exists():
                if model is None:
                    raise ModelLoadError(f"No ONNX export of {name!r} at {self.path} and no torch model to export")
                _export(model, tokenizer, self.path, self.quantize)
            try:
                return self._ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # a truncated or corrupt cached export
                if attempt:
                    raise ModelLoadError(
                        f"The ONNX export of {name!r} at {self.path} does not load ({exc}); "
                        "delete that directory or use backend='torch'"
                    ) from exc
                logger.warning("cached ONNX export %s does not load (%s); rebuilding it", self.path, exc)
                self.path.unlink(missing_ok=True)
                if self.quantize:
                    (self.path.parent / "model.onnx").unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def logits(self, encoding: Any) -> Any:
        """Run the model on a tokenizer output (torch tensors); return the logits as a torch tensor."""
        torch = require("torch", "The ONNX backend")
        feed = {k: v.cpu().numpy() for k, v in encoding.items() if k in self.input_names}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])
