"""Interoperability: real third-party clients against `rerank-plugins serve` (our FastAPI app under
uvicorn on loopback), and our RemoteScorer against a real infinity server. Run by `tox -e interop`,
which pins the clients; skipped where they are not installed (the plain test run)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

cohere = pytest.importorskip("cohere")
pytest.importorskip("langchain_cohere")
pytest.importorskip("llama_index.postprocessor.cohere_rerank")
pytest.importorskip("llama_index.postprocessor.tei_rerank")
pytest.importorskip("infinity_client")
pytest.importorskip("langchain_community")


from rerank_plugins.config import RerankConfig  # noqa: E402
from rerank_plugins.serving.app import RerankService, create_app  # noqa: E402
from rerank_plugins.serving.settings import ServeSettings  # noqa: E402
from tests.conftest import serve_app  # noqa: E402

pytestmark = pytest.mark.interop

QUERY = "how does bread rise"
DOCS = [
    "Venus is the hottest planet in the solar system.",
    "Bread rises because yeast ferments sugars and releases carbon dioxide gas.",
    "Kneading develops gluten, which gives bread dough its structure.",
]
ANSWER = 1


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """Our server with the shipped model, as `rerank-plugins serve --engine uvicorn` runs it."""
    service = RerankService(RerankConfig(device="cpu"), ServeSettings())
    with serve_app(create_app(service)) as base:
        yield base


def test_cohere_client_v2_sync_and_async(url: str) -> None:
    client = cohere.ClientV2(api_key="unused", base_url=url)
    out = client.rerank(model="rerank", query=QUERY, documents=DOCS, top_n=2)
    assert out.results[0].index == ANSWER
    assert len(out.results) == 2

    async def run() -> Any:
        return await cohere.AsyncClientV2(api_key="unused", base_url=url).rerank(
            model="rerank", query=QUERY, documents=DOCS
        )

    assert asyncio.run(run()).results[0].index == ANSWER


def test_cohere_client_v1_sync_async_and_rank_fields(url: str) -> None:
    client = cohere.Client(api_key="unused", base_url=url)
    out = client.rerank(model="rerank", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    assert out.results[0].index == ANSWER
    objects = [{"title": "Baking", "text": t} for t in DOCS]
    by_fields = client.rerank(model="rerank", query=QUERY, documents=objects, rank_fields=["title", "text"])
    assert by_fields.results[0].index == ANSWER

    async def run() -> Any:
        return await cohere.AsyncClient(api_key="unused", base_url=url).rerank(
            model="rerank", query=QUERY, documents=DOCS
        )

    assert asyncio.run(run()).results[0].index == ANSWER


def test_langchain_cohere_rerank(url: str) -> None:
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    reranker = CohereRerank(cohere_api_key="unused", base_url=url, model="rerank", top_n=2)
    out = reranker.compress_documents([Document(page_content=t) for t in DOCS], QUERY)
    assert out[0].page_content == DOCS[ANSWER]
    assert "relevance_score" in out[0].metadata


def test_llamaindex_cohere_and_tei_postprocessors(url: str) -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(DOCS)]
    for post in (
        CohereRerank(api_key="unused", base_url=url, model="rerank", top_n=2),
        TextEmbeddingInference(base_url=url, model_name="rerank", top_n=2),
    ):
        out = post.postprocess_nodes(nodes, QueryBundle(QUERY))
        assert out[0].node.node_id == str(ANSWER), type(post).__name__


def test_infinity_client_and_langchain_infinity_rerank(url: str) -> None:
    from infinity_client import Client
    from infinity_client.api.default import rerank
    from infinity_client.models import RerankInput
    from langchain_community.document_compressors.infinity_rerank import InfinityRerank
    from langchain_core.documents import Document

    client = Client(base_url=url)
    out = rerank.sync(client=client, body=RerankInput(query=QUERY, documents=DOCS, model="rerank"))
    assert out.results[0].index == ANSWER
    assert out.usage.prompt_tokens > 0
    compressor = InfinityRerank(client=client, model="rerank", top_n=2)
    docs = compressor.compress_documents([Document(page_content=t) for t in DOCS], QUERY)
    assert docs[0].page_content == DOCS[ANSWER]


# ------------------------------------------------------------------ our RemoteScorer -> a real infinity server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def infinity_url() -> Iterator[str]:
    """infinity-emb (its own venv: it pins older transformers) serving the shipped model on loopback."""
    exe = os.environ.get("INFINITY_EMB")
    if not exe or not shutil.which(exe):
        pytest.skip("INFINITY_EMB names no infinity_emb executable (tox -e interop installs one)")
    from rerank_plugins.models import default_model_path

    port = _free_port()
    cmd = [exe, "v2", "--model-id", str(default_model_path()), "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["--engine", "torch", "--device", "cpu", "--no-model-warmup"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (proc.stdout.read() if proc.stdout else "")[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "infinity did not come up"
            time.sleep(1)
        yield base
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)


@pytest.mark.parametrize("protocol", ["infinity", "auto"])
def test_remote_scorer_through_both_adapters_against_infinity(infinity_url: str, protocol: str) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor

    cfg = RerankConfig(scorer="remote", remote_url=infinity_url, remote_protocol=protocol, top_n=2)
    out = RerankCompressor(config=cfg).compress_documents([Document(page_content=t) for t in DOCS], QUERY)
    assert out[0].page_content == DOCS[ANSWER]
    assert out[0].metadata["relevance_score_kind"] == "sigmoid"
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(DOCS)]
    kept = RerankNodePostprocessor(config=cfg).postprocess_nodes(nodes, QueryBundle(QUERY))
    assert kept[0].node.node_id == str(ANSWER)
    # the same logits as the local model: one scale on every path
    from rerank_plugins.scoring.factory import get_scorer

    local = get_scorer(RerankConfig(scorer="cross-encoder", activation="sigmoid", device="cpu", backend="torch"))
    remote = get_scorer(cfg)
    pairs = [(QUERY, t) for t in DOCS]
    assert remote.score(pairs) == pytest.approx(local.score(pairs), abs=2e-3)
