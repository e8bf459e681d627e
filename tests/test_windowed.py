from __future__ import annotations

import itertools
from typing import Any

import pytest

from rerank_plugins import RerankConfig
from rerank_plugins.scoring.base import PairNote
from rerank_plugins.scoring.windowed import WindowedScorer, aggregate, split_windows

CPU = RerankConfig(device="cpu")


@pytest.mark.parametrize(
    ("n", "window", "stride", "expected"),
    [
        (0, 4, 2, [(0, 0)]),  # empty passage: one empty window
        (4, 4, 2, [(0, 4)]),  # exactly one window
        (5, 4, 2, [(0, 4), (2, 5)]),  # the last window ends at the end
        (10, 4, 4, [(0, 4), (4, 8), (8, 10)]),  # no overlap
        (10, 4, 3, [(0, 4), (3, 7), (6, 10)]),
    ],
)
def test_split_windows(n: int, window: int, stride: int, expected: list[tuple[int, int]]) -> None:
    assert split_windows(n, window, stride) == expected


def test_split_windows_covers_a_very_long_passage() -> None:
    spans = split_windows(100_000, 500, 250)
    assert spans[0][0] == 0
    assert spans[-1][1] == 100_000
    assert all(b[0] < a[1] for a, b in itertools.pairwise(spans))  # consecutive windows overlap
    with pytest.raises(ValueError, match="skip text"):
        split_windows(10, 4, 5)
    with pytest.raises(ValueError, match="positive"):
        split_windows(10, 0, 1)


def test_aggregate_by_hand() -> None:
    assert aggregate([0.2, 0.9, 0.5], "max") == 0.9
    assert aggregate([0.2, 0.9, 0.5], "first") == 0.2
    assert aggregate([0.2, 0.9, 0.5], "mean-top2") == pytest.approx(0.7)
    assert aggregate([0.4], "mean-top2") == 0.4
    with pytest.raises(ValueError, match="unknown aggregate"):
        aggregate([1.0], "median")  # type: ignore[arg-type]


