"""The HTTP face of the shared scorer: the ``/rerank`` protocols clients already speak.

* ``POST /rerank``: text-embeddings-inference (TEI): ``{query, texts, raw_scores, return_text,
  truncate}`` -> ``[{index, score, text?}]``, best first.
* ``POST /v1/rerank``: Cohere / infinity:
  ``{query, documents, top_n, return_documents, model?, raw_scores?}`` ->
  ``{id, model, results: [{index, relevance_score, document?}], meta, usage}``.
* ``GET /health``, ``GET /info`` (model and limits, TEI field names), ``GET /metrics`` (Prometheus).

Bad input never gets a 500: a body that is not JSON or misses a field is a 422, a body or
query over the limits a 413, each as ``{"error", "error_type", "message"}`` (TEI reads
``error``, Cohere clients ``message``). The scorer runs behind a pluggable async ``score_fn``,
so the same app serves one process under uvicorn or each replica of the Ray Serve
deployment (:mod:`rerank_plugins.serving.ray_deployment`), where concurrent requests are
batched together.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route annotations at run time,
# and fastapi is imported inside create_app (it is an optional extra).
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError

from rerank_plugins._extras import require
from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import RerankInputError, RerankPluginsError
from rerank_plugins.pipeline.ordering import best_first
from rerank_plugins.scoring.base import ScoredPairs, Scorer, check_pairs
from rerank_plugins.serving.settings import ServeSettings

__all__ = ["CohereRequest", "RerankService", "ScoreFn", "ServiceError", "TEIRequest", "create_app"]

logger = logging.getLogger(__name__)

#: An async protocol handler: parsed request -> response body.
_Handler = Callable[[Any], Awaitable[Any]]

#: (pairs, raw_scores) -> scores and notes in input order.
ScoreFn = Callable[[list[tuple[str, str]], bool], Awaitable[ScoredPairs]]


def _json_integer(value: Any) -> Any:
    """A JSON Schema integer: a whole number (``2`` or ``2.0``), never ``true`` or ``"2"``, which pydantic's
    lax mode would turn into 1 and 2 (a client bug to report, not a count to guess)."""
    if isinstance(value, bool | str):
        raise ValueError(f"expected an integer, got {type(value).__name__} {value!r}")
    return value


#: A count of at least 1 that accepts what JSON Schema calls an integer and nothing else.
Count = Annotated[int, Field(ge=1), BeforeValidator(_json_integer)]


class TEIRequest(BaseModel):
    """Body of text-embeddings-inference's ``POST /rerank``."""

    model_config = ConfigDict(extra="ignore")

    query: str
    texts: list[str]
    # strict: a 0 or "yes" is a client bug to report, not a flag to guess
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: StrictBool | None = None
    truncation_direction: Literal["right", "Right", "left", "Left"] = "right"


class CohereRequest(BaseModel):
    """Body of Cohere's ``POST /v1/rerank`` and ``POST /v2/rerank``, and of infinity's ``POST /rerank``.

    A document is a string, or an object: its ``rank_fields`` (Cohere v1) are read as
    ``field: value`` lines (a document with none of them reads as empty text and ranks low);
    without ``rank_fields``, its ``text`` field, else all of its fields.
    """

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    query: str
    documents: list[str | dict[str, Any]]
    top_n: Count | None = None
    rank_fields: list[str] | None = None
    return_documents: StrictBool = False
    model: str | None = None
    raw_scores: StrictBool = False
    truncate: StrictBool | None = None
    max_tokens_per_doc: Count | None = None


def document_text(doc: str | dict[str, Any], rank_fields: list[str] | None) -> str:
    """The text scored for one Cohere / infinity document.

    Example:
        >>> document_text({"title": "Cats", "text": "A cat is a pet.", "year": 2020}, ["title", "text"])
        'title: Cats\\ntext: A cat is a pet.'
        >>> document_text({"text": "A cat is a pet.", "id": 7}, None)
        'A cat is a pet.'
        >>> document_text({"title": "Cats", "year": 2020}, None)
        'title: Cats\\nyear: 2020'
    """
    if isinstance(doc, str):
        return doc
    if rank_fields:
        return "\n".join(f"{f}: {_field(doc[f])}" for f in rank_fields if f in doc)
    if isinstance(doc.get("text"), str):
        return str(doc["text"])
    return "\n".join(f"{k}: {_field(v)}" for k, v in doc.items())


