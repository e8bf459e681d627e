"""Execute the notebooks in place (outputs saved), or check them without saving.

Usage (from the repository root)::

    python notebooks/execute.py            # run every notebook, save its outputs
    python notebooks/execute.py 03_configuration.ipynb
    python notebooks/execute.py --check    # run, report problems, save nothing

A notebook fails the check if a cell raises, writes to stderr (warnings, progress bars), or shows a path
of the machine that ran it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _machine_paths() -> re.Pattern[str]:
    """Directories of the machine running the notebooks, which must never appear in their outputs."""
    import sysconfig
    import tempfile

    places = {HERE.parent, Path.home(), Path(tempfile.gettempdir()), Path(sys.prefix)}
    places |= {Path(p) for p in sysconfig.get_paths().values()}
    names = sorted({str(p.resolve()) for p in places if len(p.resolve().parts) > 1}, key=len, reverse=True)
    return re.compile("|".join(re.escape(n) for n in names) + "|site-packages")


MACHINE_PATH = _machine_paths()


def problems(notebook: object) -> list[str]:
    """Errors, stderr output and machine paths in an executed notebook."""
    found = []
    for i, cell in enumerate(notebook.cells):  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            text = out.get("text", "") or "\n".join(
                str(v) for k, v in out.get("data", {}).items() if k.startswith("text/")
            )
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            elif out.get("name") == "stderr":
                found.append(f"cell {i}: stderr: {text[:200]!r}")
            if MACHINE_PATH.search(text):
                found.append(f"cell {i}: machine path in output: {MACHINE_PATH.search(text).group(0)!r}")  # type: ignore[union-attr]
    return found


def execute(path: Path, timeout: int = 900) -> object:
    """Run ``path`` with the current interpreter's kernel, cwd = the notebooks folder; return the notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    )
    client.execute()
    return notebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    parser.add_argument("--check", action="store_true", help="do not save outputs")
    args = parser.parse_args()
    import nbformat

    paths = [HERE / n for n in args.names] or sorted(HERE.glob("[0-9]*.ipynb"))
    failed = 0
    for path in paths:
        start = time.perf_counter()
        notebook = execute(path)
        found = problems(notebook)
        status = "ok" if not found else "PROBLEMS"
        sys.stdout.write(f"{path.name}: {status} in {time.perf_counter() - start:.0f} s\n")
        for p in found:
            sys.stdout.write(f"  {p}\n")
        failed += bool(found)
        if not args.check:
            nbformat.write(notebook, path)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
