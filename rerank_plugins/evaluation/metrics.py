"""Ranking metrics as pure functions (standard library only).

Conventions follow trec_eval / ranx: a *run* maps query id -> {doc id: score}
(higher is better, ties broken by doc id descending, as trec_eval does); *qrels* map
query id -> {doc id: graded relevance}. Queries with no relevant document are
skipped by every metric (their value is undefined), and the mean is taken over
the queries of the qrels that have at least one relevant document.

Metric names are strings as in ranx: ``"ndcg@10"``, ``"mrr@10"``, ``"map"``,
``"map@100"``, ``"recall@100"``.

Example:
    >>> qrels = {"q": {"a": 1}}
    >>> run = {"q": {"b": 0.9, "a": 0.5}}
    >>> evaluate(qrels, run, ["mrr@10", "recall@1"])
    {'mrr@10': 0.5, 'recall@1': 0.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = ["evaluate", "per_query", "ranked_ids"]

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def ranked_ids(scores: Mapping[str, float]) -> list[str]:
    """Doc ids by score descending; ties by doc id descending (trec_eval's rule)."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def _parse(metric: str) -> tuple[str, int | None]:
    name, _, cutoff = metric.lower().partition("@")
    if name not in {"ndcg", "mrr", "map", "recall", "precision"}:
        raise ValueError(f"Unknown metric {metric!r}; use one of ndcg@k, mrr@k, map, map@k, recall@k, precision@k")
    if cutoff:
        k = int(cutoff)
        if k <= 0:
            raise ValueError(f"Metric cutoff must be positive, got {metric!r}")
        return name, k
    if name in {"ndcg", "mrr", "map"}:
        return name, None
    raise ValueError(f"{name} needs a cutoff, e.g. '{name}@10'")


def _one(name: str, k: int | None, ranking: list[str], rel: Mapping[str, int]) -> float:
    top = ranking if k is None else ranking[:k]
    relevant = {d for d, g in rel.items() if g > 0}
    if name == "ndcg":
        dcg = sum((rel.get(d, 0) if rel.get(d, 0) > 0 else 0) / math.log2(i + 2) for i, d in enumerate(top))
        ideal = sorted((g for g in rel.values() if g > 0), reverse=True)
        ideal = ideal if k is None else ideal[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        return dcg / idcg if idcg else 0.0
    if name == "mrr":
        for i, d in enumerate(top):
            if d in relevant:
                return 1.0 / (i + 1)
        return 0.0
    if name == "map":
        hits, total = 0, 0.0
        for i, d in enumerate(top):
            if d in relevant:
                hits += 1
                total += hits / (i + 1)
        return total / len(relevant)
    if name == "recall":
        return len(relevant.intersection(top)) / len(relevant)
    # precision
    assert k is not None
    return len(relevant.intersection(top)) / k


def per_query(qrels: Qrels, run: Run, metric: str) -> dict[str, float]:
    """Value of ``metric`` for every query of ``qrels`` that has a relevant document."""
    name, k = _parse(metric)
    out: dict[str, float] = {}
    for qid, rel in qrels.items():
        if not any(g > 0 for g in rel.values()):
            continue
        out[qid] = _one(name, k, ranked_ids(run.get(qid, {})), rel)
    return out


def evaluate(qrels: Qrels, run: Run, metrics: Iterable[str]) -> dict[str, float]:
    """Mean of each metric over the judged queries (those with a relevant document)."""
    result: dict[str, float] = {}
    for metric in metrics:
        values = per_query(qrels, run, metric)
        result[metric] = sum(values.values()) / len(values) if values else 0.0
    return result
