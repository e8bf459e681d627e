"""The package surface: light import, declared extras, helpful install hints, the public API."""

from __future__ import annotations

import subprocess
import sys

import pytest
import tomllib

import rerank_plugins
from rerank_plugins import MissingExtraError
from rerank_plugins._extras import _MODULE_EXTRA, EXTRAS, require
from tests.conftest import REPO

HEAVY = ["torch", "transformers", "sentence_transformers", "langchain_core", "llama_index", "bm25s", "numpy"]


def test_import_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, rerank_plugins, rerank_plugins.config, rerank_plugins.pipeline, rerank_plugins.fusion;"
        "rerank_plugins.RerankConfig(); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_pinned() -> None:
    assert rerank_plugins.__all__ == [
        "Candidate",
        "ConfigError",
        "CrossEncoderScorer",
        "HybridNodeRetriever",
        "HybridRetriever",
        "HybridSearcher",
        "MissingExtraError",
        "ModelLoadError",
        "PairNote",
        "RankedCandidate",
        "RerankCompressor",
        "RerankConfig",
        "RerankInputError",
        "RerankNodePostprocessor",
        "RerankPluginsError",
        "RerankResult",
        "ScoredPairs",
        "Scorer",
        "ScorerOutputError",
        "__version__",
        "arerank_candidates",
        "default_model_path",
        "get_scorer",
        "merge_candidates",
        "reciprocal_rank_fusion",
        "rerank_candidates",
        "weighted_score_fusion",
    ]
    for name in rerank_plugins.__all__:
        try:
            value = getattr(rerank_plugins, name)
        except MissingExtraError as exc:  # a bare install: the name resolves to the install hint
            value = str(exc)
            assert "pip install" in value, name
        assert value is not None


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = rerank_plugins.nope  # type: ignore[attr-defined]


def _declared_extras() -> dict[str, list[str]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]  # type: ignore[no-any-return]


def test_every_install_hint_names_a_declared_extra_that_provides_the_package() -> None:
    declared = _declared_extras()
    for extra, packages in EXTRAS.items():
        assert extra in declared, f"extra {extra!r} is not declared in pyproject.toml"
        names = {
            req.split(";")[0].split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
            for req in declared[extra]
        }
        assert set(packages) <= names, (extra, packages, names)
    for module, (package, extra) in _MODULE_EXTRA.items():
        assert package in EXTRAS[extra], module


def test_missing_extra_gives_typed_error_with_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bm25s", None)
    with pytest.raises(MissingExtraError, match=r'pip install "rerank-plugins\[retrieval\]"') as info:
        require("bm25s", "BM25 retrieval")
    assert isinstance(info.value, ImportError)
    assert info.value.extra == "retrieval"


def test_missing_extra_through_the_lazy_adapter_import(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith(("llama_index", "rerank_plugins.adapters.llamaindex"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "llama_index", None)
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    with pytest.raises(MissingExtraError, match=r"rerank-plugins\[llamaindex\]"):
        import rerank_plugins.adapters.llamaindex  # noqa: F401


def test_import_error_inside_an_installed_package_is_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> None:
        raise ModuleNotFoundError("No module named 'some_internal_dep'", name="some_internal_dep")

    monkeypatch.setattr("importlib.import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="some_internal_dep"):
        require("bm25s", "BM25 retrieval")


def test_the_config_reference_is_generated_from_the_model() -> None:
    from rerank_plugins.config import config_reference_markdown

    assert config_reference_markdown() in (REPO / "docs" / "configuration.md").read_text()


def test_the_readme_is_for_users() -> None:
    """Issue 24: at most ~250 lines, no commit hashes, every field of every section named in its table."""
    import re

    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert not re.search(r"\bcommit [0-9a-f]{7,}\b", readme)
    table = readme.split("## Configuration", 1)[1].split("## Command line", 1)[0]
    from rerank_plugins import config as c

    sections = [c.RerankConfig, c.CrossEncoderSettings, c.WindowSettings, c.RemoteSettings, c.EnsembleSettings]
    sections += [c.CascadeSettings, c.CacheSettings, c.DuoSettings]
    unnamed = [(s.__name__, f) for s in sections for f in s.model_fields if f"`{f}`" not in table]
    assert unnamed == []


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    command = "python3 -m pip install tox && python3 -m tox"
    assert f"{command}           # installs everything, runs the whole test suite" in readme
    assert command in (REPO / ".ci" / "run").read_text()
