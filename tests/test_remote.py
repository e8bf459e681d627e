"""RemoteScorer: against our app over real loopback HTTP, and against a stub TEI-shaped server (respx)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import ConfigError, RerankInputError, ScorerOutputError
from rerank_plugins.scoring.factory import get_scorer
from rerank_plugins.scoring.remote import RemoteScorer, RemoteScorerError
from rerank_plugins.serving.app import RerankService, create_app
from rerank_plugins.serving.settings import ServeSettings
from tests.conftest import OverlapScorer, serve_app

QUERIES = ["cat pet", "stock market"]
TEXTS = [
    "a cat is a small pet",
    "stocks fell on the market today",
    "the cat sat",
    "market day for pet cat food",
    "nothing here",
    "stock stock market",
    "pet shop",
]
PAIRS = [(q, t) for q in QUERIES for t in TEXTS] + [("cat pet", "cat")]


class _Recording(OverlapScorer):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def score_detailed(self, pairs: Any) -> Any:
        with self.lock:
            return super().score_detailed(pairs)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, _Recording]]:
    """Our app (word-overlap scorer, at most 4 documents per request) on loopback."""
    scorer = _Recording()
    app = create_app(RerankService(scorer=scorer, raw_scorer=scorer, settings=ServeSettings(max_documents=4)))
    with serve_app(app) as url:
        yield url, scorer


def test_a_slow_server_times_out_within_the_bound_and_is_retried() -> None:
    from fastapi import FastAPI

    slow = FastAPI()
    hits: list[float] = []

    @slow.post("/rerank")
    async def rerank() -> Any:
        hits.append(time.monotonic())
        await asyncio.sleep(3)
        return [{"index": 0, "score": 1.0}]

    with serve_app(slow) as url:
        scorer = RemoteScorer(
            RerankConfig(
                scorer="remote", remote_url=url, remote_timeout_s=0.3, remote_retries=1, remote_max_documents=8
            )
        )
        start = time.monotonic()
        with pytest.raises(RemoteScorerError, match="ReadTimeout"):
            scorer.score([("q", "a")])
        assert time.monotonic() - start < 2.5
        assert len(hits) == 2  # the first try and one retry


def _raw_remote(url: str, protocol: str, **kw: Any) -> RemoteScorer:
    return RemoteScorer(RerankConfig(scorer="remote", remote_url=url, remote_protocol=protocol, activation="raw", **kw))


@pytest.mark.parametrize("protocol", ["tei", "infinity", "cohere", "auto"])
def test_remote_scores_equal_local_scores_and_requests_respect_the_server_limit(
    server: tuple[str, _Recording], protocol: str
) -> None:
    url, recording = server
    recording.calls.clear()
    remote = _raw_remote(url, protocol)
    assert remote.max_documents() == 4  # discovered from GET /info
    assert remote.score(PAIRS) == OverlapScorer().score(PAIRS)
    assert remote.protocol == ("tei" if protocol == "auto" else protocol)  # ours answers /info like TEI
    assert all(len(call) <= 4 for call in recording.calls)
    assert sum(len(call) for call in recording.calls) == len(PAIRS)
    assert remote.score([]) == []
    remote.close()


def test_remote_async_path(server: tuple[str, _Recording]) -> None:
    remote = _raw_remote(server[0], "cohere", remote_max_documents=3)

    async def run() -> list[list[float]]:
        return await asyncio.gather(*(remote.ascore(PAIRS) for _ in range(5)))

    results = asyncio.run(run())
    assert all(r == OverlapScorer().score(PAIRS) for r in results)


def test_both_adapters_run_unchanged_on_a_remote_scorer(server: tuple[str, _Recording]) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor

    cfg = RerankConfig(scorer="remote", remote_url=server[0], top_n=2)
    scorer = get_scorer(cfg)
    assert isinstance(scorer, RemoteScorer)
    assert get_scorer(cfg) is scorer
    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    out = RerankCompressor(config=cfg).compress_documents(docs, "cat pet")
    assert [d.page_content for d in out] == ["a cat is a small pet", "market day for pet cat food"]
    assert out[0].metadata["i"] == 0
    assert "i" in out[1].metadata
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(TEXTS)]
    post = RerankNodePostprocessor(config=cfg)
    kept = post.postprocess_nodes(nodes, query_bundle=QueryBundle("cat pet"))
    assert [n.node.get_content() for n in kept] == [d.page_content for d in out]
    akept = asyncio.run(post.apostprocess_nodes(nodes, query_bundle=QueryBundle("cat pet")))
    assert [n.node.get_content() for n in akept] == [d.page_content for d in out]


def test_remote_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="needs url"):
        RerankConfig.from_mapping({"scorer": "remote"})
    with pytest.raises(ConfigError, match="http"):
        RerankConfig.from_mapping({"scorer": "remote", "remote_url": "127.0.0.1:8080"})
    cfg = RerankConfig(scorer="remote", remote_url="http://x", remote_api_key="s3cret")
    assert "s3cret" not in repr(cfg)


# ---------------------------------------------------------------- stub TEI-shaped server (respx)
STUB = "http://tei.stub"


def _tei_answer(request: httpx.Request) -> httpx.Response:
    import json

    body = json.loads(request.content)
    scores = [float(len(t)) for t in body["texts"]]
    return httpx.Response(
        200, json=sorted(({"index": i, "score": s} for i, s in enumerate(scores)), key=lambda x: -x["score"])
    )


def _stub_scorer(**kw: Any) -> RemoteScorer:
    kw.setdefault("activation", "raw")  # the stub's scores are lengths: compare them as they are
    cfg = RerankConfig(scorer="remote", remote_url=STUB, remote_max_documents=2, **kw)
    scorer = RemoteScorer(cfg)
    scorer._delay = lambda attempt: 0.0  # type: ignore[method-assign]  # no real sleeping in tests
    return scorer


@respx.mock
def test_retries_5xx_and_connection_errors_then_succeeds() -> None:
    route = respx.post(f"{STUB}/rerank").mock(
        side_effect=[httpx.Response(503, json={"error": "overloaded"}), httpx.ConnectError("refused"), _tei_answer]
    )
    scorer = _stub_scorer()
    assert scorer.score([("q", "abc"), ("q", "a")]) == [3.0, 1.0]
    assert route.call_count == 3
    assert scorer.retried == 2


@respx.mock
def test_timeouts_are_retried_and_give_up_with_a_clear_error() -> None:
    respx.post(f"{STUB}/rerank").mock(side_effect=httpx.ReadTimeout("slow"))
    scorer = _stub_scorer(remote_retries=2, remote_timeout_s=0.5)
    with pytest.raises(RemoteScorerError, match=r"failed 3 time\(s\).*ReadTimeout"):
        scorer.score([("q", "a")])
    assert respx.calls.call_count == 3


@respx.mock
def test_a_4xx_is_not_retried_and_carries_the_server_message() -> None:
    route = respx.post(f"{STUB}/rerank").mock(
        return_value=httpx.Response(
            413, json={"error": "batch size 5 > maximum allowed batch size 2", "error_type": "Validation"}
        )
    )
    with pytest.raises(RerankInputError, match="refused the request \\(413\\): batch size 5"):
        _stub_scorer().score([("q", "a")])
    assert route.call_count == 1


@pytest.mark.parametrize(
    "answer",
    [
        [{"index": 0, "score": 1.0}],  # one of two missing
        [{"index": 0, "score": 1.0}, {"index": 0, "score": 2.0}],  # twice
        [{"index": 0, "score": 1.0}, {"index": 7, "score": 2.0}],  # out of range
        [{"index": 0}, {"index": 1, "score": 2.0}],  # no score
        {"results": []},  # a Cohere body on the TEI endpoint
    ],
)
@respx.mock
def test_malformed_answers_raise_scorer_output_error(answer: Any) -> None:
    respx.post(f"{STUB}/rerank").mock(return_value=httpx.Response(200, json=answer))
    with pytest.raises(ScorerOutputError):
        _stub_scorer().score([("q", "a"), ("q", "b")])


@respx.mock
def test_split_by_query_and_size_keeps_input_order() -> None:
    route = respx.post(f"{STUB}/rerank").mock(side_effect=_tei_answer)
    pairs = [("q1", "aaaa"), ("q2", "b"), ("q1", "cc"), ("q1", "d"), ("q2", "eee")]
    assert _stub_scorer().score(pairs) == [4.0, 1.0, 2.0, 1.0, 3.0]
    import json

    sent = [json.loads(c.request.content) for c in route.calls]
    assert [(b["query"], len(b["texts"])) for b in sent] == [("q1", 2), ("q1", 1), ("q2", 2)]
    assert all(b["truncate"] is True for b in sent)
    assert all(b["raw_scores"] is True for b in sent)  # logits always; the activation is applied here


@respx.mock
def test_api_key_and_raw_scores_are_sent() -> None:
    route = respx.post(f"{STUB}/rerank").mock(side_effect=_tei_answer)
    _stub_scorer(remote_api_key="k", activation="raw").score([("q", "a")])
    request = route.calls[0].request
    assert request.headers["authorization"] == "Bearer k"
    assert b'"raw_scores":true' in request.content.replace(b" ", b"")


@respx.mock
def test_without_info_endpoint_the_default_split_is_32() -> None:
    respx.get(f"{STUB}/info").mock(return_value=httpx.Response(404))
    route = respx.post(f"{STUB}/rerank").mock(side_effect=_tei_answer)
    scorer = RemoteScorer(url=STUB)
    scorer.score([("q", str(i)) for i in range(40)])
    assert route.call_count == 2


@respx.mock
def test_the_activation_is_applied_locally_to_the_servers_logits() -> None:
    """Issue 23 #8: one scale whatever the server; the scorer says which."""
    import math

    respx.post(f"{STUB}/rerank").mock(side_effect=_tei_answer)
    sig = _stub_scorer(activation="sigmoid")
    assert sig.score([("q", "abc"), ("q", "a")]) == pytest.approx([1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1))])
    assert sig.score_kind == "sigmoid"
    assert _stub_scorer().score_kind == "raw"


