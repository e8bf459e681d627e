from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rerank_plugins.scoring.cache import CachedScorer
from tests.conftest import OverlapScorer

PAIRS = [("green apples", "green apples are sour"), ("green apples", "bananas"), ("red", "red apples")]


def test_hits_misses_and_identical_scores() -> None:
    inner = OverlapScorer()
    cached = CachedScorer(inner)
    first = cached.score(PAIRS)
    assert cached.score(PAIRS) == first == inner.score(PAIRS)
    assert len(inner.calls) == 2  # one miss batch, then the direct call above
    assert cached.stats() == {"hits": 3, "misses": 3, "hit_rate": 0.5, "entries": 3, "store_errors": 0}


def test_duplicates_within_a_batch_are_scored_once() -> None:
    inner = OverlapScorer()
    cached = CachedScorer(inner)
    assert cached.score([PAIRS[0], PAIRS[0], PAIRS[1]]) == [2.0, 2.0, 0.0]
    assert inner.calls == [[PAIRS[0], PAIRS[1]]]


def test_lru_evicts_the_least_recently_used() -> None:
    inner = OverlapScorer()
    cached = CachedScorer(inner, max_entries=2)
    cached.score([PAIRS[0]])
    cached.score([PAIRS[1]])
    cached.score([PAIRS[0]])  # refreshes PAIRS[0]
    cached.score([PAIRS[2]])  # evicts PAIRS[1]
    cached.score([PAIRS[0], PAIRS[1]])
    assert inner.calls[-1] == [PAIRS[1]]


def test_different_fingerprints_do_not_share_entries() -> None:
    inner = OverlapScorer()
    a, b = CachedScorer(inner, fingerprint="raw"), CachedScorer(inner, fingerprint="sigmoid")
    a.score(PAIRS[:1])
    b.score(PAIRS[:1])
    assert len(inner.calls) == 2


def test_persistent_store_survives_a_new_process_object(tmp_path: Path) -> None:
    path = tmp_path / "scores.sqlite"
    CachedScorer(OverlapScorer(), path=path).score(PAIRS)
    inner = OverlapScorer()
    again = CachedScorer(inner, path=path)
    assert again.score(PAIRS) == [2.0, 0.0, 1.0]
    assert inner.calls == []


def test_corrupt_store_is_bypassed_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "scores.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        cached = CachedScorer(OverlapScorer(), path=path)
        assert cached.score(PAIRS) == [2.0, 0.0, 1.0]
    assert "cannot be used" in caplog.text or "bypassing" in caplog.text


def test_unwritable_store_location_is_bypassed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING):
        cached = CachedScorer(OverlapScorer(), path=blocker / "sub" / "scores.sqlite")
    assert cached.score(PAIRS[:1]) == [2.0]
    assert "cannot be used" in caplog.text


def test_cache_selected_from_the_config(tiny_model: str, tmp_path: Path) -> None:
    from rerank_plugins import RerankConfig
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.factory import get_scorer
    from rerank_plugins.scoring.windowed import WindowedScorer

    cfg = RerankConfig(model=tiny_model, device="cpu", cache_entries=100, cache_path=str(tmp_path / "s.sqlite"))
    scorer = get_scorer(cfg)
    assert isinstance(scorer, CachedScorer)
    assert isinstance(scorer.inner, WindowedScorer)  # the default: long passages read in windows
    assert isinstance(scorer.inner.inner, CrossEncoderScorer)
    scorer.score(PAIRS)
    scorer.score(PAIRS)
    assert scorer.stats()["hit_rate"] == 0.5
    assert (tmp_path / "s.sqlite").is_file()


@pytest.mark.hostile
def test_threads_score_while_another_process_holds_the_store_lock(tmp_path: Path) -> None:
    """Issue 22 #1: a locked store costs a call its persistence, never its scores, and never for good."""
    import sqlite3
    import threading

    path = tmp_path / "scores.sqlite"
    cached = CachedScorer(OverlapScorer(), path=path, store_timeout=0.05)
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing: every read and write here times out
    results: list[list[float]] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(cached.score([("green apples", f"green apples {i}"), PAIRS[1]]))
        except BaseException as exc:  # pragma: no cover - the failure this test guards against
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holder.rollback()
    holder.close()
    assert errors == []
    assert sorted(results) == [[2.0, 0.0]] * 8
    assert cached.stats()["store_errors"] > 0
    # the lock is gone: the store is used again
    cached.score([PAIRS[2]])
    rows = sqlite3.connect(str(path)).execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    assert rows >= 1


def test_the_store_is_written_in_wal_mode(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "scores.sqlite"
    CachedScorer(OverlapScorer(), path=path).score(PAIRS)
    assert sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_set_dependent_scorers_are_refused() -> None:
    from rerank_plugins.scoring.ensemble import EnsembleScorer

    with pytest.raises(ValueError, match="cache its member scorers"):
        CachedScorer(EnsembleScorer([OverlapScorer(), OverlapScorer()]))


def test_a_cached_rank_ensemble_scores_as_the_uncached_one() -> None:
    """Issue 22 #3: a rank-normalised ensemble behind the configured cache caches its members' scores."""
    from rerank_plugins import RerankConfig
    from rerank_plugins.scoring.ensemble import EnsembleScorer
    from rerank_plugins.scoring.factory import _cached

    plain = EnsembleScorer([OverlapScorer(), OverlapScorer()])
    cached = _cached(plain, RerankConfig(cache_entries=100))
    assert isinstance(cached, EnsembleScorer)
    assert all(isinstance(m, CachedScorer) for m in cached.members)
    cached.score([PAIRS[0], PAIRS[1]])  # fills the members' caches
    # the same pair in a new set: rank normalisation over the new set, not a remembered value
    call = [PAIRS[0], ("green apples", "green apples are sour and crisp, green apples")]
    assert cached.score(call) == plain.score(call) == [0.5, 0.5]


def _model_folder(root: Path, weights: bytes) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(weights)
    return root


def test_model_identity_follows_the_files_not_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22 #3: replaced weights, or one relative name in two working folders, are different models."""
    import os

    from rerank_plugins.scoring.identity import model_identity

    folder = _model_folder(tmp_path / "a" / "m", b"weights one")
    before = model_identity(str(folder))
    (folder / "model.safetensors").write_bytes(b"weights two")
    os.utime(folder / "model.safetensors", ns=(1, 1))  # even with a forged modification time
    after = model_identity(str(folder))
    assert before != after
    _model_folder(tmp_path / "b" / "m", b"weights one")
    monkeypatch.chdir(tmp_path / "a")
    in_a = model_identity("./m")
    monkeypatch.chdir(tmp_path / "b")
    assert model_identity("./m") != in_a
    assert model_identity("org/name") == "org/name"


def test_replaced_weights_get_fresh_scores_from_cache_and_model_cache(tiny_model: str, tmp_path: Path) -> None:
    """Issue 22 #3 end to end: a folder whose weights change is loaded and scored again."""
    import shutil

    from rerank_plugins import RerankConfig
    from rerank_plugins.scoring.factory import get_scorer
    from tests.conftest import build_tiny_cross_encoder

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    cfg = RerankConfig(model=str(folder), device="cpu", cache_path=str(tmp_path / "s.sqlite"), cache_entries=100)
    first = get_scorer(cfg).score(PAIRS)
    build_tiny_cross_encoder(folder, seed=7)  # other weights, same path
    second_scorer = get_scorer(cfg)
    second = second_scorer.score(PAIRS)
    assert second != first
    assert isinstance(second_scorer, CachedScorer)
    assert second_scorer.stats()["hits"] == 0
