"""The bundled demo corpus and questions (written before any model: a check, never training data)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["DemoPassage", "load_demo_corpus", "load_demo_questions"]


@dataclass(frozen=True)
class DemoPassage:
    id: str
    title: str
    text: str


def _read_jsonl(name: str) -> list[dict[str, Any]]:
    raw = resources.files("rerank_plugins.data").joinpath(name).read_text(encoding="utf-8")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def load_demo_corpus() -> list[DemoPassage]:
    """The bundled corpus: short passages on six topics, with near-miss distractors."""
    return [DemoPassage(r["id"], r["title"], r["text"]) for r in _read_jsonl("demo_passages.jsonl")]


def load_demo_questions() -> list[tuple[str, str]]:
    """(question, id of the passage that answers it)."""
    return [(r["question"], r["answer_id"]) for r in _read_jsonl("demo_questions.jsonl")]
