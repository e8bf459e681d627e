"""The one place that turns settings into a scorer: :func:`get_scorer`.

Every scorer kind (``RerankConfig.scorer.kind``) has an entry in :data:`BUILDERS`; a builder
imports its backend only when it is used, so ``rerank_plugins.scoring`` stays light. Around the
chosen backend come the optional score cache and duoT5 second stage. Scorers are shared per
process: two calls with settings that give the same scores return the same object, and
scorers that differ only in batching or length still share one copy of the weights (the
backends keep their own model caches).

Example:
    >>> from rerank_plugins.scoring.factory import BUILDERS
    >>> sorted(BUILDERS)
    ['bi-encoder', 'cross-encoder', 'ensemble', 'monot5', 'rankt5', 'remote']
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rerank_plugins.config import RerankConfig
from rerank_plugins.scoring.base import Scorer
from rerank_plugins.scoring.cascade import Cascade, cascade_with
from rerank_plugins.scoring.identity import model_identity
from rerank_plugins.scoring.loading import resolve_model

if TYPE_CHECKING:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

__all__ = ["BUILDERS", "clear_model_cache", "get_scorer", "resolve_cascade", "scoring_settings"]

_lock = threading.Lock()
_scorers: dict[tuple[Any, ...], Scorer] = {}


def _remote(cfg: RerankConfig) -> Scorer:
    from rerank_plugins.scoring.remote import RemoteScorer

    return RemoteScorer(cfg)


def _ensemble(cfg: RerankConfig) -> Scorer:
    from rerank_plugins.scoring.ensemble import EnsembleScorer

    return EnsembleScorer(
        [get_scorer(m) for m in cfg.members], weights=cfg.member_weights, normalize=cfg.ensemble_normalize
    )


def _bi_encoder(cfg: RerankConfig) -> Scorer:
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    return BiEncoderScorer(cfg.model, allow_pickle_weights=cfg.allow_pickle_weights)


def _monot5(cfg: RerankConfig) -> Scorer:
    from rerank_plugins.scoring.seq2seq import MonoT5Scorer

    return MonoT5Scorer(cfg)


def _rankt5(cfg: RerankConfig) -> Scorer:
    from rerank_plugins.scoring.seq2seq import RankT5Scorer

    return RankT5Scorer(cfg)


def _cross_encoder(cfg: RerankConfig) -> Scorer:
    """A cross-encoder; behind windows unless the section turns them off (``windows = false``)."""
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.windowed import WindowedScorer

    if cfg.scorer_kind == "cross-encoder":
        return CrossEncoderScorer(config=cfg)
    return WindowedScorer(
        CrossEncoderScorer(config=cfg),
        window=cfg.window_tokens,
        stride=cfg.window_stride,
        how=cfg.window_aggregate,
        limit=cfg.window_limit,
    )


#: How each ``scorer`` kind is built (a test checks every kind of the config has an entry).
BUILDERS: dict[str, Callable[[RerankConfig], Scorer]] = {
    "cross-encoder": _cross_encoder,
    "monot5": _monot5,
    "rankt5": _rankt5,
    "ensemble": _ensemble,
    "bi-encoder": _bi_encoder,
    "remote": _remote,
}


def _build(cfg: RerankConfig) -> Scorer:
    scorer = BUILDERS[cfg.scorer.kind](cfg)
    if cfg.cache_entries or cfg.cache_path:
        scorer = _cached(scorer, cfg)
    if cfg.duo_model is not None:
        from rerank_plugins.scoring.seq2seq import DuoT5Scorer

        # duoT5's order depends on the candidate set: the cache keeps the pointwise scores beneath it
        scorer = DuoT5Scorer(scorer, cfg.merged(model=cfg.duo_model), top_k=cfg.duo_top_k)
    return scorer


def _cached(scorer: Scorer, cfg: RerankConfig) -> Scorer:
    """``scorer`` behind the configured score cache; a set-dependent ensemble caches its members."""
    from rerank_plugins.scoring.cache import CachedScorer
    from rerank_plugins.scoring.ensemble import EnsembleScorer

    if isinstance(scorer, EnsembleScorer) and scorer.set_dependent:
        return EnsembleScorer(
            [_cached(m, cfg) for m in scorer.members], weights=scorer.weights, normalize=scorer.normalize
        )
    return CachedScorer(scorer, max_entries=cfg.cache_entries or None, path=cfg.cache_path)


def _model_of(cfg: RerankConfig) -> str:
    """The model a config's scorer loads (``model=None`` means another default for the bi-encoder)."""
    if cfg.scorer.kind == "bi-encoder" and cfg.model is None:
        from rerank_plugins.scoring.bi_encoder import default_bi_encoder_path

        return str(default_bi_encoder_path())
    return resolve_model(cfg.model)


