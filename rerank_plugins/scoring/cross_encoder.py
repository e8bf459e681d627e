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

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_plugins._extras import require
from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import ModelLoadError
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
from rerank_plugins.scoring.loading import (
    PassageLayout,
    fit_query,
    load_guard,
    local_files,
    refused_pickle_hint,
    resolve_backend,
    resolve_device,
    resolve_dtype,
    resolve_model,
    token_budget_batches,
)

__all__ = ["CrossEncoderScorer", "clear_loaded_models"]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_models: dict[tuple[Any, ...], _LoadedModel] = {}


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
        from rerank_plugins.scoring.onnx_backend import BACKEND_QUANTIZE, OnnxRunner

        cache = Path(config.onnx_cache_dir).expanduser() if config.onnx_cache_dir else None
        runner = OnnxRunner(
            name,
            local_files(name, is_local),
            model,
            ce.tokenizer,
            quantize=BACKEND_QUANTIZE[backend],
            cache_dir=cache,
            threads=config.threads,
        )
        dtype = backend.removeprefix("onnx-") if runner.quantize else "float32"
        ce = model = None  # the session holds its own copy of the weights; free the torch one
    logger.info("loaded cross-encoder %s on %s (%s, %s, %d label(s))", name, device, backend, dtype, num_labels)
    return _LoadedModel(name, device, dtype, ce, model, tokenizer, num_labels, threading.Lock(), torch, backend, runner)


def _shared_model(config: RerankConfig) -> _LoadedModel:
    name = resolve_model(config.model)
    device = resolve_device(config.device)
    backend = resolve_backend(config.backend, device, Path(name))
    dtype = resolve_dtype(config.dtype, device) if backend == "torch" else "float32"
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


def clear_loaded_models() -> None:
    """Forget every shared cross-encoder model (its memory is freed once unused)."""
    with _lock:
        _models.clear()


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
        """The model files' identity and every setting that changes a score (a cache key part).

        Reduced precision (int8 weights, half-precision floats) is part of it: those scores differ from fp32's,
        which torch and ONNX Runtime share (equal within 1e-4).
        """
        dtype = self._loaded.dtype
        precision = "" if dtype == "float32" else f"|{dtype}"
        return f"{model_identity(self.name)}|{self.config.max_length}|{self._logit_mapping}{precision}"

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

    def layout(self, pairs: Sequence[tuple[str, str]]) -> PassageLayout:
        """Where each pair's passage tokens sit and how each query fits ``max_length`` (for windows)."""
        lm = self._loaded
        lm.check_process()
        budget = self.config.max_length
        with lm.lock:
            tok = lm.tokenizer
            queries = {q: fit_query(tok, q, budget, lm.special_tokens) for q in {q for q, _ in pairs}}
            enc = tok([p for _, p in pairs], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return PassageLayout(budget, lm.special_tokens, queries, [list(map(tuple, o)) for o in enc["offset_mapping"]])

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (use it under no other lock than the scorer's own calls)."""
        return self._loaded.tokenizer

    @property
    def onnx_path(self) -> Path | None:
        """The ONNX graph the scorer runs (None on the torch backend)."""
        runner = self._loaded.runner
        return None if runner is None else Path(runner.path)

    @property
    def _logit_mapping(self) -> str:
        cal = self.calibration
        activation = "raw" if self.config.activation == "raw" else f"platt({cal.a},{cal.b})" if cal else "sigmoid"
        return f"{activation}|{self._loaded.dtype}"

    def cheap_pass_is_exact(self, cheap: Scorer) -> bool:
        base = cheap.unwrapped
        return isinstance(base, CrossEncoderScorer) and base.shares_weights_with(self)

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
        """'torch', 'onnx', 'onnx-int8' or 'onnx-int8-ffn' (what 'auto' resolved to)."""
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
