"""Settings of ``rerank-plugins serve``: where it listens, its request limits, replicas and batching.

They sit in a ``[serve]`` table of the same settings file as the rerank settings, or come
from ``RERANK_PLUGINS_SERVE_<FIELD>`` environment variables.

Example:
    >>> s = ServeSettings(max_documents=100)
    >>> s.host, s.max_documents, s.autoscaling() is None
    ('127.0.0.1', 100, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rerank_plugins.config import env_values, explain
from rerank_plugins.errors import ConfigError

__all__ = ["ServeSettings"]

SERVE_ENV_PREFIX = "RERANK_PLUGINS_SERVE_"


class ServeSettings(BaseModel):
    """How the HTTP service runs and what it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["ray", "uvicorn"] = Field(
        default="ray",
        description="'ray': a Ray Serve deployment (replicas, dynamic batching, autoscaling); "
        "'uvicorn': one process, no Ray.",
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind. Loopback by default.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port of the HTTP API.")
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join ('auto', 'ray://head:10001', ...). None starts a local Ray instance "
        "on loopback for this process.",
    )
    replicas: int = Field(default=1, ge=1, description="Replicas of the scorer (a fixed count unless max_replicas).")
    min_replicas: int | None = Field(default=None, ge=0, description="Autoscaling lower bound.")
    max_replicas: int | None = Field(default=None, ge=1, description="Autoscaling upper bound (enables autoscaling).")
    target_ongoing_requests: float = Field(
        default=8.0, gt=0, description="Autoscaling target: in-flight requests per replica."
    )
    cpus_per_replica: float = Field(default=1.0, gt=0, description="CPUs Ray reserves for each replica.")
    dynamic_batching: bool = Field(
        default=True,
        description="Let concurrent requests on one replica share forward passes (Ray Serve's @serve.batch).",
    )
    max_batch_pairs: int = Field(
        default=256,
        ge=1,
        description="Most pairs gathered from concurrent requests into one scorer call; a larger request "
        "is scored on its own.",
    )
    batch_wait_timeout_ms: float = Field(
        default=5.0, ge=0, description="How long a batch waits for more requests before it runs."
    )
    max_documents: int = Field(default=1000, ge=1, description="Most documents (texts) in one request.")
    max_request_bytes: int = Field(default=4_000_000, ge=1024, description="Largest request body accepted.")
    max_query_chars: int = Field(default=4096, ge=1, description="Longest query accepted, in characters.")
    body_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a client has to send its whole request body; a slower one gets 408 and its "
        "connection is closed (a client trickling its body cannot hold a connection open).",
    )
    auto_truncate: bool = Field(
        default=True,
        description="Cut passages that do not fit max_length when a request does not say `truncate`; "
        "a request with truncate=false gets a 413 instead.",
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> ServeSettings:
        if self.min_replicas is not None and self.max_replicas is None:
            raise ValueError("min_replicas needs max_replicas (autoscaling bounds come in pairs)")
        if self.max_replicas is not None:
            low = self.min_replicas if self.min_replicas is not None else 1
            if low > self.max_replicas:
                raise ValueError(f"min_replicas={low} exceeds max_replicas={self.max_replicas}")
            if not low <= self.replicas <= self.max_replicas:
                raise ValueError(
                    f"replicas={self.replicas} (the initial count) must lie in [{low}, {self.max_replicas}]"
                )
        return self

    def autoscaling(self) -> dict[str, Any] | None:
        """Ray Serve's ``autoscaling_config`` for these bounds (None: a fixed replica count)."""
        if self.max_replicas is None:
            return None
        return {
            "min_replicas": self.min_replicas if self.min_replicas is not None else 1,
            "initial_replicas": self.replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }

    @classmethod
    def from_sources(
        cls, table: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ServeSettings:
        """A ``[serve]`` table, then ``RERANK_PLUGINS_SERVE_*`` variables, then ``overrides`` (None skipped)."""
        values: dict[str, Any] = dict(table or {})
        values.update(env_values(environ or {}, SERVE_ENV_PREFIX, cls.model_fields))
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(explain(exc, "serve settings")) from exc
