"""Does ONNX Runtime's offline transformer optimizer make the CPU path faster?

The library's export is a TorchScript graph that ONNX Runtime optimises when a session opens
(``ORT_ENABLE_ALL``: FusedMatMul, BiasGelu, SkipLayerNormalization after int8). The offline
optimizer (``onnxruntime.transformers.optimizer.optimize_model``, model_type "bert") fuses further:
one ``Attention`` op per layer, ``EmbedLayerNormalization``, ``SkipLayerNormalization``; its int8
form (``quantize_dynamic`` after fusing) runs ``QAttention``. This times the library's fp32 and int8
exports against the fused ones on the same batches (SciFact claim + abstract pairs, length-sorted
batches of 32, 2 intra-op threads, best of 3 after a warm-up) and reports how far the scores move.

    python benchmarks/onnx_fusion.py --out benchmarks/results/onnx-fusion/fusion.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("onnx_fusion")


def fused_exports(fp32: Path, out: Path, heads: int, hidden: int) -> dict[str, Path]:
    """The fused fp32 graph of ``fp32`` and its int8 form, written under ``out``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(fp32), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1)
    logger.info("fused operators: %s", {k: v for k, v in fused.get_fused_operator_statistics().items() if v})
    fused.save_model_to_file(str(out / "fused.onnx"))
    quantize_dynamic(
        str(out / "fused.onnx"),
        str(out / "fused-int8.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # the fused ops have no inferred types
    )
    return {"fused fp32": out / "fused.onnx", "fused int8": out / "fused-int8.onnx"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="rerank_plugins/models/minilm-l6-rerank")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--lengths", default="128,256", help="token budgets of a pair (the cheap pass, a window)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoConfig, AutoTokenizer

    from rerank_plugins import RerankConfig
    from rerank_plugins.evaluation.bench import _cpu_name
    from rerank_plugins.scoring.factory import get_scorer
    from rerank_plugins.scoring.onnx_backend import QUANTIZE_FILES, export_dir_for

    model_dir = Path(args.model)
    get_scorer(RerankConfig(scorer={"model": args.model, "backend": "onnx-int8", "windows": None}))  # the export
    exports = export_dir_for(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    folder = args.data / "scifact"
    claims = [json.loads(line)["text"] for line in (folder / "queries.jsonl").open()]
    docs = []
    with (folder / "corpus.jsonl").open() as f:
        for line in f:
            d = json.loads(line)
            docs.append(f"{d.get('title', '')} {d['text']}".strip())
            if len(docs) >= args.pairs:
                break
    rng = random.Random(25)
    pairs = [(rng.choice(claims), d) for d in docs]

    with tempfile.TemporaryDirectory(prefix="onnx-fusion-") as tmp:
        graphs = {
            "library fp32": exports / QUANTIZE_FILES[None],
            "library int8": exports / QUANTIZE_FILES["all"],
            **fused_exports(exports / QUANTIZE_FILES[None], Path(tmp), config.num_attention_heads, config.hidden_size),
        }
        sessions = {}
        for name, path in graphs.items():
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        rows: list[dict[str, Any]] = []
        for length in (int(x) for x in args.lengths.split(",")):
            encoded = [tok(q, d, truncation="only_second", max_length=length) for q, d in pairs]
            order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
            batches = []
            for s in range(0, len(order), 32):
                idx = order[s : s + 32]
                padded = tok.pad([encoded[i] for i in idx], return_tensors="np")
                batches.append((idx, {k: v.astype(np.int64) for k, v in padded.items()}))
            scores: dict[str, Any] = {}
            seconds: dict[str, float] = {}
            for name, session in sessions.items():
                names = {i.name for i in session.get_inputs()}

                def run(session: Any = session, names: set[str] = names, batches: list[Any] = batches) -> list[Any]:
                    return [session.run(None, {k: v for k, v in b.items() if k in names})[0] for _, b in batches]

                run()  # warm-up
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    out = run()
                    times.append(time.perf_counter() - t)
                s = np.zeros(len(pairs))
                for (idx, _), logits in zip(batches, out, strict=True):
                    s[idx] = logits[:, 0]
                scores[name], seconds[name] = s, min(times)
            ref = scores["library fp32"]
            for name in sessions:
                ranks = np.argsort(np.argsort(scores[name])), np.argsort(np.argsort(ref))
                rows.append(
                    {
                        "tokens": length,
                        "graph": name,
                        "pairs/s": round(len(pairs) / seconds[name], 1),
                        "x library int8": round(seconds["library int8"] / seconds[name], 2),
                        "max |score - fp32|": round(float(np.abs(scores[name] - ref).max()), 3),
                        "rank correlation with fp32": round(float(np.corrcoef(*ranks)[0, 1]), 4),
                    }
                )
                logger.info("%s", rows[-1])
    result = {
        "model": args.model,
        "pairs": len(pairs),
        "threads": args.threads,
        "onnxruntime": ort.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {_cpu_name()}",
        "date": date.today().isoformat(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
