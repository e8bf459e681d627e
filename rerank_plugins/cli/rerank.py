"""``rerank-plugins rerank``: rerank passages (JSONL or TSV, file or stdin) for one query; ranked JSONL out."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from typing import Any, TextIO

from rerank_plugins.cli._common import add_model_options, config_from_args
from rerank_plugins.config import RerankConfig
from rerank_plugins.errors import RerankPluginsError

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
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
    add_model_options(rr)
    rr.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    from rerank_plugins.pipeline import Candidate, rerank_candidates
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade

    cfg = config_from_args(args)
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
