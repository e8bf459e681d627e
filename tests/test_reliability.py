"""Reliability: hostile input, concurrency and faults, through the real loading and scoring code.

Each case here is a row of docs/reliability.md. The models are tiny random BERTs built
locally (conftest), so the behaviour checked is that of the real tokenizer + transformer path.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rerank_plugins import Candidate, RerankConfig, rerank_candidates
from rerank_plugins.errors import ModelLoadError, RerankInputError
from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
from rerank_plugins.scoring.factory import get_scorer

CPU = RerankConfig(device="cpu")

UNICODE = {
    "rtl": "مرحبا بالعالم שלום עולם",
    "emoji_zwj": "😀🚀 👩\u200d👩\u200d👧 family",
    "combining": "e\u0301\u0301\u0301 cafe\u0301",
    "zero_width_only": "\u200b\u200c\u200d\ufeff",
    "nul_and_controls": "apples\x00are\x01sour\x1f\x7f",
    "only_nul": "\x00\x00",
    "bidi_override": "\u202eelppa neerg",
    "math_alphanumerics": "\U0001d51e\U0001d52d\U0001d52d\U0001d529\U0001d522\U0001d530 \U0001d7d9\U0001d7da",
    "lone_surrogate": "broken \udc80 bytes",
    "cjk_and_fullwidth": "苹果是酸的 \uff21\uff30\uff30\uff2c\uff25\uff33",
    "line_and_paragraph_separators": "green\u2028apples\u2029sour\r\n\t",
}


@pytest.mark.parametrize("kind", sorted(UNICODE))
def test_unicode_of_every_kind_scores_finitely_in_query_and_passage(tiny_model: str, kind: str) -> None:
    scorer = CrossEncoderScorer(tiny_model, config=CPU)
    text = UNICODE[kind]
    scores = scorer.score([("are green apples sour", text), (text, "green apples are sour")])
    assert len(scores) == 2
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_unicode_candidates_come_back_unchanged(tiny_model: str) -> None:
    scorer = CrossEncoderScorer(tiny_model, config=CPU)
    items = [Candidate(text=t, id=k, item={"kind": k}) for k, t in UNICODE.items()]
    result = rerank_candidates("apples", items, scorer, CPU.merged(top_n=len(items)))
    got = {(r.candidate.id, r.candidate.text, r.candidate.item["kind"]) for r in result.items}
    assert got == {(c.id, c.text, c.id) for c in items}


def test_lone_surrogates_are_scored_like_the_replacement_character(tiny_model: str) -> None:
    scorer = CrossEncoderScorer(tiny_model, config=CPU)
    assert scorer.score([("q", "bad \udc80 text")]) == scorer.score([("q", "bad \ufffd text")])


def test_a_one_megabyte_passage_is_truncated_and_says_so(tiny_model: str) -> None:
    scorer = CrossEncoderScorer(tiny_model, config=CPU.merged(max_length=128))
    passage = "green apples are sour " * 48_000  # ~1 MB
    assert len(passage.encode()) > 1_000_000
    out = scorer.score_detailed([("apples", passage)])
    assert out.notes[0].how == "truncated"
    assert out.notes[0].dropped_tokens > 100_000


def test_ten_thousand_candidates_are_capped_with_reasons_or_all_scored(tiny_model: str) -> None:
    scorer = CrossEncoderScorer(tiny_model, config=CPU.merged(max_length=32))
    items = [Candidate(text=f"passage {i} about green apples", id=str(i)) for i in range(10_000)]
    capped = rerank_candidates("green apples", items, scorer, CPU.merged(top_n=10))
    assert capped.counts == {
        "received": 10_000,
        "scored": 200,
        "kept": 10,
        "dropped_max_candidates": 9_800,
        "dropped_top_n": 190,
    }

    everything = rerank_candidates("green apples", items, scorer, CPU.merged(top_n=10_000, max_candidates=10_000))
    assert everything.counts == {"received": 10_000, "scored": 10_000, "kept": 10_000}
    assert sorted(int(r.candidate.id or -1) for r in everything.items) == list(range(10_000))


def test_encoder_decoder_checkpoint_is_refused_with_the_scorer_to_use(tiny_t5: str) -> None:
    with pytest.raises(ModelLoadError, match="scorer='monot5'") as info:
        CrossEncoderScorer(tiny_t5, config=CPU)
    assert tiny_t5 in str(info.value)


def test_tokenizer_that_does_not_match_the_weights_is_refused(tiny_model: str, minilm_dir: str, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_model, mixed)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (Path(minilm_dir) / name).exists():
            shutil.copy(Path(minilm_dir) / name, mixed / name)
    with pytest.raises(ModelLoadError, match="do not belong to these weights") as info:
        CrossEncoderScorer(str(mixed), config=CPU)
    assert str(mixed) in str(info.value)


def test_invalid_config_json_names_the_model(tiny_model: str, tmp_path: Path) -> None:
    broken = tmp_path / "badcfg"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="save_pretrained") as info:
        CrossEncoderScorer(str(broken), config=CPU)
    assert str(broken) in str(info.value)


def test_trust_remote_code_warns(tiny_model: str, caplog: pytest.LogCaptureFixture) -> None:
    CrossEncoderScorer(tiny_model, config=CPU.merged(trust_remote_code=True))
    assert any("trust_remote_code=True" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_blank_queries_are_rejected_by_both_adapters(query: str) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor
    from tests.conftest import OverlapScorer

    with pytest.raises(RerankInputError, match="query"):
        RerankCompressor(model=OverlapScorer()).compress_documents([Document(page_content="x")], query)
    with pytest.raises(RerankInputError, match="query"):
        RerankNodePostprocessor(model=OverlapScorer()).postprocess_nodes(
            [NodeWithScore(node=TextNode(text="x"))], QueryBundle(query)
        )


# --- concurrency: one shared scorer, both adapters --------------------------------------------

TEXTS = [
    "green apples are sour",
    "red apples are sweet",
    "bananas are yellow and long",
    "BM25 ranks passages by term frequency",
    "a cross-encoder reads the query and passage together",
    "the capital of France is Paris",
]
QUERIES = [f"question {i}: which {w} are sour" for i, w in enumerate(["apples", "bananas", "passages"] * 8)]


def _lc_run(compressor: object, query: str) -> list[tuple[str, float]]:
    from langchain_core.documents import Document

    docs = [Document(page_content=t, id=str(i), metadata={"n": i}) for i, t in enumerate(TEXTS)]
    out = compressor.compress_documents(docs, query)  # type: ignore[attr-defined]
    return [(d.id, d.metadata["relevance_score"]) for d in out]


def _li_run(post: object, query: str) -> list[tuple[str, float]]:
    from llama_index.core.schema import NodeWithScore, TextNode

    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=1.0 / (i + 1)) for i, t in enumerate(TEXTS)]
    out = post.postprocess_nodes(nodes, query_str=query)  # type: ignore[attr-defined]
    return [(n.node.node_id, n.score) for n in out]


@pytest.mark.hostile
def test_eight_threads_through_both_adapters_match_sequential_runs(tiny_model: str) -> None:
    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor

    config = CPU.merged(model=tiny_model, top_n=4)
    compressor = RerankCompressor(config=config)
    post = RerankNodePostprocessor(config=config)
    # the adapters resolve RERANK_PLUGINS_* variables below the config (conftest sets the ONNX cache one)
    assert compressor.scorer is post.scorer is get_scorer(RerankConfig.resolve(config))
    jobs = [(_lc_run, compressor, q) for q in QUERIES] + [(_li_run, post, q) for q in QUERIES]
    expected = [fn(obj, q) for fn, obj, q in jobs]
    start = threading.Barrier(8)

    def run(job: tuple[object, object, str]) -> list[tuple[str, float]]:
        fn, obj, q = job
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(timeout=5)
        return fn(obj, q)  # type: ignore[operator]

    for _ in range(3):
        start.reset()
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(run, jobs, timeout=120))
        assert got == expected


@pytest.mark.hostile
def test_hundred_asyncio_tasks_through_both_adapters_match_sequential_runs(tiny_model: str) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor

    config = CPU.merged(model=tiny_model, top_n=3)
    compressor = RerankCompressor(config=config)
    post = RerankNodePostprocessor(config=config)
    docs = [Document(page_content=t, id=str(i)) for i, t in enumerate(TEXTS)]
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.5) for i, t in enumerate(TEXTS)]
    queries = [f"task {i} asks which apples are sour" for i in range(50)]
    expected_lc = [
        [(d.id, d.metadata["relevance_score"]) for d in compressor.compress_documents(docs, q)] for q in queries
    ]
    expected_li = [[(n.node.node_id, n.score) for n in post.postprocess_nodes(nodes, query_str=q)] for q in queries]

    async def main() -> tuple[list[object], list[object]]:
        lc = [compressor.acompress_documents(docs, q) for q in queries]
        li = [post.apostprocess_nodes(nodes, QueryBundle(q)) for q in queries]
        results = await asyncio.wait_for(asyncio.gather(*lc, *li), timeout=120)
        return list(results[:50]), list(results[50:])

    lc_out, li_out = asyncio.run(main())
    assert [[(d.id, d.metadata["relevance_score"]) for d in r] for r in lc_out] == expected_lc  # type: ignore[attr-defined]
    assert [[(n.node.node_id, n.score) for n in r] for r in li_out] == expected_li  # type: ignore[attr-defined]
    assert [d.metadata for d in docs] == [{} for _ in docs]  # the caller's documents were not touched


def test_llamaindex_async_does_not_block_the_event_loop() -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor
    from tests.conftest import SlowScorer, ticks_while

    post = RerankNodePostprocessor(model=SlowScorer(), top_n=2)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(TEXTS)]
    ticks, out = ticks_while(lambda: post.apostprocess_nodes(nodes, QueryBundle("q")))
    assert ticks >= 5  # the loop kept running while scoring took 0.3 s
    assert len(out) == 2


def test_every_test_named_in_the_reliability_table_exists() -> None:
    import re

    repo = Path(__file__).resolve().parents[1]
    table = (repo / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = re.findall(r"`(tests/test_\w+\.py)::(\w+)`", table)
    short = re.findall(r"`…::(\w+)`", table)
    assert len(named) >= 25
    for path, name in named:
        assert re.search(rf"^(async )?def {name}\(", (repo / path).read_text(), re.M), f"{path}::{name}"
    every = "".join(p.read_text() for p in (repo / "tests").glob("test_*.py"))
    for name in short:
        assert f"def {name}(" in every, name


def _pickled_copy(src: str, dst: Path, auto: str) -> Path:
    """``src`` with its weights as a legacy pickle ``pytorch_model.bin`` and no safetensors."""
    import torch
    import transformers

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "onnx", "*.onnx"))
    model = getattr(transformers, auto).from_pretrained(src)
    torch.save(model.state_dict(), dst / "pytorch_model.bin")
    assert not list(dst.rglob("*.safetensors"))
    return dst


def test_t5_scorers_refuse_pickle_weights_unless_allowed(tiny_t5: str, tmp_path: Path) -> None:
    """Issue 22 #5: 'safetensors only' holds for the T5 scorers too."""
    from rerank_plugins.scoring.seq2seq import MonoT5Scorer

    legacy = _pickled_copy(tiny_t5, tmp_path / "t5", "AutoModelForSeq2SeqLM")
    with pytest.raises(ModelLoadError, match="allow_pickle_weights=True"):
        MonoT5Scorer(CPU.merged(model=str(legacy)))
    allowed = MonoT5Scorer(CPU.merged(model=str(legacy), allow_pickle_weights=True))
    assert len(allowed.score([("q", "p")])) == 1


