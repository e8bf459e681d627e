"""The ``rerank-plugins`` command line.

Subcommands import their heavy dependencies lazily, so ``--help`` is instant.
User mistakes end with a one-line ``error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rerank_plugins.config import RerankConfig, load_settings_file, rerank_section
from rerank_plugins.errors import RerankPluginsError

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _quiet_frameworks() -> None:
    # Library chatter (load reports, per-file progress bars) is noise in a CLI.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("sentence_transformers", "bm25s"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _config_from_args(args: argparse.Namespace) -> RerankConfig:
    # flags > settings file > RERANK_PLUGINS_* variables > defaults, as in the adapters
    base = RerankConfig.from_file(args.config) if getattr(args, "config", None) else None
    overrides: dict[str, Any] = {}
    for field, attr in (
        ("model", "model"),
        ("top_n", "top_n"),
        ("score_threshold", "threshold"),
        ("device", "device"),
        ("batch_size", "batch_size"),
        ("max_length", "max_length"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            overrides[field] = value
    return RerankConfig.resolve(base, **overrides)


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="cross-encoder id or local path (default: the shipped model)")
    p.add_argument("--config", help="settings file (.toml, .yaml, .json); RERANK_PLUGINS_* variables apply on top")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=int, help="pairs per forward pass")
    p.add_argument("--max-length", type=int, help="token budget of a (query, passage) pair")


# --------------------------------------------------------------------------- rerank
def _read_passages(stream: TextIO, fmt: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if fmt == "tsv":
        for n, row in enumerate(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) == 1:
                records.append({"id": str(n), "text": row[0]})
            else:
                records.append({"id": row[0], "text": "\t".join(row[1:])})
        return records
    for n, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RerankPluginsError(
                f"line {n} is not valid JSON ({exc.msg}); each line must be an object with 'text'"
            ) from exc
        if isinstance(rec, str):
            rec = {"text": rec}
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise RerankPluginsError(f"line {n} must be a JSON object with a string 'text' field (and optional 'id')")
        records.append(rec)
    return records


def _text_of(record: dict[str, Any], cfg: RerankConfig) -> Any:
    """The text scored for one input record: ``text``, after its other fields' lines when
    ``text='content_with_metadata'`` (all of them, or ``metadata_keys``), as the adapters do."""
    text = record["text"]
    if cfg.text != "content_with_metadata" or not isinstance(text, str):
        return text
    from rerank_plugins.adapters._common import metadata_prefix

    prefix = metadata_prefix({k: v for k, v in record.items() if k not in ("id", "text")}, cfg.metadata_keys)
    return f"{prefix}\n{text}" if prefix else text


def _cmd_rerank(args: argparse.Namespace) -> int:
    from rerank_plugins.pipeline import Candidate, rerank_candidates
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade

    cfg = _config_from_args(args)
    if args.input in (None, "-"):
        records = _read_passages(sys.stdin, args.format)
    else:
        try:
            with open(args.input, encoding="utf-8") as fh:
                records = _read_passages(fh, args.format)
        except FileNotFoundError as exc:
            raise RerankPluginsError(f"input file {args.input} does not exist") from exc
    candidates = [Candidate(str(r["id"]) if r.get("id") is not None else None, _text_of(r, cfg), r) for r in records]
    scorer = get_scorer(cfg)
    result = rerank_candidates(args.query, candidates, scorer, cfg, cascade=resolve_cascade(cfg, scorer) or False)
    out = sys.stdout
    for r in result.items:
        rec = dict(r.candidate.item)
        rec.update({"score": r.score, "rank": r.rank, "first_stage_rank": r.first_stage_rank, "scoring": r.note.how})
        rec["score_kind"] = scorer.score_kind if r.score is not None else None
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    logger.info("counts: %s", result.counts)
    return 0


# --------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from rerank_plugins.demo import run_demo

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = _config_from_args(args)
    return run_demo(cfg, top_k=args.top_k, candidates=args.candidates, out=sys.stdout)


# --------------------------------------------------------------------------- eval
def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.evaluation.datasets import load_beir
    from rerank_plugins.evaluation.harness import format_table, run_evaluation, write_report
    from rerank_plugins.scoring.factory import get_scorer

    if args.depth <= 0:
        raise RerankPluginsError(f"--depth must be positive, got {args.depth}")
    ds = load_beir(Path(args.data), args.split)
    scorer: Any = None
    cascades: dict[str, RerankConfig] = {}
    if args.variants:
        base = _config_from_args(args)
        cascades = {
            Path(f).stem: RerankConfig.from_mapping({**base.model_dump(exclude_unset=True), **load_settings_file(f)})
            for f in args.variants
        }
        scorer = {label: get_scorer(c) for label, c in cascades.items()}
    elif not args.no_rerank:
        cascades = {"rerank": _config_from_args(args)}
        scorer = get_scorer(cascades["rerank"])
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    rerank_stages = [s.strip() for s in args.rerank_stages.split(",")] if args.rerank_stages else None
    unknown = set(stages) - {"bm25", "dense", "hybrid", "list order"}
    if unknown:
        raise RerankPluginsError(f"unknown first stage(s) {sorted(unknown)}; use bm25, dense, hybrid")
    report = run_evaluation(
        ds,
        scorer,
        stages=stages,
        rerank_stages=rerank_stages,
        depth=args.depth,
        limit=args.limit,
        first_stage_weight=args.first_stage_weight,
        cascades=cascades,
    )
    print(f"{ds.name}/{ds.split}: {report.queries} queries, depth {report.depth}, reranker: {report.model or 'none'}")
    print(format_table(report.rows, markdown=args.markdown))
    if args.output:
        write_report(report, Path(args.output))
        print(f"wrote {args.output}")
    return 0


# --------------------------------------------------------------------------- calibrate
def _labelled_pairs(
    paths: Sequence[str], split: str, queries: int | None = None
) -> tuple[list[tuple[str, str]], list[int], str]:
    """Every labelled (query, candidate) pair of ``split``; with ``queries``, those of at most that many
    questions per dataset (a seeded sample, the same on every run)."""
    import random
    from pathlib import Path

    from rerank_plugins.evaluation.datasets import load_beir

    pairs: list[tuple[str, str]] = []
    labels: list[int] = []
    names = []
    for path in paths:
        ds = load_beir(Path(path), split)
        if not ds.candidates:
            raise RerankPluginsError(f"{path} has no candidates/{split}.tsv with labelled pairs to calibrate on")
        qids = list(ds.candidates)
        if queries is not None and queries < len(qids):
            kept = set(random.Random(f"13 {ds.name} {split}").sample(sorted(qids), queries))
            qids = [q for q in qids if q in kept]
        for qid in qids:
            for doc, label in ds.candidates[qid]:
                pairs.append((ds.queries[qid], ds.doc_text(doc)))
                labels.append(label)
        names.append(f"{ds.name}/{split}" + (f" ({len(qids)} questions)" if queries is not None else ""))
    return pairs, labels, " + ".join(names)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.scoring.calibration import brier_score, expected_calibration_error, fit_calibration
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    if "test" in args.split.lower():
        raise RerankPluginsError(
            f"refusing to fit a calibration on split '{args.split}': figures on a test split must stay unseen; "
            "fit on a dev split and pass the test split as --eval-split"
        )
    cfg = _config_from_args(args).merged(activation="raw")
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
    pairs, labels, fitted_on = _labelled_pairs(args.data, args.split, args.queries)
    logits = scorer.score(pairs)
    calibration = fit_calibration(logits, labels, method=args.method, fitted_on=fitted_on)
    path = calibration.save(target)
    print(
        f"fitted {calibration.method} on {fitted_on} ({len(pairs)} pairs): a={calibration.a:.4f} b={calibration.b:.4f}"
    )
    print(f"wrote {path}")
    checks = [(fitted_on, logits, labels)]
    if args.eval_data:
        eval_pairs, eval_labels, eval_name = _labelled_pairs(args.eval_data, args.eval_split)
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


# --------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.training.export import export_checkpoint

    if not Path(args.checkpoint).is_dir():
        raise RerankPluginsError(f"checkpoint directory {args.checkpoint} does not exist")
    out = export_checkpoint(args.checkpoint, args.output, dtype=args.dtype)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"exported {args.checkpoint} -> {out} ({args.dtype}, {size:.1f} MB)")
    return 0


# --------------------------------------------------------------------------- serve
def _serve_config(args: argparse.Namespace) -> tuple[RerankConfig, Any]:
    from rerank_plugins.serving.settings import ServeSettings

    data: dict[str, Any] = dict(load_settings_file(args.config)) if args.config else {}
    table = data.get("serve") or {}
    own = rerank_section(data)
    overrides = {f: getattr(args, f) for f in ("model", "device", "batch_size", "max_length") if getattr(args, f, None)}
    # flags > settings file > RERANK_PLUGINS_* variables > defaults, as everywhere
    rerank = RerankConfig.resolve(RerankConfig.from_mapping(own) if own else None, **overrides)
    settings = ServeSettings.from_sources(
        table,
        os.environ,
        engine=args.engine,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        ray_address=args.ray_address,
        dynamic_batching=False if args.no_batching else None,
        max_documents=args.max_documents,
    )
    return rerank, settings


def _cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import time

    config, settings = _serve_config(args)
    if settings.host not in {"127.0.0.1", "localhost", "::1"}:
        logger.warning(
            "binding to %s: the service has no authentication; put it behind your own gateway", settings.host
        )
    url = f"http://{settings.host}:{settings.port}"
    if settings.engine == "uvicorn":
        from rerank_plugins._extras import require
        from rerank_plugins.serving.app import create_app

        uvicorn = require("uvicorn", "rerank-plugins serve --engine uvicorn")
        app = create_app(config=config, settings=settings)
        print(f"serving {app.state.service.scorer.name} at {url} (/rerank, /v1/rerank, /health, /metrics)", flush=True)
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
        return 0
    from rerank_plugins.serving import ray_deployment

    ray_deployment.start(config, settings)
    print(
        f"serving at {url} with {ray_deployment.replica_count()} replica(s) on Ray "
        f"({settings.ray_address or 'local instance on loopback'}); Ctrl-C stops",
        flush=True,
    )
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        ray_deployment.stop(shutdown_ray=settings.ray_address is None)
    return 0


# --------------------------------------------------------------------------- score-pairs
def _cmd_score_pairs(args: argparse.Namespace) -> int:
    from rerank_plugins.batch_scoring import score_pairs

    summary = score_pairs(
        args.input,
        args.output,
        _config_from_args(args),
        query_field=args.query_field,
        passage_field=args.passage_field,
        actors=args.actors,
        batch_size=args.batch_size_rows,
        rows_per_file=args.rows_per_file,
        max_rows=args.max_rows,
        output_format=args.format,
        ray_address=args.ray_address,
        progress=sys.stderr.isatty(),
    )
    print(json.dumps(summary, indent=2))
    return 0 if summary["complete"] or args.max_rows is not None else 1


# --------------------------------------------------------------------------- bench
def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.bench import format_report, parse_systems, run_benchmark

    systems = parse_systems(args.systems) if args.systems else None
    data = Path(args.data)
    if not data.is_dir():
        raise RerankPluginsError(
            f"--data {data} is not a directory (it should hold scifact/ and wikiqa/ in BEIR layout)"
        )
    report = run_benchmark(
        data,
        Path(args.output),
        model=args.model,
        workloads=[x.strip() for x in args.workloads.split(",")],
        n_queries=args.queries,
        depth=args.depth,
        systems=systems,
        extras=not args.no_extras,
    )
    print(format_report(report))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rerank_plugins.training.trainer import TrainConfig, train_cross_encoder

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
    ):
        if value is not None:
            values[key] = value
    try:
        config = TrainConfig.model_validate(values)
    except ValueError as exc:
        raise RerankPluginsError(f"invalid training settings: {exc}".replace("\n", " ")) from exc
    for path in config.train_datasets + config.dev_datasets:
        if not Path(path).is_dir():
            raise RerankPluginsError(f"dataset folder {path} does not exist")
    best = train_cross_encoder(config)
    print(f"best checkpoint: {best}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-plugins",
        description="Cross-encoder reranking for RAG pipelines (LangChain, LlamaIndex).",
        epilog="Run 'rerank-plugins <command> --help' for a command's options and examples.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="command")

    demo = sub.add_parser(
        "demo",
        help="rerank questions over the bundled corpus through LangChain and LlamaIndex (offline)",
        description="Runs the bundled questions through a LangChain pipeline and a LlamaIndex query engine "
        "(hybrid BM25 + dense candidates -> rerank -> top-k) and prints first-stage vs reranked results.",
        epilog="examples:\n  rerank-plugins demo\n  rerank-plugins demo --model path/to/cross-encoder --top-k 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(demo)
    demo.add_argument("--top-k", type=int, default=3, help="results kept after reranking (default 3)")
    demo.add_argument("--candidates", type=int, default=10, help="hybrid candidates per question (default 10)")
    demo.set_defaults(func=_cmd_demo)

    rr = sub.add_parser(
        "rerank",
        help="rerank passages (JSONL or TSV, file or stdin) for one query; ranked JSONL out",
        description="Reads passages, one per line: JSONL objects with 'text' (and optional 'id'; other fields "
        "are kept) or TSV 'id<TAB>text'. Writes the kept passages as JSONL, best first, with score and rank.",
        epilog="examples:\n"
        "  rerank-plugins rerank -q 'what is BM25?' -i passages.jsonl --top-n 5\n"
        "  printf 'a\\tBM25 ranks documents\\nb\\tbananas\\n' | rerank-plugins rerank -q 'what is BM25?' -f tsv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rr.add_argument("-q", "--query", required=True, help="the query")
    rr.add_argument("-i", "--input", help="passages file (default: stdin)")
    rr.add_argument("-f", "--format", choices=["jsonl", "tsv"], default="jsonl", help="input format (default jsonl)")
    rr.add_argument("--top-n", type=int, help="keep at most this many (default from config: 5)")
    rr.add_argument("--threshold", type=float, help="drop passages scoring below this")
    _add_model_options(rr)
    rr.set_defaults(func=_cmd_rerank)

    ev = sub.add_parser(
        "eval",
        help="first stages (BM25, dense, hybrid) and each + reranker on a BEIR-layout split",
        description="Reports the metrics of each first stage and of each first stage reranked by the "
        "cross-encoder, with time per query; prints a table and optionally writes JSON. Datasets with "
        "candidate lists (WikiQA, TrecQA) rank each question's own list, and report its list order too.",
        epilog="examples:\n"
        "  rerank-plugins eval --data ../shared/data/scifact --split test --output scifact.json\n"
        "  rerank-plugins eval --data ../shared/data/wikiqa --split dev --stages bm25,dense\n"
        "  rerank-plugins eval --data ../shared/data/scifact --split test --no-rerank",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--data", required=True, help="BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--stages", default="bm25,dense,hybrid", help="first stages, comma-separated")
    ev.add_argument("--rerank-stages", help="first stages to rerank (default: all of --stages)")
    ev.add_argument("--depth", type=int, default=100, help="candidates per query (default 100)")
    ev.add_argument("--limit", type=int, help="evaluate only the first N queries")
    ev.add_argument("--no-rerank", action="store_true", help="first stages only")
    ev.add_argument(
        "--variants",
        nargs="+",
        help="settings files (.toml/.yaml/.json), each a scorer variant compared on the same candidates",
    )
    ev.add_argument(
        "--first-stage-weight",
        type=float,
        default=0.0,
        help="blend relevance with first-stage rank (0..1, default 0: relevance alone, the model's guard off)",
    )
    ev.add_argument("--output", help="write the report as JSON here")
    ev.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    _add_model_options(ev)
    ev.set_defaults(func=_cmd_eval)

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
    _add_model_options(ca)
    ca.set_defaults(func=_cmd_calibrate)

    ex = sub.add_parser(
        "export",
        help="write a trained checkpoint as a compact safetensors folder (float16 by default)",
        description="Copies config and tokenizer and writes the weights as safetensors in the given dtype; "
        "no optimizer state or pickles. The scorer loads them back in its configured dtype.",
        epilog="examples:\n  rerank-plugins export runs/v1/best my-reranker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("checkpoint", help="a trained checkpoint directory (e.g. runs/v1/best)")
    ex.add_argument("output", help="directory to write (replaced if present)")
    ex.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    ex.set_defaults(func=_cmd_export)

    be = sub.add_parser(
        "bench",
        help="speed, memory and nDCG@10 of our paths and the peers' rerankers on the same candidates",
        description="Builds the workload once (SciFact test: hybrid top-DEPTH candidates; WikiQA test: the "
        "official candidate lists), then runs each system (LangChain CrossEncoderReranker, LlamaIndex "
        "SentenceTransformerRerank, sentence-transformers predict, FlashRank, our backends through both "
        "adapters) in a fresh process on the same fp32 weights. Writes bench.json, bench.md, latency.png "
        "and speed_quality.png into --output.",
        epilog="examples:\n"
        "  rerank-plugins bench --data ../shared/data --output bench-results\n"
        "  rerank-plugins bench --data ../shared/data --queries 5 --workloads wikiqa --no-extras \\\n"
        "      --systems 'ours onnx, langchain,langchain CrossEncoderReranker'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    be.add_argument("--data", required=True, help="folder holding scifact/ and wikiqa/ (BEIR layout)")
    be.add_argument("--output", default="bench-results", help="folder for JSON, markdown and plots")
    be.add_argument("--model", help="model id or path (default: the shipped model)")
    be.add_argument("--workloads", default="scifact,wikiqa", help="comma-separated: scifact, wikiqa")
    be.add_argument("--queries", type=int, default=20, help="test queries per workload (default 20)")
    be.add_argument("--depth", type=int, default=100, help="hybrid candidates per SciFact query (default 100)")
    be.add_argument("--systems", help="comma-separated subset of systems (default: all)")
    be.add_argument("--no-extras", action="store_true", help="skip the latency curves, memory probes and FLOP/s")
    be.set_defaults(func=_cmd_bench)

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
    tr.set_defaults(func=_cmd_train)

    sv = sub.add_parser(
        "serve",
        help="serve the scorer over HTTP (TEI /rerank, Cohere /v1/rerank, /health, /metrics) on Ray Serve or uvicorn",
        description="Starts the HTTP service. With --engine ray (default) it starts a local Ray instance on "
        "loopback (or joins --ray-address) and deploys the scorer as a Ray Serve deployment with replicas, "
        "dynamic batching across concurrent requests and optional autoscaling; --engine uvicorn runs one "
        "process without Ray. Settings: a [serve] table in --config, RERANK_PLUGINS_SERVE_* variables, flags.",
        epilog="examples:\n"
        "  rerank-plugins serve                      # http://127.0.0.1:8080, 1 replica\n"
        "  rerank-plugins serve --replicas 2 --port 9000\n"
        "  rerank-plugins serve --min-replicas 1 --max-replicas 4 --ray-address auto\n"
        "  rerank-plugins serve --engine uvicorn\n"
        "  curl -s 127.0.0.1:8080/rerank -H 'content-type: application/json' \\\n"
        '       -d \'{"query": "what is a cat", "texts": ["a cat is a pet", "stocks fell"]}\'',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(sv)
    sv.add_argument("--engine", choices=["ray", "uvicorn"], help="Ray Serve (default) or one uvicorn process")
    sv.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default 8080)")
    sv.add_argument("--replicas", type=int, help="replicas (initial count when autoscaling)")
    sv.add_argument("--min-replicas", type=int, help="autoscaling lower bound")
    sv.add_argument("--max-replicas", type=int, help="autoscaling upper bound (turns autoscaling on)")
    sv.add_argument("--ray-address", help="existing Ray cluster ('auto', 'ray://head:10001'); default: a local one")
    sv.add_argument("--no-batching", action="store_true", help="score each request on its own")
    sv.add_argument("--max-documents", type=int, help="most texts per request (default 1000)")
    sv.set_defaults(func=_cmd_serve)

    sp = sub.add_parser(
        "score-pairs",
        help="score a JSONL/Parquet file of (query, passage) pairs with Ray Data; resumable",
        description="Scores every row of INPUT (JSONL or Parquet with query and passage columns) in a pool "
        "of Ray Data actors and writes all input columns plus 'row' and 'score' as part files under "
        "OUTPUT/scored/. Run it again on the same OUTPUT after an interruption: rows already written are "
        "not scored again and none is lost. Prints a summary with pairs/s (also OUTPUT/summary.json).",
        epilog="examples:\n"
        "  rerank-plugins score-pairs pairs.jsonl labels/\n"
        "  rerank-plugins score-pairs pairs.parquet labels/ --actors 2 --format jsonl\n"
        "  python -c 'import pyarrow.parquet as pq; print(pq.read_table(\"labels/scored\").num_rows)'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(sp)
    sp.add_argument("input", help="JSONL or Parquet file of pairs, or a folder of them (e.g. a partitioned dataset)")
    sp.add_argument("output", help="output directory (resumed when it holds a previous run)")
    sp.add_argument("--query-field", default="query", help="column of the query (default 'query')")
    sp.add_argument("--passage-field", default="passage", help="column of the passage (default 'passage')")
    sp.add_argument("--actors", type=int, default=1, help="scorer actors, one model copy each (default 1)")
    sp.add_argument("--batch-size-rows", type=int, default=64, help="pairs per scorer call (default 64)")
    sp.add_argument("--rows-per-file", type=int, default=1024, help="rows per output file, the unit kept on resume")
    sp.add_argument("--max-rows", type=int, help="score at most this many more pairs, then stop")
    sp.add_argument("--format", choices=["parquet", "jsonl"], default="parquet", help="output files (parquet)")
    sp.add_argument("--ray-address", help="existing Ray cluster; default: a local instance on loopback")
    sp.set_defaults(func=_cmd_score_pairs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rerank-plugins`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    _quiet_frameworks()
    try:
        return int(args.func(args))
    except (RerankPluginsError, ValueError) as exc:
        if args.verbose >= 2:
            raise
        # the whole message on one line: its last sentence is usually the fix
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
