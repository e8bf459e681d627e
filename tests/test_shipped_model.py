"""The cross-encoder shipped inside the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerank_plugins import RerankConfig, default_model_path
from rerank_plugins.scoring.calibration import load_calibration
from rerank_plugins.scoring.loading import load_guard


def test_shipped_model_is_a_small_safetensors_folder() -> None:
    path = default_model_path()
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]  # no pickles
    size = sum(p.stat().st_size for p in path.iterdir())
    assert size < 50 * 1024 * 1024
    assert load_calibration(path) is not None
    assert 0.0 < load_guard(path) < 1.0  # the guard chosen on dev data ships with the weights


@pytest.mark.slow
def test_shipped_model_is_the_default_and_ranks_a_relevant_passage_first() -> None:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.factory import get_scorer
    from rerank_plugins.scoring.windowed import WindowedScorer

    scorer = get_scorer(RerankConfig(device="cpu"))
    assert isinstance(scorer, WindowedScorer)  # the default reads long passages in windows
    assert isinstance(scorer.inner, CrossEncoderScorer)
    assert scorer.name == str(default_model_path())
    assert scorer.inner.config.max_length == 256  # the length the model was trained at (192-256)
    assert str(next(scorer.inner._loaded.model.parameters()).dtype) == "torch.float32"  # fp16 on disk, fp32 in use
    query = "What disease is caused by a lack of vitamin C?"
    relevant = "Scurvy is caused by a long-term lack of vitamin C and leads to bleeding gums."
    unrelated = "Saturn has the most extensive ring system of any planet, made mostly of ice."
    near_miss = "Vitamin C helps the body make collagen and absorb iron; citrus fruits are good sources."
    s_relevant, s_unrelated, s_near = scorer.score([(query, relevant), (query, unrelated), (query, near_miss)])
    assert s_relevant > s_near > s_unrelated
    assert s_relevant > 0.5 > s_unrelated  # calibrated: a 0.5 threshold separates these two


@pytest.mark.slow
def test_plain_transformers_and_sentence_transformers_load_the_shipped_model_in_float32() -> None:
    """LangChain's and LlamaIndex's own rerankers load a model through sentence-transformers: a CPU
    user of the shipped folder must get float32 (fp16 on a CPU is about ten times slower)."""
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    path = default_model_path()
    plain = transformers.AutoModelForSequenceClassification.from_pretrained(path)
    assert next(plain.parameters()).dtype == torch.float32
    st = CrossEncoder(str(path), device="cpu")
    assert next(st.model.parameters()).dtype == torch.float32
    query = "What disease is caused by a lack of vitamin C?"
    scores = st.predict([(query, "Scurvy is caused by a lack of vitamin C."), (query, "Saturn has rings.")])
    assert scores[0] > scores[1]


@pytest.mark.slow
def test_shipped_calibration_maps_logits_into_0_1_monotonically() -> None:
    import itertools
    import math

    calibration = load_calibration(default_model_path())
    assert calibration is not None
    assert calibration.a > 0  # a higher logit never means a lower probability
    xs = [-20.0 + i * 0.5 for i in range(81)]
    ps = [calibration.apply(x) for x in xs]
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert all(b >= a for a, b in itertools.pairwise(ps))
    assert ps[0] < 0.05
    assert ps[-1] > 0.95
    assert not any(math.isnan(p) for p in ps)


_LONG_NEED = (
    "I am looking for studies of how yeast makes bread dough rise, in particular which gas is released "
    "by fermentation, how temperature changes the rate, and how long proofing should last. "
) * 8
_BREAD_DOCS = (
    ("a", "Saturn has the most extensive ring system of any planet."),
    ("b", "Yeast ferments sugars in dough and releases carbon dioxide, which makes bread rise."),
)


@pytest.mark.slow
def test_a_query_longer_than_the_budget_is_reranked_by_the_default_pipeline() -> None:
    """A descriptive information need (about 300 tokens) through the default windowed pipeline: no error,
    every candidate back, the cut flagged in the metadata."""
    from langchain_core.documents import Document

    from rerank_plugins import RerankCompressor

    docs = [Document(text, id=i) for i, text in _BREAD_DOCS]
    out = RerankCompressor(top_n=2).compress_documents(docs, _LONG_NEED)
    assert sorted(d.id for d in out) == ["a", "b"]
    assert all(d.metadata["rerank_query_dropped_tokens"] > 0 for d in out)
    assert all(0.0 <= d.metadata["relevance_score"] <= 1.0 for d in out)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the shipped model's scores flatten for queries past about 50 words (it trained on short questions): "
    "both passages get about the same score here; the model card's Limitations and the Cranfield dev row measure it",
)
def test_the_shipped_model_ranks_the_answer_to_a_long_need_first() -> None:
    """v1 passed this and the license-clean default does not; strict, so a model that fixes it says so."""
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    scorer = CrossEncoderScorer(str(default_model_path()), device="cpu")
    saturn, yeast = scorer.score([(_LONG_NEED, text) for _, text in _BREAD_DOCS])
    assert yeast > saturn


def test_shipped_model_names_int8_as_its_cpu_backend() -> None:
    from rerank_plugins.scoring.loading import load_backend_choice

    assert load_backend_choice(default_model_path()) == "onnx-int8"  # checked against fp32 on dev data


@pytest.mark.slow
@pytest.mark.auto_backend
def test_the_default_on_a_cpu_runs_the_shipped_model_in_int8_where_it_pays_and_int8_separates_the_clear_cases(
    tmp_path: Path,
) -> None:
    pytest.importorskip("onnxruntime")
    from rerank_plugins.scoring.factory import get_scorer
    from rerank_plugins.scoring.loading import has_int8_dot_product
    from rerank_plugins.scoring.windowed import WindowedScorer

    default = get_scorer(RerankConfig(device="cpu", onnx_cache_dir=str(tmp_path)))
    assert isinstance(default, WindowedScorer)
    vnni = has_int8_dot_product()
    assert default.backend == ("onnx-int8" if vnni else "onnx")  # fp32 where int8 saturates and barely pays
    int8 = get_scorer(RerankConfig(device="cpu", backend="onnx-int8", onnx_cache_dir=str(tmp_path)))
    fp32 = get_scorer(RerankConfig(device="cpu", backend="torch"))
    query = "What disease is caused by a lack of vitamin C?"
    pairs = [
        (query, "Scurvy is caused by a long-term lack of vitamin C and leads to bleeding gums."),
        (query, "Vitamin C helps the body make collagen and absorb iron; citrus fruits are good sources."),
        (query, "Saturn has the most extensive ring system of any planet, made mostly of ice."),
    ]
    relevant, near, unrelated = int8.score(pairs)
    assert relevant > near > unrelated
    assert relevant > 0.5 > unrelated  # the calibration fitted on fp32 logits still holds
    # without VNNI, ONNX Runtime's u8 x s8 products saturate: up to 0.06 off on an AVX2-only EPYC
    assert int8.score(pairs) == pytest.approx(fp32.score(pairs), abs=0.05 if vnni else 0.1)
