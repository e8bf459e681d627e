"""Build a static-embedding model from a bi-encoder, for trying it as the cascade's cheap pass.

A static model (Model2Vec, Minish Lab: every vocabulary token passed through the bi-encoder once,
PCA to ``--dims``, Zipf weighting) embeds a text as the mean of its tokens' vectors: no transformer
runs at query time, so scoring 100 candidates costs milliseconds. The folder written is a plain
sentence-transformers model (``StaticEmbedding`` + ``Normalize``), so ``BiEncoderScorer`` and
``benchmarks/guard_depth.py --cheap-model`` load it without model2vec.

model2vec's ``distill`` extra pins an older transformers than the library's, so this runs in an
environment of its own:

    python -m venv /tmp/m2v && /tmp/m2v/bin/pip install torch==2.13.0 "model2vec[distill]==0.10.0" scikit-learn
    HF_HUB_OFFLINE=1 /tmp/m2v/bin/python benchmarks/distillation/static_pick.py BI_ENCODER runs/static/static-minilm
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

logger = logging.getLogger("static_pick")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bi_encoder", help="a sentence-transformers bi-encoder folder (or hub id)")
    parser.add_argument("output", type=Path)
    parser.add_argument("--dims", type=int, default=256, help="PCA dimensions (model2vec's default 256)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from model2vec.distill import distill

    start = time.perf_counter()
    model = distill(model_name=args.bi_encoder, pca_dims=args.dims)
    model.save_pretrained(str(args.output))
    logger.info("static model of %s written to %s in %.0f s", args.bi_encoder, args.output, time.perf_counter() - start)


if __name__ == "__main__":
    main()
