"""Cross-encoder scoring on sentence-transformers ``CrossEncoder``.

The model is loaded once per (model, device, dtype, trust and pickle settings) per process
and shared: :func:`get_scorer` hands every adapter the same object for the same
settings, and scorers with different batch sizes or lengths still share one copy
of the weights.

Pairs are tokenized with ``truncation="only_second"``; a query is cut only when it would take more
than three quarters of ``max_length`` (:func:`fit_query`, with a warning and a note);
a passage that does not fit is cut and reported in its :class:`PairNote`.
Batches are formed over length-sorted pairs and scores are restored to input
order. A lock serialises tokenizer and forward calls, because Hugging Face fast
tokenizers are not thread-safe ("Already borrowed").
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rerank_plugins._extras import require
from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import ModelLoadError, RerankInputError
from rerank_plugins.scoring.base import (
    PairNote,
    ScoredPairs,
    Scorer,
    check_pairs,
    check_same_process,
    check_scores,
    raise_if_cancelled,
)
from rerank_plugins.scoring.calibration import CALIBRATION_FILE, Calibration, load_calibration
from rerank_plugins.scoring.identity import downloads_allowed, ensure_hub_reachable, model_identity

__all__ = [
    "CrossEncoderScorer",
    "clear_model_cache",
    "get_scorer",
    "resolve_backend",
    "resolve_device",
    "GUARD_FILE",
    "FittedQuery",
    "fit_query",
    "load_guard",
    "resolve_model",
    "token_budget_batches",
]

logger = logging.getLogger(__name__)

_MIN_PASSAGE_TOKENS = 8
_lock = threading.Lock()
_models: dict[tuple[Any, ...], _LoadedModel] = {}
_scorers: dict[tuple[Any, ...], Scorer] = {}
#: Settings used by the pipeline only (selection, dedupe, text): they never change a score.
_PIPELINE_ONLY = (
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


def resolve_model(model: str | None) -> str:
    """The model id or path to load: ``model``, or the shipped default when None."""
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise ModelLoadError(f"model must be a non-empty Hugging Face id or path, got {model!r}")
        return model
    from rerank_plugins.models import default_model_path

    return str(default_model_path())


def refused_pickle_hint(name: str, is_local: bool, allow_pickle_weights: bool) -> str:
    """Why a local folder without safetensors weights did not load ('' when that is not the reason)."""
    if not is_local or allow_pickle_weights or any(Path(name).expanduser().glob("*.safetensors")):
        return ""
    return (
        "It has no .safetensors weights, and pickle-based files (pytorch_model.bin) are refused by "
        "default because loading them can run code. Convert it with save_pretrained(safe_serialization=True), "
        "or set allow_pickle_weights=True if you trust its source."
    )


def resolve_device(device: str) -> str:
    """Map ``"auto"`` to cuda > mps > cpu; check an explicit accelerator is present."""
    torch = require("torch", "Cross-encoder scoring")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device={device!r} was asked for but CUDA is not available; use device='auto' or 'cpu'")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("device='mps' was asked for but MPS is not available; use device='auto' or 'cpu'")
    return device


def resolve_backend(backend: str, device: str) -> str:
    """Map ``"auto"`` to ``"onnx"`` on CPU when ONNX Runtime is installed, else ``"torch"``."""
    from rerank_plugins.scoring.onnx_backend import onnxruntime_available

    if backend == "auto":
        return "onnx" if device == "cpu" and onnxruntime_available() else "torch"
    if backend.startswith("onnx") and device != "cpu":
        raise ModelLoadError(f"backend={backend!r} runs on the CPU only; use device='cpu' or backend='torch'")
    return backend


def _resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "float16" if device.startswith("cuda") else "float32"
    if device == "cpu" and dtype != "float32":
        logger.warning("dtype=%s on CPU is usually several times slower than float32", dtype)
    return dtype


@dataclass
class _LoadedModel:
    """The heavy, shared part: weights, tokenizer and the lock that guards them."""

    name: str
    device: str
    dtype: str
    cross_encoder: Any
    model: Any
    tokenizer: Any
    num_labels: int
    lock: threading.Lock
    torch: Any
    backend: str = "torch"
    runner: Any = None
    pid: int = field(default_factory=os.getpid)

    def check_process(self) -> None:
        """Refuse use in a process forked after the load (before touching its lock or thread pools)."""
        check_same_process(self.pid, self.name)

    def logits(self, encoding: Any) -> Any:
        """Logits of a tokenized batch (torch tensors in, a torch tensor out)."""
        if self.runner is not None:
            return self.runner.logits(encoding)
        return self.model(**encoding).logits

    @property
    def special_tokens(self) -> int:
        return int(self.tokenizer.num_special_tokens_to_add(pair=True))


def _local_files(name: str, is_local: bool) -> Path:
    if is_local:
        return Path(name).expanduser()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, local_files_only=True))


def _load(name: str, device: str, dtype: str, backend: str, config: RerankConfig) -> _LoadedModel:
    trust_remote_code, allow_download = config.trust_remote_code, downloads_allowed(config.allow_download)
    is_local = Path(name).expanduser().exists()
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if not is_local and looks_like_path:
        raise ModelLoadError(
            f"Model directory {name!r} does not exist. Pass an existing local directory "
            "(with config.json and weights) or a Hugging Face id such as 'cross-encoder/ms-marco-MiniLM-L-6-v2'."
        )
    torch = require("torch", "Cross-encoder scoring")
    st = require("sentence_transformers", "Cross-encoder scoring")
    if trust_remote_code:
        logger.warning("trust_remote_code=True: the model repository %r may run its own Python code", name)
    if allow_download:
        ensure_hub_reachable(name)
    try:
        ce = st.CrossEncoder(
            str(Path(name).expanduser()) if is_local else name,
            device=device,
            trust_remote_code=trust_remote_code,
            local_files_only=not allow_download,
            # safetensors only, unless the user accepts pickle-based weight files (code execution risk)
            model_kwargs={"dtype": getattr(torch, dtype), "use_safetensors": not config.allow_pickle_weights},
        )
    except Exception as exc:  # every loader failure gets one actionable message
        pickle_hint = refused_pickle_hint(name, is_local, config.allow_pickle_weights)
        if pickle_hint:
            hint = pickle_hint
        elif is_local:
            hint = (
                "The directory exists but could not be loaded: check it holds config.json, tokenizer files "
                "and complete weights (model.safetensors), e.g. by saving it again with save_pretrained()."
            )
        elif not allow_download:
            hint = (
                "It is not a local directory and not in the local Hugging Face cache, and downloads are off "
                "(HF_HUB_OFFLINE=1 or allow_download=False). Download it once where the Hub is reachable "
                "(unset HF_HUB_OFFLINE, or allow_download=True), or pass the path of a local copy."
            )
        else:
            hint = "Check the id is spelled right and the Hub is reachable, or pass the path of a local copy."
        raise ModelLoadError(f"Could not load cross-encoder {name!r}: {type(exc).__name__}: {exc}. {hint}") from exc
    model = ce.transformers_model
    if getattr(model.config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"Model {name!r} is an encoder-decoder ({model.config.model_type}) model, not a cross-encoder; "
            "for a MonoT5 or RankT5 checkpoint set scorer='monot5' or scorer='rankt5'."
        )
    vocab_rows = model.get_input_embeddings().num_embeddings
    if len(ce.tokenizer) > vocab_rows:
        raise ModelLoadError(
            f"The tokenizer of {name!r} has {len(ce.tokenizer)} tokens but the model's embedding table has "
            f"{vocab_rows} rows: the tokenizer files do not belong to these weights. Save the model and its own "
            "tokenizer together (model.save_pretrained(d); tokenizer.save_pretrained(d))."
        )
    num_labels = int(getattr(model.config, "num_labels", 1))
    if num_labels not in (1, 2):
        raise ModelLoadError(
            f"Model {name!r} has {num_labels} output labels; a reranker needs 1 (a relevance logit) or 2 "
            "(not relevant / relevant). Use a cross-encoder trained for relevance."
        )
    model.eval()
    if ce.tokenizer.pad_token is None:
        ce.tokenizer.pad_token = ce.tokenizer.eos_token or ce.tokenizer.unk_token
        model.config.pad_token_id = ce.tokenizer.pad_token_id
    if config.threads and backend == "torch":
        torch.set_num_threads(config.threads)
    runner, tokenizer = None, ce.tokenizer
    if backend.startswith("onnx"):
        from rerank_plugins.scoring.onnx_backend import OnnxRunner

        cache = Path(config.onnx_cache_dir).expanduser() if config.onnx_cache_dir else None
        runner = OnnxRunner(
            name,
            _local_files(name, is_local),
            model,
            ce.tokenizer,
            quantize=backend == "onnx-int8",
            cache_dir=cache,
            threads=config.threads,
        )
        dtype = "int8" if runner.quantize else "float32"
        ce = model = None  # the session holds its own copy of the weights; free the torch one
    logger.info("loaded cross-encoder %s on %s (%s, %s, %d label(s))", name, device, backend, dtype, num_labels)
    return _LoadedModel(name, device, dtype, ce, model, tokenizer, num_labels, threading.Lock(), torch, backend, runner)


def _shared_model(config: RerankConfig) -> _LoadedModel:
    name = resolve_model(config.model)
    device = resolve_device(config.device)
    backend = resolve_backend(config.backend, device)
    dtype = _resolve_dtype(config.dtype, device) if backend == "torch" else "float32"
    key = (
        model_identity(name),
        device,
        dtype,
        backend,
        config.onnx_cache_dir,
        config.threads,
        config.trust_remote_code,
        config.allow_pickle_weights,
    )
    with _lock:
        loaded = _models.get(key)
        if loaded is None:
            loaded = _load(name, device, dtype, backend, config)
            _models[key] = loaded
        return loaded


def clear_model_cache() -> None:
    """Forget every shared model and scorer (their memory is freed once unused)."""
    with _lock:
        _models.clear()
        _scorers.clear()


class CrossEncoderScorer(Scorer):
    """Scores (query, passage) pairs with a cross-encoder.

    Args:
        model: Hugging Face id or local path (None: the shipped default model).
        config: A :class:`RerankConfig`; ``model`` and ``overrides`` take precedence.
        **overrides: Any :class:`RerankConfig` field (``batch_size``, ``max_length``...).

    Use :func:`get_scorer` to obtain the process-wide shared instance.

    Example:
        >>> scorer = CrossEncoderScorer("path/to/cross-encoder", device="cpu")  # doctest: +SKIP
        >>> scorer.score([("what is BM25?", "BM25 is a ranking function.")])  # doctest: +SKIP
        [0.93]
    """

    def __init__(self, model: str | None = None, *, config: RerankConfig | None = None, **overrides: Any) -> None:
        base = config or RerankConfig()
        if model is not None:
            overrides["model"] = model
        self.config = base.merged(**overrides) if overrides else base
        self._loaded = _shared_model(self.config)
        self.name = self._loaded.name
        self.calibration = self._resolve_calibration()
        self.recommended_first_stage_weight = load_guard(Path(self.name))

    def _resolve_calibration(self) -> Calibration | None:
        activation = self.config.activation
        if activation in ("sigmoid", "raw"):
            return None
        directory = Path(self.name)
        calibration = load_calibration(directory) if directory.is_dir() else None
        if calibration is None and activation == "calibrated":
            raise ModelLoadError(
                f"activation='calibrated' but model {self.name!r} has no {CALIBRATION_FILE}; fit one with "
                "'rerank-plugins calibrate --model ... --data <labelled dev split>' or use activation='sigmoid'"
            )
        return calibration

    @property
    def fingerprint(self) -> str:
        """The model files' identity and every setting that changes a score (a cache key part)."""
        return f"{model_identity(self.name)}|{self.config.max_length}|{self._logit_mapping}"

    @property
    def score_kind(self) -> str:
        if self.config.activation == "raw":
            return "raw"
        return "calibrated" if self.calibration is not None else "sigmoid"

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens of ``texts`` under this model's tokenizer (without special tokens)."""
        lm = self._loaded
        lm.check_process()
        with lm.lock:
            ids = lm.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return sum(len(x) for x in ids)

    @property
    def _logit_mapping(self) -> str:
        cal = self.calibration
        activation = "raw" if self.config.activation == "raw" else f"platt({cal.a},{cal.b})" if cal else "sigmoid"
        return f"{activation}|{self._loaded.dtype}"

    def shares_weights_with(self, other: CrossEncoderScorer) -> bool:
        """True when both read the same loaded weights and turn logits into scores the same way
        (max_length and batching may differ): a pair read whole gets the same score from both."""
        return self._loaded is other._loaded and self._logit_mapping == other._logit_mapping

    @property
    def max_batch_tokens(self) -> int | None:
        """The padded-token cap of one forward pass ('auto' resolved for the device)."""
        cap = self.config.max_batch_tokens
        if cap == "auto":
            return 1024 if self.device == "cpu" else 16384
        return cap

    @property
    def backend(self) -> str:
        """'torch', 'onnx' or 'onnx-int8' (what 'auto' resolved to)."""
        return self._loaded.backend

    @property
    def device(self) -> str:
        """The device the weights live on."""
        return self._loaded.device

    @property
    def num_labels(self) -> int:
        """1 (a relevance logit) or 2 (score = logit[relevant] - logit[not relevant])."""
        return self._loaded.num_labels

    def _logits_to_scores(self, logits: Any) -> list[float]:
        torch = self._loaded.torch
        logits = logits.float()
        raw = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
        if self.calibration is not None:
            raw = torch.sigmoid(self.calibration.a * raw + self.calibration.b)
        elif self.config.activation != "raw":
            raw = torch.sigmoid(raw)
        return [float(x) for x in raw.tolist()]

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        """Scores in input order, each with a note saying whether its passage was cut."""
        pairs = check_pairs(pairs)
        if not pairs:
            return ScoredPairs([], [])
        lm = self._loaded
        lm.check_process()
        budget = self.config.max_length
        original_pairs = pairs
        with lm.lock:
            tok = lm.tokenizer
            fitted = {q: fit_query(tok, q, budget, lm.special_tokens) for q in {q for q, _ in pairs}}
            q_len = {fit.text: fit.tokens for fit in fitted.values()}
            if any(fit.dropped for fit in fitted.values()):
                pairs = [(fitted[q].text, p) for q, p in pairs]
            p_len = [len(x) for x in tok([p for _, p in pairs], add_special_tokens=False, verbose=False)["input_ids"]]
            notes: list[PairNote] = []
            for (q, _), (original, _), lp in zip(pairs, original_pairs, p_len, strict=True):
                room = budget - lm.special_tokens - q_len[q]
                q_cut = fitted[original].dropped
                notes.append(
                    PairNote("truncated", lp - room, query_dropped_tokens=q_cut)
                    if lp > room
                    else PairNote(query_dropped_tokens=q_cut)
                )
            # Longest first, so the first batch shows the peak memory at once.
            lengths = [min(budget, q_len[q] + lp + lm.special_tokens) for (q, _), lp in zip(pairs, p_len, strict=True)]
            scores: list[float] = [0.0] * len(pairs)
            torch = lm.torch
            with torch.inference_mode():
                for idx in token_budget_batches(lengths, self.config.batch_size, self.max_batch_tokens):
                    raise_if_cancelled()
                    enc = tok(
                        [pairs[i][0] for i in idx],
                        [pairs[i][1] for i in idx],
                        truncation="only_second",
                        max_length=budget,
                        padding=True,
                        return_tensors="pt",
                    ).to(lm.device)
                    for i, s in zip(idx, self._logits_to_scores(lm.logits(enc)), strict=True):
                        scores[i] = s
        return ScoredPairs(check_scores(scores, len(pairs), self.name), notes)


