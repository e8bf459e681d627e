"""Export a trained checkpoint as a compact, shippable Hugging Face folder.

Weights are stored in half precision (safetensors only) to halve the size; the
scorer loads them back in the configured dtype (float32 on CPU).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from rerank_plugins._extras import require

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
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    model.to(getattr(torch, dtype)).save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    keep = {"config.json", "model.safetensors", *_TOKENIZER_FILES}
    for path in output.iterdir():
        if path.name not in keep:
            path.unlink()
    size = sum(p.stat().st_size for p in output.iterdir())
    logger.info("exported %s to %s (%s, %.1f MB)", checkpoint, output, dtype, size / 1e6)
    return output
