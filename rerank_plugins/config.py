"""The one configuration object shared by the scorer, both adapters, the CLI and the server.

:class:`RerankConfig` holds the pipeline's own settings (what is kept) and, in sections, the
scorer's (a typed section chosen by its ``kind``), the cascade's, the score cache's and duoT5's.
It can be built in code, from a mapping, from a TOML / YAML / JSON file (parsed without code
execution) or from ``RERANK_PLUGINS_*`` environment variables (``RERANK_PLUGINS_SCORER__MODEL``
for a section's field). The flat names of earlier releases (``model=``, ``device=``,
``cascade_keep=``...) still load, with a :class:`DeprecationWarning`, and read back as properties.

Example:
    >>> cfg = RerankConfig(top_n=3, score_threshold=0.2)
    >>> cfg.top_n, cfg.scorer.kind, cfg.scorer.activation
    (3, 'cross-encoder', 'auto')
    >>> RerankConfig(scorer={"kind": "cross-encoder", "model": "my/model", "device": "cpu"}).scorer.model
    'my/model'
    >>> RerankConfig.from_env({"RERANK_PLUGINS_TOP_N": "4", "RERANK_PLUGINS_SCORER__DEVICE": "cpu"}).scorer.device
    'cpu'
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rerank_plugins.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "BiEncoderSettings",
    "CacheSettings",
    "CascadeSettings",
    "CrossEncoderSettings",
    "DuoSettings",
    "EnsembleSettings",
    "RemoteSettings",
    "RerankConfig",
    "ScorerSettings",
    "T5Settings",
    "WindowSettings",
    "config_reference_markdown",
    "deep_merge",
    "env_values",
    "explain",
    "load_settings_file",
]

ENV_PREFIX = "RERANK_PLUGINS_"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

_D = {
    "activation": "'calibrated' applies the model's fitted calibration (rerank_calibration.json, see 'rerank-plugins "
    "calibrate') so scores are probabilities of relevance; 'sigmoid' maps logits to 0..1 (ordered like "
    "the logits, not calibrated); 'raw' returns the logits; 'auto' is 'calibrated' when the model has a "
    "calibration, else 'sigmoid'.",
    "allow_download": "Fetch a model id from the Hugging Face Hub on first use. None (default): yes, unless "
    "HF_HUB_OFFLINE=1, as sentence-transformers, LangChain and LlamaIndex do; an unreachable Hub "
    "fails within seconds with the fix in the message. False: local paths and the local cache only.",
    "allow_pickle_weights": "Accept pickle-based weight files (pytorch_model.bin), which can run code when loaded. "
    "Off by default: only safetensors weights load.",
    "backend": "How the cross-encoder runs. 'torch'; 'onnx' (ONNX Runtime, fp32, CPU; the model is exported once and "
    "cached on disk); 'onnx-int8' (the same with int8 dynamically quantized weights: faster; scores differ "
    "slightly from fp32 and by ~1e-4 with the batch a pair is in); 'onnx-int8-ffn' (int8 for the feed-forward "
    "layers only, attention in fp32: between the two in speed and in how far scores move). 'auto': on a CPU with "
    "onnxruntime installed, the backend the model's folder names in rerank_backend.json (the shipped model: "
    "'onnx-int8', checked against fp32 on dev data; taken only where the CPU has int8 dot-product instructions "
    "such as VNNI, without which int8 is barely faster and less exact), else 'onnx'; 'torch' on a GPU or "
    "without onnxruntime.",
    "batch_size": "At most this many pairs per forward pass.",
    "cache_entries": "Keep the scores of this many recent (query, passage) pairs in memory, so repeated queries and "
    "overlapping candidate sets are not scored again (0: no cache).",
    "cache_path": "SQLite file that also keeps cached scores across processes (a broken file is bypassed with a "
    "warning).",
    "cascade_keep": "Cascade: a cheap pass (`model`, reading at most `max_length` tokens of each pair) scores every "
    "candidate and only the best `keep` are scored by the full model; the others follow them in the "
    "cheap pass's order (kept, with rerank_scoring='pruned', no relevance score, the cheap score in "
    "rerank_cascade_score). When the cheap pass is the model itself, a pair it read whole keeps that "
    "score (it is the full model's). 'auto': 30 for a cross-encoder on a CPU (with `model` when set, else the "
    "model itself, which pays only for long passages), else off. None (or 'off' in a settings file): the full "
    "model scores every candidate.",
    "cascade_max_length": "Token budget of one pair in the cascade's cheap pass (a query keeps at most three quarters "
    "of it).",
    "cascade_model": "Cross-encoder of the cascade's cheap pass. None: the reranking model itself (one copy of the "
    "weights), reading only the first `max_length` tokens of each pair.",
    "cascade_pick": "How the cascade picks the `keep` candidates the full model reads: 'cheap-pass' (by the cheap "
    "pass's scores, blended with the first-stage rank when a guard is in force), 'first-stage' (the first "
    "stage's top `keep`, with no cheap pass: `model` and `max_length` are unused, and the others follow in "
    "first-stage order, kept with rerank_scoring='pruned') or 'auto': 'first-stage' for a pool fused from two "
    "or more retrievers (its candidates' sources, e.g. retrieval_sources ['bm25', 'dense'] as our hybrid "
    "retrievers mark them), where a cheap pass found no better candidates on our dev sets, else 'cheap-pass'.",
    "dedupe_by_content": "Also treat candidates with different ids but identical text as duplicates (ids alone are "
    "compared when False; candidates without an id are always compared by text).",
    "device": "'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'.",
    "dtype": "Weights dtype. 'auto' is float32 on CPU (half precision is slower there) and float16 on CUDA.",
    "duo_model": "A duoT5 model id or path: the `top_n` best candidates of the pointwise scorer are re-ordered "
    "pairwise by it (quadratic cost).",
    "duo_top_k": "Candidates per query re-scored by duoT5.",
    "ensemble_normalize": "'rank': members' scores are rank-normalised per query before averaging; 'identity': "
    "averaged as they are (for calibrated members).",
    "first_stage_horizon": "The guard's first-stage rank score falls from 1 at rank 1 to 0 at this rank (or at the "
    "last candidate, if the pool is shorter) and is 0 below it, so a first_stage_weight means the same at 30 "
    "and at 100 candidates; with a guard in force the cascade's cheap pass keeps its best by the same blend. "
    "None: the score falls to 0 at the last scored candidate of any pool (before 2026-12-05; it weakens the "
    "guard as pools deepen).",
    "first_stage_weight": "Order by (1 - w) x min-max normalised relevance + w x first-stage rank score (1 for the "
    "first candidate down to 0 at first_stage_horizon); 0 orders by relevance alone. A guard for domains "
    "where the reranker alone trails the first stage. None: the model's own guard "
    "(rerank_guard.json in its folder, chosen on dev data; the shipped model has one), else 0.",
    "max_batch_tokens": "At most this many (padded) tokens per forward pass: long pairs go in smaller batches, so "
    "memory stays bounded at any candidate count. 'auto': 1024 on a CPU (small batches are as "
    "fast there and far leaner: measured by `rerank-plugins bench`), 16384 on a GPU. None: "
    "batch_size alone.",
    "max_candidates": "Score at most this many candidates, taken in first-stage order; the rest are dropped with a "
    "logged warning (None: no cap).",
    "max_length": "Token budget of one (query, passage) pair, or of one (query, window) pair with scorer='windowed'. "
    "A passage cut to fit is flagged in its metadata; a query longer than three quarters of it loses "
    "its tail (with a warning and the rerank_query_dropped_tokens flag). 256: the shipped model was "
    "trained on pairs of 192-256 tokens (model card).",
    "member_weights": "Weights of the ensemble members: finite, non-negative, not all 0 (None: equal).",
    "members": "The member scorers of kind='ensemble' (each a scorer section, e.g. {kind = 'cross-encoder', model = "
    "'...'}).",
    "metadata_keys": "Metadata fields written as 'key: value' lines before the passage when "
    "text='content_with_metadata' (empty: LlamaIndex's embed view / all string fields).",
    "min_keep": "Keep at least this many candidates even when they fall below score_threshold.",
    "model": "Hugging Face model id or local directory of a cross-encoder. None selects the model shipped with the "
    "package (rerank_plugins.default_model_path()).",
    "onnx_cache_dir": "Where ONNX exports are kept, keyed by a hash of the model files (rebuilt when they change). "
    "None: $RERANK_PLUGINS_ONNX_CACHE_DIR, else ~/.cache/rerank_plugins/onnx.",
    "remote_api_key": "Sent as 'Authorization: Bearer <key>' (kept out of logs and reprs).",
    "remote_max_documents": "Most passages per request; larger candidate sets are split into several requests. None: "
    "the server's max_client_batch_size from GET /info, else 32.",
    "remote_protocol": "'tei': POST {url}/rerank {query, texts} (text-embeddings-inference, and ours); 'infinity': "
    "POST {url}/rerank {query, documents} (infinity, and ours); 'cohere': POST {url}/v1/rerank "
    "(ours, Cohere-compatible servers that honour raw_scores); 'auto': one GET {url}/info decides "
    "(a server without it is taken for infinity).",
    "remote_retries": "Retries (exponential backoff from 0.2 s) after a connection error, a timeout, a 429 or a 5xx.",
    "remote_timeout_s": "Timeout of one HTTP request, in seconds.",
    "remote_url": "Base URL of the /rerank server of scorer='remote', e.g. http://127.0.0.1:8080.",
    "score_threshold": "Drop candidates scoring below this, before the top_n cut. It must lie in [0, 1] unless "
    "activation='raw'.",
    "scorer": "Which scorer reads the pairs, a section chosen by its `kind`: 'cross-encoder' (the default; with "
    "`windows` a passage that does not fit max_length is read in overlapping windows and its windows' "
    "scores aggregated, a passage that fits is read whole; `windows = false` truncates instead and flags "
    "it), 'monot5' and 'rankt5' (a T5 reranker: log p(true), or one token's logit), 'ensemble' (the scorers "
    "in `members`), 'bi-encoder' (embedding cosine; `model` a sentence-transformers bi-encoder, default "
    "all-MiniLM-L6-v2), 'remote' (a /rerank server: `rerank-plugins serve`, TEI or infinity). A string is "
    "the kind with its defaults.",
    "text": "Text to score: the passage only, or the passage preceded by the metadata fields named in metadata_keys "
    "(they eat into the token budget).",
    "threads": "Compute threads for ONNX Runtime and torch (torch's setting is process-wide). None: the libraries' "
    "defaults (one per core).",
    "time_budget_ms": "Latency budget for scoring one query: candidates are scored in first-stage order, at most 8 "
    "per call, while the next call is expected to end in time; unscored ones follow the scored ones "
    "in first-stage order (kept, with rerank_scoring='unscored'), and the result counts them. None: "
    "score everything.",
    "top_n": "Keep at most this many candidates (None: keep all).",
    "trust_remote_code": "Allow a model repository to run its own Python code. Off by default.",
    "window_aggregate": "How window scores combine into the passage score.",
    "window_limit": "Most windows read per passage, so one huge passage cannot stall a query: the text after the last "
    "is cut and flagged (rerank_dropped_tokens). 16 windows of the default 256 tokens cover about "
    "1,900 passage tokens. None: no limit.",
    "window_stride": "Tokens between window starts (None: half a window). A stride of at least the window "
    "reads every token once (0.69x the tokens per SciFact abstract, 0.74-0.91x the time per query) but "
    "ranked SciFact dev claims lower (docs/benchmarks.md).",
    "window_tokens": "Passage tokens per window (None: as many as fit next to the query).",
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class WindowSettings(_Section):
    """How a cross-encoder reads a passage longer than its token budget: in overlapping windows."""

    tokens: int | None = Field(default=None, ge=8, description=_D["window_tokens"])
    stride: int | None = Field(default=None, ge=1, description=_D["window_stride"])
    limit: int | None = Field(default=16, ge=1, description=_D["window_limit"])
    aggregate: Literal["max", "first", "mean-top2"] = Field(default="max", description=_D["window_aggregate"])


class _LocalModel(_Section):
    """Settings of a scorer that loads a model in this process."""

    model: str | None = Field(default=None, description=_D["model"])
    device: str = Field(default="auto", description=_D["device"])
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(default="auto", description=_D["dtype"])
    threads: int | None = Field(default=None, ge=1, le=512, description=_D["threads"])
    batch_size: int = Field(default=32, gt=0, le=4096, description=_D["batch_size"])
    max_length: int = Field(default=256, ge=16, le=8192, description=_D["max_length"])
    activation: Literal["auto", "sigmoid", "raw", "calibrated"] = Field(default="auto", description=_D["activation"])
    trust_remote_code: bool = Field(default=False, description=_D["trust_remote_code"])
    allow_pickle_weights: bool = Field(default=False, description=_D["allow_pickle_weights"])
    allow_download: bool | None = Field(default=None, description=_D["allow_download"])

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"unknown device {value!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return value


class CrossEncoderSettings(_LocalModel):
    """A cross-encoder (the default scorer), reading long passages in windows unless ``windows`` is None."""

    kind: Literal["cross-encoder"] = "cross-encoder"
    backend: Literal["auto", "torch", "onnx", "onnx-int8", "onnx-int8-ffn"] = Field(
        default="auto", description=_D["backend"]
    )
    onnx_cache_dir: str | None = Field(default=None, description=_D["onnx_cache_dir"])
    max_batch_tokens: int | Literal["auto"] | None = Field(default="auto", description=_D["max_batch_tokens"])
    windows: WindowSettings | None = Field(
        default_factory=WindowSettings,
        description="Read a passage that does not fit max_length in overlapping windows (None, or false in a "
        "settings file: truncate it and flag the cut).",
    )

    @field_validator("max_batch_tokens")
    @classmethod
    def _check_max_batch_tokens(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 16:
            raise ValueError(f"max_batch_tokens={value} is too small; use at least 16, 'auto' or None")
        return value

    @field_validator("windows", mode="before")
    @classmethod
    def _windows_off(cls, value: Any) -> Any:
        return None if value is False else value


class T5Settings(_LocalModel):
    """A MonoT5 (``kind='monot5'``: log p(true)) or RankT5 (``kind='rankt5'``: one token's logit) reranker."""

    kind: Literal["monot5", "rankt5"]


class BiEncoderSettings(_LocalModel):
    """A sentence-transformers bi-encoder scoring by cosine (``model`` None: all-MiniLM-L6-v2)."""

    kind: Literal["bi-encoder"]


class RemoteSettings(_Section):
    """A /rerank server (``rerank-plugins serve``, text-embeddings-inference or infinity)."""

    kind: Literal["remote"]
    url: str = Field(default="", validate_default=True, description=_D["remote_url"])
    protocol: Literal["tei", "infinity", "cohere", "auto"] = Field(default="tei", description=_D["remote_protocol"])
    timeout_s: float = Field(default=30.0, gt=0, description=_D["remote_timeout_s"])
    retries: int = Field(default=3, ge=0, le=20, description=_D["remote_retries"])
    max_documents: int | None = Field(default=None, ge=1, description=_D["remote_max_documents"])
    api_key: SecretStr | None = Field(default=None, description=_D["remote_api_key"])
    model: str | None = Field(default=None, description="The model name sent to the server (None: the server's own).")
    activation: Literal["auto", "sigmoid", "raw", "calibrated"] = Field(default="auto", description=_D["activation"])

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"kind='remote' needs url, the http(s) base URL of a /rerank server (got {value!r})")
        return value


