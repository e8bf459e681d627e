"""Loading helpers shared by the model-backed scorers (cross-encoder, windows, T5).

What a model name resolves to (the shipped default when None), which device, backend and dtype
"auto" means on this machine, the model folder's own guard file, and how a (query, passage) pair
is fitted into a token budget. No scorer backend lives here, so every backend can import it.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from rerank_plugins._extras import require
from rerank_plugins.errors import ModelLoadError, RerankInputError
from rerank_plugins.scoring.onnx_backend import BACKEND_QUANTIZE

__all__ = [
    "BACKEND_FILE",
    "GUARD_FILE",
    "INT8_DOT_FLAGS",
    "FittedQuery",
    "PassageLayout",
    "cpu_flags",
    "fit_query",
    "has_int8_dot_product",
    "load_backend_choice",
    "load_guard",
    "local_files",
    "read_cpuinfo",
    "refused_pickle_hint",
    "resolve_backend",
    "resolve_device",
    "resolve_dtype",
    "resolve_model",
    "token_budget_batches",
]

logger = logging.getLogger(__name__)

_MIN_PASSAGE_TOKENS = 8


def resolve_model(model: str | None) -> str:
    """The model id or path to load: ``model``, or the shipped default when None."""
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise ModelLoadError(f"model must be a non-empty Hugging Face id or path, got {model!r}")
        return model
    from rerank_plugins.models import default_model_path

    return str(default_model_path())


def refused_pickle_hint(name: str, is_local: bool, allow_pickle_weights: bool) -> str:
    """Why a local folder without safetensors weights did not load ('' when that is not the reason)."""
    if not is_local or allow_pickle_weights or any(Path(name).expanduser().glob("*.safetensors")):
        return ""
    return (
        "It has no .safetensors weights, and pickle-based files (pytorch_model.bin) are refused by "
        "default because loading them can run code. Convert it with save_pretrained(safe_serialization=True), "
        "or set allow_pickle_weights=True if you trust its source."
    )


def resolve_device(device: str) -> str:
    """Map ``"auto"`` to cuda > mps > cpu; check an explicit accelerator is present."""
    torch = require("torch", "Cross-encoder scoring")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device={device!r} was asked for but CUDA is not available; use device='auto' or 'cpu'")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("device='mps' was asked for but MPS is not available; use device='auto' or 'cpu'")
    return device


#: A model folder's own CPU backend for ``backend="auto"``: ``{"cpu_backend": "onnx-int8", "chosen_on": "..."}``,
#: written only where that backend was checked against fp32 on dev data (the shipped model).
BACKEND_FILE = "rerank_backend.json"
_CPU_BACKENDS = ("torch", *BACKEND_QUANTIZE)


def load_backend_choice(directory: Path) -> str | None:
    """The CPU backend a model folder recommends (its ``rerank_backend.json``), else None.

    Raises:
        ModelLoadError: when the file exists but does not name one of the CPU backends.
    """
    path = directory / BACKEND_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["cpu_backend"]
        if value not in _CPU_BACKENDS:
            raise ValueError(f"cpu_backend={value!r} is not one of {', '.join(_CPU_BACKENDS)}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not a valid backend file ({exc}); fix or delete it") from exc
    return str(value)


#: CPU flags (``/proc/cpuinfo``) of int8 dot-product instructions: x86 VNNI / AMX, Arm dot product / i8mm.
#: Without them ONNX Runtime multiplies u8 x s8 with instructions that saturate (VPMADDUBSW): on an
#: AVX2-only EPYC the shipped model's int8 export ran only 1.02-1.13x its fp32 one and its scores moved
#: up to 0.06 (docs/benchmarks.md, "int8 on a CPU without VNNI"), so ``backend="auto"`` keeps fp32 there.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


@functools.cache
def read_cpuinfo() -> str:
    """``/proc/cpuinfo`` (read once per process); empty where there is none (macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    r"""The CPU's feature flags, from ``/proc/cpuinfo`` (or the text given); empty where it is not readable.

    Example:
        >>> sorted(cpu_flags("processor : 0\nflags : fpu avx2 avx512_vnni\n"))
        ['avx2', 'avx512_vnni', 'fpu']
    """
    flags: set[str] = set()
    for line in (read_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / Arm
            flags.update(value.split())
    return flags


def has_int8_dot_product(flags: set[str] | None = None) -> bool:
    """Whether the CPU runs int8 matrix products with dot-product instructions (see :data:`INT8_DOT_FLAGS`).

    Apple silicon (no ``/proc/cpuinfo``) has them; any other CPU whose flags cannot be read counts as without.
    """
    flags = cpu_flags() if flags is None else flags
    if not flags and sys.platform == "darwin" and platform.machine() == "arm64":
        return True
    return any(f in flags for f in INT8_DOT_FLAGS)


def resolve_backend(backend: str, device: str, model_dir: Path | None = None) -> str:
    """Map ``"auto"`` to the CPU backend of the model's folder or ``"onnx"``, on a CPU with ONNX Runtime; else torch.

    ``model_dir``: the model's local folder; its ``rerank_backend.json`` (:func:`load_backend_choice`) names
    the backend checked for that model (the shipped model's: int8), taken where the CPU has int8 dot-product
    instructions (:func:`has_int8_dot_product`); elsewhere, and for other models, fp32 ONNX. An explicit
    ``backend="onnx-int8"`` runs int8 on any CPU.
    """
    from rerank_plugins.scoring.onnx_backend import onnxruntime_available

    if backend == "auto":
        if device != "cpu" or not onnxruntime_available():
            return "torch"
        chosen = load_backend_choice(model_dir) if model_dir is not None and model_dir.is_dir() else None
        if chosen is not None and chosen.startswith("onnx-int8") and not has_int8_dot_product():
            logger.info(
                "backend='auto': %s names %s, but this CPU has no int8 dot-product instructions (VNNI), where "
                "int8 is barely faster and less exact; running fp32 ONNX (backend=%r forces int8)",
                BACKEND_FILE,
                chosen,
                chosen,
            )
            return "onnx"
        return chosen or "onnx"
    if backend.startswith("onnx") and device != "cpu":
        raise ModelLoadError(f"backend={backend!r} runs on the CPU only; use device='cpu' or backend='torch'")
    return backend


def resolve_dtype(dtype: str, device: str) -> str:
    """Map ``"auto"`` to float16 on CUDA and float32 elsewhere (warn about half precision on a CPU)."""
    if dtype == "auto":
        return "float16" if device.startswith("cuda") else "float32"
    if device == "cpu" and dtype != "float32":
        logger.warning("dtype=%s on CPU is usually several times slower than float32", dtype)
    return dtype


def local_files(name: str, is_local: bool) -> Path:
    """The folder holding a model's files: the path itself, or its snapshot in the local Hub cache."""
    if is_local:
        return Path(name).expanduser()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, local_files_only=True))


