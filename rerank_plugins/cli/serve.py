"""``rerank-plugins serve``: the /rerank HTTP service (TEI, Cohere and infinity protocols) on uvicorn or Ray Serve."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from rerank_plugins.cli._common import add_model_options
from rerank_plugins.config import RerankConfig, load_settings_file, rerank_section

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    sv = sub.add_parser(
        "serve",
        help="serve the scorer over HTTP (TEI /rerank, Cohere /v1/rerank, /health, /metrics) on Ray Serve or uvicorn",
        description="Starts the HTTP service. With --engine ray (default) it starts a local Ray instance on "
        "loopback (or joins --ray-address) and deploys the scorer as a Ray Serve deployment with replicas, "
        "dynamic batching across concurrent requests and optional autoscaling; --engine uvicorn runs one "
        "process without Ray. Settings: a [serve] table in --config, RERANK_PLUGINS_SERVE_* variables, flags.",
        epilog="examples:\n"
        "  rerank-plugins serve                      # http://127.0.0.1:8080, 1 replica\n"
        "  rerank-plugins serve --replicas 2 --port 9000\n"
        "  rerank-plugins serve --min-replicas 1 --max-replicas 4 --ray-address auto\n"
        "  rerank-plugins serve --engine uvicorn\n"
        "  curl -s 127.0.0.1:8080/rerank -H 'content-type: application/json' \\\n"
        '       -d \'{"query": "what is a cat", "texts": ["a cat is a pet", "stocks fell"]}\'',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(sv)
    sv.add_argument("--engine", choices=["ray", "uvicorn"], help="Ray Serve (default) or one uvicorn process")
    sv.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default 8080)")
    sv.add_argument("--replicas", type=int, help="replicas (initial count when autoscaling)")
    sv.add_argument("--min-replicas", type=int, help="autoscaling lower bound")
    sv.add_argument("--max-replicas", type=int, help="autoscaling upper bound (turns autoscaling on)")
    sv.add_argument("--ray-address", help="existing Ray cluster ('auto', 'ray://head:10001'); default: a local one")
    sv.add_argument("--no-batching", action="store_true", help="score each request on its own")
    sv.add_argument("--max-documents", type=int, help="most texts per request (default 1000)")
    sv.set_defaults(func=run)


def _serve_config(args: argparse.Namespace) -> tuple[RerankConfig, Any]:
    from rerank_plugins.serving.settings import ServeSettings

    data: dict[str, Any] = dict(load_settings_file(args.config)) if args.config else {}
    table = data.get("serve") or {}
    own = rerank_section(data)
    overrides = {f: getattr(args, f) for f in ("model", "device", "batch_size", "max_length") if getattr(args, f, None)}
    # flags > settings file > RERANK_PLUGINS_* variables > defaults, as everywhere
    rerank = RerankConfig.resolve(RerankConfig.from_mapping(own) if own else None, **overrides)
    settings = ServeSettings.from_sources(
        table,
        os.environ,
        engine=args.engine,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        ray_address=args.ray_address,
        dynamic_batching=False if args.no_batching else None,
        max_documents=args.max_documents,
    )
    return rerank, settings


def run(args: argparse.Namespace) -> int:
    import signal
    import time

    config, settings = _serve_config(args)
    if settings.host not in {"127.0.0.1", "localhost", "::1"}:
        logger.warning(
            "binding to %s: the service has no authentication; put it behind your own gateway", settings.host
        )
    url = f"http://{settings.host}:{settings.port}"
    if settings.engine == "uvicorn":
        from rerank_plugins._extras import require
        from rerank_plugins.serving.app import create_app

        uvicorn = require("uvicorn", "rerank-plugins serve --engine uvicorn")
        app = create_app(config=config, settings=settings)
        print(f"serving {app.state.service.scorer.name} at {url} (/rerank, /v1/rerank, /health, /metrics)", flush=True)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
        return 0
    from rerank_plugins.serving import ray_deployment

    ray_deployment.start(config, settings)
    print(
        f"serving at {url} with {ray_deployment.replica_count()} replica(s) on Ray "
        f"({settings.ray_address or 'local instance on loopback'}); Ctrl-C stops",
        flush=True,
    )
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        ray_deployment.stop(shutdown_ray=settings.ray_address is None)
    return 0