class EnsembleSettings(_Section):
    """Several scorers whose scores are averaged."""

    kind: Literal["ensemble"]
    members: tuple[ScorerSettings, ...] = Field(default=(), description=_D["members"])
    weights: tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...] | None = Field(
        default=None, description=_D["member_weights"]
    )
    normalize: Literal["rank", "identity"] = Field(default="rank", description=_D["ensemble_normalize"])

    @field_validator("members", mode="before")
    @classmethod
    def _member_kinds(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [_scorer_section(m) for m in value]
        return value

    @model_validator(mode="after")
    def _check_weights(self) -> EnsembleSettings:
        if not self.members:
            raise ValueError("kind='ensemble' needs at least one entry in members")
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(f"{len(self.weights)} member_weights for {len(self.members)} members")
        if self.weights is not None and not sum(self.weights) > 0:
            raise ValueError("member_weights are all 0; give at least one member a positive weight")
        return self


ScorerSettings = Annotated[
    CrossEncoderSettings | T5Settings | BiEncoderSettings | RemoteSettings | EnsembleSettings,
    Field(discriminator="kind"),
]
EnsembleSettings.model_rebuild()


class CascadeSettings(_Section):
    """A cheap pass over every candidate before the full read of the best."""

    keep: int | Literal["auto"] | None = Field(default="auto", description=_D["cascade_keep"])
    max_length: int = Field(default=128, ge=16, le=8192, description=_D["cascade_max_length"])
    model: str | None = Field(default=None, description=_D["cascade_model"])
    pick: Literal["auto", "cheap-pass", "first-stage"] = Field(default="auto", description=_D["cascade_pick"])

    @field_validator("keep", mode="before")
    @classmethod
    def _keep(cls, value: Any) -> Any:
        # settings files have no null: keep = "off" (or false) turns the cascade off
        if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none", "null")):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise ValueError(f"cascade keep={value} must be at least 1 (or 'auto', or None for no cascade)")
        return value


class CacheSettings(_Section):
    """A cache of pair scores, in memory and optionally in SQLite."""

    entries: int = Field(default=0, ge=0, description=_D["cache_entries"])
    path: str | None = Field(default=None, description=_D["cache_path"])


class DuoSettings(_Section):
    """duoT5 re-ordering the best candidates of the pointwise scorer pairwise."""

    model: str = Field(description=_D["duo_model"])
    top_n: int = Field(default=10, ge=2, description=_D["duo_top_k"])


#: Earlier releases' flat settings -> (section, field); a window setting is (scorer, windows, field).
FLAT_NAMES: dict[str, tuple[str, ...]] = {
    **{
        name: ("scorer", name)
        for name in (
            "model", "device", "dtype", "threads", "batch_size", "max_length", "activation", "trust_remote_code",
            "allow_pickle_weights", "allow_download", "backend", "onnx_cache_dir", "max_batch_tokens", "members",
        )
    },
    **{f"window_{name}": ("scorer", "windows", name) for name in ("tokens", "stride", "limit", "aggregate")},
    **{
        f"remote_{name}": ("scorer", name)
        for name in ("url", "protocol", "timeout_s", "retries", "max_documents", "api_key")
    },
    "member_weights": ("scorer", "weights"),
    "ensemble_normalize": ("scorer", "normalize"),
    "duo_model": ("duo", "model"),
    "duo_top_k": ("duo", "top_n"),
    "cache_entries": ("cache", "entries"),
    "cache_path": ("cache", "path"),
    "cascade_keep": ("cascade", "keep"),
    "cascade_max_length": ("cascade", "max_length"),
    "cascade_model": ("cascade", "model"),
}  # fmt: skip
#: The scorer kinds of earlier releases' flat ``scorer`` setting.
_OLD_KINDS: dict[str, dict[str, Any]] = {
    "windowed": {"kind": "cross-encoder"},
    "cross-encoder": {"kind": "cross-encoder", "windows": None},
}
_SCORER_CLASSES: dict[str, type[_Section]] = {
    "cross-encoder": CrossEncoderSettings,
    "monot5": T5Settings,
    "rankt5": T5Settings,
    "bi-encoder": BiEncoderSettings,
    "remote": RemoteSettings,
    "ensemble": EnsembleSettings,
}
_SECTION_CLASSES: dict[str, type[_Section]] = {"cascade": CascadeSettings, "cache": CacheSettings, "duo": DuoSettings}


def _scorer_section(value: Any) -> Any:
    """A scorer section as given: a kind's name alone, or a table without ``kind`` (a cross-encoder)."""
    if isinstance(value, str):
        return dict(_OLD_KINDS.get(value, {"kind": value}))
    if isinstance(value, Mapping) and "kind" not in value:
        return {"kind": "cross-encoder", **value}
    return value


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True) | ({"kind": value.kind} if hasattr(value, "kind") else {})
    if isinstance(value, str):
        return dict(_OLD_KINDS.get(value, {"kind": value}))
    return dict(value) if isinstance(value, Mapping) else {}


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section. A scorer section of another kind replaces the base's
    (only the fields its kind has are kept from below it)."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        if key == "scorer":
            new, old = _as_dict(value), _as_dict(below)
            kind = new.get("kind", old.get("kind", "cross-encoder"))
            if old.get("kind", "cross-encoder") != kind:
                allowed = _SCORER_CLASSES[kind].model_fields if kind in _SCORER_CLASSES else {}
                old = {k: v for k, v in old.items() if k in allowed}
            out[key] = deep_merge(old, new)
        elif isinstance(value, Mapping) and isinstance(below, Mapping | BaseModel) and key != "members":
            out[key] = deep_merge(_as_dict(below), value)
        else:
            out[key] = value
    return out


