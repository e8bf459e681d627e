"""Average the weights of fine-tuned checkpoints of one base model (a "model soup").

Uniform weight averaging of models fine-tuned from the same starting point (Wortsman et al., 2022,
"Model soups") often generalises better than any one of them, at no extra cost when serving. The
ingredients must share an architecture and come from one base (here v3 is v2 trained further).

    python benchmarks/training/soup.py runs/v2/export runs/v3/export --out runs/soup23
    rerank-plugins export runs/soup23 runs/soup23/export

The output is a checkpoint folder (float32 weights, the first ingredient's config and tokenizer);
export it as any trained checkpoint. ``--weights`` gives a non-uniform mix.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

logger = logging.getLogger("soup")

_COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def soup(ingredients: list[Path], out: Path, weights: list[float] | None = None) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    if len(ingredients) < 2:
        raise SystemExit("a soup needs at least two checkpoints")
    weights = weights or [1.0] * len(ingredients)
    if len(weights) != len(ingredients) or min(weights) < 0 or sum(weights) <= 0:
        raise SystemExit("--weights needs one non-negative weight per checkpoint, not all 0")
    total = sum(weights)
    mixed: dict[str, torch.Tensor] = {}
    shapes: dict[str, tuple[int, ...]] | None = None
    for path, weight in zip(ingredients, weights, strict=True):
        state = load_file(str(path / "model.safetensors"))
        own = {name: tuple(t.shape) for name, t in state.items()}
        if shapes is None:
            shapes = own
        elif own != shapes:  # other names, or the same names with other shapes (which would broadcast)
            raise SystemExit(f"{path} has other tensors than {ingredients[0]}: not one architecture")
        for name, tensor in state.items():
            part = tensor.float() * (weight / total)
            mixed[name] = mixed[name] + part if name in mixed else part
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in mixed.items()}, str(out / "model.safetensors"))
    for name in _COPIED:
        if (ingredients[0] / name).is_file():
            shutil.copy2(ingredients[0] / name, out / name)
    recipe = {"ingredients": [str(p) for p in ingredients], "weights": [w / total for w in weights]}
    (out / "soup.json").write_text(json.dumps(recipe, indent=2) + "\n")
    logger.info("averaged %d checkpoints into %s", len(ingredients), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs="+")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    soup(args.checkpoints, args.out, args.weights)


if __name__ == "__main__":
    main()