def test_long_passages_are_windowed_and_reported(tiny_model: str) -> None:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    inner = CrossEncoderScorer(tiny_model, config=CPU, max_length=32)
    scorer = WindowedScorer(inner, window=10, stride=5)
    long_text = "bread rises because yeast makes gas " * 10  # ~60 tokens
    detailed = scorer.score_detailed([("why bread rises", "short"), ("why bread rises", long_text)])
    assert detailed.notes[0].how == "whole"
    assert detailed.notes[1].how == "windowed"
    assert detailed.notes[1].windows > 5
    # max aggregation: the passage scores as its best window
    tok = inner._loaded.tokenizer
    offsets = tok(long_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    windows = [long_text[offsets[a][0] : offsets[b - 1][1]] for a, b in split_windows(len(offsets), 10, 5)]
    assert detailed.scores[1] == pytest.approx(max(inner.score([("why bread rises", w) for w in windows])), abs=1e-6)


def test_default_windows_overlap_by_half_and_a_full_stride_reads_each_token_once(tiny_model: str) -> None:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    inner, seen = _spied_inner(tiny_model, max_length=32)
    long_text = "bread rises because yeast makes gas " * 10
    tok = CrossEncoderScorer(tiny_model, config=CPU, max_length=32)._loaded.tokenizer
    offsets = tok(long_text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    def texts(stride: int) -> list[str]:
        return [long_text[offsets[a][0] : offsets[b - 1][1]] for a, b in split_windows(len(offsets), 10, stride)]

    default = WindowedScorer(inner, window=10).score_detailed([("why bread rises", long_text)])
    assert seen == texts(5)  # None: half a window apart
    seen.clear()
    once = WindowedScorer(inner, window=10, stride=10).score_detailed([("why bread rises", long_text)])
    assert seen == texts(10)  # one window apart: every token read once, in fewer windows
    assert once.notes[0].windows == -(-len(offsets) // 10) < default.notes[0].windows
    # the two read different text, so they never share score-cache entries
    assert WindowedScorer(inner, window=10).fingerprint != WindowedScorer(inner, window=10, stride=10).fingerprint


def _spied_inner(tiny_model: str, max_length: int) -> tuple[Any, list[str]]:
    """A real cross-encoder that records every passage (window) it is asked to score."""
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    inner = CrossEncoderScorer(tiny_model, config=CPU, max_length=max_length)
    seen: list[str] = []
    original = inner.score_detailed

    def spy(pairs):  # type: ignore[no-untyped-def]
        seen.extend(p for _, p in pairs)
        return original(pairs)

    inner.score_detailed = spy  # type: ignore[method-assign]
    return inner, seen


def test_multibyte_text_windows_keep_the_original_characters(tiny_model: str) -> None:
    inner, seen = _spied_inner(tiny_model, max_length=24)
    text = "café 東京 naïve résumé 🚀 " * 8
    WindowedScorer(inner, window=6, stride=3).score([("q", text)])
    assert len(seen) > 1
    assert all(w in text for w in seen)  # every window is a verbatim slice


def test_selected_from_config(tiny_model: str) -> None:
    from rerank_plugins.scoring.factory import get_scorer

    scorer = get_scorer(CPU, model=tiny_model, scorer="windowed", window_tokens=16, window_aggregate="first")
    assert isinstance(scorer, WindowedScorer)
    assert scorer.how == "first"
    # what a user inspects on the default scorer is the inner cross-encoder's
    assert (scorer.backend, scorer.device, scorer.config) == (scorer.inner.backend, "cpu", scorer.inner.config)
    assert get_scorer(CPU, model=tiny_model, scorer="windowed", window_tokens=16, window_aggregate="first") is scorer


def test_windowed_and_truncated_scores_never_share_cache_entries(tiny_model: str) -> None:
    from rerank_plugins.scoring.cache import CachedScorer
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    inner = CrossEncoderScorer(tiny_model, config=CPU, max_length=32)
    assert CachedScorer(WindowedScorer(inner))._prefix != CachedScorer(inner)._prefix


def test_window_limit_bounds_a_huge_passage_and_says_what_was_cut(tiny_model: str) -> None:
    from langchain_core.documents import Document

    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.scoring.factory import get_scorer

    inner, seen = _spied_inner(tiny_model, max_length=32)
    huge = "green apples are sour " * 48_000  # ~1 MB, ~190k tokens
    out = WindowedScorer(inner, window=10, stride=5, limit=4).score_detailed([("apples", huge), ("apples", "ok")])
    assert len(seen) == 5  # 4 windows of the huge passage + the short one, never thousands
    assert out.notes[0].how == "windowed"
    assert out.notes[0].windows == 4
    tokens = len(inner._loaded.tokenizer(huge, add_special_tokens=False)["input_ids"])
    assert out.notes[0].dropped_tokens == tokens - (3 * 5 + 10)  # all after the 4th window's end
    assert out.notes[1] == PairNote()
    # a limit of one window is a truncation, and says so
    assert WindowedScorer(inner, window=10, stride=5, limit=1).score_detailed([("apples", huge)]).notes[0].how == (
        "truncated"
    )
    with pytest.raises(ValueError, match="at least 1 window"):
        WindowedScorer(inner, limit=0)
    # the default settings limit windows, and the adapters report the cut in metadata
    cfg = RerankConfig(model=tiny_model, device="cpu", max_length=32, window_limit=3, top_n=None)
    assert RerankConfig().window_limit == 16
    assert get_scorer(cfg).limit == 3  # type: ignore[attr-defined]
    doc = Document(page_content="green apples are sour " * 200, metadata={"k": 1})
    (got,) = RerankCompressor(config=cfg).compress_documents([doc], "apples")
    assert got.metadata["rerank_scoring"] == "windowed"
    assert got.metadata["rerank_windows"] == 3
    assert got.metadata["rerank_dropped_tokens"] > 500
    assert doc.metadata == {"k": 1}  # the caller's document is not touched
