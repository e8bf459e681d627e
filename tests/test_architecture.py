"""The package's shape: no import cycles, one scorer factory, backends that do not know each other,
a pipeline that only orders. Imports are read from the source (top level and inside functions; those
under ``if TYPE_CHECKING`` are left out), so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
import typing
from pathlib import Path

import rerank_plugins
from rerank_plugins.config import RerankConfig

ROOT = Path(rerank_plugins.__file__).parent
#: Modules that implement a scorer kind; none may import another.
BACKENDS = {
    "rerank_plugins.scoring.cross_encoder",
    "rerank_plugins.scoring.windowed",
    "rerank_plugins.scoring.seq2seq",
    "rerank_plugins.scoring.ensemble",
    "rerank_plugins.scoring.bi_encoder",
    "rerank_plugins.scoring.remote",
    "rerank_plugins.scoring.onnx_backend",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (a submodule's import runs its parents' too)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            ):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    out: set[str] = set()
    for target in found:
        while target and target not in known:
            target = target.rpartition(".")[0]
        while target.startswith("rerank_plugins"):  # the module and the packages above it
            if target != name and target in known and not name.startswith(target + "."):
                out.add(target)
            target = target.rpartition(".")[0]
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, set(modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_walk_sees_lazy_imports() -> None:
    graph = _graph()
    # get_scorer imports its backends inside functions: the walk must still see them
    assert "rerank_plugins.scoring.cross_encoder" in graph["rerank_plugins.scoring.factory"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles_in_the_package() -> None:
    assert _cycles(_graph()) == []


def test_no_backend_imports_another_backend() -> None:
    graph = _graph()
    crossing = {name: sorted(graph[name] & (BACKENDS - {name})) for name in BACKENDS}
    # the cross-encoder runs its model through ONNX Runtime when asked: the only allowed edge
    crossing["rerank_plugins.scoring.cross_encoder"].remove("rerank_plugins.scoring.onnx_backend")
    assert {k: v for k, v in crossing.items() if v} == {}


def test_the_pipeline_imports_no_scorer_backend_and_ordering_no_scoring_beyond_the_contract() -> None:
    graph = _graph()
    pipeline = [name for name in graph if name.startswith("rerank_plugins.pipeline")]
    assert len(pipeline) >= 4
    for name in pipeline:
        assert not graph[name] & BACKENDS, name
    # following top_n from an adapter: adapter -> pipeline.ordering, which needs only the scorer contract
    assert {m for m in graph["rerank_plugins.pipeline.ordering"] if m.startswith("rerank_plugins.scoring")} == {
        "rerank_plugins.scoring",
        "rerank_plugins.scoring.base",
    }


def test_every_scorer_kind_has_a_builder() -> None:
    from rerank_plugins.scoring.factory import BUILDERS

    sections = typing.get_args(RerankConfig.model_fields["scorer"].annotation)
    kinds = [kind for section in sections for kind in typing.get_args(section.model_fields["kind"].annotation)]
    assert len(kinds) == 6
    assert sorted(kinds) == sorted(BUILDERS)


def test_the_scoring_package_exports_its_scorers_lazily() -> None:
    code = (
        "import sys, rerank_plugins.scoring as s; "
        "assert not any(m in sys.modules for m in ('torch', 'transformers', 'rerank_plugins.scoring.cross_encoder')); "
        "from rerank_plugins.scoring import WindowedScorer, get_scorer; "
        "from rerank_plugins.scoring.factory import get_scorer as g; assert get_scorer is g; "
        "print(sorted(s.__all__) == sorted(dir(s)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_every_module_is_listed_in_docs_architecture() -> None:
    listed = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [p.relative_to(ROOT.parent).as_posix() for p in sorted(ROOT.rglob("*.py"))]
    missing = [m for m in missing if f"`{m}`" not in listed]
    assert missing == [], "add these modules to docs/architecture.md"
