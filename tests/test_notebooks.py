"""The notebooks run top to bottom with the current code, and stay clean (no errors, stderr or machine paths)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))

from execute import execute, problems  # noqa: E402

ALL = sorted(p.name for p in NOTEBOOKS.glob("[0-9]*.ipynb"))


def test_there_are_six_notebooks() -> None:
    assert len(ALL) == 6, ALL


@pytest.mark.parametrize("name", ALL)
def test_committed_outputs_are_clean_and_present(name: str) -> None:
    import nbformat

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "commit the notebook executed (python notebooks/execute.py)"
    assert problems(notebook) == []


@pytest.mark.notebooks
@pytest.mark.parametrize("name", ALL)
def test_notebook_executes_cleanly(name: str) -> None:
    assert problems(execute(NOTEBOOKS / name)) == []
