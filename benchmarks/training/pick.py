"""Score checkpoints on a training config's dev sets and name the best (the trainer's own criterion).

The trainer keeps the checkpoint of one run with the best mean dev score; this applies the same
criterion (the config's ``dev_datasets``, samples and ``max_length``, the mean of their metrics)
across runs, e.g. to choose between a run, its continuation and their weight average:

    python benchmarks/training/soup.py runs/large/best runs/large-b/best --out runs/large-soup
    python benchmarks/training/pick.py --config benchmarks/training/large-b.toml \
        runs/large/best runs/large-b/best runs/large-soup --out runs/pick.json

Dev sets only (the trainer refuses a test split). The JSON holds every checkpoint's metrics, its mean
and the chosen path.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("pick")


def pick(config_path: Path, checkpoints: list[Path]) -> dict[str, Any]:
    import torch
    import transformers

    from rerank_plugins.config import load_settings_file
    from rerank_plugins.training.trainer import TrainConfig, _dev_score, _dev_sets, training_device

    values = {"base_model": "unused", **load_settings_file(config_path)}
    config = TrainConfig.model_validate(values)
    device = training_device(config.device, torch)
    dev = _dev_sets(config)
    if not dev:
        raise SystemExit(f"{config_path} names no dev_datasets: nothing to choose by")
    rows: dict[str, Any] = {}
    for path in checkpoints:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        metrics = _dev_score(model.to(device), tokenizer, dev, config.max_length, torch)
        rows[str(path)] = {**metrics, "mean dev": sum(metrics.values()) / len(metrics)}
        logger.info("%s: %s", path, rows[str(path)])
    chosen = max(rows, key=lambda p: rows[p]["mean dev"])  # the first of equal means
    return {"config": str(config_path), "device": str(device), "checkpoints": rows, "chosen": chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--config", type=Path, required=True, help="the training config whose dev sets decide")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = pick(args.config, args.checkpoints)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["chosen"])


if __name__ == "__main__":
    main()
