"""Models shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from rerank_plugins.errors import ModelLoadError

__all__ = ["DEFAULT_MODEL_DIRNAME", "default_model_path"]

#: Folder (inside this package) of the cross-encoder used when no model is given.
DEFAULT_MODEL_DIRNAME = "minilm-l6-rerank"


def default_model_path() -> Path:
    """Directory of the shipped default cross-encoder (a standard Hugging Face folder).

    Users can load, export, inspect or fine-tune it further like any local model.

    Raises:
        ModelLoadError: if this installation carries no shipped model.
    """
    path = Path(__file__).resolve().parent / DEFAULT_MODEL_DIRNAME
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"No default cross-encoder is shipped in this installation (looked in {path}). "
            "Pass model='<Hugging Face id or local path>' (e.g. 'cross-encoder/ms-marco-MiniLM-L-6-v2')."
        )
    return path
