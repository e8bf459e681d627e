"""Distillation: the teacher's scored lists, MarginMSE, the students and `rerank-plugins distill`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_plugins.training.mining import TrainingGroup, save_groups

GROUPS = [
    TrainingGroup(
        "what makes bread rise",
        "Bread rises because yeast releases carbon dioxide gas in the dough.",
        ("The Colosseum held about 50,000 spectators.", "Kneading bread develops gluten.", "Venus is hot."),
        "toy",
    ),
    TrainingGroup(
        "how much caffeine is in coffee",
        "An 8-ounce cup of brewed coffee contains roughly 95 milligrams of caffeine.",
        ("Black tea contains about 47 milligrams of caffeine.", "Paris is the capital of France.", "Rain falls."),
        "toy",
    ),
    TrainingGroup(
        "which planet is the hottest",
        "Venus is the hottest planet in the solar system.",
        ("Mercury is the planet closest to the Sun.", "Coffee is brewed from roasted beans.", "Dogs bark."),
        "toy",
    ),
]


def test_margin_mse_on_a_toy_triple_moves_scores_the_right_way() -> None:
    torch = pytest.importorskip("torch")
    from rerank_plugins.training.distill import margin_mse

    teacher = torch.tensor([[3.0, 1.0, -1.0]])
    assert margin_mse(teacher + 5.0, teacher).item() == 0.0  # blind to the student's offset
    student = torch.zeros(1, 3, requires_grad=True)
    start = margin_mse(student, teacher).item()
    optim = torch.optim.SGD([student], lr=0.1)
    for _ in range(50):
        optim.zero_grad()
        margin_mse(student, teacher).backward()
        optim.step()
    s = student.detach()[0]
    assert margin_mse(student.detach(), teacher).item() < 0.01 * start
    assert s[0] > s[1] > s[2]
    assert float(s[0] - s[1]) == pytest.approx(2.0, abs=0.1)
    assert float(s[0] - s[2]) == pytest.approx(4.0, abs=0.1)


def test_pairs_read_back_as_lists_positive_first_and_partial_groups_are_set_aside(tmp_path: Path) -> None:
    from rerank_plugins.training.distill import read_labels, write_pairs

    path = tmp_path / "pairs.jsonl"
    assert write_pairs(GROUPS, path) == 12
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["slot"] for r in rows if r["label"] == 1} == {0}
    scored = [{**r, "score": float(10 * r["group"] - r["slot"])} for r in rows]
    scored.reverse()  # score-pairs does not keep the order
    groups = read_labels(scored)
    assert [g.query for g in groups] == [g.query for g in GROUPS]
    assert groups[1].passages == (GROUPS[1].positive, *GROUPS[1].negatives)
    assert groups[1].scores == (10.0, 9.0, 8.0, 7.0)
    partial = [r for r in scored if not (r["group"] == 1 and r["slot"] == 2)]
    assert [g.query for g in read_labels(partial)] == [GROUPS[0].query, GROUPS[2].query]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in scored))
    assert read_labels(labels) == groups
    with pytest.raises(ValueError, match=r"lacks \['score'\].*score-pairs"):
        read_labels(rows)
    with pytest.raises(ValueError, match="no complete group"):
        read_labels([r for r in scored if r["slot"] != 0])


def test_a_student_keeps_its_first_layers_and_distillation_needs_a_teacher(tiny_model: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification

    from rerank_plugins.training.trainer import TrainConfig, keep_layers

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, dtype=torch.float32)
    first = model.bert.encoder.layer[0]
    with pytest.raises(ValueError, match="only 2 layers"):
        keep_layers(model, 3)
    keep_layers(model, 1)
    assert model.config.num_hidden_layers == 1
    assert list(model.bert.encoder.layer) == [first]
    with pytest.raises(ValueError, match="set teacher_labels"):
        TrainConfig(base_model=tiny_model, output_dir=tmp_path, train_datasets=[tmp_path], loss="distill")
    with pytest.raises(ValueError, match="margin_mse_weight needs teacher_labels"):
        TrainConfig(base_model=tiny_model, output_dir=tmp_path, train_datasets=[tmp_path], margin_mse_weight=1)
    with pytest.raises(ValueError, match="nothing to learn"):
        TrainConfig(base_model=tiny_model, output_dir=tmp_path, teacher_labels=tmp_path, loss="distill")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rerank_plugins.cli", *args]


def test_score_pairs_labels_feed_distill_end_to_end(tiny_model: str, tmp_path: Path) -> None:
    """groups -> `distill --write-pairs` -> `score-pairs` (Ray Data) -> `distill` a bi-encoder and a
    cut cross-encoder, both loadable by the library's scorers."""
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    from rerank_plugins import RerankConfig
    from rerank_plugins.scoring.bi_encoder import BiEncoderScorer
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.training.distill import read_labels

    groups_file = save_groups(GROUPS * 4, tmp_path / "groups.json")
    env = {**os.environ, "RERANK_PLUGINS_BACKEND": "torch"}

    def cli(*args: str) -> str:
        done = subprocess.run(_cli(*args), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    cli("distill", str(groups_file), "--write-pairs", str(tmp_path / "pairs.jsonl"))
    teacher = tmp_path / "teacher.toml"
    teacher.write_text(f'[scorer]\nkind = "cross-encoder"\nmodel = "{tiny_model}"\nactivation = "raw"\n')
    summary = json.loads(
        cli("score-pairs", str(tmp_path / "pairs.jsonl"), str(tmp_path / "labels"), "--config", str(teacher))
    )
    assert summary["complete"]
    assert summary["rows_done"] == 48
    labelled = read_labels(tmp_path / "labels")
    assert len(labelled) == 12
    expected = CrossEncoderScorer(tiny_model, config=RerankConfig(device="cpu"), activation="raw").score(
        [(GROUPS[0].query, p) for p in labelled[0].passages]
    )
    assert list(labelled[0].scores) == pytest.approx(expected, abs=1e-4)

    bi = tmp_path / "bi"
    cli("distill", str(tmp_path / "labels"), str(bi), "--student", tiny_model, "--groups-per-step", "4")
    record = json.loads((bi / "distill.json").read_text())
    assert (record["groups"], record["steps"]) == (12, 3)
    scores = BiEncoderScorer(str(bi)).score([(GROUPS[0].query, GROUPS[0].positive)])
    assert -1.0 <= scores[0] <= 1.0

    ce = tmp_path / "ce"
    cli("distill", str(tmp_path / "labels"), str(ce), "--kind", "cross-encoder", "--teacher", tiny_model,
        "--layers", "1", "--groups-per-step", "4")  # fmt: skip
    best = ce / "last"
    assert json.loads((best / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((ce / "train_config.json").read_text())["loss"] == "distill"
    assert len(CrossEncoderScorer(str(best), config=RerankConfig(device="cpu")).score([("q", "p")])) == 1


def test_distill_scores_a_groups_file_with_the_teacher_once_and_trains_the_student(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rerank_plugins.cli import main
    from rerank_plugins.training.distill import read_labels

    groups_file = save_groups(GROUPS, tmp_path / "groups.json.xz")
    monkeypatch.setenv("RERANK_PLUGINS_BACKEND", "torch")
    out = tmp_path / "student"
    argv = ["distill", str(groups_file), str(out), "--teacher", tiny_model, "--student", tiny_model]
    assert main([*argv, "--groups", "2"]) == 0
    labels = read_labels(out / "labels.jsonl")
    assert len(labels) == 2
    assert not (out / "pairs.jsonl").exists()
    assert json.loads((out / "distill.json").read_text())["steps"] == 1
    before = (out / "labels.jsonl").stat().st_mtime_ns
    assert main(argv) == 0  # the labels are kept and reused, not scored again
    assert (out / "labels.jsonl").stat().st_mtime_ns == before
    with pytest.raises(SystemExit):
        main(["distill", "--kind", "nope", str(groups_file), str(out)])
    assert main(["distill", str(tmp_path / "missing.json"), str(out)]) == 2  # a clear error, exit 2


def test_eval_cli_hands_the_distilled_bi_encoder_to_the_first_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rerank_plugins.cli import main
    from rerank_plugins.evaluation import harness

    seen: dict[str, object] = {}

    def fake_run_evaluation(ds: object, scorer: object, **kwargs: object) -> harness.EvalReport:
        seen.update(kwargs)
        return harness.EvalReport("toy", "dev", 0, 100, "", [])

    root = tmp_path / "toy"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "bread rises"}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "why does bread rise"}\n')
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    monkeypatch.setattr(harness, "run_evaluation", fake_run_evaluation)
    argv = ["eval", "--data", str(root), "--split", "dev", "--no-rerank", "--stages", "dense,hybrid"]
    assert main([*argv, "--dense-model", str(tmp_path / "bi")]) == 0
    assert seen["dense_model"] == str(tmp_path / "bi")
    assert main(argv) == 0
    assert seen["dense_model"] is None


def test_a_batch_holds_lists_of_one_length_so_ragged_groups_train() -> None:
    """Mined or labelled groups can have fewer negatives (duplicates dropped); a batch is one logits matrix."""
    import random

    from rerank_plugins.training.trainer import _batches

    short = [TrainingGroup(f"q{i}", "p", ("n1", "n2"), "toy") for i in range(5)]
    long = [TrainingGroup(f"r{i}", "p", ("n1", "n2", "n3"), "toy") for i in range(6)]
    batches = _batches(short + long, 4, random.Random(0))
    assert sorted(g.query for b in batches for g in b) == sorted(g.query for g in short + long)
    assert all(len({len(g.negatives) for g in b}) == 1 for b in batches)
