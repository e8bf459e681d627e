"""A scorer that asks a ``/rerank`` server: our own service, text-embeddings-inference or infinity.

With ``scorer='remote'`` both adapters (and the CLI, the harness...) score through a fleet
instead of a local model, unchanged. Pairs are grouped by query; each group is sent in
requests of at most ``remote_max_documents`` passages (and at most ~1 MB), over a pooled
HTTP client (httpx, sync and async). Connection errors, timeouts, 429 and 5xx answers are
retried with exponential backoff; a 4xx is the caller's mistake and raised at once with the
server's message. The answer is checked: every passage gets exactly one finite score.

Protocols: ``tei`` (``POST /rerank {query, texts}``: text-embeddings-inference and ours),
``infinity`` (``POST /rerank {query, documents}``: infinity and ours), ``cohere``
(``POST /v1/rerank``: ours and Cohere-compatible servers), and ``auto``, which asks the
server's ``GET /info`` once (ours and TEI answer it; a server without it is taken for
infinity). A 404 or 405 is a configuration error naming the URL and the protocol.

Scores have one scale whatever the server: the raw logits are asked for (``raw_scores``) and
the configured activation is applied here: 'raw' keeps them, anything else takes their
sigmoid (a remote model's calibration is not known here; ``score_kind`` says which scale).
A remote server does not say whether it truncated a passage, so notes say "whole".
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from rerank_plugins._extras import require
from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import ConfigError, RerankInputError, RerankPluginsError, ScorerOutputError
from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer, check_pairs
from rerank_plugins.scoring.calibration import sigmoid

__all__ = ["RemoteScorer", "RemoteScorerError"]

logger = logging.getLogger(__name__)

_DEFAULT_MAX_DOCUMENTS = 32  # TEI's default max_client_batch_size
_MAX_REQUEST_BYTES = 1_000_000
_BACKOFF_S = 0.2
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class RemoteScorerError(RerankPluginsError, ConnectionError):
    """The server could not be reached or kept failing after the retries."""


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return str(response.text)[:300]
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if key in body:
                return str(body[key])[:300]
    return str(body)[:300]


class RemoteScorer(Scorer):
    """Scores pairs on a remote ``/rerank`` server.

    Args:
        config: A config with ``scorer='remote'`` and ``remote_url`` (the other ``remote_*`` fields
            tune it), or None with ``url`` given.
        url: Shortcut for ``remote_url``.
        transport: An httpx transport for the sync client (tests; e.g. ``httpx.MockTransport``).
        async_transport: The same for the async client.

    Example:
        >>> scorer = RemoteScorer(url="http://127.0.0.1:8080", protocol="cohere", max_documents=50)
        >>> scorer.name, scorer.endpoint
        ('remote:http://127.0.0.1:8080', 'http://127.0.0.1:8080/v1/rerank')
    """

    def __init__(
        self,
        config: RerankConfig | None = None,
        *,
        url: str | None = None,
        protocol: str | None = None,
        max_documents: int | None = None,
        transport: Any = None,
        async_transport: Any = None,
    ) -> None:
        base = config or RerankConfig(scorer={"kind": "remote", "url": url or "http://127.0.0.1:8080"})
        overrides: dict[str, Any] = {"scorer": "remote"}
        if url is not None:
            overrides["remote_url"] = url
        if protocol is not None:
            overrides["remote_protocol"] = protocol
        if max_documents is not None:
            overrides["remote_max_documents"] = max_documents
        self.config = base.merged(**overrides)
        self.httpx = require("httpx", "RemoteScorer", extra="remote")
        self.url = str(self.config.remote_url).rstrip("/")
        self._protocol: str | None = None if self.config.remote_protocol == "auto" else self.config.remote_protocol
        self.name = f"remote:{self.url}"
        self._identity = f"{self.config.remote_protocol}|{self.config.model or ''}|{self.score_kind}"
        self.retries = self.config.remote_retries
        self._max_documents = self.config.remote_max_documents
        self._transport = transport
        self._async_transport = async_transport
        self._client: Any = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.requests_sent = 0
        self.retried = 0

    @property
    def protocol(self) -> str:
        """The protocol in use ('auto' resolved by one ``GET /info`` on first use)."""
        if self._protocol is None:
            self._protocol = self._probe()
        return self._protocol

    @property
    def endpoint(self) -> str:
        return self.url + ("/v1/rerank" if self.protocol == "cohere" else "/rerank")

    @property
    def score_kind(self) -> str:
        return "raw" if self.config.activation == "raw" else "sigmoid"

    def _probe(self) -> str:
        """'tei' for a server whose /info names TEI's protocol (ours does too), 'infinity' for one without /info."""
        try:
            info = self._sync_client().get(self.url + "/info")
        except self.httpx.TransportError as exc:
            raise RemoteScorerError(
                f"remote_protocol='auto' could not ask {self.url}/info ({type(exc).__name__}: {exc}); "
                "check the URL, or set remote_protocol to 'tei', 'infinity' or 'cohere'"
            ) from exc
        if info.status_code == 200:
            try:
                body = info.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and ("model_type" in body or "protocols" in body):
                protocols = body.get("protocols") or ["tei:/rerank"]
                if any(str(p).startswith("tei") for p in protocols):
                    return "tei"
                return "infinity" if any(str(p).startswith("infinity") for p in protocols) else "cohere"
        logger.info("%s/info answered %s: taking the server for infinity (POST /rerank {query, documents})",
                    self.url, info.status_code)  # fmt: skip
        return "infinity"

    # ------------------------------------------------------------------ clients

    @property
    def fingerprint(self) -> str:
        """The protocol, the model asked for and the activation (the server's model is its own)."""
        return self._identity

    def _client_kwargs(self) -> dict[str, Any]:
        headers = {"User-Agent": "rerank-plugins"}
        if self.config.remote_api_key is not None:
            headers["Authorization"] = f"Bearer {self.config.remote_api_key.get_secret_value()}"
        t = self.config.remote_timeout_s
        return {
            "headers": headers,
            "timeout": self.httpx.Timeout(t, connect=min(t, 5.0)),
            "limits": self.httpx.Limits(max_connections=32, max_keepalive_connections=16),
        }

    def _sync_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.httpx.Client(transport=self._transport, **self._client_kwargs())
            return self._client

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self.httpx.AsyncClient(transport=self._async_transport, **self._client_kwargs())
            self._aclients[loop] = client
        return client

    def close(self) -> None:
        """Close the pooled sync connections (async clients close with their event loop)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------------ requests
    def max_documents(self) -> int:
        """Passages per request: the configured value, else the server's ``/info``, else 32."""
        if self._max_documents is None:
            found = _DEFAULT_MAX_DOCUMENTS
            try:
                info = self._sync_client().get(self.url + "/info")
                if info.status_code == 200:
                    found = int(info.json().get("max_client_batch_size", found))
            except Exception as exc:  # an info endpoint is optional (infinity has none)
                logger.debug("GET %s/info failed (%s); sending %d passages per request", self.url, exc, found)
            self._max_documents = max(1, found)
        return self._max_documents

    def _body(self, query: str, texts: list[str]) -> dict[str, Any]:
        # always the logits: the activation is applied here, so every server gives the same scale
        if self.protocol == "tei":
            return {"query": query, "texts": texts, "raw_scores": True, "truncate": True}
        body: dict[str, Any] = {"query": query, "documents": texts, "return_documents": False, "raw_scores": True}
        if self.config.model is not None:
            body["model"] = self.config.model
        return body

    def _activate(self, scores: list[float]) -> list[float]:
        if self.config.activation == "raw":
            return scores
        return [sigmoid(s) for s in scores]

    def _parse(self, payload: Any, n: int) -> list[float]:
        items = payload if self.protocol == "tei" else payload.get("results") if isinstance(payload, dict) else None
        key = "score" if self.protocol == "tei" else "relevance_score"
        if not isinstance(items, list):
            raise ScorerOutputError(
                f"{self.endpoint} answered {str(payload)[:200]!r}, not a {self.protocol} rerank response"
            )
        scores: list[float | None] = [None] * n
        for item in items:
            try:
                i, s = int(item["index"]), float(item[key])
            except (KeyError, TypeError, ValueError) as exc:
                raise ScorerOutputError(f"{self.endpoint} returned a malformed result {item!r:.120}") from exc
            if not 0 <= i < n or scores[i] is not None:
                raise ScorerOutputError(f"{self.endpoint} returned index {i} out of range or twice (for {n} passages)")
            scores[i] = s
        missing = [i for i, s in enumerate(scores) if s is None]
        if missing:
            raise ScorerOutputError(
                f"{self.endpoint} returned no score for {len(missing)} of {n} passages (first: {missing[0]}); "
                "is top_n set on the server side?"
            )
        return self._activate([float(s) for s in scores if s is not None])

    def _json(self, response: Any) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ScorerOutputError(
                f"{self.endpoint} answered 200 with a body that is not JSON: {response.text[:200]!r}"
            ) from exc

    def _check_status(self, response: Any) -> bool:
        """True when the response is usable, False when worth a retry; raises for the caller's mistakes."""
        code = response.status_code
        if code == 200:
            return True
        if code in _RETRY_STATUS or code >= 500:
            return False
        if code in (404, 405):
            raise ConfigError(
                f"{self.endpoint} answered {code}: there is no {self.protocol} rerank endpoint at remote_url="
                f"{self.url!r}. Check the URL and remote_protocol ('tei': POST /rerank {{query, texts}}; "
                "'infinity': POST /rerank {query, documents}; 'cohere': POST /v1/rerank; 'auto' asks GET /info)"
            )
        raise RerankInputError(f"{self.endpoint} refused the request ({code}): {_error_text(response)}")

    def _give_up(self, attempts: int, last: str) -> RemoteScorerError:
        return RemoteScorerError(
            f"{self.endpoint} failed {attempts} time(s); last error: {last}. Check that the server runs "
            "(`rerank-plugins serve`) and the URL, or raise remote_retries / remote_timeout_s"
        )

    def _delay(self, attempt: int) -> float:
        return float(_BACKOFF_S * (2**attempt) * (0.75 + 0.5 * random.random()))

    def _settle(self, response: Any, error: Exception | None, n: int, attempt: int) -> list[float] | str:
        """The scores of a usable answer, else the text of the error worth a retry (a 4xx raises)."""
        if error is not None:
            last = f"{type(error).__name__}: {error}"
        elif self._check_status(response):
            return self._parse(self._json(response), n)
        else:
            last = f"HTTP {response.status_code}: {_error_text(response)}"
        logger.warning("%s: %s (attempt %d of %d)", self.endpoint, last, attempt + 1, self.retries + 1)
        return last

    def _post(self, query: str, texts: list[str]) -> list[float]:
        client = self._sync_client()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(self._delay(attempt - 1))
            self.requests_sent += 1
            try:
                response, error = client.post(self.endpoint, json=self._body(query, texts)), None
            except self.httpx.TransportError as exc:
                response, error = None, exc
            got = self._settle(response, error, len(texts), attempt)
            if not isinstance(got, str):
                return got
            last = got
        raise self._give_up(self.retries + 1, last)

    async def _apost(self, query: str, texts: list[str]) -> list[float]:
        client = self._async_client()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                await asyncio.sleep(self._delay(attempt - 1))
            self.requests_sent += 1
            try:
                response, error = await client.post(self.endpoint, json=self._body(query, texts)), None
            except self.httpx.TransportError as exc:
                response, error = None, exc
            got = self._settle(response, error, len(texts), attempt)
            if not isinstance(got, str):
                return got
            last = got
        raise self._give_up(self.retries + 1, last)

    # ------------------------------------------------------------------ planning
    def _plan(self, pairs: list[tuple[str, str]], limit: int) -> list[tuple[str, list[int]]]:
        """Requests as (query, positions): grouped by query, each under ``limit`` passages and ~1 MB."""
        groups: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(pairs):
            groups.setdefault(q, []).append(i)
        plan: list[tuple[str, list[int]]] = []
        for q, positions in groups.items():
            current: list[int] = []
            size = len(q.encode("utf-8", "replace"))
            for i in positions:
                n = len(pairs[i][1].encode("utf-8", "replace")) + 8
                if current and (len(current) >= limit or size + n > _MAX_REQUEST_BYTES):
                    plan.append((q, current))
                    current, size = [], len(q.encode("utf-8", "replace"))
                current.append(i)
                size += n
            plan.append((q, current))
        return plan

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        checked = check_pairs(pairs)
        scores = [0.0] * len(checked)
        if checked:
            for q, positions in self._plan(checked, self.max_documents()):
                for i, s in zip(positions, self._post(q, [checked[i][1] for i in positions]), strict=True):
                    scores[i] = s
        return ScoredPairs(scores, [PairNote()] * len(checked))

    async def ascore_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        checked = check_pairs(pairs)
        scores = [0.0] * len(checked)
        if checked:
            limit = (
                self._max_documents if self._max_documents is not None else await asyncio.to_thread(self.max_documents)
            )
            plan = self._plan(checked, limit)
            gate = asyncio.Semaphore(4)

            async def one(q: str, positions: list[int]) -> None:
                async with gate:
                    got = await self._apost(q, [checked[i][1] for i in positions])
                for i, s in zip(positions, got, strict=True):
                    scores[i] = s

            await asyncio.gather(*(one(q, p) for q, p in plan))
        return ScoredPairs(scores, [PairNote()] * len(checked))
