"""Labelled (query, candidate) pairs for fitting and checking a score calibration.

``rerank-plugins calibrate`` fits Platt or temperature scaling on these pairs'
raw logits (:func:`rerank_plugins.scoring.calibration.fit_calibration`) and reports ECE and Brier
before and after, on them and on any held-out split.
"""

from __future__ import annotations

from collections.abc import Sequence

from rerank_plugins.errors import RerankPluginsError

__all__ = ["labelled_pairs"]


def labelled_pairs(
    paths: Sequence[str], split: str, queries: int | None = None
) -> tuple[list[tuple[str, str]], list[int], str]:
    """Every labelled (query, candidate) pair of ``split``; with ``queries``, those of at most that many
    questions per dataset (a seeded sample, the same on every run)."""
    import random
    from pathlib import Path

    from rerank_plugins.evaluation.datasets import load_beir

    pairs: list[tuple[str, str]] = []
    labels: list[int] = []
    names = []
    for path in paths:
        ds = load_beir(Path(path), split)
        if not ds.candidates:
            raise RerankPluginsError(f"{path} has no candidates/{split}.tsv with labelled pairs to calibrate on")
        qids = list(ds.candidates)
        if queries is not None and queries < len(qids):
            kept = set(random.Random(f"13 {ds.name} {split}").sample(sorted(qids), queries))
            qids = [q for q in qids if q in kept]
        for qid in qids:
            for doc, label in ds.candidates[qid]:
                pairs.append((ds.queries[qid], ds.doc_text(doc)))
                labels.append(label)
        names.append(f"{ds.name}/{split}" + (f" ({len(qids)} questions)" if queries is not None else ""))
    return pairs, labels, " + ".join(names)
