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
import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MODEL_FILES", "downloads_allowed", "ensure_hub_reachable", "files_digest", "model_identity"]

#: The files of a model folder whose content changes its scores.
MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model")

_memo: dict[tuple[tuple[str, int, int], ...], str] = {}
_memo_lock = threading.Lock()


def files_digest(directory: Path, patterns: Iterable[str] = MODEL_FILES, *, salt: str = "") -> str:
    """sha256 (16 hex digits) over the names and contents of ``directory``'s files matching ``patterns``."""
    files = sorted({f for pattern in patterns for f in directory.glob(pattern) if f.is_file()})
    stats = tuple((str(f.resolve()), st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),))
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


def downloads_allowed(setting: bool | None) -> bool:
    """``allow_download`` resolved: an explicit True/False wins; None follows ``HF_HUB_OFFLINE``."""
    if setting is not None:
        return setting
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in {"1", "true", "yes", "on"}


def _cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def ensure_hub_reachable(name: str, timeout_s: float = 3.0) -> None:
    """Before downloading ``name``: fail within ``timeout_s`` when the Hub cannot be reached, instead of
    waiting on connection timeouts and retries. Local folders and cached ids need no network."""
    if Path(name).expanduser().exists() or _cached(name):
        return
    from urllib.parse import urlparse

    from rerank_plugins.errors import ModelLoadError

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ModelLoadError(
            f"Could not download {name!r}: the Hugging Face Hub ({endpoint}) is not reachable ({exc}). "
            "Pass the path of a local copy, or set HF_HUB_OFFLINE=1 (or allow_download=False) to use only "
            "local files and the local cache."
        ) from exc
