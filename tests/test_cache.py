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
    assert cached.stats() == {"hits": 3, "misses": 3, "hit_rate": 0.5, "entries": 3}


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
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer, get_scorer
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
