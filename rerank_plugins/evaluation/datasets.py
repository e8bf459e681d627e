"""Load BEIR-layout datasets: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

WikiQA and TrecQA also carry ``candidates/<split>.tsv``: the official candidate
list of every question with a 0/1 label, in list order.

Example:
    >>> from pathlib import Path
    >>> ds = load_beir(Path("../shared/data/scifact"), "test")  # doctest: +SKIP
    >>> len(ds.queries)  # doctest: +SKIP
    300
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rerank_plugins.errors import RerankInputError

__all__ = ["BeirDataset", "load_beir", "shared_data_dir"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR-layout dataset.

    Attributes:
        name: Folder name of the dataset (``scifact``, ``wikiqa``...).
        split: The split whose qrels and candidates were loaded.
        corpus: Document id -> (title, text).
        queries: Query id -> text, restricted to queries of this split.
        qrels: Query id -> {document id: graded relevance}.
        candidates: Query id -> ordered list of (document id, label); empty when
            the dataset has no candidate lists.
    """

    name: str
    split: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def doc_text(self, doc_id: str) -> str:
        """Title and text joined the way every part of the project scores them."""
        return join_title(*self.corpus[doc_id])


def join_title(title: str, text: str) -> str:
    """A document's title and text as one passage (a full stop between them unless the title ends in one)."""
    if not title:
        return text
    sep = " " if title.rstrip()[-1:] in ".?!:" else ". "
    return f"{title.rstrip()}{sep}{text}"


def shared_data_dir(start: Path | None = None) -> Path | None:
    """Find ``shared/data`` beside the repository (``../shared/data``), if present."""
    here = (start or Path.cwd()).resolve()
    for base in (here, *here.parents):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def _read_tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if rows and rows[0] and rows[0][0] == "query-id":
        rows = rows[1:]
    return rows


def load_beir(root: Path | str, split: str) -> BeirDataset:
    """Load ``split`` of the BEIR-layout dataset at ``root``.

    Raises:
        RerankInputError: when the folder or the split's qrels file is missing.
    """
    root = Path(root)
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if root.is_dir() else []
        raise RerankInputError(
            f"No qrels for split '{split}' under {root} (expected {qrels_path.name}); "
            f"available splits: {available or 'none (is this a BEIR folder?)'}"
        )
    corpus: dict[str, tuple[str, str]] = {}
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            corpus[str(row["_id"])] = (row.get("title") or "", row.get("text") or "")
    qrels: dict[str, dict[str, int]] = {}
    for qid, did, score, *_ in _read_tsv(qrels_path):
        qrels.setdefault(qid, {})[did] = int(score)
    candidates: dict[str, list[tuple[str, int]]] = {}
    cand_path = root / "candidates" / f"{split}.tsv"
    if cand_path.is_file():
        for qid, did, label, *_ in _read_tsv(cand_path):
            candidates.setdefault(qid, []).append((did, int(label)))
    wanted = set(qrels) | set(candidates)
    queries: dict[str, str] = {}
    with (root / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if str(row["_id"]) in wanted:
                queries[str(row["_id"])] = row["text"]
    logger.info(
        "loaded %s/%s: %d docs, %d queries, %d with qrels, %d candidate lists",
        root.name,
        split,
        len(corpus),
        len(queries),
        len(qrels),
        len(candidates),
    )
    return BeirDataset(root.name, split, corpus, queries, qrels, candidates)
