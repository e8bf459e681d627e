"""The one configuration object shared by the scorer, both adapters and the CLI.

A :class:`RerankConfig` can be built in code, from a mapping, from a TOML / YAML /
JSON file (parsed without code execution) or from ``RERANK_PLUGINS_*`` environment
variables.

Example:
    >>> cfg = RerankConfig(top_n=3, score_threshold=0.2)
    >>> cfg.top_n, cfg.activation
    (3, 'auto')
    >>> RerankConfig.from_env({"RERANK_PLUGINS_TOP_N": "4", "RERANK_PLUGINS_DEVICE": "cpu"}).top_n
    4
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from rerank_plugins.errors import ConfigError

__all__ = ["ENV_PREFIX", "RerankConfig", "config_reference_markdown", "env_values", "explain", "load_settings_file"]

ENV_PREFIX = "RERANK_PLUGINS_"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class RerankConfig(BaseModel):
    """Settings of a rerank step: which model, how it runs, what is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    #: Settings the pipeline applies around scoring (selection, dedupe, text, cascade plan): they never
    #: change a score, so they never make another scorer (:func:`rerank_plugins.scoring.factory.get_scorer`).
    PIPELINE_FIELDS: ClassVar[tuple[str, ...]] = (
        "top_n",
        "score_threshold",
        "min_keep",
        "max_candidates",
        "first_stage_weight",
        "dedupe_by_content",
        "text",
        "metadata_keys",
        "time_budget_ms",
        "cascade_keep",
        "cascade_max_length",
        "cascade_model",
    )

    model: str | None = Field(
        default=None,
        description="Hugging Face model id or local directory of a cross-encoder. "
        "None selects the model shipped with the package (rerank_plugins.default_model_path()).",
    )
    scorer: Literal["cross-encoder", "windowed", "monot5", "rankt5", "ensemble", "bi-encoder", "remote"] = Field(
        default="windowed",
        description="'windowed' (the default) reads a passage that does not fit max_length in overlapping "
        "windows and aggregates their scores (window_* fields; a passage that fits is read whole, as by "
        "'cross-encoder'); 'cross-encoder' truncates passages that do not fit (and flags them); 'monot5' and "
        "'rankt5' load `model` as a T5 reranker (log p(true), or one token's logit); 'ensemble' combines "
        "the scorers described by `members`; 'bi-encoder' scores by embedding cosine (`model`: a "
        "sentence-transformers bi-encoder, default all-MiniLM-L6-v2), mainly as an ensemble member; 'remote' "
        "sends the pairs to a /rerank server (remote_* fields): `rerank-plugins serve`, TEI or infinity.",
    )
    remote_url: str | None = Field(
        default=None,
        description="Base URL of the /rerank server of scorer='remote', e.g. http://127.0.0.1:8080.",
    )
    remote_protocol: Literal["tei", "infinity", "cohere", "auto"] = Field(
        default="tei",
        description="'tei': POST {url}/rerank {query, texts} (text-embeddings-inference, and ours); "
        "'infinity': POST {url}/rerank {query, documents} (infinity, and ours); "
        "'cohere': POST {url}/v1/rerank (ours, Cohere-compatible servers that honour raw_scores); "
        "'auto': one GET {url}/info decides (a server without it is taken for infinity).",
    )
    remote_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one HTTP request, in seconds.")
    remote_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Retries (exponential backoff from 0.2 s) after a connection error, a timeout, a 429 or a 5xx.",
    )
    remote_max_documents: int | None = Field(
        default=None,
        ge=1,
        description="Most passages per request; larger candidate sets are split into several requests. "
        "None: the server's max_client_batch_size from GET /info, else 32.",
    )
    remote_api_key: SecretStr | None = Field(
        default=None, description="Sent as 'Authorization: Bearer <key>' (kept out of logs and reprs)."
    )
    members: tuple[RerankConfig, ...] = Field(
        default=(),
        description="Member scorer settings of scorer='ensemble' (each a full config; only its scoring fields matter).",
    )
    member_weights: tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], ...] | None = Field(
        default=None, description="Weights of the ensemble members: finite, non-negative, not all 0 (None: equal)."
    )
    ensemble_normalize: Literal["rank", "identity"] = Field(
        default="rank",
        description="'rank': members' scores are rank-normalised per query before averaging; 'identity': "
        "averaged as they are (for calibrated members).",
    )
    duo_model: str | None = Field(
        default=None,
        description="A duoT5 model id or path: when set, the duo_top_k best candidates of the pointwise "
        "scorer are re-ordered pairwise by it (quadratic cost).",
    )
    duo_top_k: int = Field(default=10, ge=2, description="Candidates per query re-scored by duoT5.")
    window_tokens: int | None = Field(
        default=None, ge=8, description="Passage tokens per window (None: as many as fit next to the query)."
    )
    window_stride: int | None = Field(
        default=None, ge=1, description="Tokens between window starts (None: half a window)."
    )
    window_limit: int | None = Field(
        default=16,
        ge=1,
        description="Most windows read per passage, so one huge passage cannot stall a query: the text after "
        "the last is cut and flagged (rerank_dropped_tokens). 16 windows of the default 256 tokens cover about "
        "1,900 passage tokens. None: no limit.",
    )
    window_aggregate: Literal["max", "first", "mean-top2"] = Field(
        default="max", description="How window scores combine into the passage score."
    )
    cache_entries: int = Field(
        default=0,
        ge=0,
        description="Keep the scores of this many recent (query, passage) pairs in memory, so repeated "
        "queries and overlapping candidate sets are not scored again (0: no cache).",
    )
    cache_path: str | None = Field(
        default=None,
        description="SQLite file that also keeps cached scores across processes (a broken file is bypassed "
        "with a warning).",
    )
    device: str = Field(
        default="auto",
        description="'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Weights dtype. 'auto' is float32 on CPU (half precision is slower there) and float16 on CUDA.",
    )
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        default="auto",
        description="How the cross-encoder runs. 'torch'; 'onnx' (ONNX Runtime, fp32, CPU; the model is exported "
        "once and cached on disk); 'onnx-int8' (the same with int8 dynamically quantized weights: faster; "
        "scores differ slightly from fp32 and by ~1e-4 with the batch a pair is in). "
        "'auto': 'onnx' on CPU when onnxruntime is installed, else 'torch'.",
    )
    onnx_cache_dir: str | None = Field(
        default=None,
        description="Where ONNX exports are kept, keyed by a hash of the model files (rebuilt when they change). "
        "None: $RERANK_PLUGINS_ONNX_CACHE_DIR, else ~/.cache/rerank_plugins/onnx.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="Compute threads for ONNX Runtime and torch (torch's setting is process-wide). "
        "None: the libraries' defaults (one per core).",
    )
    batch_size: int = Field(default=32, gt=0, le=4096, description="At most this many pairs per forward pass.")
    max_batch_tokens: int | Literal["auto"] | None = Field(
        default="auto",
        description="At most this many (padded) tokens per forward pass: long pairs go in smaller "
        "batches, so memory stays bounded at any candidate count. 'auto': 1024 on a CPU (small batches are "
        "as fast there and far leaner: measured by `rerank-plugins bench`), 16384 on a GPU. None: batch_size alone.",
    )
    max_length: int = Field(
        default=256,
        ge=16,
        le=8192,
        description="Token budget of one (query, passage) pair, or of one (query, window) pair with "
        "scorer='windowed'. A passage cut to fit is flagged in its metadata; a query longer than three quarters "
        "of it loses its tail (with a warning and the rerank_query_dropped_tokens flag). "
        "256: the shipped model was trained on pairs of 192-256 tokens (model card).",
    )
    activation: Literal["auto", "sigmoid", "raw", "calibrated"] = Field(
        default="auto",
        description="'calibrated' applies the model's fitted calibration (rerank_calibration.json, see "
        "'rerank-plugins calibrate') so scores are probabilities of relevance; 'sigmoid' maps logits to 0..1 "
        "(ordered like the logits, not calibrated); 'raw' returns the logits; 'auto' is 'calibrated' when "
        "the model has a calibration, else 'sigmoid'.",
    )
    top_n: int | None = Field(default=5, ge=1, description="Keep at most this many candidates (None: keep all).")
    score_threshold: float | None = Field(
        default=None,
        description="Drop candidates scoring below this, before the top_n cut. "
        "It must lie in [0, 1] unless activation='raw'.",
    )
    min_keep: int = Field(
        default=0,
        ge=0,
        description="Keep at least this many candidates even when they fall below score_threshold.",
    )
    max_candidates: int | None = Field(
        default=200,
        ge=1,
        description="Score at most this many candidates, taken in first-stage order; the rest are "
        "dropped with a logged warning (None: no cap).",
    )
    time_budget_ms: float | None = Field(
        default=None,
        gt=0,
        description="Latency budget for scoring one query: candidates are scored in first-stage order, "
        "at most 8 per call, while the next call is expected to end in time; unscored ones follow the "
        "scored ones in first-stage order (kept, with rerank_scoring='unscored'), and the result counts them. "
        "None: score everything.",
    )
    cascade_keep: int | Literal["auto"] | None = Field(
        default="auto",
        description="Cascade: a cheap pass (cascade_model, reading at most cascade_max_length tokens of each pair) "
        "scores every candidate and only the best cascade_keep are scored by the full model; the others follow them "
        "in the cheap pass's order (kept, with rerank_scoring='pruned', no relevance score, the cheap score in "
        "rerank_cascade_score). When the cheap pass is the model itself, a pair it read whole keeps that score (it "
        "is the full model's). 'auto': 30 for a cross-encoder on a CPU (it pays only for long passages), else off. "
        "None (or 'off' in a settings file): the full model scores every candidate.",
    )
    cascade_max_length: int = Field(
        default=128,
        ge=16,
        le=8192,
        description="Token budget of one pair in the cascade's cheap pass (a query keeps at most three "
        "quarters of it).",
    )
    cascade_model: str | None = Field(
        default=None,
        description="Cross-encoder of the cascade's cheap pass. None: the reranking model itself (one copy of "
        "the weights), reading only the first cascade_max_length tokens of each pair.",
    )
    first_stage_weight: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Order by (1 - w) x min-max normalised relevance + w x first-stage rank score "
        "(1 for the first candidate down to 0 for the last); 0 orders by relevance alone. "
        "A guard for domains where the reranker alone trails the first stage. None: the model's own "
        "guard (rerank_guard.json in its folder, chosen on dev data; the shipped model has one), else 0.",
    )
    dedupe_by_content: bool = Field(
        default=True,
        description="Also treat candidates with different ids but identical text as duplicates "
        "(ids alone are compared when False; candidates without an id are always compared by text).",
    )
    text: Literal["content", "content_with_metadata"] = Field(
        default="content",
        description="Text to score: the passage only, or the passage preceded by the metadata "
        "fields named in metadata_keys (they eat into the token budget).",
    )
    metadata_keys: tuple[str, ...] = Field(
        default=(),
        description="Metadata fields written as 'key: value' lines before the passage when "
        "text='content_with_metadata' (empty: LlamaIndex's embed view / all string fields).",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Allow a model repository to run its own Python code. Off by default.",
    )
    allow_pickle_weights: bool = Field(
        default=False,
        description="Accept pickle-based weight files (pytorch_model.bin), which can run code when loaded. "
        "Off by default: only safetensors weights load.",
    )
    allow_download: bool | None = Field(
        default=None,
        description="Fetch a model id from the Hugging Face Hub on first use. None (default): yes, unless "
        "HF_HUB_OFFLINE=1, as sentence-transformers, LangChain and LlamaIndex do; an unreachable Hub fails "
        "within seconds with the fix in the message. False: local paths and the local cache only.",
    )

    @field_validator("max_batch_tokens")
    @classmethod
    def _check_max_batch_tokens(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 16:
            raise ValueError(f"max_batch_tokens={value} is too small; use at least 16, 'auto' or None")
        return value

    @field_validator("cascade_keep", mode="before")
    @classmethod
    def _cascade_keep(cls, value: Any) -> Any:
        # settings files have no null: cascade_keep = "off" (or false) turns the cascade off
        if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none", "null")):
            return None
        if isinstance(value, int) and value < 1:
            raise ValueError(f"cascade_keep={value} must be at least 1 (or 'auto', or None for no cascade)")
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"unknown device {value!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return value

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
        if self.scorer == "remote":
            url = self.remote_url or ""
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    "scorer='remote' needs remote_url, the http(s) base URL of a /rerank server "
                    f"(got {self.remote_url!r})"
                )
        if self.scorer == "ensemble" and not self.members:
            raise ValueError("scorer='ensemble' needs at least one entry in members")
        if self.member_weights is not None and len(self.member_weights) != len(self.members):
            raise ValueError(f"{len(self.member_weights)} member_weights for {len(self.members)} members")
        if self.member_weights is not None and not sum(self.member_weights) > 0:
            raise ValueError("member_weights are all 0; give at least one member a positive weight")
        if isinstance(self.cascade_keep, int) and self.cascade_model is None:
            if self.scorer not in ("cross-encoder", "windowed"):
                raise ValueError(
                    f"cascade_keep with scorer={self.scorer!r} needs cascade_model, a cross-encoder for the cheap "
                    "pass (without it the cascade reads the reranking model itself at cascade_max_length tokens)"
                )
            if self.cascade_max_length >= self.max_length:
                raise ValueError(
                    f"cascade_max_length={self.cascade_max_length} is not below max_length={self.max_length}, so the "
                    "cascade's cheap pass would cost as much as the full one; lower cascade_max_length (e.g. 128)"
                )
        if self.top_n is not None and self.min_keep > self.top_n:
            raise ValueError(f"min_keep={self.min_keep} exceeds top_n={self.top_n}; lower min_keep or raise top_n")
        return self

    # ------------------------------------------------------------------ loaders
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RerankConfig:
        """Build from a mapping; a ``rerank`` or ``rerank_plugins`` sub-table is accepted too."""
        for key in ("rerank_plugins", "rerank"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and len(data) == 1:
                data = inner
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(explain(exc)) from exc

    @classmethod
    def from_file(cls, path: str | Path) -> RerankConfig:
        """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (safe parsers only).

        The rerank settings sit at the top level; tables of other tools (``[serve]``, ``[tool.x]``...)
        are left to them. An unknown top-level setting is still an error (a typo must not pass).
        """
        return cls.from_mapping(rerank_section(load_settings_file(path)))

    @classmethod
    def resolve(
        cls, config: RerankConfig | None = None, *, environ: Mapping[str, str] | None = None, **keywords: Any
    ) -> RerankConfig:
        """The settings in force: ``keywords`` > ``config`` (its explicitly set fields) > ``RERANK_PLUGINS_*``
        environment variables > defaults. The adapters, the CLI and the server all resolve this way.

        Example:
            >>> RerankConfig.resolve(RerankConfig(top_n=3), environ={"RERANK_PLUGINS_TOP_N": "1"}).top_n
            3
            >>> RerankConfig.resolve(environ={"RERANK_PLUGINS_METADATA_KEYS": "title,src"}).metadata_keys
            ('title', 'src')
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = env_values(environ, ENV_PREFIX, cls.model_fields, skip=ENV_PREFIX + "SERVE_")
        if config is not None:
            values.update(config.model_dump(exclude_unset=True))
        values.update(keywords)
        return cls.from_mapping(values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, base: RerankConfig | None = None) -> RerankConfig:
        """Settings from ``RERANK_PLUGINS_<FIELD>`` variables over ``base`` (or the defaults).

        ``none``/``null`` or an empty value means None; other values are parsed by pydantic.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = base.model_dump(exclude_unset=True) if base else {}
        # RERANK_PLUGINS_SERVE_* belong to the serving settings
        values.update(env_values(environ, ENV_PREFIX, cls.model_fields, skip=ENV_PREFIX + "SERVE_"))
        return cls.from_mapping(values)

    def cascade_config(self) -> RerankConfig:
        """Settings of the cascade's cheap pass: ``cascade_model`` (or ``model``) as a plain cross-encoder
        reading ``cascade_max_length`` tokens; device, backend, threads and cache as configured.

        Example:
            >>> cheap = RerankConfig(cascade_keep=20).cascade_config()
            >>> cheap.max_length, cheap.cascade_keep, cheap.scorer
            (128, None, 'cross-encoder')
        """
        return self.merged(
            scorer="cross-encoder",
            model=self.cascade_model or self.model,
            max_length=self.cascade_max_length,
            cascade_keep=None,
            duo_model=None,
            members=(),
            member_weights=None,
        )

    def merged(self, **overrides: Any) -> RerankConfig:
        """A copy with ``overrides`` applied and validated again."""
        return self.from_mapping({**self.model_dump(exclude_unset=True), **overrides})


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
    own = set(RerankConfig.model_fields) | {"rerank", "rerank_plugins"}
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
    """The configuration reference table of docs/configuration.md, generated from :class:`RerankConfig`."""
    rows = ["| field | env variable | default | description |", "| --- | --- | --- | --- |"]
    for name, f in RerankConfig.model_fields.items():
        default = f.default if f.default_factory is None else f.default_factory()  # type: ignore[call-arg]
        rows.append(
            f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | `{default!r}` | {(f.description or '').replace('|', '/')} |"
        )
    return "\n".join(rows)
