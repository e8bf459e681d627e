"""``rerank-plugins calibrate``: fit a model's score calibration on labelled dev pairs and report ECE / Brier."""

from __future__ import annotations

import argparse
import math
from typing import Any

from rerank_plugins.cli._common import add_model_options, config_from_args
from rerank_plugins.errors import RerankPluginsError


def register(sub: Any) -> None:
    ca = sub.add_parser(
        "calibrate",
        help="fit Platt / temperature scaling on labelled dev pairs and store it with the model",
        description="Scores the labelled candidate lists of a split (WikiQA, TrecQA layout), fits "
        "p = sigmoid(a * logit + b) and writes rerank_calibration.json into the model directory (or --output), "
        "which activation='auto' then uses. Reports ECE and Brier score before and after, on the fit data "
        "and on held-apart data (--eval-data).",
        epilog="examples:\n"
        "  rerank-plugins calibrate --model path/to/model --data ../shared/data/wikiqa --split dev \\\n"
        "      --eval-data ../shared/data/wikiqa --eval-split test",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ca.add_argument("--data", nargs="+", required=True, help="BEIR-layout folders with candidates/<split>.tsv")
    ca.add_argument("--split", default="dev", help="split to fit on (default dev; never a test split)")
    ca.add_argument("--method", choices=["platt", "temperature"], default="platt", help="default platt")
    ca.add_argument("--queries", type=int, help="at most this many questions per --data folder (seeded sample)")
    ca.add_argument("--output", help="directory to store rerank_calibration.json (default: the model directory)")
    ca.add_argument("--eval-data", nargs="+", help="held-apart labelled folders to report calibration on")
    ca.add_argument("--eval-split", default="test", help="split of --eval-data (default test)")
    add_model_options(ca)
    ca.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.evaluation.calibrate import labelled_pairs
    from rerank_plugins.scoring.calibration import brier_score, expected_calibration_error, fit_calibration
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    if "test" in args.split.lower():
        raise RerankPluginsError(
            f"refusing to fit a calibration on split '{args.split}': figures on a test split must stay unseen; "
            "fit on a dev split and pass the test split as --eval-split"
        )
    cfg = config_from_args(args).merged(activation="raw")
    scorer = CrossEncoderScorer(config=cfg)
    # where the calibration goes is settled before the (long) scoring: --output is created when missing;
    # without it the model must be a local folder (a Hub id has none to write into)
    target = Path(args.output or scorer.name)
    if args.output:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RerankPluginsError(f"cannot store the calibration in {target}: {exc}") from exc
    elif not target.is_dir():
        raise RerankPluginsError(
            f"cannot store the calibration: the model {target} is not a local folder; pass --output DIR"
        )
    pairs, labels, fitted_on = labelled_pairs(args.data, args.split, args.queries)
    logits = scorer.score(pairs)
    calibration = fit_calibration(logits, labels, method=args.method, fitted_on=fitted_on)
    path = calibration.save(target)
    print(
        f"fitted {calibration.method} on {fitted_on} ({len(pairs)} pairs): a={calibration.a:.4f} b={calibration.b:.4f}"
    )
    print(f"wrote {path}")
    checks = [(fitted_on, logits, labels)]
    if args.eval_data:
        eval_pairs, eval_labels, eval_name = labelled_pairs(args.eval_data, args.eval_split)
        checks.append((eval_name, scorer.score(eval_pairs), eval_labels))
    print(f"{'pairs':<28} {'ECE sigmoid':>12} {'ECE calibrated':>15} {'Brier sigmoid':>14} {'Brier calibrated':>17}")
    for name, raw, y in checks:
        plain = [1 / (1 + math.exp(-x)) for x in raw]
        fitted = [calibration.apply(x) for x in raw]
        print(
            f"{name:<28} {expected_calibration_error(plain, y):>12.4f} {expected_calibration_error(fitted, y):>15.4f} "
            f"{brier_score(plain, y):>14.4f} {brier_score(fitted, y):>17.4f}"
        )
    return 0
