"""The HTTP app: protocol conformance (TEI /rerank, Cohere /v1/rerank), limits and error bodies, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient

from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import ConfigError
from rerank_plugins.serving.app import RerankService, create_app
from rerank_plugins.serving.settings import ServeSettings
from tests.conftest import OverlapScorer, build_tiny_cross_encoder

TEXTS = ["stocks fell sharply", "a cat is a small pet animal", "the cat sat", "cat cat pet"]


@pytest.fixture
def client() -> TestClient:
    service = RerankService(
        scorer=OverlapScorer(),
        raw_scorer=OverlapScorer(),
        settings=ServeSettings(max_documents=5, max_request_bytes=4096, max_query_chars=50),
    )
    return TestClient(create_app(service))


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type", "message"}
    assert body["error"] == body["message"]
    assert body["error"]
    return str(body["error"])


def test_tei_rerank_returns_every_index_once_best_first(client: TestClient) -> None:
    r = client.post("/rerank", json={"query": "cat pet", "texts": TEXTS})
    assert r.status_code == 200
    body = r.json()
    assert sorted(item["index"] for item in body) == [0, 1, 2, 3]
    scores = [item["score"] for item in body]
    assert scores == sorted(scores, reverse=True)
    assert all(set(item) == {"index", "score"} for item in body)
    assert body[-1]["index"] == 0  # no overlap with the query


def test_tei_return_text_and_raw_scores(client: TestClient) -> None:
    body = client.post("/rerank", json={"query": "cat", "texts": TEXTS, "return_text": True, "raw_scores": True}).json()
    assert all(item["text"] == TEXTS[item["index"]] for item in body)


def test_cohere_rerank_top_n_and_documents(client: TestClient) -> None:
    docs = [TEXTS[0], {"text": TEXTS[1], "title": "kept"}, TEXTS[2]]
    r = client.post("/v1/rerank", json={"query": "cat pet", "documents": docs, "top_n": 2, "return_documents": True})
    assert r.status_code == 200
    body = r.json()
    assert {"id", "results", "model", "meta"} <= set(body)
    results = body["results"]
    assert len(results) == 2
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert results[0]["document"]["text"] == TEXTS[results[0]["index"]]
    full = client.post("/v1/rerank", json={"query": "cat pet", "documents": docs}).json()["results"]
    assert sorted(x["index"] for x in full) == [0, 1, 2]
    assert all("document" not in x for x in full)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"query": "cat"}, 422, "texts: Field required"),
        ({"texts": ["a"]}, 422, "query: Field required"),
        ({"query": "cat", "texts": []}, 422, "empty"),
        ({"query": "   ", "texts": ["a"]}, 422, "`query` is empty"),
        ({"query": "cat", "texts": [1, 2]}, 422, "valid string"),
        ({"query": "cat", "texts": ["a"] * 6}, 413, "at most 5"),
        ({"query": "c" * 51, "texts": ["a"]}, 413, "at most 50"),
        ({"query": "cat", "texts": ["a"], "truncation_direction": "left"}, 422, "not supported"),
        (["not", "an", "object"], 422, "TEIRequest"),
    ],
)
def test_tei_bad_input_is_a_4xx_with_a_message(client: TestClient, body: Any, status: int, needle: str) -> None:
    assert needle in _error(client.post("/rerank", json=body), status)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"query": "cat", "documents": []}, 422, "empty"),
        ({"query": "cat", "documents": ["a"], "top_n": 0}, 422, "top_n"),
        ({"query": "cat", "documents": ["a"], "top_n": "2"}, 422, "top_n"),
        ({"query": "cat", "documents": ["a"], "max_tokens_per_doc": True}, 422, "max_tokens_per_doc"),
        ({"query": "cat", "documents": ["a"], "max_tokens_per_doc": 1.5}, 422, "max_tokens_per_doc"),
        ({"query": "cat", "documents": ["a"] * 6}, 413, "at most 5"),
    ],
)
def test_cohere_bad_input_is_a_4xx_with_a_message(client: TestClient, body: Any, status: int, needle: str) -> None:
    assert needle in _error(client.post("/v1/rerank", json=body), status)


def test_cohere_counts_are_json_schema_integers(client: TestClient) -> None:
    """2.0 is an integer to JSON Schema (and to the OpenAPI document clients read), true and "2" are not."""
    docs = ["cat", "a cat is a pet", "dogs bark"]
    body = {"query": "cat pet", "documents": docs, "top_n": 2.0, "max_tokens_per_doc": 64.0}
    r = client.post("/v2/rerank", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 2
    assert "expected an integer, got bool" in _error(
        client.post("/v2/rerank", json={"query": "cat", "documents": docs, "top_n": True}), 422
    )


def test_malformed_and_oversized_bodies(client: TestClient) -> None:
    assert "Invalid JSON" in _error(
        client.post("/rerank", content=b'{"query": ', headers={"content-type": "application/json"}), 422
    )
    assert "empty request body" in _error(client.post("/v1/rerank", content=b""), 422)
    big = json.dumps({"query": "cat", "texts": ["x" * 5000]}).encode()
    assert "at most 4096" in _error(client.post("/rerank", content=big), 413)

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b" " * 1000

    assert "over 4096 bytes" in _error(client.post("/rerank", content=chunks()), 413)


def test_a_scorer_failure_is_a_json_500_and_counted() -> None:
    class Broken(OverlapScorer):
        def score_detailed(self, pairs: Any) -> Any:
            raise RuntimeError("weights on fire")

    client = TestClient(create_app(RerankService(scorer=Broken(), raw_scorer=Broken())))
    r = client.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert r.status_code == 500
    assert "weights on fire" in r.json()["error"]
    assert r.json()["error_type"] == "Backend"
    assert 'rerank_requests_total{endpoint="/rerank",status="500"} 1.0' in client.get("/metrics").text


def test_health_info_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["max_client_batch_size"] == 5
    assert info["max_query_chars"] == 50
    client.post("/rerank", json={"query": "cat", "texts": TEXTS[:3]})
    client.post("/v1/rerank", json={"query": "cat", "documents": TEXTS[:2]})
    client.post("/rerank", json={"query": "cat", "texts": []})
    text = client.get("/metrics").text
    assert 'rerank_requests_total{endpoint="/rerank",status="200"} 1.0' in text
    assert 'rerank_requests_total{endpoint="/rerank",status="422"} 1.0' in text
    assert 'rerank_requests_total{endpoint="/v1/rerank",status="200"} 1.0' in text
    assert "rerank_pairs_scored_total 5.0" in text
    assert 'rerank_request_seconds_count{endpoint="/rerank"} 2.0' in text
    assert "rerank_batch_pairs_count 2.0" in text


def test_cache_hits_are_exported() -> None:
    from rerank_plugins.scoring.cache import CachedScorer

    cached = CachedScorer(OverlapScorer(), max_entries=100)
    client = TestClient(create_app(RerankService(scorer=cached, raw_scorer=OverlapScorer())))
    for _ in range(2):
        client.post("/rerank", json={"query": "cat", "texts": TEXTS})
    text = client.get("/metrics").text
    assert "rerank_cache_hits 4.0" in text
    assert "rerank_cache_misses 4.0" in text


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("serve-model"))


def test_real_model_truncation_policy(tiny_model: Path) -> None:
    config = RerankConfig(model=str(tiny_model), max_length=32, scorer="cross-encoder")
    client = TestClient(create_app(config=config, settings=ServeSettings(auto_truncate=True)))
    long_text = "the cat sat on the mat " * 40
    ok = client.post("/rerank", json={"query": "cat", "texts": [long_text, "cat"]})
    assert ok.status_code == 200
    assert len(ok.json()) == 2
    refused = client.post("/rerank", json={"query": "cat", "texts": [long_text, "cat"], "truncate": False})
    assert "truncate=true" in _error(refused, 413)
    raw = client.post("/rerank", json={"query": "cat", "texts": ["cat", "dog"], "raw_scores": True}).json()
    norm = client.post("/rerank", json={"query": "cat", "texts": ["cat", "dog"]}).json()
    assert all(0.0 <= x["score"] <= 1.0 for x in norm)
    # same order, different scale: sigmoid of the raw logits
    assert [x["index"] for x in raw] == [x["index"] for x in norm]
    assert any(abs(x["score"] - y["score"]) > 1e-6 for x, y in zip(raw, norm, strict=True))
    strict = TestClient(create_app(config=config, settings=ServeSettings(auto_truncate=False)))
    assert strict.post("/rerank", json={"query": "cat", "texts": [long_text]}).status_code == 413
    assert strict.post("/rerank", json={"query": "cat", "texts": [long_text], "truncate": True}).status_code == 200
    # the default scorer reads a long text in windows: nothing is cut, so truncate=false is no reason to refuse
    no_cut = ServeSettings(auto_truncate=False)
    windowed = TestClient(create_app(config=config.merged(scorer="windowed", window_limit=None), settings=no_cut))
    assert windowed.post("/rerank", json={"query": "cat", "texts": [long_text, "cat"]}).status_code == 200
    # ... unless the text goes on past window_limit windows: that is a cut, refused like a truncation
    limited = TestClient(create_app(config=config.merged(scorer="windowed", window_limit=2), settings=no_cut))
    assert "truncate=true" in _error(limited.post("/rerank", json={"query": "cat", "texts": [long_text]}), 413)


def test_serve_settings_validation_and_env() -> None:
    assert ServeSettings(replicas=2, min_replicas=1, max_replicas=4).autoscaling() == {
        "min_replicas": 1,
        "initial_replicas": 2,
        "max_replicas": 4,
        "target_ongoing_requests": 8.0,
    }
    with pytest.raises(ValueError, match="min_replicas needs max_replicas"):
        ServeSettings(min_replicas=1)
    with pytest.raises(ValueError, match="must lie in"):
        ServeSettings(replicas=5, max_replicas=4)
    s = ServeSettings.from_sources({"port": 9000}, {"RERANK_PLUGINS_SERVE_REPLICAS": "3"}, host=None, max_documents=7)
    assert (s.port, s.replicas, s.max_documents, s.host) == (9000, 3, 7, "127.0.0.1")
    with pytest.raises(ConfigError, match="variable RERANK_PLUGINS_SERVE_REPLICA;"):
        ServeSettings.from_sources(None, {"RERANK_PLUGINS_SERVE_REPLICA": "3"})
    with pytest.raises(ConfigError, match="port"):
        ServeSettings.from_sources({"port": -1})
    # serve variables do not upset the rerank settings
    assert RerankConfig.from_env({"RERANK_PLUGINS_SERVE_PORT": "1", "RERANK_PLUGINS_TOP_N": "2"}).top_n == 2


def test_cli_serve_uvicorn_answers_and_stops_on_ctrl_c(tiny_model: Path, tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = tmp_path / "serve.toml"
    settings.write_text(f'model = "{tiny_model.as_posix()}"\nbackend = "torch"\n\n[serve]\nmax_documents = 2\n')
    cmd = [sys.executable, "-m", "rerank_plugins.cli", "serve", "--engine", "uvicorn", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--config", str(settings)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/rerank", json={"query": "cat", "texts": ["a cat", "a dog"]})
        assert r.status_code == 200
        assert sorted(x["index"] for x in r.json()) == [0, 1]
        too_many = httpx.post(f"http://127.0.0.1:{port}/rerank", json={"query": "cat", "texts": ["a", "b", "c"]})
        assert too_many.status_code == 413  # the [serve] table of the settings file applies
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_cli_serve_rejects_bad_settings_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    from rerank_plugins.cli import main

    assert main(["serve", "--min-replicas", "2"]) == 2
    assert "min_replicas needs max_replicas" in capsys.readouterr().err


def test_openapi_schema_resolves_every_ref_and_documents_the_errors(client: TestClient) -> None:
    """Issue 22 #11: the schema pointed at an unresolvable #/$defs/_DocumentObject; 413/422 were undocumented."""
    spec = client.get("/openapi.json").json()

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(spec):
        target: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]  # raises KeyError for a dangling reference
    for path in ("/rerank", "/v1/rerank"):
        assert {"200", "408", "413", "422", "500"} <= set(spec["paths"][path]["post"]["responses"])


