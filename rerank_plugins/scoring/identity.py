"""What a model name stands for: the identity of its files, for cache keys.

A path string is not an identity: the weights in a folder can be replaced, and ``"./m"`` names
different folders from different working directories. :func:`model_identity` returns, for a
local folder, its resolved path and a content digest of the files that decide its scores
(weights, configuration, tokenizer, calibration); a Hugging Face id is returned as it is (the
hub's cache is keyed by revision). Digests are memoised per (path, size, modification time),
so a folder is read once per change, not once per call.

Example:
    >>> model_identity("org/some-model")
    'org/some-model'
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MODEL_FILES", "files_digest", "model_identity"]

#: The files of a model folder whose content changes its scores.
MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model")

_memo: dict[tuple[tuple[str, int, int], ...], str] = {}
_memo_lock = threading.Lock()


def files_digest(directory: Path, patterns: Iterable[str] = MODEL_FILES, *, salt: str = "") -> str:
    """sha256 (16 hex digits) over the names and contents of ``directory``'s files matching ``patterns``."""
    files = sorted({f for pattern in patterns for f in directory.glob(pattern) if f.is_file()})
    stats = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = ((salt, 0, 0), *stats)
    with _memo_lock:
        known = _memo.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256(salt.encode())
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    out = digest.hexdigest()[:16]
    with _memo_lock:
        _memo[key] = out
    return out


def model_identity(name: str) -> str:
    """``name``'s resolved folder and a digest of its model files, or ``name`` itself for a hub id."""
    path = Path(name).expanduser()
    if not path.is_dir():
        return name
    return f"{path.resolve()}@{files_digest(path)}"
