"""An ensemble of scorers: one batched call per member, scores combined per pair.

Members' scales differ (logits, probabilities), so scores are combined after
normalisation: ``rank`` maps each member's scores over the batch to [0, 1] by
rank (the best pair gets 1; ties share their mean rank), ``identity`` uses them
as they are (right for calibrated members, whose scores are probabilities).
The ensemble score is the weighted mean. Rank normalisation depends on the whole
batch: score a query's candidates together.

Example:
    >>> from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer
    >>> class Fixed(Scorer):
    ...     def __init__(self, s): self.s = s
    ...     def score_detailed(self, pairs): return ScoredPairs(self.s, [PairNote()] * len(self.s))
    >>> EnsembleScorer([Fixed([3.0, 1.0, 2.0]), Fixed([0.1, 0.9, 0.5])]).score([("q", "a")] * 3)
    [0.5, 0.5, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from rerank_plugins.scoring.base import ScoredPairs, Scorer, check_scores

__all__ = ["EnsembleScorer", "rank_normalize"]


def rank_normalize(scores: Sequence[float]) -> list[float]:
    """Ranks scaled to [0, 1] (best = 1); ties get their mean rank; one score maps to 1."""
    n = len(scores)
    if n == 1:
        return [1.0]
    order = sorted(range(n), key=lambda i: scores[i])
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return [r / (n - 1) for r in ranks]


class EnsembleScorer(Scorer):
    """Weighted mean of member scorers' normalised scores.

    Args:
        members: Scorers to combine (each is called once per batch).
        weights: Optional non-negative weights (default: equal).
        normalize: ``"rank"`` (default) or ``"identity"``.
    """

    def __init__(
        self,
        members: Sequence[Scorer],
        *,
        weights: Sequence[float] | None = None,
        normalize: Literal["rank", "identity"] = "rank",
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member scorer")
        weights = list(weights) if weights is not None else [1.0] * len(members)
        if len(weights) != len(members) or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"need one non-negative weight per member with a positive sum, got {weights}")
        if normalize not in ("rank", "identity"):
            raise ValueError(f"normalize must be 'rank' or 'identity', got {normalize!r}")
        self.members = list(members)
        self.weights = [w / sum(weights) for w in weights]
        self.normalize = normalize
        self.name = "ensemble(" + ", ".join(m.name for m in self.members) + ")"
        # rank normalisation scores a pair against the rest of the call
        self.set_dependent = normalize == "rank" or any(m.set_dependent for m in self.members)

    @property
    def score_kind(self) -> str:
        if self.normalize == "rank":
            return "rank"
        kinds = {m.score_kind for m in self.members}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def fingerprint(self) -> str:
        parts = ",".join(f"{m.name}:{m.fingerprint}:{w}" for m, w in zip(self.members, self.weights, strict=True))
        return f"{self.normalize}|{parts}"

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        pairs = list(pairs)
        if not pairs:
            return ScoredPairs([], [])
        combined = [0.0] * len(pairs)
        notes = None
        for member, weight in zip(self.members, self.weights, strict=True):
            out = member.score_detailed(pairs)
            scores = check_scores(out.scores, len(pairs), member.name)
            if notes is None:
                notes = out.notes
            normalised = rank_normalize(scores) if self.normalize == "rank" else scores
            for i, s in enumerate(normalised):
                combined[i] += weight * s
        return ScoredPairs(combined, list(notes or []))
