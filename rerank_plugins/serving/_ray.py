"""Starting or joining Ray, shared by the Serve deployment and Ray Data batch scoring."""

from __future__ import annotations

from rerank_plugins._extras import require

__all__ = ["init_ray"]


def init_ray(address: str | None, *, extra: str = "serve", object_store_mb: int = 256) -> None:
    """Join the cluster at ``address`` ('auto', 'ray://head:10001', ...), or start a local Ray
    instance whose processes listen on loopback only. Does nothing when Ray is already initialised."""
    ray = require("ray", "Ray", extra=extra)
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    ray.init(
        address="local",
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        object_store_memory=object_store_mb * 1024**2,
        log_to_driver=False,
    )