#: A model folder's own ordering guard: ``{"first_stage_weight": w, "chosen_on": "..."}``.
GUARD_FILE = "rerank_guard.json"


def load_guard(directory: Path) -> float:
    """The ``first_stage_weight`` a model folder recommends (its ``rerank_guard.json``), else 0.

    Raises:
        ModelLoadError: when the file exists but does not hold a weight in [0, 1].
    """
    path = directory / GUARD_FILE
    if not path.is_file():
        return 0.0
    try:
        weight = json.loads(path.read_text(encoding="utf-8"))["first_stage_weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= weight <= 1.0:
            raise ValueError(f"first_stage_weight={weight!r} is not a number in [0, 1]")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not a valid guard file ({exc}); fix or delete it") from exc
    return float(weight)


class FittedQuery(NamedTuple):
    """A query as scored: its text, its length in tokens, and how many tokens were cut from its end."""

    text: str
    tokens: int
    dropped: int


def fit_query(tokenizer: Any, query: str, budget: int, special_tokens: int) -> FittedQuery:
    """``query`` as it is scored under ``budget`` tokens per pair (tokenized once, here).

    A query may take at most three quarters of the budget (less the special tokens), so that the passage
    always keeps a quarter (at least 8 tokens); a longer query loses its tail at a token boundary, with
    a warning. Descriptive information needs, chat context and HyDE texts reach such lengths.
    """
    room = max(_MIN_PASSAGE_TOKENS, budget // 4)
    keep = budget - special_tokens - room
    if keep < 1:
        raise RerankInputError(
            f"max_length={budget} leaves no room for a query next to a passage; raise max_length (at least 32)"
        )
    enc = tokenizer(query, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    n = len(enc["input_ids"])
    if n <= keep:
        return FittedQuery(query, n, 0)
    cut_at = enc["offset_mapping"][keep - 1][1]
    logger.warning(
        "a query of %d tokens was cut to its first %d so that passages keep %d of max_length=%d tokens "
        "(raise max_length to read more of it)",
        n,
        keep,
        room,
        budget,
    )
    return FittedQuery(query[:cut_at], keep, n - keep)


def token_budget_batches(lengths: Sequence[int], max_pairs: int, max_tokens: int | None) -> list[list[int]]:
    """Group positions into batches of similar length, longest first.

    A batch holds at most ``max_pairs`` pairs and, padded to its longest member, at
    most ``max_tokens`` tokens (a single pair longer than that still gets its own
    batch), so memory stays bounded at any candidate count. Callers restore input
    order by position.

    Example:
        >>> token_budget_batches([5, 100, 7, 90], max_pairs=8, max_tokens=200)
        [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        too_many = len(current) >= max_pairs
        too_long = max_tokens is not None and (len(current) + 1) * longest > max_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class PassageLayout:
    """How pairs sit in a model's token budget: what a wrapper needs to cut passages into windows.

    Attributes:
        budget: Tokens per pair (the model's ``max_length``).
        special_tokens: Tokens the tokenizer adds to a pair.
        queries: Each distinct query as it is scored (:func:`fit_query`).
        offsets: For each pair's passage, the character span of each of its tokens.
    """

    budget: int
    special_tokens: int
    queries: dict[str, FittedQuery]
    offsets: list[list[tuple[int, int]]]
