"""What both framework adapters share: settings resolution and metadata keys."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import ConfigError
from rerank_plugins.pipeline import RankedCandidate
from rerank_plugins.scoring.base import Scorer
from rerank_plugins.scoring.cascade import Cascade

#: Metadata keys the adapters add to every returned document / node.
RELEVANCE_SCORE = "relevance_score"
RETRIEVAL_SCORE = "retrieval_score"
RETRIEVAL_RANK = "retrieval_rank"
RETRIEVAL_SOURCES = "retrieval_sources"
RERANK_SCORING = "rerank_scoring"
RERANK_DROPPED_TOKENS = "rerank_dropped_tokens"
RERANK_QUERY_DROPPED_TOKENS = "rerank_query_dropped_tokens"
RERANK_WINDOWS = "rerank_windows"
RERANK_RANK_SCORE = "rerank_rank_score"
RERANK_CASCADE_SCORE = "rerank_cascade_score"
RELEVANCE_SCORE_KIND = "relevance_score_kind"

ADDED_KEYS = (
    RELEVANCE_SCORE,
    RELEVANCE_SCORE_KIND,
    RETRIEVAL_SCORE,
    RETRIEVAL_RANK,
    RETRIEVAL_SOURCES,
    RERANK_SCORING,
    RERANK_DROPPED_TOKENS,
    RERANK_QUERY_DROPPED_TOKENS,
    RERANK_WINDOWS,
    RERANK_CASCADE_SCORE,
    RERANK_RANK_SCORE,
)


class Resolved(NamedTuple):
    """What an adapter runs: its settings, its scorer and its cascade, resolved once at set-up."""

    config: RerankConfig
    scorer: Scorer
    cascade: Cascade | None


def resolve_settings(model: str | Scorer | None, config: RerankConfig | None, overrides: Mapping[str, Any]) -> Resolved:
    """Merge ``model=``, explicit keyword settings and ``config`` into one config, a scorer and a cascade.

    Precedence: explicit keywords > ``config`` > ``RERANK_PLUGINS_*`` environment variables >
    defaults (:meth:`RerankConfig.resolve`). A :class:`Scorer` instance is used as is, otherwise
    the process-wide shared scorer for these settings is taken.
    """
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade

    if isinstance(model, Scorer):
        cfg = RerankConfig.resolve(config, **overrides)
        if isinstance(cfg.cascade_keep, int) and cfg.cascade_model is None:
            from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

            if not isinstance(model, CrossEncoderScorer):
                raise ConfigError(
                    f"cascade_keep is set and the scorer is a {type(model).__name__} instance: set cascade_model "
                    "to the cross-encoder of the cheap pass (only a cross-encoder can be read at cascade_max_length)"
                )
            cfg = cfg.merged(cascade_model=model.name)
        return Resolved(cfg, model, resolve_cascade(cfg, model))
    if model is not None and not isinstance(model, str):
        raise TypeError(
            f"model must be a Hugging Face id, a local path or a Scorer instance, got {type(model).__name__}"
        )
    if model is not None:
        overrides = {**overrides, "model": model}
    cfg = RerankConfig.resolve(config, **overrides)
    scorer = get_scorer(cfg)
    return Resolved(cfg, scorer, resolve_cascade(cfg, scorer))


def resolve_adapter_settings(adapter: Any) -> Resolved:
    """:func:`resolve_settings` for an adapter with ``model``, ``top_n``, ``score_threshold`` and ``config`` fields.

    Only the keyword settings the caller actually passed override ``config`` (so
    ``top_n=None`` given explicitly means "keep all", while leaving it out keeps the config's).
    """
    overrides = {k: getattr(adapter, k) for k in ("top_n", "score_threshold") if k in adapter.model_fields_set}
    return resolve_settings(adapter.model, adapter.config, overrides)


def metadata_prefix(metadata: Mapping[str, Any], keys: Iterable[str]) -> str:
    """``key: value`` lines for the chosen metadata fields (all scalar fields when none chosen)."""
    keys = list(keys)
    if not keys:
        keys = [k for k, v in metadata.items() if isinstance(v, str | int | float) and k not in ADDED_KEYS]
    lines = [f"{k}: {metadata[k]}" for k in keys if k in metadata and not _blank(metadata[k])]
    return "\n".join(lines)


def _blank(value: Any) -> bool:
    # identity and type checks only: 'value in (None, "")' compares element-wise for numpy arrays and raises
    return value is None or (isinstance(value, str) and value == "")


def copied_metadata(metadata: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``metadata`` with ``extra`` added: a returned item never shares a nested list or dict
    with the caller's (a value that cannot be deep-copied, such as a lock or a client, is shared as is)."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            out[key] = copy.deepcopy(value)
        except Exception:  # an object that refuses to be copied is shared, as a shallow copy would
            out[key] = value
    out.update(extra)
    return out


def first_stage_score(metadata: Mapping[str, Any]) -> float | None:
    """A first-stage score found in metadata (``retrieval_score``, else ``score``), if numeric."""
    for key in (RETRIEVAL_SCORE, "score"):
        value = metadata.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def sources_of(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    value = metadata.get(RETRIEVAL_SOURCES)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return ()


def added_metadata(r: RankedCandidate, score_kind: str) -> dict[str, Any]:
    """The keys an adapter adds to a returned item's metadata (``score_kind``: the scorer's scale)."""
    out: dict[str, Any] = {
        RELEVANCE_SCORE: r.score,
        RELEVANCE_SCORE_KIND: score_kind if r.score is not None else None,
        RETRIEVAL_SCORE: r.candidate.first_stage_score,
        RETRIEVAL_RANK: r.first_stage_rank,
        RETRIEVAL_SOURCES: list(r.candidate.sources),
        RERANK_SCORING: r.note.how,
    }
    if r.note.cut:
        out[RERANK_DROPPED_TOKENS] = r.note.dropped_tokens
    if r.note.query_dropped_tokens:
        out[RERANK_QUERY_DROPPED_TOKENS] = r.note.query_dropped_tokens  # the query's tail was cut to fit
    if r.note.how == "windowed":
        out[RERANK_WINDOWS] = r.note.windows
    if r.cascade_score is not None:
        out[RERANK_CASCADE_SCORE] = r.cascade_score  # the cascade's cheap-pass score (cascade_keep)
    if r.rank_score is not None and r.rank_score != r.score:
        out[RERANK_RANK_SCORE] = r.rank_score  # blended with the first stage (first_stage_weight > 0)
    return out