@pytest.mark.hostile
def test_a_body_trickled_slower_than_the_timeout_gets_408_and_a_closed_connection() -> None:
    """Issue 22 #10: a client sending its body byte by byte held a connection open for as long as it liked."""
    import select
    import socket
    import threading
    import time

    import uvicorn

    service = RerankService(
        scorer=OverlapScorer(), raw_scorer=OverlapScorer(), settings=ServeSettings(body_timeout_s=1)
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = b'{"query": "cat", "texts": ["a cat", "a dog"]}'
        conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn.sendall(
            b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        received = b""
        closed = False
        for byte in body:  # one byte every 0.2 s: 9 s for the whole body
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable:  # the server answered: stop sending (writing to a closed socket resets it)
                break
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
        conn.settimeout(5)
        try:
            while chunk := conn.recv(4096):
                received += chunk  # until the server closes the connection
            closed = True
        except ConnectionResetError:
            closed = True  # closed with a reset: the answer may be lost with it
        elapsed = time.monotonic() - started
        conn.close()
        assert closed
        assert elapsed < 8  # well before the body would have finished
        assert received.startswith(b"HTTP/1.1 408") or not received, received[:200]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_cohere_v2_infinity_bodies_rank_fields_and_usage(client: TestClient) -> None:
    """Issue 23 #1, #3: /v2/rerank served; /rerank takes infinity bodies; rank_fields; usage the clients read."""
    docs = TEXTS[:3]
    v2 = client.post("/v2/rerank", json={"model": "m", "query": "cat pet", "documents": docs, "top_n": 2})
    assert v2.status_code == 200
    body = v2.json()
    assert body["meta"]["api_version"]["version"] == "2"
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert set(body["usage"]) >= {"prompt_tokens", "total_tokens"}
    assert body["usage"]["prompt_tokens"] > 0
    infinity = client.post("/rerank", json={"query": "cat pet", "documents": docs, "return_documents": True})
    assert infinity.status_code == 200
    assert infinity.json()["results"][0] == {"index": 1, "relevance_score": 2.0, "document": {"text": docs[1]}}
    fields = [{"title": "stocks", "body": "cat pet cat"}, {"title": "cat pet", "body": "nothing"}]
    by_title = client.post("/v1/rerank", json={"query": "cat pet", "documents": fields, "rank_fields": ["title"]})
    assert [r["index"] for r in by_title.json()["results"]] == [1, 0]
    by_both = client.post(
        "/v1/rerank",
        json={"query": "cat pet", "documents": fields, "rank_fields": ["title", "body"], "return_documents": True},
    )
    assert by_both.json()["results"][0]["document"]["text"] == "title: stocks\nbody: cat pet cat"
    untitled = client.post("/v1/rerank", json={"query": "cat", "documents": [{"title": "cat"}, {"t": "x"}]})
    assert [r["index"] for r in untitled.json()["results"]] == [0, 1]  # no 'text': every field is read


def test_the_model_is_named_by_its_folder_not_the_servers_path(tiny_model: Path) -> None:
    """Issue 23 #9: /health, /info and the Cohere model field exposed the absolute model path."""
    svc = RerankService(RerankConfig(model=str(tiny_model), device="cpu", backend="torch"))
    app = TestClient(create_app(svc))
    shown = [
        app.get("/health").json()["model"],
        app.get("/info").json()["model_id"],
        app.post("/v1/rerank", json={"query": "cat", "documents": ["a cat"]}).json()["model"],
    ]
    assert shown == [tiny_model.name] * 3
    assert str(tiny_model.parent) not in app.get("/info").text
    assert app.get("/info").json()["relevance_score_kind"] == "sigmoid"  # the tiny model has no calibration


def test_the_schema_calls_blank_exactly_what_the_server_rejects_as_blank(client: TestClient) -> None:
    """Schemathesis found a query of two U+0085 that JSON Schema's \\S accepts and str.strip() blanks (422)."""
    import re

    from rerank_plugins.serving.app import NOT_SPACE

    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()}
    assert {c for c in spaces if re.fullmatch(NOT_SPACE, c)} == set()
    assert all(re.fullmatch(NOT_SPACE, c) for c in ("a", "\ufeff", "\u200b", "\x00", "\U0001f600"))
    assert all(c.strip() for c in ("a", "\ufeff", "\u200b", "\x00", "\U0001f600"))
    schema = client.get("/openapi.json").json()
    assert NOT_SPACE in json.dumps(schema).replace("\\\\", "\\")
    blank = client.post("/rerank", json={"query": "\x85\x85", "texts": ["a"]})
    assert blank.status_code == 422
