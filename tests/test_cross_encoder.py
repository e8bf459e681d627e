from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rerank_plugins import ModelLoadError, RerankConfig, RerankInputError
from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
from rerank_plugins.scoring.factory import get_scorer
from rerank_plugins.scoring.loading import resolve_device

CPU = RerankConfig(device="cpu", scorer="cross-encoder")  # the plain cross-encoder (the default reads windows)


def test_two_logit_score_is_the_log_odds_of_the_relevant_class(tiny_model_2labels: str) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pair = ("which planet is hottest", "Venus is the hottest planet.")
    tok = AutoTokenizer.from_pretrained(tiny_model_2labels)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_2labels).eval()
    with torch.inference_mode():
        logits = model(**tok([pair[0]], [pair[1]], return_tensors="pt")).logits[0].tolist()
    raw = CrossEncoderScorer(tiny_model_2labels, config=CPU, activation="raw").score([pair])[0]
    prob = CrossEncoderScorer(tiny_model_2labels, config=CPU).score([pair])[0]
    assert raw == pytest.approx(logits[1] - logits[0], abs=1e-5)
    assert prob == pytest.approx(math.exp(logits[1]) / (math.exp(logits[0]) + math.exp(logits[1])), abs=1e-5)


def test_sigmoid_is_monotone_in_raw(tiny_model: str) -> None:
    pairs = [("q a", "passage one"), ("q a", "another passage here"), ("q a", "q a")]
    raw = CrossEncoderScorer(tiny_model, config=CPU, activation="raw").score(pairs)
    sig = CrossEncoderScorer(tiny_model, config=CPU).score(pairs)
    assert sig == pytest.approx([1 / (1 + math.exp(-r)) for r in raw], abs=1e-6)


def test_truncation_is_reported_and_never_silent(tiny_model: str) -> None:
    scorer = CrossEncoderScorer(tiny_model, config=CPU, max_length=32)
    long_passage = "yeast bread rises " * 40
    detailed = scorer.score_detailed([("why does bread rise", "short text"), ("why does bread rise", long_passage)])
    assert detailed.notes[0].how == "whole"
    assert detailed.notes[1].how == "truncated"
    tok = scorer._loaded.tokenizer
    n_query = len(tok("why does bread rise", add_special_tokens=False)["input_ids"])
    n_passage = len(tok(long_passage, add_special_tokens=False)["input_ids"])
    assert detailed.notes[1].dropped_tokens == n_query + n_passage + 3 - 32