@pytest.mark.parametrize("code", [404, 405])
@respx.mock
def test_a_missing_endpoint_is_a_configuration_error_naming_url_and_protocol(code: int) -> None:
    """Issue 23 #2: a 404 was raised as RerankInputError ('refused the request')."""
    respx.post(f"{STUB}/v1/rerank").mock(return_value=httpx.Response(code, json={"detail": "Not Found"}))
    with pytest.raises(ConfigError, match=r"no cohere rerank endpoint.*remote_url='http://tei.stub'"):
        _stub_scorer(remote_protocol="cohere").score([("q", "a")])


@respx.mock
def test_auto_takes_a_server_without_info_for_infinity() -> None:
    """Issue 23 #2: infinity serves POST /rerank {query, documents} and has no /info."""
    import json

    respx.get(f"{STUB}/info").mock(return_value=httpx.Response(404))

    def infinity(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        results = [{"index": i, "relevance_score": float(len(d))} for i, d in enumerate(body["documents"])]
        usage = {"prompt_tokens": 3, "total_tokens": 3}
        return httpx.Response(200, json={"results": results, "model": "m", "usage": usage, "object": "rerank"})

    route = respx.post(f"{STUB}/rerank").mock(side_effect=infinity)
    scorer = _stub_scorer(remote_protocol="auto")
    assert scorer.score([("q", "abc"), ("q", "a")]) == [3.0, 1.0]
    assert scorer.protocol == "infinity"
    assert "documents" in json.loads(route.calls[0].request.content)