def _field(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def public_model_name(name: str) -> str:
    """``name`` as shown to clients: a local path becomes its folder's name (a hub id stays as it is)."""
    path = Path(name).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve().name or name
    return name


class ServiceError(RerankPluginsError):
    """A request the service refuses, with its HTTP status and TEI error type."""

    def __init__(self, status: int, message: str, error_type: str = "Validation") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type

    def body(self) -> dict[str, str]:
        return {"error": self.message, "error_type": self.error_type, "message": self.message}


@dataclass
class _Metrics:
    registry: Any
    requests: Any
    latency: Any
    pairs: Any
    batch_pairs: Any
    batch_requests: Any
    cache_hits: Any
    cache_misses: Any


def _make_metrics() -> _Metrics:
    prom = require("prometheus_client", "The HTTP service's metrics")
    reg = prom.CollectorRegistry()
    return _Metrics(
        registry=reg,
        requests=prom.Counter(
            "rerank_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=reg
        ),
        latency=prom.Histogram(
            "rerank_request_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=reg,
        ),
        pairs=prom.Counter("rerank_pairs_scored", "(query, passage) pairs scored", registry=reg),
        batch_pairs=prom.Histogram(
            "rerank_batch_pairs",
            "Pairs per scorer call (one request, or several batched together)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=reg,
        ),
        batch_requests=prom.Histogram(
            "rerank_batch_requests",
            "Requests sharing one scorer call (dynamic batching)",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=reg,
        ),
        cache_hits=prom.Gauge("rerank_cache_hits", "Score cache hits (when cache_entries > 0)", registry=reg),
        cache_misses=prom.Gauge("rerank_cache_misses", "Score cache misses (when cache_entries > 0)", registry=reg),
    )


class RerankService:
    """Validation, scoring and response shaping of both protocols, independent of the web framework.

    Args:
        config: Rerank settings of the scorer (``top_n`` and thresholds do not apply: the protocols
            carry their own).
        settings: Limits and truncation policy.
        scorer: The scorer of normalised scores (default: the shared scorer of ``config``).
        raw_scorer: The scorer of raw logits (default: the shared scorer of ``config`` with activation='raw').
        score_fn: An async (pairs, raw) -> ScoredPairs; default: the scorers in a worker thread. The
            Ray deployment passes its batching method here.
    """

    def __init__(
        self,
        config: RerankConfig | None = None,
        settings: ServeSettings | None = None,
        *,
        scorer: Scorer | None = None,
        raw_scorer: Scorer | None = None,
        score_fn: ScoreFn | None = None,
    ) -> None:
        self.config = config or RerankConfig()
        self.settings = settings or ServeSettings()
        if scorer is None:
            from rerank_plugins.scoring.factory import get_scorer

            scorer = get_scorer(self.config)
        self.scorer = scorer
        self._raw_scorer = raw_scorer
        self._score_fn = score_fn or self.score_in_thread
        self.metrics = _make_metrics()
        self.started = time.time()

    @property
    def raw_scorer(self) -> Scorer:
        if self._raw_scorer is None:
            from rerank_plugins.scoring.factory import get_scorer

            self._raw_scorer = get_scorer(self.config.merged(activation="raw"))
        return self._raw_scorer

    # ------------------------------------------------------------------ scoring
    def score_now(self, pairs: list[tuple[str, str]], raw: bool) -> ScoredPairs:
        """Score synchronously (the batching path calls this with several requests' pairs)."""
        scored = (self.raw_scorer if raw else self.scorer).score_detailed(pairs)
        self.record_batch(len(pairs), 1)
        return scored

    async def score_in_thread(self, pairs: list[tuple[str, str]], raw: bool) -> ScoredPairs:
        import asyncio

        return await asyncio.to_thread(self.score_now, pairs, raw)

    def record_batch(self, pairs: int, requests: int) -> None:
        self.metrics.pairs.inc(pairs)
        self.metrics.batch_pairs.observe(pairs)
        self.metrics.batch_requests.observe(requests)

    async def _score(self, query: str, texts: list[str], raw: bool, truncate: bool | None) -> list[float]:
        s = self.settings
        if not query.strip():
            raise ServiceError(422, "`query` is empty; send the question the texts should be ranked for")
        if len(query) > s.max_query_chars:
            raise ServiceError(
                413, f"`query` has {len(query)} characters; this server accepts at most {s.max_query_chars}"
            )
        if not texts:
            raise ServiceError(422, "the list of texts/documents is empty; send at least one")
        if len(texts) > s.max_documents:
            raise ServiceError(
                413,
                f"{len(texts)} texts/documents in one request; this server accepts at most {s.max_documents} "
                "(split the request: rerank_plugins.scoring.remote.RemoteScorer does it for you)",
            )
        try:
            pairs = check_pairs([(query, t) for t in texts])
            scored = await self._score_fn(pairs, raw)
        except RerankInputError as exc:
            raise ServiceError(422, str(exc)) from exc
        if len(scored.scores) != len(texts):
            raise ServiceError(500, "the scorer returned the wrong number of scores", "Backend")
        if not (s.auto_truncate if truncate is None else truncate):
            cut = [i for i, n in enumerate(scored.notes) if n.cut]
            if cut:
                raise ServiceError(
                    413,
                    f"{len(cut)} text(s) (first: index {cut[0]}, {scored.notes[cut[0]].dropped_tokens} tokens over) "
                    f"do not fit max_length={self.config.max_length} tokens next to the query; send truncate=true "
                    "to score their beginning, or shorter texts",
                )
        return scored.scores

    # ------------------------------------------------------------------ protocols
    async def tei(self, req: TEIRequest) -> list[dict[str, Any]]:
        if req.truncation_direction.lower() == "left":
            raise ServiceError(422, "truncation_direction='left' is not supported; passages are cut on the right")
        scores = await self._score(req.query, req.texts, req.raw_scores, req.truncate)
        out = []
        for i in best_first(scores):
            item: dict[str, Any] = {"index": i, "score": scores[i]}
            if req.return_text:
                item["text"] = req.texts[i]
            out.append(item)
        return out

    async def cohere(self, req: CohereRequest, version: str = "1") -> dict[str, Any]:
        """Cohere v1/v2 and infinity: the same request fields, one answer every client parses."""
        texts = [document_text(d, req.rank_fields) for d in req.documents]
        scores = await self._score(req.query, texts, req.raw_scores, req.truncate)
        results = []
        for i in best_first(scores, req.top_n):
            item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if req.return_documents:
                item["document"] = {"text": texts[i]}
            results.append(item)
        tokens = self.count_tokens(req.query, texts)
        return {
            "id": str(uuid.uuid4()),
            "object": "rerank",
            "created": int(time.time()),
            "model": req.model or self.model_name,
            "results": results,
            "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
            # infinity's clients read prompt_tokens/total_tokens; "documents" kept for older readers of this server
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "documents": len(texts)},
            "relevance_score_kind": self.score_kind(req.raw_scores),
        }

    async def rerank(self, req: TEIRequest | CohereRequest) -> Any:
        """``POST /rerank``: a TEI body (``texts``) gets TEI's answer, an infinity body (``documents``) infinity's."""
        return await (self.tei(req) if isinstance(req, TEIRequest) else self.cohere(req))

    @property
    def model_name(self) -> str:
        """The model's name for clients: a local folder's name, never the server's file system path."""
        return public_model_name(self.scorer.name)

    def score_kind(self, raw: bool) -> str:
        """The scale of the scores: 'raw' logits, 'calibrated' probabilities or the 'sigmoid' of the logit."""
        if raw:
            return "raw"
        return self.scorer.score_kind

    def count_tokens(self, query: str, texts: list[str]) -> int:
        """Tokens of the query and the texts (the scorer's tokenizer when it has one, else words)."""
        counted = self.scorer.count_tokens([query, *texts])
        return counted if counted is not None else sum(len(t.split()) for t in [query, *texts])

    def info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "model_id": self.model_name,
            "model_type": {"reranker": {}},
            "max_client_batch_size": s.max_documents,
            "max_input_length": self.config.max_length,
            "max_request_bytes": s.max_request_bytes,
            "max_query_chars": s.max_query_chars,
            "auto_truncate": s.auto_truncate,
            "relevance_score_kind": self.score_kind(False),
            "protocols": ["tei:/rerank", "infinity:/rerank", "cohere:/v1/rerank", "cohere:/v2/rerank"],
        }

    def update_cache_metrics(self) -> None:
        stats = getattr(self.scorer, "stats", None)
        if callable(stats):
            st = stats()
            self.metrics.cache_hits.set(st.get("hits", 0))
            self.metrics.cache_misses.set(st.get("misses", 0))


