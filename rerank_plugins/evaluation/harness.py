"""The quality harness: first stages and first stage + reranker, side by side.

For a BEIR-layout split it builds each first stage over the corpus (BM25, dense,
hybrid RRF), or, for datasets with official candidate lists (WikiQA, TrecQA),
ranks each question's own list (plus the list order itself as ``list order``).
Each first stage's top ``depth`` (the whole list for official candidate lists) is
then reranked by the scorer through the same pipeline the adapters use. A pair
scored for one first stage is not scored again for another (same model, same
pair, same score).

Example:
    >>> from rerank_plugins.evaluation.harness import format_table
    >>> print(format_table([{"system": "bm25", "ndcg@10": 0.5, "ms/query": 1.0}]))
    system  ndcg@10  ms/query
    bm25     0.5000       1.0
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rerank_plugins.config import RerankConfig
from rerank_plugins.evaluation.datasets import BeirDataset
from rerank_plugins.evaluation.metrics import evaluate, ranked_ids
from rerank_plugins.fusion import reciprocal_rank_fusion
from rerank_plugins.pipeline import Candidate, rerank_candidates
from rerank_plugins.scoring.base import ScoredPairs, Scorer
from rerank_plugins.scoring.cache import CachedScorer
from rerank_plugins.scoring.cascade import Cascade
from rerank_plugins.scoring.factory import resolve_cascade

__all__ = [
    "STAGE_SOURCES",
    "EvalReport",
    "default_metrics",
    "first_stage_runs",
    "format_table",
    "hybrid_run",
    "run_evaluation",
]

logger = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]


def default_metrics(ds: BeirDataset) -> list[str]:
    """nDCG@10 / Recall@100 / MRR@10 / MAP for corpus retrieval; MAP / MRR / nDCG@10 for candidate lists."""
    if ds.candidates:
        return ["map", "mrr", "ndcg@10"]
    return ["ndcg@10", "recall@100", "mrr@10", "map"]


def _query_ids(ds: BeirDataset, limit: int | None) -> list[str]:
    qids = [q for q in ds.queries if any(g > 0 for g in ds.qrels.get(q, {}).values())]
    return qids[:limit] if limit else qids


def first_stage_runs(
    ds: BeirDataset,
    qids: Sequence[str],
    stages: Sequence[str],
    depth: int,
    dense_model: str | None = None,
) -> tuple[dict[str, Run], dict[str, float]]:
    """Runs (query -> {doc: score}) of each first stage, and seconds per query of each."""
    from rerank_plugins.retrieval.bm25 import BM25Index
    from rerank_plugins.retrieval.dense import DenseIndex

    runs: dict[str, Run] = {}
    cost: dict[str, float] = {}
    wanted = set(stages)
    if ds.candidates:
        if "list order" in wanted:
            runs["list order"] = {q: {d: -float(i) for i, (d, _) in enumerate(ds.candidates[q])} for q in qids}
            cost["list order"] = 0.0
        per_query_texts = {q: [ds.doc_text(d) for d, _ in ds.candidates[q]] for q in qids}
        if wanted & {"bm25", "hybrid"}:
            t = time.perf_counter()
            runs["bm25"] = {}
            for q in qids:
                index = BM25Index(per_query_texts[q])
                docs = [d for d, _ in ds.candidates[q]]
                matched = dict(index.search(ds.queries[q], k=len(docs)))
                # candidates without a term match keep list order below every match
                runs["bm25"][q] = {d: matched.get(i, -1e-6 * i) for i, d in enumerate(docs)}
            cost["bm25"] = (time.perf_counter() - t) / max(1, len(qids))
        if wanted & {"dense", "hybrid"}:
            t = time.perf_counter()
            all_docs = sorted({d for q in qids for d, _ in ds.candidates[q]})
            encoder = DenseIndex([ds.doc_text(d) for d in all_docs], model=dense_model)
            position = {d: i for i, d in enumerate(all_docs)}
            runs["dense"] = {}
            sims = encoder.similarities([ds.queries[q] for q in qids])
            for row, q in zip(sims, qids, strict=True):
                runs["dense"][q] = {d: float(row[position[d]]) for d, _ in ds.candidates[q]}
            cost["dense"] = (time.perf_counter() - t) / max(1, len(qids))
    else:
        texts_ids = list(ds.corpus)
        queries = [ds.queries[q] for q in qids]
        if wanted & {"bm25", "hybrid"}:
            t = time.perf_counter()
            sparse = BM25Index([ds.doc_text(d) for d in texts_ids]).search_many(queries, k=depth)
            runs["bm25"] = {q: {texts_ids[i]: s for i, s in h} for q, h in zip(qids, sparse, strict=True)}
            cost["bm25"] = (time.perf_counter() - t) / max(1, len(qids))
        if wanted & {"dense", "hybrid"}:
            t = time.perf_counter()
            dense = DenseIndex([ds.doc_text(d) for d in texts_ids], model=dense_model)
            nearest = dense.search_many(queries, k=depth)
            runs["dense"] = {q: {texts_ids[i]: s for i, s in h} for q, h in zip(qids, nearest, strict=True)}
            cost["dense"] = (time.perf_counter() - t) / max(1, len(qids))
    if "hybrid" in wanted:
        runs["hybrid"] = hybrid_run(runs["bm25"], runs["dense"], qids, depth)
        cost["hybrid"] = cost["bm25"] + cost["dense"]
    return {s: runs[s] for s in stages if s in runs}, cost


#: The retrievers behind each first stage, given to its candidates as ``Candidate.sources``: the
#: cascade's ``pick="auto"`` reads the first stage's order for a pool fused from two or more.
STAGE_SOURCES: dict[str, tuple[str, ...]] = {"bm25": ("bm25",), "dense": ("dense",), "hybrid": ("bm25", "dense")}


def hybrid_run(bm25: Run, dense: Run, qids: Sequence[str], depth: int) -> Run:
    """The hybrid first stage: reciprocal rank fusion of the BM25 and dense top-``depth`` of each query.

    The runs may be deeper than ``depth`` (only their first ``depth`` count), so one deep pair of runs
    serves several depths.
    """
    out: Run = {}
    for q in qids:
        fused = reciprocal_rank_fusion({"bm25": ranked_ids(bm25[q])[:depth], "dense": ranked_ids(dense[q])[:depth]})
        out[q] = dict(fused[:depth])
    return out


@dataclass
class EvalReport:
    """Rows of the comparison table plus what produced them."""

    dataset: str
    split: str
    queries: int
    depth: int
    model: str
    rows: list[dict[str, Any]]

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


class _Counted(Scorer):
    """Counts the pairs a set-dependent scorer reads (its scores cannot be cached per pair)."""

    inner: Scorer

    def __init__(self, inner: Scorer) -> None:
        self.inner, self.name, self.misses = inner, inner.name, 0
        self.recommended_first_stage_weight = inner.recommended_first_stage_weight

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        self.misses += len(pairs)
        return self.inner.score_detailed(pairs)


def _memo(scorer: Scorer) -> CachedScorer | _Counted:
    return _Counted(scorer) if scorer.set_dependent else CachedScorer(scorer, max_entries=None)


def run_evaluation(
    ds: BeirDataset,
    scorer: Scorer | Mapping[str, Scorer] | None,
    *,
    stages: Sequence[str] = ("bm25", "dense", "hybrid"),
    rerank_stages: Sequence[str] | None = None,
    depth: int = 100,
    metrics: Sequence[str] | None = None,
    limit: int | None = None,
    dense_model: str | None = None,
    first_stage_weight: float | None = 0.0,
    progress: bool | None = None,
    cascades: Mapping[str, RerankConfig] | None = None,
) -> EvalReport:
    """Evaluate first stages and each of ``rerank_stages`` reranked by each scorer.

    ``scorer`` is one scorer (rows ``"<stage> + rerank"``) or a mapping of names to
    scorers compared on the same candidates (rows ``"<stage> + <name>"``); first
    stages are computed once.
    """
    metrics = list(metrics or default_metrics(ds))
    qids = _query_ids(ds, limit)
    if ds.candidates and "list order" not in stages:
        stages = ["list order", *stages]
    runs, cost = first_stage_runs(ds, qids, stages, depth, dense_model)
    qrels = {q: ds.qrels[q] for q in qids}
    rows: list[dict[str, Any]] = []
    for name, run in runs.items():
        rows.append({"system": name, **evaluate(qrels, run, metrics), "ms/query": 1000 * cost.get(name, 0.0)})
    scorers: Mapping[str, Scorer] = (
        {} if scorer is None else {"rerank": scorer} if isinstance(scorer, Scorer) else scorer
    )
    cfg = RerankConfig(top_n=None, max_candidates=None, dedupe_by_content=False, first_stage_weight=first_stage_weight)
    # variants that share a scorer instance (same model and settings) share its scores: a variant that only
    # changes the ordering (first_stage_weight) or the cascade's keep costs no second read of a pair
    memos: dict[int, CachedScorer | _Counted] = {}
    for label, member in scorers.items():
        memo = memos.setdefault(id(member), _memo(member))
        # the cascade as the adapters would run it (cascade_keep='auto' by default), its cheap pass counted apart;
        # a variant's own first_stage_weight wins over the run-wide one
        variant = (cascades or {}).get(label)
        run_cfg = cfg
        if variant is not None:
            own: dict[str, Any] = {"cascade": variant.cascade.model_dump()}
            if "first_stage_weight" in variant.model_fields_set:
                own["first_stage_weight"] = variant.first_stage_weight
            run_cfg = cfg.merged(**own)
        resolved = resolve_cascade(run_cfg, member)
        pruner = None
        cascade: Cascade | None = None
        if resolved is not None:
            if resolved.scorer is not None:
                pruner = memos.setdefault(id(resolved.scorer), _memo(resolved.scorer))
            cascade = replace(resolved, scorer=pruner)
        for name in rerank_stages if rerank_stages is not None else list(runs):
            reranked: Run = {}
            t = time.perf_counter()
            before, cheap_before = memo.misses, pruner.misses if pruner is not None else 0
            for q in tqdm(qids, desc=f"{label} {name}", disable=None if progress is None else not progress):
                # official candidate lists are reranked whole; corpus first stages to ``depth``
                top = ranked_ids(runs[name][q])[: None if ds.candidates else depth]
                # a candidate carries the retrievers its stage fused, as a hybrid retriever marks its hits
                cands = [Candidate(d, ds.doc_text(d), sources=STAGE_SOURCES.get(name, ())) for d in top]
                result = rerank_candidates(ds.queries[q], cands, memo, run_cfg, cascade=cascade or False)
                # the run keeps the output order (unscored candidates, if a time budget ran out, come last)
                reranked[q] = {str(r.candidate.id): float(len(result.items) - r.rank) for r in result.items}
            seconds = time.perf_counter() - t
            new_pairs = memo.misses - before
            extra: dict[str, Any] = {}
            if pruner is not None:  # every candidate passes the cheap pass: its pairs/s is candidates/s
                cheap_pairs = pruner.misses - cheap_before
                extra = {
                    "cascade pairs": cheap_pairs,
                    "candidates/s": cheap_pairs / seconds if seconds > 0 else None,
                }
            rows.append(
                {
                    "system": f"{name} + {label}",
                    **evaluate(qrels, reranked, metrics),
                    # pairs already scored for an earlier row of this scorer are free here
                    "ms/query": 1000 * (cost.get(name, 0.0) + seconds / max(1, len(qids))),
                    "new pairs": new_pairs,
                    "pairs/s": new_pairs / seconds if seconds > 0 and new_pairs else None,
                    **extra,
                }
            )
            logger.info("%s", rows[-1])  # long runs: each row as soon as it is measured (-v)
    names = dict.fromkeys(_display_name(s.name) for s in scorers.values())  # each model once, in order
    return EvalReport(ds.name, ds.split, len(qids), depth, ", ".join(names), rows)


def _display_name(name: str) -> str:
    """The scorer's name for a report; the shipped model by name, not by this machine's path."""
    from rerank_plugins.models import DEFAULT_MODEL_DIRNAME

    shipped = Path(__file__).resolve().parents[1] / "models" / DEFAULT_MODEL_DIRNAME
    return f"shipped {DEFAULT_MODEL_DIRNAME}" if Path(name).expanduser().resolve() == shipped else name


def format_table(rows: Sequence[dict[str, Any]], *, markdown: bool = False) -> str:
    """A plain-text (or Markdown) table, numbers right-aligned (4 decimals for metrics)."""
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any, col: str) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.1f}" if col in ("ms/query", "pairs/s", "candidates/s") else f"{v:.4f}"
        return str(v)

    table = [[cell(r.get(c), c) for c in cols] for r in rows]
    if markdown:
        head = (
            "| "
            + " | ".join(cols)
            + " |\n|"
            + "|".join(" --- " if i == 0 else " ---: " for i in range(len(cols)))
            + "|"
        )
        return head + "\n" + "\n".join("| " + " | ".join(row) + " |" for row in table)
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths, strict=True)))]
    for row in table:
        lines.append(
            "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def write_report(report: EvalReport, path: Path) -> None:
    """Write the report as JSON (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.to_json())
