"""Tokens a reranker reads per SciFact pair: one read truncated at 512 (the peers) vs windows of 256.

The cost of the default's windowed read next to the peers' single truncated read, counted with the
shipped model's tokenizer and the windowed scorer's own layout (query budget, special tokens, window
size and stride), on seeded random (train claim, abstract) pairs. Tokens, not seconds: the count is
exact and machine-independent, and a forward pass costs about linearly in them at these lengths.

    python benchmarks/window_tokens.py --data ../shared/data/scifact --pairs 1500 \\
        --out benchmarks/results/windows/tokens.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    ap.add_argument("--pairs", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from rerank_plugins import RerankConfig
    from rerank_plugins.evaluation.datasets import load_beir
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.windowed import WindowedScorer

    ds = load_beir(args.data, "train")
    rng = random.Random(args.seed)
    claims, docs = sorted(ds.queries), sorted(ds.corpus)
    pairs = [(ds.queries[rng.choice(claims)], ds.doc_text(rng.choice(docs))) for _ in range(args.pairs)]
    # the default's inner cross-encoder (256 tokens per pair), torch: only its tokenizer and layout are used
    scorer = CrossEncoderScorer(None, config=RerankConfig(scorer={"device": "cpu", "backend": "torch"}))
    layout = scorer.layout(pairs)
    rows: dict[str, float] = {}
    truncated = 0
    limit = RerankConfig().window_limit
    readers = {  # the default's windows, and windows one window apart (a stride of max_length is at least that)
        "half a window (default)": WindowedScorer(scorer, limit=limit),
        "no overlap": WindowedScorer(scorer, stride=scorer.config.max_length, limit=limit),
    }
    windows = dict.fromkeys(readers, 0)
    for (q, _), offsets in zip(pairs, layout.offsets, strict=True):
        q_len = layout.queries[q][1]
        truncated += min(512, layout.special_tokens + q_len + len(offsets))
        room = layout.budget - layout.special_tokens - q_len
        for name, reader in readers.items():
            spans = reader.spans(len(offsets), room)
            windows[name] += sum(layout.special_tokens + q_len + (end - start) for start, end in spans)
    rows["one read truncated at 512 (the peers)"] = truncated / len(pairs)
    for name, total in windows.items():
        rows[f"windows of 256, stride {name}"] = total / len(pairs)
    base = rows["one read truncated at 512 (the peers)"]
    report = {
        "date": date.today().isoformat(),
        "pairs": len(pairs),
        "seed": args.seed,
        "tokens per pair": {k: round(v, 1) for k, v in rows.items()},
        "x the peers' tokens": {k: round(v / base, 3) for k, v in rows.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
