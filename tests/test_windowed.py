from __future__ import annotations

import itertools

import pytest

from rerank_plugins import RerankConfig
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


def test_multibyte_text_windows_keep_the_original_characters(tiny_model: str) -> None:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    inner = CrossEncoderScorer(tiny_model, config=CPU, max_length=24)
    seen: list[str] = []
    original = inner.score_detailed

    def spy(pairs):  # type: ignore[no-untyped-def]
        seen.extend(p for _, p in pairs)
        return original(pairs)

    inner.score_detailed = spy  # type: ignore[method-assign]
    text = "café 東京 naïve résumé 🚀 " * 8
    WindowedScorer(inner, window=6, stride=3).score([("q", text)])
    assert len(seen) > 1
    assert all(w in text for w in seen)  # every window is a verbatim slice


def test_selected_from_config(tiny_model: str) -> None:
    from rerank_plugins.scoring.cross_encoder import get_scorer

    scorer = get_scorer(CPU, model=tiny_model, scorer="windowed", window_tokens=16, window_aggregate="first")
    assert isinstance(scorer, WindowedScorer)
    assert scorer.how == "first"
    assert get_scorer(CPU, model=tiny_model, scorer="windowed", window_tokens=16, window_aggregate="first") is scorer


def test_windowed_and_truncated_scores_never_share_cache_entries(tiny_model: str) -> None:
    from rerank_plugins.scoring.cache import CachedScorer
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    inner = CrossEncoderScorer(tiny_model, config=CPU, max_length=32)
    assert CachedScorer(WindowedScorer(inner))._prefix != CachedScorer(inner)._prefix
