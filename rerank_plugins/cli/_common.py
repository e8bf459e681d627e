"""What the subcommands share: how flags become settings, and a quiet console."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from rerank_plugins.config import RerankConfig

__all__ = ["add_model_options", "config_from_args", "quiet_frameworks"]


def quiet_frameworks() -> None:
    # Library chatter (load reports, per-file progress bars) is noise in a CLI.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("sentence_transformers", "bm25s"):
        logging.getLogger(name).setLevel(logging.WARNING)


def config_from_args(args: argparse.Namespace) -> RerankConfig:
    # flags > settings file > RERANK_PLUGINS_* variables > defaults, as in the adapters
    base = RerankConfig.from_file(args.config) if getattr(args, "config", None) else None
    overrides: dict[str, Any] = {}
    for field, attr in (
        ("model", "model"),
        ("top_n", "top_n"),
        ("score_threshold", "threshold"),
        ("device", "device"),
        ("batch_size", "batch_size"),
        ("max_length", "max_length"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            overrides[field] = value
    return RerankConfig.resolve(base, **overrides)


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="cross-encoder id or local path (default: the shipped model)")
    p.add_argument("--config", help="settings file (.toml, .yaml, .json); RERANK_PLUGINS_* variables apply on top")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, help="pairs per forward pass")
    p.add_argument("--max-length", type=int, help="token budget of a (query, passage) pair")
