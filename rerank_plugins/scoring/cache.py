"""A score cache in front of any scorer: repeated pairs cost nothing.

Keys are (scorer name, settings fingerprint, sha1(query), sha1(passage)); a model-backed
scorer's fingerprint includes the identity of its model files (resolved path, names, sizes,
modification times), so a cache never mixes models, replaced weights or activations. The
in-memory store is an LRU bounded by ``max_entries``; an optional SQLite file (standard
library, WAL journal, busy timeout) keeps scores across threads and processes. A store that
cannot be opened is bypassed with a warning; a read or write that fails (another process
holds the lock past the timeout) costs that call its persistence, never its scores, and the
next call uses the store again. Scorers whose scores depend on the other candidates of a
call (``set_dependent``: a rank-normalised ensemble, duoT5) are refused: cache their members.

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

import contextlib
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

    inner: Scorer

    def __init__(
        self,
        inner: Scorer,
        *,
        max_entries: int | None = 100_000,
        path: str | Path | None = None,
        fingerprint: str | None = None,
        store_timeout: float = 2.0,
    ) -> None:
        if inner.set_dependent:
            raise ValueError(
                f"{inner.name!r} scores a pair relative to the other candidates of its call, so its scores "
                "cannot be cached per pair; cache its member scorers instead (get_scorer does this for you)"
            )
        self.inner = inner
        self.name = inner.name
        self.recommended_first_stage_weight = inner.recommended_first_stage_weight
        self.max_entries = max_entries
        if fingerprint is None:
            fingerprint = inner.fingerprint
        self._prefix = f"{inner.name}|{fingerprint}"
        self._memory: OrderedDict[tuple[str, str, str], tuple[float, PairNote]] = OrderedDict()
        self._lock = threading.Lock()
        # every use of the SQLite connection happens under this lock: one connection, one thread at a time
        self._db_lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.store_errors = 0
        self._store_timeout = store_timeout
        self._db: sqlite3.Connection | None = None
        if path is not None:
            self._db = self._open(Path(path))

    @property
    def fingerprint(self) -> str:
        return self._prefix

    @property
    def unwrapped(self) -> Scorer:
        return self.inner.unwrapped

    def cheap_pass_is_exact(self, cheap: Scorer) -> bool:
        return self.inner.cheap_pass_is_exact(cheap)

    def count_tokens(self, texts: Sequence[str]) -> int | None:
        return self.inner.count_tokens(texts)

    def _open(self, path: Path) -> sqlite3.Connection | None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout: how long a statement waits for another process's lock before it fails (busy timeout)
            db = sqlite3.connect(str(path), timeout=self._store_timeout, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            except sqlite3.Error as exc:  # e.g. a file system without shared memory: the default journal works
                logger.debug("score cache %s keeps its journal mode (%s)", path, exc)
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
        """Hits, misses, hit rate, size of the in-memory store and failed store reads/writes."""
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
            "entries": len(self._memory),
            "store_errors": self.store_errors,
        }

    def _store_failed(self, what: str, exc: sqlite3.Error) -> None:
        # a locked or failing store costs this call its persistence, never the scores, and never for good:
        # the next call tries again
        self.store_errors += 1
        level = logging.WARNING if self.store_errors == 1 else logging.DEBUG
        logger.log(level, "score cache %s failed (%s); these pairs are scored without the persistent store", what, exc)

    def _db_get(self, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple[float, PairNote]]:
        if self._db is None or not keys:
            return {}
        found = {}
        with self._db_lock:
            try:
                for key in keys:
                    row = self._db.execute(
                        "SELECT score, how, dropped, windows FROM scores WHERE prefix=? AND q=? AND p=?", key
                    ).fetchone()
                    if row is not None:
                        found[key] = (float(row[0]), PairNote(row[1], int(row[2]), int(row[3])))
            except sqlite3.Error as exc:
                self._store_failed("read", exc)
                return {}
        return found

    def _db_put(self, items: list[tuple[tuple[str, str, str], tuple[float, PairNote]]]) -> None:
        # a note with a cut query is not stored on disk (the table has no column for it); memory keeps it
        items = [item for item in items if not item[1][1].query_dropped_tokens]
        if self._db is None or not items:
            return
        with self._db_lock:
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(*k, s, n.how, n.dropped_tokens, n.windows) for k, (s, n) in items],
                )
                self._db.commit()
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
                self._store_failed("write", exc)

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
