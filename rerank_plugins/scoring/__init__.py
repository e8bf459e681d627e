"""Scorers: the contract (:class:`Scorer`), the backends, and the factory that builds them.

Names resolve lazily, so ``import rerank_plugins.scoring`` loads no model library; a backend's
module is imported on first use of its name.

* :func:`get_scorer` (:mod:`.factory`): the process-wide shared scorer for a :class:`RerankConfig`.
* Backends: :class:`CrossEncoderScorer`, :class:`WindowedScorer` (long passages in windows),
  :class:`MonoT5Scorer` / :class:`RankT5Scorer` / :class:`DuoT5Scorer`, :class:`EnsembleScorer`,
  :class:`BiEncoderScorer`, :class:`RemoteScorer` (a /rerank server).
* Wrappers: :class:`CachedScorer` (score cache); calibration in :mod:`.calibration`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer

if TYPE_CHECKING:
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer
    from rerank_plugins.scoring.cache import CachedScorer
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.ensemble import EnsembleScorer
    from rerank_plugins.scoring.factory import clear_model_cache, get_scorer
    from rerank_plugins.scoring.remote import RemoteScorer
    from rerank_plugins.scoring.seq2seq import DuoT5Scorer, MonoT5Scorer, RankT5Scorer
    from rerank_plugins.scoring.windowed import WindowedScorer

_LAZY = {
    "BiEncoderScorer": "bi_encoder",
    "CachedScorer": "cache",
    "CrossEncoderScorer": "cross_encoder",
    "DuoT5Scorer": "seq2seq",
    "EnsembleScorer": "ensemble",
    "MonoT5Scorer": "seq2seq",
    "RankT5Scorer": "seq2seq",
    "RemoteScorer": "remote",
    "WindowedScorer": "windowed",
    "clear_model_cache": "factory",
    "get_scorer": "factory",
}

__all__ = [
    "BiEncoderScorer",
    "CachedScorer",
    "CrossEncoderScorer",
    "DuoT5Scorer",
    "EnsembleScorer",
    "MonoT5Scorer",
    "PairNote",
    "RankT5Scorer",
    "RemoteScorer",
    "ScoredPairs",
    "Scorer",
    "WindowedScorer",
    "clear_model_cache",
    "get_scorer",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rerank_plugins.scoring' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rerank_plugins.scoring.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
