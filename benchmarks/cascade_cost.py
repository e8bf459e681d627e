"""What a cascade's first stage would cost: the shipped 6-layer cross-encoder vs a 2-layer cut of it.

Usage (from the repository root; the machine should be otherwise idle)::

    python benchmarks/cascade_cost.py --data ../shared/data --queries 4 --docs 50

Builds a 2-layer model from the shipped one (embeddings, encoder layers 0 and 5, pooler and
head: the usual initialisation of a distilled student, untrained here), exports both to ONNX
through the library's own backend and times them on the same SciFact (query, abstract) pairs at
max_length 512. Only speed is measured: the cut model's scores are meaningless until it is
distilled. The ratio tells how many candidates a full model could re-score after such a first
stage for a given overall speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--docs", type=int, default=50)
    parser.add_argument("--layers", default="0,5", help="encoder layers the cut model keeps")
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerank_plugins.evaluation.datasets import load_beir
    from rerank_plugins.models import default_model_path
    from rerank_plugins.scoring.factory import get_scorer

    keep = [int(x) for x in args.layers.split(",")]
    src = default_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(src)
    model.bert.encoder.layer = type(model.bert.encoder.layer)([model.bert.encoder.layer[i] for i in keep])
    model.config.num_hidden_layers = len(keep)
    cut = Path(tempfile.mkdtemp(prefix="cascade-cost-")) / f"cut-{len(keep)}-layers"
    model.save_pretrained(cut)
    AutoTokenizer.from_pretrained(src).save_pretrained(cut)

    ds = load_beir(Path(args.data) / "scifact", "test")
    queries = list(ds.queries.values())[: args.queries]
    docs = list(ds.corpus)[: args.docs]
    pairs = [(q, ds.doc_text(d)) for q in queries for d in docs]
    rates = {}
    for name, path in (("full", str(src)), (f"cut {args.layers}", str(cut))):
        scorer = get_scorer(model=path, backend="onnx", max_length=512)
        scorer.score(pairs[:8])  # export / warm-up
        started = time.perf_counter()
        scorer.score(pairs)
        rates[name] = len(pairs) / (time.perf_counter() - started)
    full, first = rates["full"], rates[f"cut {args.layers}"]
    cost = full / first  # cost of a cut-model pair in full-model pairs
    print(
        json.dumps(
            {
                "pairs": len(pairs),
                "pairs_per_s": {k: round(v, 1) for k, v in rates.items()},
                "cut_cost_per_pair_in_full_pairs": round(cost, 3),
                # full-model re-scores allowed per 100 candidates for a 1.5x / 1.62x overall speed-up
                "keep_of_100_for_1.5x": round(100 / 1.5 - 100 * cost, 1),
                "keep_of_100_for_1.62x": round(100 / 1.62 - 100 * cost, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
