from __future__ import annotations

import pytest

pytest.importorskip("bm25s")

from rerank_plugins.data import load_demo_corpus
from rerank_plugins.fusion import reciprocal_rank_fusion
from rerank_plugins.retrieval.bm25 import BM25Index
from rerank_plugins.retrieval.hybrid import HybridSearcher

TEXTS = ["the cat sat on the mat", "dogs bark loudly at night", "a cat and a dog play", "stock markets fell today"]


def test_bm25_finds_term_matches_best_first() -> None:
    index = BM25Index(TEXTS)
    hits = index.search("cat", k=10)
    assert {i for i, _ in hits} == {0, 2}
    assert hits[0][1] >= hits[1][1] > 0


def test_bm25_edge_cases() -> None:
    assert BM25Index([]).search("anything") == []
    index = BM25Index(TEXTS)
    assert index.search("zebra") == []  # no term match -> nothing, not zero-score noise
    assert index.search_many([]) == []
    assert len(index.search_many(["cat", "dog"], k=1)) == 2


def test_bm25_matches_a_hand_computed_lucene_score() -> None:
    # Lucene BM25 (as bm25s's default 'lucene' method; Lucene >= 8 drops the constant (k1 + 1) factor):
    # idf = ln(1 + (N - df + 0.5) / (df + 0.5)); tf part = tf / (tf + k1 * (1 - b + b * dl / avgdl))
    import math

    texts = ["apple banana", "apple apple cherry", "cherry durian egg fig"]
    index = BM25Index(texts, k1=1.2, b=0.75, stopwords=None)
    scores = dict(index.search("apple", k=3))
    n, df, avgdl = 3, 2, (2 + 3 + 4) / 3
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))

    def part(tf: int, dl: int) -> float:
        return tf / (tf + 1.2 * (1 - 0.75 + 0.75 * dl / avgdl))

    assert scores[0] == pytest.approx(idf * part(1, 2), rel=1e-5)
    assert scores[1] == pytest.approx(idf * part(2, 3), rel=1e-5)


@pytest.mark.slow
def test_hybrid_rrf_equals_fusing_the_two_lists_by_hand() -> None:
    texts = [p.text for p in load_demo_corpus()]
    searcher = HybridSearcher(texts, depth=20)
    query = "Which planet is the hottest?"
    bm25 = [str(i) for i, _ in searcher.bm25.search(query, 20)]
    assert searcher.dense is not None
    dense = [str(i) for i, _ in searcher.dense.search(query, 20)]
    expected = reciprocal_rank_fusion({"bm25": bm25, "dense": dense})[:10]
    hits = searcher.search(query, k=10)
    assert [(str(h.position), h.score) for h in hits] == [(d, pytest.approx(s)) for d, s in expected]
    assert texts[hits[0].position].startswith("Venus")


@pytest.mark.slow
def test_dense_retrieval_understands_paraphrase() -> None:
    texts = [p.text for p in load_demo_corpus()]
    searcher = HybridSearcher(texts, fusion="weighted", weights={"bm25": 0.0, "dense": 1.0})
    hits = searcher.search("what stops bones from getting soft in kids", k=3)
    assert any("Rickets" in texts[h.position] for h in hits)
    assert hits[0].score == pytest.approx(1.0)  # weighted fusion: the best dense hit normalises to 1


def test_hybrid_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="fusion"):
        HybridSearcher(TEXTS, fusion="max", use_dense=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth"):
        HybridSearcher(TEXTS, depth=0, use_dense=False)
    with pytest.raises(ValueError, match="non-empty"):
        HybridSearcher(TEXTS, use_dense=False).search("  ")
