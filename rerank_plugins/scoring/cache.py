"""A score cache in front of any scorer: repeated pairs cost nothing.

Keys are (scorer name, settings fingerprint, sha1(query), sha1(passage)), so a
cache never mixes models or activations. The in-memory store is an LRU bounded by
``max_entries``; an optional SQLite file (standard library) keeps scores across
processes. A store that cannot be opened or written is bypassed with a warning,
never a crash.

Example:
    >>> from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer
    >>> class Count(Scorer):
    ...     name = "count"
    ...     calls = 0
    ...     def score_detailed(self, pairs):
    ...         Count.calls += len(pairs)
    ...         return ScoredPairs([float(len(p)) for _, p in pairs], [PairNote()] * len(pairs))
    >>> cached = CachedScorer(Count())
    >>> cached.score([("q", "ab"), ("q", "abc")]), cached.score([("q", "ab")])
    ([2.0, 3.0], [2.0])
    >>> Count.calls, cached.stats()["hit_rate"]
    (2, 0.3333333333333333)
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer

__all__ = ["CachedScorer"]

logger = logging.getLogger(__name__)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


class CachedScorer(Scorer):
    """Wrap ``inner`` with an LRU (and optionally SQLite) cache of pair scores.

    Args:
        inner: The scorer to cache.
        max_entries: LRU capacity (None: unbounded).
        path: Optional SQLite file for a persistent store.
        fingerprint: Extra key part for settings that change scores (defaults to the
            inner scorer's ``config`` when it has one).
    """

    def __init__(
        self,
        inner: Scorer,
        *,
        max_entries: int | None = 100_000,
        path: str | Path | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.recommended_first_stage_weight = inner.recommended_first_stage_weight
        self.max_entries = max_entries
        if fingerprint is None:
            fingerprint = getattr(inner, "fingerprint", None)
        self._prefix = f"{inner.name}|{fingerprint or ''}"
        self._memory: OrderedDict[tuple[str, str, str], tuple[float, PairNote]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = self._open(Path(path))

    def _open(self, path: Path) -> sqlite3.Connection | None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), check_same_thread=False)
            db.execute(
                "CREATE TABLE IF NOT EXISTS scores (prefix TEXT, q TEXT, p TEXT, score REAL, how TEXT, "
                "dropped INTEGER, windows INTEGER, PRIMARY KEY (prefix, q, p))"
            )
            db.commit()
            return db
        except (sqlite3.Error, OSError) as exc:
            logger.warning("score cache %s cannot be used (%s); continuing without the persistent store", path, exc)
            return None

    def stats(self) -> dict[str, Any]:
        """Hits, misses, hit rate and size of the in-memory store."""
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
            "entries": len(self._memory),
        }

    def _db_get(self, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple[float, PairNote]]:
        if self._db is None or not keys:
            return {}
        found = {}
        try:
            for key in keys:
                row = self._db.execute(
                    "SELECT score, how, dropped, windows FROM scores WHERE prefix=? AND q=? AND p=?", key
                ).fetchone()
                if row is not None:
                    found[key] = (float(row[0]), PairNote(row[1], int(row[2]), int(row[3])))
        except sqlite3.Error as exc:
            logger.warning("score cache read failed (%s); bypassing the persistent store", exc)
            self._db = None
            return {}
        return found

    def _db_put(self, items: list[tuple[tuple[str, str, str], tuple[float, PairNote]]]) -> None:
        # a note with a cut query is not stored on disk (the table has no column for it); memory keeps it
        items = [item for item in items if not item[1][1].query_dropped_tokens]
        if self._db is None or not items:
            return
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*k, s, n.how, n.dropped_tokens, n.windows) for k, (s, n) in items],
            )
            self._db.commit()
        except sqlite3.Error as exc:
            logger.warning("score cache write failed (%s); bypassing the persistent store", exc)
            self._db = None

    def _remember(self, key: tuple[str, str, str], value: tuple[float, PairNote]) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        if self.max_entries is not None:
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        pairs = list(pairs)
        keys = [(self._prefix, _digest(q), _digest(p)) for q, p in pairs]
        with self._lock:
            known = {k: self._memory[k] for k in keys if k in self._memory}
            for k in known:
                self._memory.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        from_db = self._db_get(missing)
        known.update(from_db)
        todo = [k for k in missing if k not in from_db]
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            out = self.inner.score_detailed([pairs[first[k]] for k in todo])
            fresh = list(zip(todo, zip(out.scores, out.notes, strict=True), strict=True))
            known.update(fresh)
            self._db_put(fresh)
        with self._lock:
            for k in missing:
                self._remember(k, known[k])
            self.misses += len(todo)
            self.hits += len(keys) - len(todo)
        return ScoredPairs([known[k][0] for k in keys], [known[k][1] for k in keys])