def nest_flat(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Earlier releases' flat settings moved into their sections; returns (settings, flat names used).

    A flat setting that the chosen scorer kind does not have (``device`` with ``scorer='remote'``) is
    dropped, as it was ignored before; so are window settings with ``scorer='cross-encoder'``.
    """
    used = [k for k in data if k in FLAT_NAMES]
    if not used and not isinstance(data.get("scorer"), str):
        return dict(data), []
    flat = {k: data[k] for k in used}
    out = {k: v for k, v in data.items() if k not in FLAT_NAMES}
    scorer = _as_dict(out.get("scorer"))
    kind = scorer.get("kind", "cross-encoder")
    allowed = _SCORER_CLASSES[kind].model_fields if kind in _SCORER_CLASSES else {}
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        path = FLAT_NAMES[name]
        if path[0] == "scorer":
            if path[1] not in allowed or (path[1] == "windows" and scorer.get("windows", {}) is None):
                continue
            if name == "members":
                value = [_member(m) for m in value or ()]
            if path[1] == "windows":
                nested.setdefault("scorer", {}).setdefault("windows", {})[path[2]] = value
                continue
        if path[0] == "duo" and name == "duo_model" and value is None:
            continue
        nested.setdefault(path[0], {})[path[1]] = value
    if "duo" in nested and "model" not in nested["duo"] and "duo" not in out:
        del nested["duo"]  # duo_top_k alone configured nothing
    if scorer or "scorer" in nested:
        out["scorer"] = scorer
    return deep_merge(out, nested), used


def _member(value: Any) -> Any:
    """An ensemble member given as an earlier release's full flat config."""
    if isinstance(value, RerankConfig):
        return value.scorer
    if isinstance(value, Mapping) and "kind" not in value:
        return nest_flat(dict(value))[0].get("scorer", {"kind": "cross-encoder"})
    return value


def _warn_flat(names: list[str]) -> None:
    moved = ", ".join(f"{n} -> {'.'.join(FLAT_NAMES[n])}" for n in names if n in FLAT_NAMES)
    warnings.warn(
        f"flat rerank settings are deprecated and will stop loading in the next release; use the sections: {moved}",
        DeprecationWarning,
        stacklevel=5,
    )


class RerankConfig(_Section):
    """Settings of a rerank step: the scorer (a section chosen by its kind), the cascade, the cache,
    duoT5, and what the pipeline keeps."""

    scorer: ScorerSettings = Field(default_factory=CrossEncoderSettings, description=_D["scorer"])
    cascade: CascadeSettings = Field(
        default_factory=CascadeSettings, description="The cascade: a cheap pass over all, the best read in full."
    )
    cache: CacheSettings = Field(default_factory=CacheSettings, description="The score cache (off by default).")
    duo: DuoSettings | None = Field(default=None, description="duoT5 over the best candidates (off by default).")
    top_n: int | None = Field(default=5, ge=1, description=_D["top_n"])
    score_threshold: float | None = Field(default=None, description=_D["score_threshold"])
    min_keep: int = Field(default=0, ge=0, description=_D["min_keep"])
    max_candidates: int | None = Field(default=200, ge=1, description=_D["max_candidates"])
    time_budget_ms: float | None = Field(default=None, gt=0, description=_D["time_budget_ms"])
    first_stage_weight: float | None = Field(default=None, ge=0.0, le=1.0, description=_D["first_stage_weight"])
    first_stage_horizon: int | None = Field(default=30, ge=2, description=_D["first_stage_horizon"])
    dedupe_by_content: bool = Field(default=True, description=_D["dedupe_by_content"])
    text: Literal["content", "content_with_metadata"] = Field(default="content", description=_D["text"])
    metadata_keys: tuple[str, ...] = Field(default=(), description=_D["metadata_keys"])

    @model_validator(mode="before")
    @classmethod
    def _from_flat_names(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, Mapping):
            return data
        nested, used = nest_flat(data)
        if used and not (info.context or {}).get("quiet_flat"):
            _warn_flat(used)
        return nested

    @field_validator("scorer", mode="before")
    @classmethod
    def _scorer_kind(cls, value: Any) -> Any:
        return _scorer_section(value)

    @field_validator("metadata_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @model_validator(mode="after")
    def _check_combination(self) -> RerankConfig:
        t = self.score_threshold
        if t is not None and self.activation != "raw" and not 0.0 <= t <= 1.0:
            raise ValueError(
                f"score_threshold={t} is outside [0, 1], the range of {self.activation} scores; "
                "use a value in [0, 1] or set activation='raw' for a logit threshold"
            )
        keep = self.cascade.keep
        if isinstance(keep, int) and self.cascade.model is None and self.cascade.pick != "first-stage":
            if not isinstance(self.scorer, CrossEncoderSettings):
                raise ValueError(
                    f"cascade_keep with scorer={self.scorer_kind!r} needs cascade_model, a cross-encoder for the "
                    "cheap pass (without it the cascade reads the reranking model itself at cascade_max_length tokens)"
                )
            if self.cascade.max_length >= self.scorer.max_length:
                raise ValueError(
                    f"cascade_max_length={self.cascade.max_length} is not below max_length={self.scorer.max_length}, "
                    "so the cascade's cheap pass would cost as much as the full one; lower cascade_max_length "
                    "(e.g. 128)"
                )
        if self.top_n is not None and self.min_keep > self.top_n:
            raise ValueError(f"min_keep={self.min_keep} exceeds top_n={self.top_n}; lower min_keep or raise top_n")
        return self

    # ------------------------------------------------------------------ reading
    @property
    def scorer_kind(self) -> str:
        """The scorer kind as earlier releases named it: 'windowed' for a cross-encoder reading windows."""
        s = self.scorer
        if isinstance(s, CrossEncoderSettings):
            return "windowed" if s.windows is not None else "cross-encoder"
        return s.kind

    def _scorer_field(self, name: str, default: Any) -> Any:
        return getattr(self.scorer, name, default)

    def _window(self, name: str, default: Any) -> Any:
        windows = getattr(self.scorer, "windows", None)
        return getattr(windows, name) if windows is not None else default

    # the flat names of earlier releases, read from the sections (the scorer kind's default when it has none)
    @property
    def model(self) -> str | None:
        return self._scorer_field("model", None)  # type: ignore[no-any-return]

    @property
    def device(self) -> str:
        return self._scorer_field("device", "auto")  # type: ignore[no-any-return]

    @property
    def dtype(self) -> str:
        return self._scorer_field("dtype", "auto")  # type: ignore[no-any-return]

    @property
    def threads(self) -> int | None:
        return self._scorer_field("threads", None)  # type: ignore[no-any-return]

    @property
    def batch_size(self) -> int:
        return self._scorer_field("batch_size", 32)  # type: ignore[no-any-return]

    @property
    def max_length(self) -> int:
        return self._scorer_field("max_length", 256)  # type: ignore[no-any-return]

    @property
    def activation(self) -> str:
        return self._scorer_field("activation", "auto")  # type: ignore[no-any-return]

    @property
    def trust_remote_code(self) -> bool:
        return self._scorer_field("trust_remote_code", False)  # type: ignore[no-any-return]

    @property
    def allow_pickle_weights(self) -> bool:
        return self._scorer_field("allow_pickle_weights", False)  # type: ignore[no-any-return]

    @property
    def allow_download(self) -> bool | None:
        return self._scorer_field("allow_download", None)  # type: ignore[no-any-return]

    @property
    def backend(self) -> str:
        return self._scorer_field("backend", "torch")  # type: ignore[no-any-return]

    @property
    def onnx_cache_dir(self) -> str | None:
        return self._scorer_field("onnx_cache_dir", None)  # type: ignore[no-any-return]

    @property
    def max_batch_tokens(self) -> int | Literal["auto"] | None:
        return self._scorer_field("max_batch_tokens", "auto")  # type: ignore[no-any-return]

    @property
    def window_tokens(self) -> int | None:
        return self._window("tokens", None)  # type: ignore[no-any-return]

    @property
    def window_stride(self) -> int | None:
        return self._window("stride", None)  # type: ignore[no-any-return]

    @property
    def window_limit(self) -> int | None:
        return self._window("limit", 16)  # type: ignore[no-any-return]

    @property
    def window_aggregate(self) -> Literal["max", "first", "mean-top2"]:
        return self._window("aggregate", "max")  # type: ignore[no-any-return]

    @property
    def remote_url(self) -> str | None:
        return self._scorer_field("url", None)  # type: ignore[no-any-return]

    @property
    def remote_protocol(self) -> str:
        return self._scorer_field("protocol", "tei")  # type: ignore[no-any-return]

    @property
    def remote_timeout_s(self) -> float:
        return self._scorer_field("timeout_s", 30.0)  # type: ignore[no-any-return]

    @property
    def remote_retries(self) -> int:
        return self._scorer_field("retries", 3)  # type: ignore[no-any-return]

    @property
    def remote_max_documents(self) -> int | None:
        return self._scorer_field("max_documents", None)  # type: ignore[no-any-return]

    @property
    def remote_api_key(self) -> SecretStr | None:
        return self._scorer_field("api_key", None)  # type: ignore[no-any-return]

    @property
    def members(self) -> tuple[RerankConfig, ...]:
        """The ensemble's members, each as a config of its own (the pipeline settings are the defaults)."""
        return tuple(RerankConfig(scorer=m) for m in self._scorer_field("members", ()))

    @property
    def member_weights(self) -> tuple[float, ...] | None:
        return self._scorer_field("weights", None)  # type: ignore[no-any-return]

    @property
    def ensemble_normalize(self) -> Literal["rank", "identity"]:
        return self._scorer_field("normalize", "rank")  # type: ignore[no-any-return]

    @property
    def duo_model(self) -> str | None:
        return None if self.duo is None else self.duo.model

    @property
    def duo_top_k(self) -> int:
        return 10 if self.duo is None else self.duo.top_n

    @property
    def cache_entries(self) -> int:
        return self.cache.entries

    @property
    def cache_path(self) -> str | None:
        return self.cache.path

    @property
    def cascade_keep(self) -> int | Literal["auto"] | None:
        return self.cascade.keep

    @property
    def cascade_max_length(self) -> int:
        return self.cascade.max_length

    @property
    def cascade_model(self) -> str | None:
        return self.cascade.model

    # ------------------------------------------------------------------ loaders
    @classmethod
    def _validate(cls, data: Mapping[str, Any], *, quiet: bool = False) -> RerankConfig:
        try:
            return cls.model_validate(dict(data), context={"quiet_flat": quiet})
        except ValidationError as exc:
            raise ConfigError(explain(exc)) from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RerankConfig:
        """Build from a mapping; a ``rerank`` or ``rerank_plugins`` sub-table is accepted too."""
        for key in ("rerank_plugins", "rerank"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and len(data) == 1:
                data = inner
        return cls._validate(data)

    @classmethod
    def from_file(cls, path: str | Path) -> RerankConfig:
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (safe parsers only).

        The rerank settings sit at the top level, the sections as tables (``[scorer]``, ``[cascade]``...);
        tables of other tools (``[serve]``, ``[tool.x]``...) are left to them. An unknown top-level setting
        is still an error (a typo must not pass).
        """
        return cls.from_mapping(rerank_section(load_settings_file(path)))

    @classmethod
    def resolve(
        cls, config: RerankConfig | None = None, *, environ: Mapping[str, str] | None = None, **keywords: Any
    ) -> RerankConfig:
        """The settings in force: ``keywords`` > ``config`` (its explicitly set fields) > ``RERANK_PLUGINS_*``
        environment variables > defaults, section by section. The adapters, the CLI and the server all
        resolve this way; ``keywords`` may use the flat names (``model=``, ``device=``) without a warning.

        Example:
            >>> RerankConfig.resolve(RerankConfig(top_n=3), environ={"RERANK_PLUGINS_TOP_N": "1"}).top_n
            3
            >>> RerankConfig.resolve(environ={"RERANK_PLUGINS_METADATA_KEYS": "title,src"}).metadata_keys
            ('title', 'src')
            >>> RerankConfig.resolve(environ={"RERANK_PLUGINS_SCORER__DEVICE": "cpu"}, model="m").scorer.model
            'm'
        """
        environ = os.environ if environ is None else environ
        values = _env_settings(environ)
        if config is not None:
            values = deep_merge(values, config.model_dump(exclude_unset=True))
        values = deep_merge(values, nest_flat(keywords)[0])
        return cls._validate(values, quiet=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, base: RerankConfig | None = None) -> RerankConfig:
        """Settings from ``RERANK_PLUGINS_<FIELD>`` and ``RERANK_PLUGINS_<SECTION>__<FIELD>`` variables over
        ``base`` (or the defaults).

        ``none``/``null`` or an empty value means None; other values are parsed by pydantic.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = base.model_dump(exclude_unset=True) if base else {}
        return cls._validate(deep_merge(values, _env_settings(environ)), quiet=True)

    def cascade_config(self) -> RerankConfig:
        """Settings of the cascade's cheap pass: the cascade's ``model`` (or the scorer's) as a plain
        cross-encoder reading the cascade's ``max_length`` tokens; device, backend, threads and cache as
        configured.

        Example:
            >>> cheap = RerankConfig(cascade={"keep": 20}).cascade_config()
            >>> cheap.scorer.max_length, cheap.cascade.keep, cheap.scorer_kind
            (128, None, 'cross-encoder')
        """
        scorer = self.scorer if isinstance(self.scorer, CrossEncoderSettings) else CrossEncoderSettings()
        cheap = scorer.model_copy(
            update={"model": self.cascade.model or self.model, "max_length": self.cascade.max_length, "windows": None}
        )
        return self.model_copy(update={"scorer": cheap, "cascade": CascadeSettings(keep=None), "duo": None})

    def merged(self, **overrides: Any) -> RerankConfig:
        """A copy with ``overrides`` applied (section by section; flat names accepted) and validated again."""
        return self._validate(
            deep_merge(self.model_dump(exclude_unset=True), nest_flat(overrides)[0]),
            quiet=True,
        )


#: Largest settings file read (a settings table is a few KB; this bounds memory and parse time).
MAX_SETTINGS_BYTES = 1 << 20


def _load_yaml(raw: str, path: Path) -> Any:
    """``yaml.safe_load`` that refuses aliases: a few hundred bytes of nested aliases ("billion
    laughs") expand to gigabytes, and a settings file never needs them."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                anchor = self.peek_event().anchor  # type: ignore[no-untyped-call]
                raise ConfigError(
                    f"{path} uses a YAML alias (*{anchor!s:.40}); aliases are not allowed in settings files: "
                    "write the values out"
                )
            return super().compose_node(parent, index)

    return yaml.load(raw, Loader=NoAliases) or {}  # a SafeLoader subclass: no Python objects


def rerank_section(data: Mapping[str, Any]) -> dict[str, Any]:
    """The rerank settings of a settings file: its top level without other tools' tables."""
    own = set(RerankConfig.model_fields) | set(FLAT_NAMES) | {"rerank", "rerank_plugins"}
    return {k: v for k, v in data.items() if k in own or not isinstance(v, Mapping)}


def load_settings_file(path: str | Path) -> Mapping[str, Any]:
    """Parse a ``.toml``, ``.yaml``/``.yml`` or ``.json`` settings file without executing code."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist")
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if size > MAX_SETTINGS_BYTES:
        raise ConfigError(
            f"Config file {path} is {size:,} bytes; a settings file is at most {MAX_SETTINGS_BYTES:,} bytes"
        )
    raw = path.read_text(encoding="utf-8")
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - exercised on Python 3.10 only
                import tomli as tomllib
            data: Any = tomllib.loads(raw)
        elif suffix in {".yaml", ".yml"}:
            data = _load_yaml(raw, path)
        elif suffix == ".json":
            data = json.loads(raw)
        else:
            raise ConfigError(f"Unsupported config file type {suffix!r} ({path}); use .toml, .yaml, .yml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # each parser has its own error type
        raise ConfigError(f"Could not parse {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a table of settings, got {type(data).__name__}")
    return data


def env_values(
    environ: Mapping[str, str], prefix: str, fields: Mapping[str, Any], *, skip: str | None = None
) -> dict[str, Any]:
    """``<prefix><FIELD>`` variables as field values (``none``/``null``/empty -> None); unknown names raise."""
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(prefix) or (skip is not None and key.startswith(skip)):
            continue
        name = key[len(prefix) :].lower()
        if name not in fields:
            raise ConfigError(
                f"Unknown environment variable {key}; known: " + ", ".join(prefix + f.upper() for f in fields)
            )
        values[name] = _env_value(key, raw, fields[name])
    return values


def _field_info(section: str | None, name: str) -> Any:
    """The field ``name`` of a section (any scorer kind's), or of the config's top level."""
    if section is None:
        return RerankConfig.model_fields.get(name)
    classes = _SCORER_CLASSES.values() if section == "scorer" else [_SECTION_CLASSES.get(section)]
    if section == "scorer.windows":
        classes = [WindowSettings]
    for cls in classes:
        if cls is not None and name in cls.model_fields:
            return cls.model_fields[name]
    return None


def _env_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``RERANK_PLUGINS_*`` variables as settings: ``<FIELD>`` for the pipeline's own settings,
    ``<SECTION>__<FIELD>`` (``SCORER__WINDOWS__TOKENS``) for a section's; the flat names of earlier
    releases load with a warning; an unknown name raises (``RERANK_PLUGINS_SERVE_*`` are the server's)."""
    values: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(ENV_PREFIX + "SERVE_"):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        path = name.split("__")
        if len(path) == 1 and name in FLAT_NAMES:
            moved = FLAT_NAMES[name]  # (section, field) or (scorer, windows, field)
            flat[name] = _env_value(key, raw, _field_info(".".join(moved[:-1]), moved[-1]))
            continue
        field = _field_info(".".join(path[:-1]) or None, path[-1])
        if field is None or name in ("cascade", "cache", "duo"):
            known = [ENV_PREFIX + f.upper() for f in RerankConfig.model_fields if f not in ("cascade", "cache", "duo")]
            raise ConfigError(
                f"Unknown environment variable {key}; known: " + ", ".join(known) + ", and a section's field as "
                f"{ENV_PREFIX}SCORER__MODEL, {ENV_PREFIX}CASCADE__KEEP, {ENV_PREFIX}CACHE__ENTRIES, "
                f"{ENV_PREFIX}SCORER__WINDOWS__TOKENS..."
            )
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = _env_value(key, raw, field)
    if flat:
        _warn_flat(sorted(flat))
        if isinstance(values.get("scorer"), str):  # the kind decides where the flat settings go
            flat["scorer"] = values.pop("scorer")
        values = deep_merge(nest_flat(flat)[0], values)
    return values


def _env_value(key: str, raw: str, field: Any) -> Any:
    """One variable's value: None for ``none``/``null``/empty; JSON for a list or table (``["a","b"]``,
    ``[{"model": "m"}]``); ``a,b`` for a list of words; else the string, which pydantic converts."""
    text = raw.strip()
    if text.lower() in {"", "none", "null"}:
        return None
    if text[0] in "[{":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f'{key} looks like JSON but does not parse ({exc}); e.g. {key}=\'["a", "b"]\'') from exc
    annotation = str(getattr(field, "annotation", ""))
    if annotation.startswith(("tuple[", "list[")):
        return [part.strip() for part in text.split(",") if part.strip()]
    return raw


def _short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters (an error message never echoes a huge input)."""
    import reprlib

    bounded = reprlib.Repr()
    bounded.maxstring = bounded.maxother = limit
    bounded.maxlist = bounded.maxdict = 6
    bounded.maxlevel = 2
    short = bounded.repr(value)
    return short if len(short) <= limit else short[: limit - 3] + "..."


def explain(exc: ValidationError, what: str = "rerank configuration") -> str:
    """A pydantic validation error as one line naming each field, the problem and the value given."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        parts.append(f"{loc:.80}: {err['msg']} (got {_short_repr(err.get('input'))})")
    return f"Invalid {what}: " + "; ".join(parts)


def config_reference_markdown() -> str:
    """The configuration reference of docs/configuration.md, generated from :class:`RerankConfig` and its
    sections: one table per section, each field with its environment variable, default and description."""
    tables: list[tuple[str, str | None, type[BaseModel], tuple[str, ...]]] = [
        ("The pipeline's own settings", None, RerankConfig, ("scorer", "cascade", "cache", "duo")),
        ("`scorer` (kind = 'cross-encoder', the default)", "scorer", CrossEncoderSettings, ()),
        ("`scorer.windows`", "scorer__windows", WindowSettings, ()),
        ("`scorer` (kind = 'monot5' / 'rankt5'; 'bi-encoder' has the same fields)", "scorer", T5Settings, ()),
        ("`scorer` (kind = 'remote')", "scorer", RemoteSettings, ()),
        ("`scorer` (kind = 'ensemble')", "scorer", EnsembleSettings, ()),
        ("`cascade`", "cascade", CascadeSettings, ()),
        ("`cache`", "cache", CacheSettings, ()),
        ("`duo`", "duo", DuoSettings, ()),
    ]
    out = []
    for title, prefix, cls, skip in tables:
        rows = [f"#### {title}", "", "| field | env variable | default | description |", "| --- | --- | --- | --- |"]
        for name, f in cls.model_fields.items():
            if name in skip or (name == "kind" and cls is not EnsembleSettings and cls is not RemoteSettings):
                continue
            default = f.default if f.default_factory is None else f.default_factory()  # type: ignore[call-arg]
            default_text = "required" if f.is_required() else f"`{default!r}`"
            env = ENV_PREFIX + (f"{prefix}__{name}" if prefix else name).upper()
            rows.append(f"| `{name}` | `{env}` | {default_text} | {(f.description or '').replace('|', '/')} |")
        out.append("\n".join(rows))
    return "\n\n".join(out)