async def _read_body(request: Any, limit: int, timeout_s: float) -> bytes:
    import asyncio

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServiceError(413, f"request body of {declared} bytes; this server accepts at most {limit}")

    async def collect() -> bytes:
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ServiceError(413, f"request body over {limit} bytes; this server accepts at most {limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        raise ServiceError(
            408, f"the request body did not arrive within {timeout_s:g} s; send it at once", "Timeout"
        ) from None


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its ``$defs`` inlined: an OpenAPI document resolves ``$ref``
    from its own root, where ``#/$defs/...`` does not exist (the request models are not recursive)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


#: A query must hold one of these: every character that is not whitespace to Python's ``str.strip()``,
#: which decides a blank query here (the server answers 422). JSON Schema's ``\S`` (ECMAScript) disagrees
#: on a few (U+0085, U+001C-U+001F); a test derives this class from ``str.isspace``.
NOT_SPACE = r"[^\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028-\u2029\u202f\u205f\u3000]"


def _with_limits(schema: dict[str, Any], settings: ServeSettings) -> dict[str, Any]:
    """The request schema with what this server checks at run time: a non-blank query of at most
    ``max_query_chars``, 1 to ``max_documents`` documents, right-side truncation only."""
    props = schema.get("properties", {})
    if "query" in props:
        props["query"].update(minLength=1, maxLength=settings.max_query_chars, pattern=NOT_SPACE)
    for name in ("texts", "documents"):
        if name in props:
            props[name].update(minItems=1, maxItems=settings.max_documents)
    if "truncation_direction" in props:
        props["truncation_direction"]["enum"] = ["right", "Right"]
    return schema


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}, "message": {"type": "string"}},
    "required": ["error", "error_type", "message"],
}
_ERROR_RESPONSES = {
    "408": "The body did not arrive within body_timeout_s",
    "413": "Too many documents or too large a body",
    "422": "The body is not a valid request (the message says which field and why)",
    "500": "Scoring failed",
}