def scoring_settings(cfg: RerankConfig) -> tuple[Any, ...]:
    """The sections that decide the scores (the shared-scorer key): the scorer, the cache and duoT5.
    The pipeline's own settings and the cascade never make another scorer."""
    return (cfg.scorer, cfg.cache, cfg.duo)


def get_scorer(config: RerankConfig | None = None, **overrides: Any) -> Scorer:
    """The process-wide shared scorer for these settings (any kind: windowed cross-encoder by default).

    Two calls with settings that give the same scores return the same object; pipeline settings
    (``top_n``, thresholds, the cascade...) never make another scorer.

    Example:
        >>> scorer = get_scorer(RerankConfig(scorer={"device": "cpu"}))  # doctest: +SKIP
        >>> scorer.score([("what is BM25?", "BM25 is a ranking function.")])  # doctest: +SKIP
        [0.93]
    """
    cfg = (config or RerankConfig()).merged(**overrides) if overrides else (config or RerankConfig())
    key = (
        cfg.model if cfg.scorer.kind in ("ensemble", "remote") else model_identity(_model_of(cfg)),
        scoring_settings(cfg),
    )
    with _lock:
        scorer = _scorers.get(key)
    if scorer is None:
        created = _build(cfg)
        with _lock:
            scorer = _scorers.setdefault(key, created)
    return scorer


def _cpu_cross_encoder(scorer: Scorer) -> CrossEncoderScorer | None:
    """The local cross-encoder on a CPU behind ``scorer`` (plain or windowed, through any wrapper), or None."""
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.windowed import WindowedScorer

    base = scorer.unwrapped
    if isinstance(base, WindowedScorer):
        base = base.inner.unwrapped
    return base if isinstance(base, CrossEncoderScorer) and base.device == "cpu" else None


def resolve_cascade(config: RerankConfig, scorer: Scorer, pruner: Scorer | None = None) -> Cascade | None:
    """The cascade of a rerank step with these settings and this full scorer, or None when it has none.

    ``cascade_keep="auto"`` turns the cascade on only for a cross-encoder (plain or windowed) on a CPU:
    its cheap pass is ``cascade_model`` when one is set, else (when its max_length exceeds
    ``cascade_max_length``) that very model reading the first ``cascade_max_length`` tokens of each
    pair (one copy of the weights). A number takes
    ``cascade_model`` (or the model itself) as the cheap pass. With ``pick="first-stage"`` there is no
    cheap pass: the first stage's top ``keep`` are read; with ``pick="auto"`` (the default) that holds
    for a pool fused from two or more retrievers, and the cheap pass picks for any other pool.
    ``pruner`` overrides the cheap pass.
    The adapters, the CLI and the server call this once, when they are set up.
    """
    keep = config.cascade_keep
    if keep is None:
        return None
    if pruner is None:
        base = _cpu_cross_encoder(scorer)
        if keep == "auto" and base is None:
            return None
        if config.cascade.pick == "first-stage":
            return cascade_with(config, scorer, None)
        if base is None or keep != "auto":
            cheap = config
        elif config.cascade_model is not None:  # a cheap model of its own (e.g. a distilled student)
            cheap = base.config.merged(
                cascade_model=config.cascade_model, cascade_max_length=config.cascade_max_length, cascade_keep=None
            )
        elif base.config.max_length > config.cascade_max_length:
            cheap = base.config.merged(cascade_max_length=config.cascade_max_length, cascade_keep=None)
        else:
            return None
        pruner = get_scorer(cheap.cascade_config())
    return cascade_with(config, scorer, pruner)


def clear_model_cache() -> None:
    """Forget every shared scorer and loaded model (their memory is freed once unused)."""
    from rerank_plugins.scoring.cross_encoder import clear_loaded_models

    with _lock:
        _scorers.clear()
    clear_loaded_models()
