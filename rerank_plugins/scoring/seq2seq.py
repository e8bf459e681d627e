"""Sequence-to-sequence rerankers: MonoT5, RankT5-style and duoT5 (T5 encoder-decoders).

* MonoT5 (Nogueira et al., 2020): ``"Query: q Document: d Relevant:"``; the score
  comes from the logits of the "true" and "false" tokens at the first decoding
  step: ``log p(true)`` (default) or ``p(true)`` after a softmax over the two.
* RankT5-style (Zhuang et al., 2023): the raw logit of one designated token at the
  first decoding step is the score.
* duoT5 (Pradeep et al., 2021): ``"Query: q Document0: a Document1: b Relevant:"``
  gives p(a more relevant than b); over the top ``k`` candidates of a pointwise
  first pass, each is scored by the symmetric sum
  ``s_i = sum_{j != i} p(i > j) + (1 - p(j > i))``.

The document is truncated *before* the prompt is formatted, so the prompt's tail
("Relevant:") is never cut off; a cut document is reported in its note.

Example:
    >>> [round(x, 4) for x in monot5_scores([2.0, 0.0], [0.0, 0.0], "prob")]
    [0.8808, 0.5]
    >>> [round(x, 4) for x in duo_aggregate([[0.0, 0.9], [0.2, 0.0]])]
    [1.7, 0.3]
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

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
from rerank_plugins.scoring.identity import downloads_allowed, ensure_hub_reachable, model_identity

__all__ = ["DuoT5Scorer", "MonoT5Scorer", "RankT5Scorer", "duo_aggregate", "monot5_scores"]

logger = logging.getLogger(__name__)


def monot5_scores(
    true_logits: Sequence[float], false_logits: Sequence[float], mode: Literal["log_prob", "prob"]
) -> list[float]:
    """log p(true) or p(true) from the two token logits (softmax over the pair)."""
    out = []
    for t, f in zip(true_logits, false_logits, strict=True):
        m = max(t, f)
        log_p = t - (m + math.log(math.exp(t - m) + math.exp(f - m)))
        out.append(log_p if mode == "log_prob" else math.exp(log_p))
    return out


def duo_aggregate(prefs: Sequence[Sequence[float]]) -> list[float]:
    """Symmetric sum over a matrix ``prefs[i][j] = p(i more relevant than j)`` (diagonal ignored)."""
    n = len(prefs)
    return [sum(prefs[i][j] + (1.0 - prefs[j][i]) for j in range(n) if j != i) for i in range(n)]


class _T5:
    """A loaded T5 model and tokenizer, with the lock that guards them."""

    def __init__(self, config: RerankConfig) -> None:
        from rerank_plugins.scoring.loading import refused_pickle_hint, resolve_device, resolve_model

        self.torch = require("torch", "T5 rerankers")
        transformers = require("transformers", "T5 rerankers")
        name = resolve_model(config.model)
        self.name = name
        self.identity = model_identity(name)
        self.device = resolve_device(config.device)
        local = Path(name).expanduser().exists()
        download = downloads_allowed(config.allow_download)
        if download:
            ensure_hub_reachable(name)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                name, local_files_only=not download, trust_remote_code=config.trust_remote_code
            )
            # safetensors only, unless the user accepts pickle-based weight files (code execution risk)
            self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(
                name,
                local_files_only=not download,
                trust_remote_code=config.trust_remote_code,
                use_safetensors=not config.allow_pickle_weights,
            ).to(self.device)
        except Exception as exc:
            hint = refused_pickle_hint(name, local, config.allow_pickle_weights) or (
                "Check the directory holds a complete T5 checkpoint (config.json, tokenizer, weights)."
                if local
                else "It is not a local directory or cached; download it where the Hub is reachable (unset "
                "HF_HUB_OFFLINE, allow_download not False), or pass a local path."
            )
            raise ModelLoadError(f"Could not load T5 reranker {name!r}: {exc}. {hint}") from exc
        self.model.eval()
        self.start_id = int(self.model.config.decoder_start_token_id)
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def token_id(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ModelLoadError(
                f"{word!r} is {len(ids)} tokens in the vocabulary of {self.name!r}; the score needs a single token. "
                "Configure the token pair of this model (e.g. tokens=('▁true', '▁false'))."
            )
        return int(ids[0])

    def first_step_logits(self, prompts: list[str], max_length: int, batch_size: int) -> Any:
        check_same_process(self.pid, self.name)
        torch = self.torch
        rows = []
        with self.lock, torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                raise_if_cancelled()
                chunk = prompts[start : start + batch_size]
                enc = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
                ).to(self.device)
                decoder = torch.full((len(chunk), 1), self.start_id, dtype=torch.long, device=self.device)
                rows.append(self.model(**enc, decoder_input_ids=decoder).logits[:, 0, :].float().cpu())
        return torch.cat(rows, dim=0)

    def fit(self, text: str, room: int) -> tuple[str, int]:
        """``text`` cut to ``room`` tokens at a token boundary (original characters), and tokens dropped."""
        check_same_process(self.pid, self.name)
        with self.lock:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        if len(offsets) <= room:
            return text, 0
        if room <= 0:
            return "", len(offsets)
        return text[: offsets[room - 1][1]], len(offsets) - room

    def count(self, text: str) -> int:
        check_same_process(self.pid, self.name)
        with self.lock:
            return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


class MonoT5Scorer(Scorer):
    """MonoT5 pointwise scorer.

    Args:
        config: Settings (``model``, ``device``, ``max_length``, ``batch_size``...).
        tokens: The (relevant, not relevant) words; each must be one token of the vocabulary.
        mode: ``"log_prob"`` (log p(true), default) or ``"prob"``.
    """

    template = "Query: {query} Document: {document} Relevant:"

    def __init__(
        self,
        config: RerankConfig | None = None,
        *,
        tokens: tuple[str, str] = ("true", "false"),
        mode: Literal["log_prob", "prob"] = "log_prob",
        **overrides: Any,
    ) -> None:
        base = config or RerankConfig()
        self.config = base.merged(**overrides) if overrides else base
        self._t5 = _T5(self.config)
        self.name = self._t5.name
        self.mode = mode
        self.true_id, self.false_id = self._t5.token_id(tokens[0]), self._t5.token_id(tokens[1])

    @property
    def score_kind(self) -> str:
        return "probability" if self.mode == "prob" else "log_prob"  # p(true), or its log

    @property
    def fingerprint(self) -> str:
        """Settings that change a score (a cache key part)."""
        kind = f"{type(self).__name__}|{self.mode}|{self.true_id},{self.false_id}"
        return f"{self._t5.identity}|{kind}|{self.config.max_length}"

    def _prompts(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[PairNote]]:
        prompts, notes = [], []
        fixed = self._t5.count(self.template.format(query="", document="")) + 1  # + </s>
        for q, d in pairs:
            room = self.config.max_length - fixed - self._t5.count(q)
            if room < 8:
                raise RerankInputError(
                    f"The query leaves {max(room, 0)} tokens of max_length={self.config.max_length} for the document; "
                    "shorten the query or raise max_length (the query and the prompt are never cut)."
                )
            doc, dropped = self._t5.fit(d, room)
            prompts.append(self.template.format(query=q, document=doc))
            notes.append(PairNote("truncated", dropped) if dropped else PairNote())
        return prompts, notes

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        pairs = check_pairs(pairs)
        if not pairs:
            return ScoredPairs([], [])
        prompts, notes = self._prompts(pairs)
        logits = self._t5.first_step_logits(prompts, self.config.max_length, self.config.batch_size)
        return ScoredPairs(check_scores(self._scores(logits), len(pairs), self.name), notes)

    def _scores(self, logits: Any) -> list[float]:
        return monot5_scores(logits[:, self.true_id].tolist(), logits[:, self.false_id].tolist(), self.mode)


class RankT5Scorer(MonoT5Scorer):
    """RankT5-style scorer: the raw first-step logit of one token is the score.

    Args:
        config: Settings.
        token: The scoring token (RankT5 checkpoints use an unused vocabulary entry).
    """

    @property
    def score_kind(self) -> str:
        return "raw"  # one logit

    def __init__(self, config: RerankConfig | None = None, *, token: str = "true", **overrides: Any) -> None:
        super().__init__(config, tokens=(token, token), **overrides)

    def _scores(self, logits: Any) -> list[float]:
        return [float(x) for x in logits[:, self.true_id].tolist()]


class DuoT5Scorer(Scorer):
    """duoT5 as a second stage after a pointwise scorer.

    Pairs are grouped by query. Every candidate gets its pointwise score; the
    ``top_k`` best of each query are then re-scored pairwise (``k * (k - 1)``
    prompts) and ordered by the symmetric sum, placed above the rest.

    Args:
        first: The pointwise scorer.
        config: Settings of the duoT5 model (``model`` must name a duoT5 checkpoint).
        top_k: Candidates per query re-scored pairwise (the cost is quadratic).
        tokens: The (true, false) words of the duo model.
    """

    template = "Query: {query} Document0: {a} Document1: {b} Relevant:"
    set_dependent = True  # the top_k are ordered among themselves

    def __init__(
        self,
        first: Scorer,
        config: RerankConfig | None = None,
        *,
        top_k: int = 10,
        tokens: tuple[str, str] = ("true", "false"),
        **overrides: Any,
    ) -> None:
        if top_k < 2:
            raise ValueError(f"top_k must be at least 2 for pairwise scoring, got {top_k}")
        base = config or RerankConfig()
        self.config = base.merged(**overrides) if overrides else base
        self.first = first
        self.top_k = top_k
        self._t5 = _T5(self.config)
        self.true_id, self.false_id = self._t5.token_id(tokens[0]), self._t5.token_id(tokens[1])
        self.name = f"duo({first.name} -> {self._t5.name})"

    @property
    def score_kind(self) -> str:
        return "duo"  # the top_k ordered by duoT5's pairwise preferences, placed above the rest

    def _prefs(self, query: str, docs: list[str]) -> list[list[float]]:
        fixed = self._t5.count(self.template.format(query="", a="", b="")) + 1
        room = (self.config.max_length - fixed - self._t5.count(query)) // 2
        if room < 8:
            raise RerankInputError("The query leaves too little room for two documents; raise max_length.")
        cut = [self._t5.fit(d, room)[0] for d in docs]
        order = [(i, j) for i in range(len(docs)) for j in range(len(docs)) if i != j]
        prompts = [self.template.format(query=query, a=cut[i], b=cut[j]) for i, j in order]
        logits = self._t5.first_step_logits(prompts, self.config.max_length, self.config.batch_size)
        probs = monot5_scores(logits[:, self.true_id].tolist(), logits[:, self.false_id].tolist(), "prob")
        prefs = [[0.0] * len(docs) for _ in docs]
        for (i, j), p in zip(order, probs, strict=True):
            prefs[i][j] = p
        return prefs

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        pairs = list(pairs)
        first = self.first.score_detailed(pairs)
        scores = check_scores(first.scores, len(pairs), self.first.name)
        by_query: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(pairs):
            by_query.setdefault(q, []).append(i)
        final = list(scores)
        for q, idx in by_query.items():
            top = sorted(idx, key=lambda i: -scores[i])[: self.top_k]
            if len(top) < 2:
                continue
            duo = duo_aggregate(self._prefs(q, [pairs[i][1] for i in top]))
            # keep the re-scored block above every other candidate of this query
            floor = max(scores[i] for i in idx) + 1.0
            for i, s in zip(top, duo, strict=True):
                final[i] = floor + s
        return ScoredPairs(final, first.notes)