#: A model folder's own ordering guard: ``{"first_stage_weight": w, "chosen_on": "..."}``.
GUARD_FILE = "rerank_guard.json"


def load_guard(directory: Path) -> float:
    """The ``first_stage_weight`` a model folder recommends (its ``rerank_guard.json``), else 0.

    Raises:
        ModelLoadError: when the file exists but does not hold a weight in [0, 1].
    """
    path = directory / GUARD_FILE
    if not path.is_file():
        return 0.0
    try:
        weight = json.loads(path.read_text(encoding="utf-8"))["first_stage_weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= weight <= 1.0:
            raise ValueError(f"first_stage_weight={weight!r} is not a number in [0, 1]")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not a valid guard file ({exc}); fix or delete it") from exc
    return float(weight)


class FittedQuery(NamedTuple):
    """A query as scored: its text, its length in tokens, and how many tokens were cut from its end."""

    text: str
    tokens: int
    dropped: int


def fit_query(tokenizer: Any, query: str, budget: int, special_tokens: int) -> FittedQuery:
    """``query`` as it is scored under ``budget`` tokens per pair (tokenized once, here).

    A query may take at most three quarters of the budget (less the special tokens), so that the passage
    always keeps a quarter (at least 8 tokens); a longer query loses its tail at a token boundary, with
    a warning. Descriptive information needs, chat context and HyDE texts reach such lengths.
    """
    room = max(_MIN_PASSAGE_TOKENS, budget // 4)
    keep = budget - special_tokens - room
    if keep < 1:
        raise RerankInputError(
            f"max_length={budget} leaves no room for a query next to a passage; raise max_length (at least 32)"
        )
    enc = tokenizer(query, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    n = len(enc["input_ids"])
    if n <= keep:
        return FittedQuery(query, n, 0)
    cut_at = enc["offset_mapping"][keep - 1][1]
    logger.warning(
        "a query of %d tokens was cut to its first %d so that passages keep %d of max_length=%d tokens "
        "(raise max_length to read more of it)",
        n,
        keep,
        room,
        budget,
    )
    return FittedQuery(query[:cut_at], keep, n - keep)


def token_budget_batches(lengths: Sequence[int], max_pairs: int, max_tokens: int | None) -> list[list[int]]:
    """Group positions into batches of similar length, longest first.

    A batch holds at most ``max_pairs`` pairs and, padded to its longest member, at
    most ``max_tokens`` tokens (a single pair longer than that still gets its own
    batch), so memory stays bounded at any candidate count. Callers restore input
    order by position.

    Example:
        >>> token_budget_batches([5, 100, 7, 90], max_pairs=8, max_tokens=200)
        [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        too_many = len(current) >= max_pairs
        too_long = max_tokens is not None and (len(current) + 1) * longest > max_tokens
        if current and (too_many or too_long):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _build_scorer(cfg: RerankConfig) -> Scorer:
    scorer: Scorer
    if cfg.scorer == "remote":
        from rerank_plugins.scoring.remote import RemoteScorer

        scorer = RemoteScorer(cfg)
    elif cfg.scorer == "ensemble":
        from rerank_plugins.scoring.ensemble import EnsembleScorer

        scorer = EnsembleScorer(
            [get_scorer(m) for m in cfg.members], weights=cfg.member_weights, normalize=cfg.ensemble_normalize
        )
    elif cfg.scorer == "bi-encoder":
        from rerank_plugins.retrieval.dense import BiEncoderScorer

        scorer = BiEncoderScorer(cfg.model, allow_pickle_weights=cfg.allow_pickle_weights)
    elif cfg.scorer in ("monot5", "rankt5"):
        from rerank_plugins.scoring.seq2seq import MonoT5Scorer, RankT5Scorer

        scorer = MonoT5Scorer(cfg) if cfg.scorer == "monot5" else RankT5Scorer(cfg)
    else:
        scorer = CrossEncoderScorer(config=cfg)
        if cfg.scorer == "windowed":
            from rerank_plugins.scoring.windowed import WindowedScorer

            scorer = WindowedScorer(
                scorer, window=cfg.window_tokens, stride=cfg.window_stride, how=cfg.window_aggregate,
                limit=cfg.window_limit,
            )  # fmt: skip
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
    if cfg.scorer == "bi-encoder" and cfg.model is None:
        from rerank_plugins.retrieval.dense import default_bi_encoder_path

        return str(default_bi_encoder_path())
    return resolve_model(cfg.model)


def get_scorer(config: RerankConfig | None = None, **overrides: Any) -> Scorer:
    """The process-wide shared :class:`CrossEncoderScorer` for these settings.

    Two calls with equal settings return the same object; calls that differ only
    in per-call settings (batch size, length, activation) get distinct scorers
    over one shared copy of the weights.
    """
    cfg = (config or RerankConfig()).merged(**overrides) if overrides else (config or RerankConfig())
    # Every setting except those the pipeline applies after scoring can change a score,
    # so the key is the config itself with the pipeline-only fields reset.
    key = (
        cfg.model if cfg.scorer in ("ensemble", "remote") else model_identity(_model_of(cfg)),
        cfg.model_copy(update={f: RerankConfig.model_fields[f].default for f in _PIPELINE_ONLY}),
    )
    with _lock:
        scorer = _scorers.get(key)
    if scorer is None:
        created = _build_scorer(cfg)
        with _lock:
            scorer = _scorers.setdefault(key, created)
    return scorer
