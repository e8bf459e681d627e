"""Export a trained checkpoint as a compact, shippable Hugging Face folder.

Weights are stored in half precision (safetensors only) to halve the size, while
``config.json`` says ``float32``: this scorer, and anyone loading the folder with
plain ``transformers`` or ``sentence_transformers.CrossEncoder`` (LangChain's and
LlamaIndex's own rerankers among them), get float32 weights on a CPU, where half
precision is about ten times slower. The calibration and the model card, when the
checkpoint has them, travel with the weights.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from rerank_plugins._extras import require
from rerank_plugins.scoring.calibration import CALIBRATION_FILE
from rerank_plugins.scoring.loading import GUARD_FILE

__all__ = ["export_checkpoint"]

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def export_checkpoint(checkpoint: Path | str, output: Path | str, *, dtype: str = "float16") -> Path:
    """Write ``checkpoint``'s config, tokenizer and ``dtype`` safetensors weights to ``output``.

    Only the files a cross-encoder needs are written (no optimizer state, no pickles).
    """
    torch = require("torch", "Model export")
    transformers = require("transformers", "Model export")
    checkpoint, output = Path(checkpoint), Path(output)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(checkpoint)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    ours = {"config.json", "model.safetensors", CALIBRATION_FILE, GUARD_FILE, "README.md", *_TOKENIZER_FILES}
    if output.resolve() == checkpoint.resolve():
        raise ValueError(f"export writes a new folder; {output} is the checkpoint itself")
    if output.exists():
        foreign = sorted(p.name for p in output.iterdir() if p.name not in ours or p.is_dir())
        if foreign:
            raise ValueError(
                f"{output} holds files an export does not write ({', '.join(foreign[:5])}); "
                "choose an empty or new folder (nothing was deleted)"
            )
        shutil.rmtree(output)
    output.mkdir(parents=True)
    model.to(getattr(torch, dtype)).save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    for path in output.iterdir():
        if path.name not in ours:
            path.unlink()
    config_path = output / "config.json"
    config = json.loads(config_path.read_text())
    for key in ("dtype", "torch_dtype"):  # the dtype loaders use, not the one on disk
        if key in config:
            config[key] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in (CALIBRATION_FILE, GUARD_FILE, "README.md"):
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, output / name)
    size = sum(p.stat().st_size for p in output.iterdir())
    logger.info("exported %s to %s (%s, %.1f MB)", checkpoint, output, dtype, size / 1e6)
    return output