def test_a_query_too_long_for_the_budget_loses_its_tail_with_a_warning_and_a_note(
    tiny_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    from rerank_plugins.scoring.windowed import WindowedScorer

    long_query = " ".join(f"what{i}" for i in range(60))
    short = CrossEncoderScorer(tiny_model, config=CPU, max_length=64)
    tok = short._loaded.tokenizer
    n_query = len(tok(long_query, add_special_tokens=False)["input_ids"])
    keep = 64 - 3 - 16  # the passage keeps a quarter of max_length
    pairs = [(long_query, "bread rises"), (long_query, "yeast " * 100)]
    for scorer in (short, WindowedScorer(short)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            detailed = scorer.score_detailed(pairs)
        assert all(n.query_dropped_tokens == n_query - keep for n in detailed.notes)
        assert all(n.cut for n in detailed.notes)
        assert "was cut to its first" in caplog.text
        # scored as the query's head: the same scores as sending the cut query yourself
        head = tok.decode(tok(long_query, add_special_tokens=False)["input_ids"][:keep])
        assert detailed.scores == pytest.approx(scorer.score([(head, p) for _, p in pairs]), abs=1e-5)
    # a query that fits is never touched
    assert short.score_detailed([("why does bread rise", "bread")]).notes[0].query_dropped_tokens == 0


def test_bad_pairs_are_rejected(tiny_model: str) -> None:
    scorer = CrossEncoderScorer(tiny_model, config=CPU)
    with pytest.raises(RerankInputError, match="Pair #1"):
        scorer.score([("q", "p"), ("q", None)])  # type: ignore[list-item]


def test_one_shared_instance_per_settings(tiny_model: str) -> None:
    a = get_scorer(CPU, model=tiny_model)
    b = get_scorer(CPU.merged(model=tiny_model, top_n=2))  # top_n is not a scorer setting
    c = get_scorer(CPU, model=tiny_model, batch_size=7)
    assert a is b
    assert c is not a
    assert c._loaded is a._loaded


def test_concurrent_threads_give_sequential_results(tiny_model: str) -> None:
    scorer = get_scorer(CPU, model=tiny_model)
    jobs = [[(f"query {i}", f"passage number {j} about bread " * (1 + j % 5)) for j in range(12)] for i in range(16)]
    expected = [scorer.score(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(scorer.score, jobs))
    assert got == expected


def test_auto_device_on_this_machine_is_a_real_device() -> None:
    assert resolve_device("auto") in {"cpu", "cuda", "mps"}
    assert resolve_device("cpu") == "cpu"


def test_missing_directory_names_the_model_and_the_fix(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        CrossEncoderScorer(missing, config=CPU)
    assert missing in str(info.value)


def test_corrupt_weights_name_the_model_and_the_fix(tiny_model: str, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated file
    with pytest.raises(ModelLoadError, match="could not be loaded") as info:
        CrossEncoderScorer(str(broken), config=CPU)
    assert str(broken) in str(info.value)


def test_uncached_hub_id_fails_fast_without_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 23 #6: a hub id downloads on first use unless HF_HUB_OFFLINE=1 or allow_download=False, and an
    unreachable Hub fails within seconds with the fix in the message."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    name = "example-org/not-a-cached-reranker"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE") as info:
        CrossEncoderScorer(name, config=CPU)
    assert name in str(info.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelLoadError, match="allow_download=False"):
        CrossEncoderScorer(name, config=CPU, allow_download=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the Hub is unreachable
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"not reachable.*HF_HUB_OFFLINE=1"):
        CrossEncoderScorer(name, config=CPU)
    assert time.perf_counter() - start < 10  # no retries against an unreachable hub


def test_more_than_two_labels_is_refused(tmp_path: Path) -> None:
    from tests.conftest import build_tiny_cross_encoder

    path = build_tiny_cross_encoder(tmp_path / "three", num_labels=3)
    with pytest.raises(ModelLoadError, match="3 output labels"):
        CrossEncoderScorer(str(path), config=CPU)


def test_works_inside_langchains_own_cross_encoder_reranker(tiny_model: str) -> None:
    pytest.importorskip("langchain_classic")
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_core.documents import Document

    import rerank_plugins.adapters.langchain  # noqa: F401  (registers Scorer as a BaseCrossEncoder)

    scorer = get_scorer(CPU, model=tiny_model)
    reranker = CrossEncoderReranker(model=scorer, top_n=2)
    docs = [Document(page_content=t) for t in ("bread rises", "venus is hot", "coffee has caffeine")]
    out = reranker.compress_documents(docs, "why does bread rise")
    score_of = dict(
        zip(
            (d.page_content for d in docs),
            scorer.score([("why does bread rise", d.page_content) for d in docs]),
            strict=True,
        )
    )
    assert [score_of[d.page_content] for d in out] == sorted(score_of.values(), reverse=True)[:2]


@pytest.mark.slow
def test_bi_encoder_folder_converts_with_a_warning_free_head(minilm_dir: str) -> None:
    # all-MiniLM-L6-v2 is a bi-encoder: it loads as a cross-encoder with a new 1-logit head.
    scorer = CrossEncoderScorer(minilm_dir, config=CPU, max_length=64)
    assert scorer.num_labels == 1
    assert len(scorer.score([("a", "b"), ("c", "d")])) == 2


def test_token_budget_batches_bound_padded_tokens_and_cover_every_pair() -> None:
    from rerank_plugins.scoring.loading import token_budget_batches

    lengths = [512, 20, 300, 300, 40, 512, 10, 128]
    batches = token_budget_batches(lengths, max_pairs=3, max_tokens=700)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 700
    assert batches[0] == [0]  # longest first; two 512-token pairs would exceed 700
    assert token_budget_batches([], 4, 100) == []
    assert token_budget_batches([900], 4, 100) == [[0]]  # an over-long pair still gets scored


def test_small_token_budget_gives_the_same_scores(tiny_model: str) -> None:
    pairs = [("q", "bread rises " * n) for n in (1, 30, 5, 60, 2)]
    roomy = CrossEncoderScorer(tiny_model, config=CPU, max_batch_tokens=None).score(pairs)
    tight = CrossEncoderScorer(tiny_model, config=CPU, max_batch_tokens=64).score(pairs)
    assert tight == pytest.approx(roomy, abs=1e-5)


def test_pickle_weights_are_refused_unless_allowed(tiny_model: str, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    legacy = tmp_path / "legacy"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    model.config.save_pretrained(legacy)
    torch.save(model.state_dict(), legacy / "pytorch_model.bin")  # the legacy pickle format
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(legacy)
    assert not list(legacy.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="allow_pickle_weights=True"):
        CrossEncoderScorer(str(legacy), config=CPU)
    scorer = CrossEncoderScorer(str(legacy), config=CPU, allow_pickle_weights=True)
    assert len(scorer.score([("q", "p")])) == 1


def test_a_model_folder_carries_its_own_guard_and_a_broken_guard_file_fails_loudly(
    tiny_model: str, tmp_path: Path
) -> None:
    import shutil

    from rerank_plugins.scoring.cache import CachedScorer
    from rerank_plugins.scoring.windowed import WindowedScorer

    assert CrossEncoderScorer(tiny_model, config=CPU).recommended_first_stage_weight == 0.0
    folder = tmp_path / "guarded"
    shutil.copytree(tiny_model, folder)
    (folder / "rerank_guard.json").write_text('{"first_stage_weight": 0.4, "chosen_on": "dev"}')
    scorer = CrossEncoderScorer(str(folder), config=CPU)
    assert scorer.recommended_first_stage_weight == 0.4
    assert CachedScorer(WindowedScorer(scorer)).recommended_first_stage_weight == 0.4  # wrappers pass it on
    (folder / "rerank_guard.json").write_text('{"first_stage_weight": 1.5}')
    with pytest.raises(ModelLoadError, match="not a valid guard file"):
        CrossEncoderScorer(str(folder), config=CPU, batch_size=3)
