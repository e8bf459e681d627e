"""The shared scorer as a Ray Serve deployment: N replicas, dynamic batching, autoscaling.

Each replica is a Ray actor holding one copy of the model and the FastAPI app of
:mod:`rerank_plugins.serving.app`. Concurrent requests that reach one replica are gathered
by Ray Serve's ``@serve.batch`` (up to ``max_batch_pairs`` pairs, waiting at most
``batch_wait_timeout_ms``) and scored in one scorer call, whose token-budget batching then
runs them through shared forward passes. The replica's compute threads follow
``cpus_per_replica``, so replicas do not oversubscribe the cores.

:func:`start` starts a local Ray instance on loopback (or joins ``ray_address``), starts
Serve's HTTP proxy on ``host:port`` and deploys the application.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rerank_plugins._extras import require
from rerank_plugins.config import RerankConfig
from rerank_plugins.scoring.base import ScoredPairs
from rerank_plugins.serving._ray import init_ray
from rerank_plugins.serving.app import RerankService, create_app
from rerank_plugins.serving.settings import ServeSettings

require("ray", "The Ray Serve deployment", extra="serve")
from ray import serve  # noqa: E402

__all__ = ["APP_NAME", "RerankDeployment", "build_application", "start", "stop"]

logger = logging.getLogger(__name__)

APP_NAME = "rerank_plugins"
SERVE_NAMESPACE = "serve"  # where Ray Serve names its actors
DEPLOYMENT_NAME = "Reranker"

_Item = tuple[list[tuple[str, str]], bool]


def _pairs_in(items: list[_Item]) -> int:
    return sum(len(pairs) for pairs, _ in items)


@serve.ingress()
class RerankDeployment:
    """One replica: the scorer, the HTTP app, and the batching queue in front of the scorer."""

    def __init__(self, config: RerankConfig, settings: ServeSettings) -> None:
        if config.threads is None:
            config = config.merged(threads=max(1, round(settings.cpus_per_replica)))
        self.settings = settings
        self.service = RerankService(config, settings, score_fn=self._score)
        self._batched.set_max_batch_size(settings.max_batch_pairs)
        self._batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_ms / 1000)
        logger.info("replica ready: %s, %d thread(s)", self.service.scorer.name, config.threads)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.service)

    async def _score(self, pairs: list[tuple[str, str]], raw: bool) -> ScoredPairs:
        if not self.settings.dynamic_batching or len(pairs) > self.settings.max_batch_pairs:
            return await self.service.score_in_thread(pairs, raw)
        result: ScoredPairs = await self._batched((pairs, raw))
        return result

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.005, batch_size_fn=_pairs_in)  # type: ignore[untyped-decorator]
    async def _batched(self, items: list[_Item]) -> list[ScoredPairs]:
        results: list[ScoredPairs | None] = [None] * len(items)
        for raw in (False, True):
            members = [i for i, (_, r) in enumerate(items) if r is raw]
            if not members:
                continue
            joined = [pair for i in members for pair in items[i][0]]
            scorer = self.service.raw_scorer if raw else self.service.scorer
            scored = await asyncio.to_thread(scorer.score_detailed, joined)
            self.service.record_batch(len(joined), len(members))
            start = 0
            for i in members:
                n = len(items[i][0])
                results[i] = ScoredPairs(scored.scores[start : start + n], scored.notes[start : start + n])
                start += n
        return [r for r in results if r is not None]


def build_application(config: RerankConfig, settings: ServeSettings) -> Any:
    """The Ray Serve application (bind it with ``serve.run``)."""
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": settings.cpus_per_replica},
        "max_ongoing_requests": max(64, 4 * int(settings.target_ongoing_requests)),
    }
    autoscaling = settings.autoscaling()
    if autoscaling is None:
        options["num_replicas"] = settings.replicas
    else:
        options["autoscaling_config"] = autoscaling
    return serve.deployment(RerankDeployment).options(**options).bind(config, settings)


def start(config: RerankConfig, settings: ServeSettings) -> Any:
    """Start (or update) the service; returns the deployment handle. Does not block."""
    init_ray(settings.ray_address)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    return serve.run(build_application(config, settings), name=APP_NAME, route_prefix="/", blocking=False)


def replica_count() -> int:
    """Replicas of the deployment that are running now (0 when Ray or Serve is not running)."""
    import ray

    if not ray.is_initialized():
        return 0
    status = serve.status().applications.get(APP_NAME)
    if status is None:
        return 0
    dep = status.deployments.get(DEPLOYMENT_NAME)
    if dep is None:
        return 0
    return int(dep.replica_states.get("RUNNING", 0))


def stop(*, shutdown_ray: bool = True) -> None:
    """Remove the application and stop Serve (and the local Ray instance)."""
    ray = require("ray", "Ray", extra="serve")
    if not ray.is_initialized():
        return
    serve.shutdown()
    if shutdown_ray:
        ray.shutdown()