def test_the_bi_encoder_scorer_refuses_pickle_weights_unless_allowed(minilm_dir: str, tmp_path: Path) -> None:
    """Issue 22 #5: 'safetensors only' holds for the bi-encoder (scorer and dense retrieval) too."""
    legacy = _pickled_copy(minilm_dir, tmp_path / "bi", "AutoModel")
    cfg = CPU.merged(scorer="bi-encoder", model=str(legacy))
    with pytest.raises(ModelLoadError, match="allow_pickle_weights=True"):
        get_scorer(cfg)
    assert len(get_scorer(cfg.merged(allow_pickle_weights=True)).score([("q", "p")])) == 1


@pytest.mark.hostile
def test_cancelled_async_calls_stop_their_queued_batches(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22 #9: after 10 asyncio.wait_for timeouts the next call waited behind the abandoned batches."""
    from rerank_plugins.scoring import cross_encoder

    scorer = CrossEncoderScorer(tiny_model, config=CPU, batch_size=1)
    passes = 0
    real = cross_encoder._LoadedModel.logits

    def counted(self: object, encoding: object) -> object:
        nonlocal passes
        passes += 1
        return real(self, encoding)  # type: ignore[arg-type]

    monkeypatch.setattr(cross_encoder._LoadedModel, "logits", counted)
    pairs = [("green apples", f"green apples number {i} are sour") for i in range(200)]

    async def main() -> list[float]:
        for _ in range(10):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(scorer.ascore(pairs), timeout=0.02)
        return await scorer.ascore(pairs[:1])

    assert len(asyncio.run(main())) == 1
    # ten abandoned calls of 200 one-pair batches would run 2,000 passes; each stops at its next batch
    assert passes < 200


def _score_in_child(scorer: object, out: object) -> None:
    try:
        scorer.score([("q", "p")])  # type: ignore[attr-defined]
        out.put("scored")  # type: ignore[attr-defined]
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]


@pytest.mark.hostile
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_forked_child_gets_a_clear_error_instead_of_hanging(tiny_model: str, backend: str) -> None:
    """Issue 22 #6: a child forked after the model was loaded hung in the thread pool; now it is told why and what
    to do, even while the parent holds the model's lock (another thread scoring at the fork)."""
    import multiprocessing

    if backend == "onnx":
        pytest.importorskip("onnxruntime")
    scorer = get_scorer(CPU.merged(model=tiny_model, backend=backend, scorer="windowed"))
    scorer.score([("q", "warm up")])
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    lm = scorer.inner._loaded  # type: ignore[attr-defined]
    with lm.lock:  # as if another thread were scoring when the fork happens
        child = ctx.Process(target=_score_in_child, args=(scorer, out))
        child.start()
    child.join(timeout=60)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung
    message = out.get(timeout=5)
    assert message.startswith("ModelLoadError")
    assert "spawn" in message
