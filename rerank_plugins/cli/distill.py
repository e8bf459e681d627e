"""``rerank-plugins distill``: a cross-encoder teaches a bi-encoder (first stage) or a small cross-encoder."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    ds = sub.add_parser(
        "distill",
        help="distil a cross-encoder teacher into a bi-encoder (the dense retriever) or a small cross-encoder",
        description="Learns a teacher cross-encoder's scores of mined candidate lists. DATA is either a groups "
        "file (`rerank-plugins train --mine-only`), whose lists the teacher scores here (in this process; "
        "the labels are kept as OUTPUT/labels.jsonl), or a `rerank-plugins score-pairs` output folder of the "
        "pairs `--write-pairs` wrote (labelling at scale with Ray Data). The student is a sentence-"
        "transformers bi-encoder trained with MarginMSE plus in-batch negatives (--kind bi-encoder), or the "
        "first --layers layers of the teacher trained with MarginMSE + KL (--kind cross-encoder: a cascade's "
        "cheap pass).",
        epilog="examples:\n"
        "  rerank-plugins train --config mine.toml --mine-only --groups-file groups.json.xz\n"
        "  rerank-plugins distill groups.json.xz runs/my-bi-encoder --groups 2000\n"
        "  rerank-plugins distill groups.json.xz --write-pairs pairs.jsonl --groups 8000\n"
        "  rerank-plugins score-pairs pairs.jsonl labels/ --config teacher.toml   # activation = 'raw'\n"
        "  rerank-plugins distill labels/ runs/cheap-pass --kind cross-encoder --layers 2\n"
        "  rerank-plugins eval --dataset ../shared/data/scifact --dense-model runs/my-bi-encoder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ds.add_argument("data", help="groups file (.json, .json.gz, .json.xz) or score-pairs output folder")
    ds.add_argument("output", nargs="?", help="where the student is written")
    ds.add_argument("--teacher", help="cross-encoder that scores a groups file (default: the shipped model)")
    ds.add_argument("--kind", choices=["bi-encoder", "cross-encoder"], default="bi-encoder", help="the student")
    ds.add_argument("--student", help="bi-encoder to fine-tune (default: all-MiniLM-L6-v2, the dense retriever)")
    ds.add_argument("--layers", type=int, default=2, help="cross-encoder student: first layers kept (default 2)")
    ds.add_argument("--groups", type=int, help="use this many groups of DATA (a seeded sample)")
    ds.add_argument("--write-pairs", metavar="JSONL", help="only write the groups' pairs for score-pairs, and stop")
    ds.add_argument("--epochs", type=float, default=1.0, help="passes over the groups (default 1)")
    ds.add_argument("--groups-per-step", type=int, default=16, help="lists per optimizer step (default 16)")
    ds.add_argument("--lr", type=float, help="learning rate (bi-encoder 2e-5, cross-encoder 1e-4)")
    ds.add_argument("--max-length", type=int, help="tokens read per text (bi-encoder) or pair (cross-encoder 128)")
    ds.add_argument("--max-seconds", type=float, help="stop training after this many seconds")
    ds.add_argument("--dev-data", nargs="+", help="cross-encoder student: dev folders that pick the checkpoint")
    ds.add_argument("--threads", type=int, help="torch threads")
    ds.add_argument("--seed", type=int, default=13, help="seed of the sample and the training order")
    ds.set_defaults(func=run)


def _sample(groups: list[Any], n: int | None, seed: int) -> list[Any]:
    import random

    if n is None or n >= len(groups):
        return groups
    shuffled = list(groups)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:n]


def _labels_from_groups(args: argparse.Namespace, out: Path) -> Path:
    """Score a groups file's lists with the teacher, here, into OUTPUT/labels.jsonl (kept: a rerun reuses it)."""
    from rerank_plugins.config import RerankConfig
    from rerank_plugins.scoring.factory import get_scorer
    from rerank_plugins.training.distill import pair_rows
    from rerank_plugins.training.mining import load_groups

    labels = out / "labels.jsonl"
    if labels.is_file():
        logger.info("reusing the teacher's labels in %s (delete it to score again)", labels)
        return labels
    rows = pair_rows(_sample(load_groups(args.data)[0], args.groups, args.seed))
    scorer = get_scorer(RerankConfig.resolve(model=args.teacher, activation="raw"))
    scores = scorer.score([(r["query"], r["passage"]) for r in rows])
    tmp = labels.with_suffix(".partial")
    with tmp.open("w", encoding="utf-8") as fh:
        for row, score in zip(rows, scores, strict=True):
            fh.write(json.dumps({**row, "score": score}, ensure_ascii=False) + "\n")
    tmp.replace(labels)
    return labels


def run(args: argparse.Namespace) -> int:
    from rerank_plugins.training.distill import distill_bi_encoder, read_labels, write_pairs
    from rerank_plugins.training.mining import load_groups

    data = Path(args.data)
    if not data.exists():
        raise ValueError(f"{data} does not exist; give a groups file or a score-pairs output folder")
    if args.write_pairs:
        if data.is_dir():
            raise ValueError("--write-pairs reads a groups file, not a folder")
        rows = write_pairs(_sample(load_groups(data)[0], args.groups, args.seed), args.write_pairs)
        print(f"wrote {rows} pairs to {args.write_pairs}; label them with `rerank-plugins score-pairs`")
        return 0
    if not args.output:
        raise ValueError("give OUTPUT, the folder the student is written to (or --write-pairs)")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    labels = data if data.is_dir() else _labels_from_groups(args, out)
    if args.kind == "bi-encoder":
        groups = read_labels(labels)
        if data.is_dir():
            groups = _sample(groups, args.groups, args.seed)
        path = distill_bi_encoder(
            groups,
            out,
            student=args.student,
            epochs=args.epochs,
            groups_per_step=args.groups_per_step,
            lr=args.lr or 2e-5,
            max_length=args.max_length,
            max_seconds=args.max_seconds,
            threads=args.threads,
            seed=args.seed,
        )
    else:
        if data.is_dir() and args.groups is not None:
            raise ValueError("--groups samples a groups file; with a labels folder the cross-encoder reads all of it")
        from rerank_plugins.models import default_model_path
        from rerank_plugins.training.trainer import TrainConfig, train_cross_encoder

        config = TrainConfig(
            base_model=args.teacher or str(default_model_path()),
            output_dir=out,
            teacher_labels=labels,
            loss="distill",
            distill_weight=1.0,
            distill_temperature=1.0,
            margin_mse_weight=1.0,
            num_layers=args.layers,
            max_length=args.max_length or 128,
            groups_per_step=args.groups_per_step,
            lr=args.lr or 1e-4,
            epochs=args.epochs,
            max_seconds=args.max_seconds,
            dev_datasets=[Path(p) for p in args.dev_data or []],
            threads=args.threads,
            seed=args.seed,
        )
        path = train_cross_encoder(config)
    print(f"student written to {path}")
    return 0
