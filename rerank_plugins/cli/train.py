"""``rerank-plugins train``: fine-tune a cross-encoder with mined hard negatives."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rerank_plugins.config import load_settings_file
from rerank_plugins.errors import RerankPluginsError


def register(sub: Any) -> None:
    tr = sub.add_parser(
        "train",
        help="fine-tune a cross-encoder with mined hard negatives (train splits only)",
        description="Fine-tunes a cross-encoder from any Hugging Face encoder or cross-encoder on the 'train' "
        "split of each dataset, with hard negatives mined from BM25 (and optionally a bi-encoder) or taken "
        "from candidate lists. Dev candidate lists (and held-out train queries) pick the best checkpoint; "
        "<output>/last keeps the latest one so an interrupted run resumes.",
        epilog="examples:\n"
        "  rerank-plugins train --output runs/ce --train-data ../shared/data/wikiqa --dev-data ../shared/data/wikiqa\n"
        "  rerank-plugins train --config train.toml   # any TrainConfig field",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tr.add_argument("--config", help="TrainConfig settings file (.toml, .yaml, .json); flags override it")
    tr.add_argument("--base-model", help="encoder or cross-encoder to start from (default: all-MiniLM-L6-v2)")
    tr.add_argument("--output", help="output directory")
    tr.add_argument("--train-data", nargs="+", help="BEIR-layout folders (their train split is used)")
    tr.add_argument("--dev-data", nargs="+", help="folders whose dev candidate lists pick the best checkpoint")
    tr.add_argument(
        "--loss",
        choices=["listwise", "bce", "listwise+bce"],
        help="training objective (default listwise; listwise+bce also anchors the logits, see --bce-weight)",
    )
    tr.add_argument("--bce-weight", type=float, help="weight of the BCE term of listwise+bce (default 0.1)")
    tr.add_argument("--epochs", type=float, help="passes over the training groups")
    tr.add_argument("--max-steps", type=int, help="stop after this many steps")
    tr.add_argument("--max-length", type=int, help="token budget of a pair (default 192)")
    tr.add_argument("--holdout-queries", type=int, help="train queries held out as dev per corpus dataset")
    tr.add_argument("--dense-negatives", type=int, help="bi-encoder hard negatives per group")
    tr.add_argument(
        "--pseudo-queries", type=int, help="unlabelled inverse-cloze groups per corpus dataset (a sentence as query)"
    )
    tr.add_argument(
        "--distill-weight",
        type=float,
        help="weight of a KL term that distils the bi-encoder's ranking of each group (default 0: off)",
    )
    tr.add_argument("--eval-every", type=int, help="steps between dev evaluations / checkpoints (default 200)")
    tr.add_argument("--lr", type=float, help="encoder learning rate (default 5e-5)")
    tr.add_argument("--head-lr", type=float, help="classifier head learning rate (default 1e-3)")
    tr.add_argument("--seed", type=int, help="random seed")
    tr.add_argument("--device", help="torch device: auto (a GPU when torch sees one), cpu, cuda, cuda:1 ...")
    tr.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast (pays on GPUs)")
    tr.add_argument("--max-seconds", type=float, help="stop training after this many seconds, saving that step")
    tr.add_argument(
        "--groups-file",
        help="save the mined groups here (.json, .json.gz, .json.xz) and reuse them when the settings match",
    )
    tr.add_argument(
        "--mine-only",
        action="store_true",
        help="mine the groups into --groups-file (or the config's groups_file) and stop: train later, e.g. on "
        "a GPU machine without the corpora",
    )
    tr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.training.trainer import TrainConfig, mine_groups, train_cross_encoder

    values: dict[str, Any] = dict(load_settings_file(args.config)) if args.config else {}
    base = args.base_model
    if base is None and "base_model" not in values:
        from rerank_plugins.retrieval.dense import default_bi_encoder_path

        base = str(default_bi_encoder_path())
    for key, value in (
        ("base_model", base),
        ("output_dir", args.output),
        ("train_datasets", args.train_data),
        ("dev_datasets", args.dev_data),
        ("loss", args.loss),
        ("bce_weight", args.bce_weight),
        ("epochs", args.epochs),
        ("max_steps", args.max_steps),
        ("max_length", args.max_length),
        ("holdout_queries", args.holdout_queries),
        ("n_dense_negatives", args.dense_negatives),
        ("pseudo_queries", args.pseudo_queries),
        ("distill_weight", args.distill_weight),
        ("eval_every", args.eval_every),
        ("lr", args.lr),
        ("head_lr", args.head_lr),
        ("seed", args.seed),
        ("device", args.device),
        ("bf16", args.bf16),
        ("max_seconds", args.max_seconds),
        ("groups_file", args.groups_file),
    ):
        if value is not None:
            values[key] = value
    try:
        config = TrainConfig.model_validate(values)
    except ValueError as exc:
        raise RerankPluginsError(f"invalid training settings: {exc}".replace("\n", " ")) from exc
    if args.mine_only and config.groups_file is None:
        raise RerankPluginsError("--mine-only writes the groups to --groups-file or the config's groups_file: name one")
    mined = config.groups_file is not None and config.groups_file.is_file()
    needed = (config.train_datasets if not mined else []) + ([] if args.mine_only else config.dev_datasets)
    for path in needed:
        if not Path(path).is_dir():
            raise RerankPluginsError(f"dataset folder {path} does not exist")
    if args.mine_only:
        groups, summary, _ = mine_groups(config)
        print(f"{len(groups)} groups in {config.groups_file} ({json.dumps(summary)})")
        return 0
    best = train_cross_encoder(config)
    print(f"best checkpoint: {best}")
    return 0
