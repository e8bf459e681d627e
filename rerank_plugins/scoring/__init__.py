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

from typing import TYPE_CHECKING, Any

from rerank_plugins._extras import lazy_attribute
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
    "BiEncoderScorer": "rerank_plugins.scoring.bi_encoder",
    "CachedScorer": "rerank_plugins.scoring.cache",
    "CrossEncoderScorer": "rerank_plugins.scoring.cross_encoder",
    "DuoT5Scorer": "rerank_plugins.scoring.seq2seq",
    "EnsembleScorer": "rerank_plugins.scoring.ensemble",
    "MonoT5Scorer": "rerank_plugins.scoring.seq2seq",
    "RankT5Scorer": "rerank_plugins.scoring.seq2seq",
    "RemoteScorer": "rerank_plugins.scoring.remote",
    "WindowedScorer": "rerank_plugins.scoring.windowed",
    "clear_model_cache": "rerank_plugins.scoring.factory",
    "get_scorer": "rerank_plugins.scoring.factory",
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
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return sorted(__all__)
