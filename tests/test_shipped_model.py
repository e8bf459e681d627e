"""The cross-encoder shipped inside the package."""

from __future__ import annotations

import pytest

from rerank_plugins import RerankConfig, default_model_path
from rerank_plugins.scoring.calibration import load_calibration


def test_shipped_model_is_a_small_safetensors_folder() -> None:
    path = default_model_path()
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]  # no pickles
    size = sum(p.stat().st_size for p in path.iterdir())
    assert size < 50 * 1024 * 1024
    assert load_calibration(path) is not None


@pytest.mark.slow
def test_shipped_model_is_the_default_and_ranks_a_relevant_passage_first() -> None:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer, get_scorer
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