def _parse(model: type[BaseModel] | tuple[type[BaseModel], type[BaseModel]], body: bytes) -> Any:
    if not body.strip():
        raise ServiceError(422, "empty request body; send a JSON object")
    if isinstance(model, tuple):  # /rerank: a TEI body names 'texts', an infinity body 'documents'
        try:
            keys = json.loads(body)
        except ValueError:
            keys = {}
        model = model[1] if isinstance(keys, dict) and "documents" in keys and "texts" not in keys else model[0]
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            parts.append(f"{loc}: {err['msg']}")
        raise ServiceError(422, f"invalid {model.__name__} body: " + "; ".join(parts)) from exc


def create_app(service: RerankService | None = None, **service_kwargs: Any) -> Any:
    """A FastAPI app serving ``service`` (built from ``service_kwargs`` when not given)."""
    fastapi = require("fastapi", "The HTTP service")
    responses = require("fastapi.responses", "The HTTP service")
    prom = require("prometheus_client", "The HTTP service's metrics")
    svc = service or RerankService(**service_kwargs)
    app = fastapi.FastAPI(
        title="rerank_plugins",
        summary="Cross-encoder reranking over the TEI and Cohere /rerank protocols",
        version=__import__("rerank_plugins").__version__,
    )
    app.state.service = svc
    json_response = responses.JSONResponse

    async def handle(endpoint: str, work: Callable[[], Awaitable[Any]]) -> Any:
        start = time.perf_counter()
        try:
            result = await work()
            status = 200
            response = json_response(result)
        except ServiceError as exc:
            status = exc.status
            # a body that timed out may still be trickling in: close the connection instead of reading it
            headers = {"Connection": "close"} if status == 408 else None
            response = json_response(exc.body(), status_code=status, headers=headers)
            if status >= 500:
                logger.error("%s failed: %s", endpoint, exc.message)
        except Exception as exc:
            status = 500
            logger.exception("%s failed", endpoint)
            body = ServiceError(500, f"scoring failed: {type(exc).__name__}: {exc}", "Backend").body()
            response = json_response(body, status_code=500)
        svc.metrics.requests.labels(endpoint, str(status)).inc()
        svc.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    def schema(model: type[BaseModel] | tuple[type[BaseModel], type[BaseModel]]) -> dict[str, Any]:
        models = model if isinstance(model, tuple) else (model,)
        bodies = [_with_limits(_inline_refs(m.model_json_schema()), svc.settings) for m in models]
        body = bodies[0] if len(bodies) == 1 else {"anyOf": bodies}
        errors = {
            code: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
            for code, text in _ERROR_RESPONSES.items()
        }
        return {
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": errors,
        }

    def protocol(
        path: str,
        model: type[BaseModel] | tuple[type[BaseModel], type[BaseModel]],
        run: _Handler,
        name: str,
        summary: str,
    ) -> None:
        @app.post(path, openapi_extra=schema(model), summary=summary, name=name)
        async def route(request: fastapi.Request) -> Any:
            async def work() -> Any:
                body = await _read_body(request, svc.settings.max_request_bytes, svc.settings.body_timeout_s)
                return await run(_parse(model, body))

            return await handle(path, work)

    async def cohere_v2(req: CohereRequest) -> Any:
        return await svc.cohere(req, version="2")

    protocol(
        "/rerank",
        (TEIRequest, CohereRequest),
        svc.rerank,
        "rerank_tei_infinity",
        "text-embeddings-inference (texts) or infinity (documents) rerank",
    )
    protocol("/v1/rerank", CohereRequest, svc.cohere, "rerank_cohere", "Cohere v1 rerank")
    protocol("/v2/rerank", CohereRequest, cohere_v2, "rerank_cohere_v2", "Cohere v2 rerank")

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "model": svc.model_name, "uptime_s": round(time.time() - svc.started, 1)}

    @app.get("/info")
    async def info() -> Any:
        return svc.info()

    @app.get("/metrics", response_class=responses.PlainTextResponse)
    async def metrics() -> Any:
        svc.update_cache_metrics()
        return responses.Response(prom.generate_latest(svc.metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)

    return app
