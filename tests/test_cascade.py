"""The cascade (cascade_keep): a cheap pass prunes, the full model orders the survivors, nothing is lost."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest

from rerank_plugins import Candidate, ConfigError, RerankConfig, arerank_candidates, rerank_candidates
from rerank_plugins.scoring.base import PairNote, ScoredPairs, Scorer
from tests.conftest import FixedScorer, OverlapScorer


class ByText(Scorer):
    """Scores from a text -> score table; records every call."""

    def __init__(self, name: str, table: dict[str, float]) -> None:
        self.name, self.table, self.calls = name, table, []  # type: ignore[var-annotated]

    def score_detailed(self, pairs):  # type: ignore[no-untyped-def]
        pairs = list(pairs)
        self.calls.append([p for _, p in pairs])
        return ScoredPairs([self.table[p] for _, p in pairs], [PairNote()] * len(pairs))


TEXTS = [f"passage {i}" for i in range(8)]
# the cheap pass likes 5 > 2 > 7 > 0 > ...; the full model orders the survivors its own way
CHEAP = dict(zip(TEXTS, [0.50, 0.10, 0.80, 0.20, 0.05, 0.90, 0.15, 0.60], strict=True))
FULL = dict(zip(TEXTS, [0.95, 0.40, 0.30, 0.99, 0.01, 0.70, 0.02, 0.20], strict=True))


def candidates() -> list[Candidate]:
    return [Candidate(str(i), t, first_stage_score=float(10 - i)) for i, t in enumerate(TEXTS)]


def test_cheap_pass_scores_all_full_model_only_the_survivors_rest_follow_in_cheap_order() -> None:
    cheap, full = ByText("cheap", CHEAP), ByText("full", FULL)
    cfg = RerankConfig(cascade_keep=4, top_n=None)
    result = rerank_candidates("q", candidates(), full, cfg, pruner=cheap)
    assert cheap.calls == [TEXTS]
    # survivors: 5, 2, 7, 0 (cheap order); the full model is asked for exactly those
    assert sorted(full.calls[0]) == sorted(["passage 5", "passage 2", "passage 7", "passage 0"])
    assert [r.candidate.id for r in result.items] == ["0", "5", "2", "7", "3", "6", "1", "4"]
    survivors, pruned = result.items[:4], result.items[4:]
    assert [r.score for r in survivors] == [0.95, 0.70, 0.30, 0.20]
    assert all(r.note.how == "whole" for r in survivors)
    assert all(r.score is None and r.note.how == "pruned" for r in pruned)
    assert [r.cascade_score for r in pruned] == [0.20, 0.15, 0.10, 0.05]
    assert [r.cascade_score for r in survivors] == [0.50, 0.90, 0.80, 0.60]
    assert result.counts == {"received": 8, "scored": 4, "kept": 8, "pruned": 4}
    # candidate 3 is the full model's favourite but the cheap pass pruned it: the cascade's quality cost
    assert result.items[4].candidate.id == "3"


def test_small_pools_skip_the_cheap_pass_and_match_the_plain_pipeline() -> None:
    cheap, full = ByText("cheap", CHEAP), ByText("full", FULL)
    out = rerank_candidates("q", candidates()[:4], full, RerankConfig(cascade_keep=4, top_n=None), pruner=cheap)
    plain = rerank_candidates("q", candidates()[:4], ByText("full", FULL), RerankConfig(top_n=None))
    assert cheap.calls == []
    assert [(r.candidate.id, r.score, r.cascade_score) for r in out.items] == [
        (r.candidate.id, r.score, None) for r in plain.items
    ]


def test_top_n_threshold_and_min_keep_with_pruned_candidates() -> None:
    cfg = RerankConfig(cascade_keep=4, top_n=None, score_threshold=0.18)
    result = rerank_candidates("q", candidates(), ByText("full", FULL), cfg, pruner=ByText("cheap", CHEAP))
    # survivors judged by their full score (0.95, 0.70, 0.30, 0.20 pass); pruned by their cheap score (3: 0.20)
    assert [r.candidate.id for r in result.items] == ["0", "5", "2", "7", "3"]
    assert sorted(c.id for c, why in result.dropped if why == "score_threshold") == ["1", "4", "6"]
    few = rerank_candidates("q", candidates(), ByText("full", FULL), cfg.merged(top_n=2), pruner=ByText("cheap", CHEAP))
    assert [r.candidate.id for r in few.items] == ["0", "5"]
    assert len(few.items) + len(few.dropped) == 8  # every candidate returned or dropped with a reason
    strict = cfg.merged(score_threshold=0.99, min_keep=6)
    kept = rerank_candidates("q", candidates(), ByText("full", FULL), strict, pruner=ByText("cheap", CHEAP))
    assert [r.candidate.id for r in kept.items] == ["0", "5", "2", "7", "3", "6"]


def test_time_budget_spends_the_full_model_in_cheap_pass_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_pipeline import _Clock

    clock = _Clock()
    monkeypatch.setattr("rerank_plugins.pipeline.plan.time.perf_counter", clock)

    class Slow(ByText):
        def score_detailed(self, pairs):  # type: ignore[no-untyped-def]
            clock.now += 0.040
            return super().score_detailed(pairs)

    full = Slow("full", FULL)
    cfg = RerankConfig(cascade_keep=6, batch_size=2, top_n=None, time_budget_ms=100)
    result = rerank_candidates("q", candidates(), full, cfg, pruner=ByText("cheap", CHEAP))
    # cheap order 5, 2, 7, 0, 3, 6 | 1, 4; two calls of 2 fit in 100 ms
    assert full.calls == [["passage 5", "passage 2"], ["passage 7", "passage 0"]]
    assert [r.candidate.id for r in result.items] == ["0", "5", "2", "7", "3", "6", "1", "4"]
    assert [r.note.how for r in result.items[4:]] == ["unscored", "unscored", "pruned", "pruned"]
    assert result.counts == {"received": 8, "scored": 4, "kept": 8, "unscored": 2, "pruned": 2}


def test_async_agrees_and_callers_objects_are_untouched() -> None:
    items = candidates()
    before = copy.deepcopy(items)
    cfg = RerankConfig(cascade_keep=3, top_n=5)
    sync = rerank_candidates("q", items, ByText("full", FULL), cfg, pruner=ByText("cheap", CHEAP))
    asyn = asyncio.run(arerank_candidates("q", items, ByText("full", FULL), cfg, pruner=ByText("cheap", CHEAP)))
    assert [(r.candidate.id, r.score, r.note) for r in sync.items] == [
        (r.candidate.id, r.score, r.note) for r in asyn.items
    ]
    assert items == before


def test_a_misbehaving_cheap_pass_is_reported_as_such() -> None:
    from rerank_plugins import ScorerOutputError

    with pytest.raises(ScorerOutputError, match="cascade pass"):
        rerank_candidates("q", candidates(), OverlapScorer(), RerankConfig(cascade_keep=2), pruner=FixedScorer([1.0]))


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="cascade_max_length=512 is not below max_length=256"):
        RerankConfig.from_mapping({"cascade_keep": 10, "cascade_max_length": 512})
    with pytest.raises(ConfigError, match="needs cascade_model"):
        RerankConfig.from_mapping({"scorer": "remote", "remote_url": "http://127.0.0.1:1", "cascade_keep": 10})
    with pytest.raises(ConfigError, match=r"cascade\.keep"):
        RerankConfig.from_mapping({"cascade_keep": 0})
    RerankConfig(scorer="remote", remote_url="http://127.0.0.1:1", cascade_keep=10, cascade_model="some/model")
    env = {"RERANK_PLUGINS_CASCADE_KEEP": "20", "RERANK_PLUGINS_CASCADE_MAX_LENGTH": "96"}
    assert (RerankConfig.from_env(env).cascade_keep, RerankConfig.from_env(env).cascade_max_length) == (20, 96)
    assert RerankConfig.from_env({"RERANK_PLUGINS_CASCADE_KEEP": "none"}).cascade_keep is None
    assert RerankConfig.from_mapping({"cascade_keep": "off"}).cascade_keep is None  # TOML has no null
    assert RerankConfig.from_mapping({"cascade_keep": False}).cascade_keep is None
    with pytest.raises(ConfigError, match=r"cascade\.keep"):
        RerankConfig.from_env({"RERANK_PLUGINS_CASCADE_KEEP": "lots"})
    cheap = RerankConfig(model="m", cascade_keep=30, cascade_max_length=96, scorer="windowed").cascade_config()
    assert (cheap.model, cheap.max_length, cheap.scorer_kind, cheap.cascade_keep) == ("m", 96, "cross-encoder", None)


def test_adapters_with_a_scorer_instance_need_cascade_model() -> None:
    from rerank_plugins.adapters.langchain import RerankCompressor

    with pytest.raises(ValueError, match="set cascade_model"):  # raised when the adapter is built
        RerankCompressor(model=OverlapScorer(), config=RerankConfig(cascade_keep=2)).compress_documents([], "q")


def test_real_model_the_cheap_pass_shares_the_weights_and_reads_a_prefix(tiny_model: str) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.adapters.langchain import RerankCompressor
    from rerank_plugins.adapters.llamaindex import RerankNodePostprocessor
    from rerank_plugins.scoring.factory import get_scorer

    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    texts = [" ".join(words[i:] + words[:i]) * 6 for i in range(10)]
    cfg = RerankConfig(
        model=tiny_model, device="cpu", cascade_keep=4, cascade_max_length=24, max_length=128, top_n=None,
        scorer="cross-encoder",
    )  # fmt: skip
    full, cheap = get_scorer(cfg), get_scorer(cfg.cascade_config())
    assert cheap is not full
    assert cheap._loaded is full._loaded
    expected_cheap = cheap.score_detailed([("alpha beta", t) for t in texts])
    assert {n.how for n in expected_cheap.notes} == {"truncated"}  # 24 tokens: every passage cut
    docs = [Document(page_content=t, id=str(i), metadata={"k": i}) for i, t in enumerate(texts)]
    out = RerankCompressor(config=cfg).compress_documents(docs, "alpha beta")
    assert len(out) == 10
    assert {d.metadata["k"] for d in out} == set(range(10))
    survivors = [d for d in out if d.metadata["rerank_scoring"] != "pruned"]
    assert len(survivors) == 4
    cheap_by_id = {str(i): s for i, s in enumerate(expected_cheap.scores)}
    best4 = sorted(cheap_by_id, key=lambda i: -cheap_by_id[i])[:4]
    assert sorted(d.id for d in survivors) == sorted(best4)  # type: ignore[type-var]
    full_scores = full.score([("alpha beta", d.page_content) for d in survivors])
    assert [d.metadata["relevance_score"] for d in survivors] == pytest.approx(sorted(full_scores, reverse=True))
    assert [d.metadata["rerank_cascade_score"] for d in out] == pytest.approx([cheap_by_id[str(d.id)] for d in out])
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(texts)]
    got = RerankNodePostprocessor(config=cfg).postprocess_nodes(nodes, QueryBundle("alpha beta"))
    assert [n.node.node_id for n in got] == [d.id for d in out]
    assert [n.score for n in got[4:]] == [None] * 6


def test_eval_cli_reports_a_cascade_variant(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("bm25s")
    from rerank_plugins.cli import main
    from tests.test_training import _toy_beir

    root = _toy_beir(tmp_path / "toy")
    variant = tmp_path / "cascade-1.toml"
    variant.write_text("cascade_keep = 1\ncascade_max_length = 20\nmax_length = 64\n")
    plain = tmp_path / "plain.toml"
    plain.write_text("max_length = 64\n")
    out = tmp_path / "report.json"
    code = main(
        ["eval", "--data", str(root), "--split", "dev", "--stages", "list order", "--model", tiny_model,
         "--variants", str(variant), str(plain), "--output", str(out)]
    )  # fmt: skip
    assert code == 0
    rows = {r["system"]: r for r in json.loads(out.read_text())["rows"]}
    cascade, full = rows["list order + cascade-1"], rows["list order + plain"]
    assert cascade["cascade pairs"] == 4  # two queries x two candidates, all through the cheap pass
    # at most the one survivor per query reaches the full model (none if the cheap pass read it whole)
    assert cascade["new pairs"] <= 2
    # both variants use one scorer instance (same model and settings), so they share its scores: the plain
    # variant reads only the pairs the cascade did not read in full
    assert full["new pairs"] == 4 - cascade["new pairs"]
    assert "cascade pairs" not in full
    assert "cascade-1" in capsys.readouterr().out


def test_a_query_too_long_for_the_cheap_pass_falls_back_to_the_full_model(
    tiny_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    texts = [f"passage number {i} about bread" for i in range(6)]
    cfg = RerankConfig(
        model=tiny_model, device="cpu", cascade_keep=2, cascade_max_length=16, max_length=128, top_n=None
    )
    query = "why does bread rise when yeast is added to the flour and water"
    items = [Candidate(str(i), t) for i, t in enumerate(texts)]
    from rerank_plugins.scoring.factory import get_scorer

    with caplog.at_level("WARNING", logger="rerank_plugins.pipeline"):
        result = rerank_candidates(query, items, get_scorer(cfg), cfg)
        asyn = asyncio.run(arerank_candidates(query, items, get_scorer(cfg), cfg))
    assert result.scored == 6
    assert all(r.note.how == "whole" and r.cascade_score is None for r in result.items)
    assert [r.score for r in asyn.items] == [r.score for r in result.items]
    assert "cascade skipped" in caplog.text


def test_pairs_the_cheap_pass_read_whole_keep_their_exact_score(tiny_model: str) -> None:
    from rerank_plugins.scoring.factory import get_scorer

    long_text = " ".join(["yeast makes bread rise"] * 20)
    texts = [f"short passage {i} about bread" for i in range(5)] + [f"{long_text} {i}" for i in range(5)]
    cfg = RerankConfig(
        model=tiny_model, device="cpu", cascade_keep=7, cascade_max_length=32, max_length=256, top_n=None
    )
    full = get_scorer(cfg)
    exact = dict(zip(texts, full.score([("bread", t) for t in texts]), strict=True))
    calls: list[int] = []
    original = full.score_detailed

    def spy(pairs):  # type: ignore[no-untyped-def]
        calls.append(len(pairs))
        return original(pairs)

    full.score_detailed = spy  # type: ignore[method-assign]
    try:
        result = rerank_candidates("bread", [Candidate(str(i), t) for i, t in enumerate(texts)], full, cfg)
    finally:
        del full.score_detailed
    how = {r.candidate.text: r.note.how for r in result.items}
    assert len(how) == 10  # nothing lost
    for r in result.items:
        if r.score is not None:  # short ones come straight from the cheap pass, long survivors from the full one
            assert r.score == pytest.approx(exact[r.candidate.text], abs=1e-5)
    assert all(how[t] == "whole" for t in texts[:5])
    long_survivors = [t for t in texts[5:] if how[t] != "pruned"]
    assert 2 <= len(long_survivors) <= 5  # 7 survivors, at most 5 of them short
    assert calls == [len(long_survivors)]  # only the long survivors are scored again
    assert result.scored == 5 + len(long_survivors)
    assert result.counts.get("pruned", 0) == 5 - len(long_survivors)


def test_auto_cascade_runs_for_a_cpu_cross_encoder_on_large_pools_only(tiny_model: str, tiny_student: str) -> None:
    from rerank_plugins.pipeline import AUTO_CASCADE_KEEP
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade

    long_text = " ".join(["yeast makes bread rise"] * 40)
    items = [Candidate(str(i), f"{i} {long_text}") for i in range(AUTO_CASCADE_KEEP + 5)]
    cfg = RerankConfig(model=tiny_model, device="cpu", top_n=None)
    assert cfg.cascade_keep == "auto"
    full = get_scorer(cfg)
    resolved = resolve_cascade(cfg, full)
    assert resolved is not None
    assert resolved.keep == AUTO_CASCADE_KEEP
    assert resolved.scorer.config.max_length == 128  # type: ignore[attr-defined]
    assert resolved.exact  # the model itself at a shorter length
    result = rerank_candidates("bread", items, full, cfg)
    assert result.counts["pruned"] == 5
    assert result.scored == AUTO_CASCADE_KEEP
    small = rerank_candidates("bread", items[:AUTO_CASCADE_KEEP], full, cfg)
    assert "pruned" not in small.counts
    # 'auto' with a cheap model of its own (a distilled student) uses it, whatever the lengths
    student = cfg.merged(cascade_model=tiny_student, max_length=128)
    own = resolve_cascade(student, get_scorer(student))
    assert own is not None
    assert own.keep == AUTO_CASCADE_KEEP
    assert own.scorer.config.model == tiny_student  # type: ignore[attr-defined]
    assert not own.exact
    # off: scorers that are not a local cross-encoder, short max_length, or cascade_keep=None
    assert resolve_cascade(cfg, OverlapScorer()) is None
    assert resolve_cascade(cfg.merged(max_length=128), get_scorer(cfg.merged(max_length=128))) is None
    assert resolve_cascade(cfg.merged(cascade_keep=None), full) is None
    exact = rerank_candidates("bread", items, full, cfg.merged(cascade_keep=None))
    assert exact.scored == len(items)


def test_real_model_windowed_default_cascade_reads_survivors_in_windows(tiny_model: str) -> None:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade
    from rerank_plugins.scoring.windowed import WindowedScorer

    # the default settings: windows at max_length, and on a CPU the 'auto' cascade in front of them
    cfg = RerankConfig(model=tiny_model, device="cpu", max_length=48, cascade_max_length=24, top_n=None)
    assert cfg.scorer_kind == "windowed"
    full = get_scorer(cfg)
    assert isinstance(full, WindowedScorer)
    resolved = resolve_cascade(cfg, full)
    assert resolved is not None
    keep, cheap = resolved.keep, resolved.scorer
    assert keep == 30
    assert isinstance(cheap, CrossEncoderScorer)
    assert cheap._loaded is full.inner._loaded  # one copy of the weights
    assert full.cheap_pass_is_exact(cheap)
    assert resolved.exact
    assert not get_scorer(cfg.merged(window_tokens=8)).cheap_pass_is_exact(cheap)  # fixed windows may split a pair
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    long_texts = [" ".join(words[i:] + words[:i]) * 6 for i in range(6)]  # longer than one window
    short_texts = ["alpha beta", "kappa iota gamma"]  # fit the cheap pass whole
    texts = long_texts + short_texts
    run = cfg.merged(cascade_keep=5)
    result = rerank_candidates("alpha beta", [Candidate(str(i), t) for i, t in enumerate(texts)], full, run)
    assert len(result.items) == len(texts)  # nothing lost: survivors first, then the pruned
    by_id = {str(r.candidate.id): r for r in result.items}
    cheap_scores = cheap.score_detailed([("alpha beta", t) for t in texts])
    windowed = full.score_detailed([("alpha beta", t) for t in texts])
    order = sorted(range(len(texts)), key=lambda i: -cheap_scores.scores[i])
    for rank, i in enumerate(order):
        item = by_id[str(i)]
        if rank < 5 or i >= len(long_texts):
            # survivors get the windowed score; a short pair read whole by the cheap pass keeps that score
            # wherever it ranks, since the windowed read would give the same (one whole window)
            assert item.score == pytest.approx(windowed.scores[i], abs=1e-5)
            assert item.note.how == ("whole" if i >= len(long_texts) else "windowed")
        else:
            assert item.note.how == "pruned"
    assert sum(by_id[str(i)].note.how == "windowed" for i in range(len(long_texts))) >= 5 - len(short_texts)


def test_a_guard_in_force_guards_the_cheap_pass_too() -> None:
    # the cheap pass alone would keep 5, 2, 7, 0; candidate 1 (first-stage rank 2, cheap 0.10) is among the
    # first stage's best, candidate 7 (rank 8, cheap 0.60) among its worst
    plain = rerank_candidates(
        "q", candidates(), ByText("full", FULL), RerankConfig(cascade_keep=4, top_n=None), pruner=ByText("cheap", CHEAP)
    )
    full = ByText("full", FULL)
    cfg = RerankConfig(cascade_keep=4, top_n=None, first_stage_weight=0.5)
    guarded = rerank_candidates("q", candidates(), full, cfg, pruner=ByText("cheap", CHEAP))
    # keys over the 8 (horizon 30 > pool: the prior falls to 0 at the last): cheap min-max / 2 + prior / 2
    # 0: 0.529 1: 0.489 2: 0.745 3: 0.417 4: 0.214 5: 0.643 6: 0.150 7: 0.318 -> keep 2, 5, 0, 1
    assert sorted(full.calls[0]) == ["passage 0", "passage 1", "passage 2", "passage 5"]
    assert {r.candidate.id for r in plain.items if r.note.how != "pruned"} == {"0", "2", "5", "7"}
    assert len(guarded.items) == 8  # nothing lost: the pruned follow in the guarded pick's order
    assert [r.candidate.id for r in guarded.items[4:]] == ["3", "7", "4", "6"]
    assert all(r.note.how == "pruned" for r in guarded.items[4:])

    # the model's own guard (first_stage_weight=None) guards the pick the same way; 0 turns both off
    class Guarded(ByText):
        recommended_first_stage_weight = 0.5

    own = Guarded("full", FULL)
    rerank_candidates("q", candidates(), own, cfg.merged(first_stage_weight=None), pruner=ByText("cheap", CHEAP))
    assert own.calls == full.calls
    off = Guarded("full", FULL)
    rerank_candidates("q", candidates(), off, cfg.merged(first_stage_weight=0.0), pruner=ByText("cheap", CHEAP))
    assert sorted(off.calls[0]) == ["passage 0", "passage 2", "passage 5", "passage 7"]


def test_guard_depth_simulates_the_pipeline() -> None:
    """benchmarks/guard_depth.py orders cached reads as the pipeline would: the rule the pipeline runs
    gives the pipeline's order on the same scores."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from guard_depth import Pool, order

    texts = [f"passage {i}" for i in range(40)]
    cheap = {t: ((i * 7) % 40) / 40 for i, t in enumerate(texts)}
    full = {t: ((i * 11) % 40) / 40 for i, t in enumerate(texts)}
    cands = [Candidate(str(i), t) for i, t in enumerate(texts)]
    pool = Pool([cheap[t] for t in texts], set(), {i: full[t] for i, t in enumerate(texts)})
    for weight in (0.0, 0.3):
        cfg = RerankConfig(cascade_keep=10, top_n=None, first_stage_weight=weight)
        got = rerank_candidates("q", cands, ByText("full", full), cfg, pruner=ByText("cheap", cheap))
        simulated = order(pool, keep=10, weight=weight, by="guarded" if weight > 0 else "cheap", horizon=30)
        assert [int(r.candidate.id) for r in got.items] == simulated
        first = cfg.merged(cascade={"pick": "first-stage"})
        got = rerank_candidates("q", cands, ByText("full", full), first)
        assert [int(r.candidate.id) for r in got.items] == order(
            pool, keep=10, weight=weight, by="first stage", horizon=30
        )


def test_pick_first_stage_reads_the_first_stages_top_keep_without_a_cheap_pass() -> None:
    from rerank_plugins.scoring.factory import resolve_cascade

    full = ByText("full", FULL)
    cfg = RerankConfig(cascade={"keep": 4, "pick": "first-stage"}, top_n=None, first_stage_weight=0.0)
    cascade = resolve_cascade(cfg, full)
    assert cascade is not None
    assert (cascade.keep, cascade.scorer, cascade.exact) == (4, None, False)
    given = candidates()
    before = copy.deepcopy(given)
    result = rerank_candidates("q", given, full, cfg)
    assert full.calls == [TEXTS[:4]]  # the first stage's top 4, one call, no cheap pass
    # read ones by the full model (0.99, 0.95, 0.40, 0.30), then the others in first-stage order
    assert [r.candidate.id for r in result.items] == ["3", "0", "1", "2", "4", "5", "6", "7"]
    assert all(r.score is None and r.cascade_score is None and r.note.how == "pruned" for r in result.items[4:])
    assert result.counts == {"received": 8, "scored": 4, "kept": 8, "pruned": 4}
    assert given == before
    # the async driver agrees; a pool of at most keep is read whole; an explicit pruner still runs a cheap pass
    again = asyncio.run(arerank_candidates("q", candidates(), ByText("full", FULL), cfg))
    assert [r.candidate.id for r in again.items] == [r.candidate.id for r in result.items]
    small = ByText("full", FULL)
    assert rerank_candidates("q", candidates()[:4], small, cfg).scored == 4
    cheap = ByText("cheap", CHEAP)
    rerank_candidates("q", candidates(), ByText("full", FULL), cfg, pruner=cheap)
    assert cheap.calls == [TEXTS]


def test_pick_auto_reads_the_first_stage_of_a_fused_pool_and_runs_the_cheap_pass_otherwise() -> None:
    """pick='auto' (the default): a pool whose candidates name two or more retrievers (a hybrid first
    stage) skips the cheap pass; a pool from one retriever, or with no sources, is picked by it."""
    from rerank_plugins.scoring.cascade import fused

    assert RerankConfig().cascade.pick == "auto"
    cfg = RerankConfig(cascade={"keep": 4}, top_n=None, first_stage_weight=0.0)
    names = [("bm25",), ("dense",), ("bm25", "dense"), ("dense",), ("bm25",), ("bm25",), ("dense",), ("bm25",)]

    def pool(sources: list[tuple[str, ...]]) -> list[Candidate]:
        return [replace(c, sources=s) for c, s in zip(candidates(), sources, strict=True)]

    given = pool(names)
    before = copy.deepcopy(given)
    cheap, full = ByText("cheap", CHEAP), ByText("full", FULL)
    result = rerank_candidates("q", given, full, cfg, pruner=cheap)
    assert cheap.calls == []
    assert full.calls == [TEXTS[:4]]  # the first stage's top 4, as pick='first-stage'
    assert [r.candidate.id for r in result.items] == ["3", "0", "1", "2", "4", "5", "6", "7"]
    assert all(r.note.how == "pruned" and r.cascade_score is None for r in result.items[4:])
    assert given == before
    # the async driver agrees
    again = asyncio.run(arerank_candidates("q", pool(names), ByText("full", FULL), cfg, pruner=ByText("c", CHEAP)))
    assert [r.candidate.id for r in again.items] == [r.candidate.id for r in result.items]
    # one retriever, or none named: the cheap pass picks (5, 2, 7, 0 are its best four)
    for single in ([("bm25",)] * 8, [()] * 8):
        cheap, full = ByText("cheap", CHEAP), ByText("full", FULL)
        rerank_candidates("q", pool(single), full, cfg, pruner=cheap)
        assert cheap.calls == [TEXTS]
        assert sorted(full.calls[0]) == sorted(TEXTS[i] for i in (5, 2, 7, 0))
    # pick='cheap-pass' runs it whatever the sources
    cheap = ByText("cheap", CHEAP)
    rerank_candidates("q", pool(names), ByText("full", FULL), cfg.merged(cascade={"pick": "cheap-pass"}), pruner=cheap)
    assert cheap.calls == [TEXTS]
    assert fused([("a",), ("b",)])
    assert not fused([("a",), ("a",)])
    assert not fused([])


def test_pick_first_stage_needs_no_cheap_model_and_auto_keeps_it_to_a_cpu_cross_encoder(tiny_model: str) -> None:
    from rerank_plugins.pipeline import AUTO_CASCADE_KEEP
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade

    # no cascade_model, and no max_length to undercut: nothing is read at a shorter length
    RerankConfig(scorer="remote", remote_url="http://127.0.0.1:1", cascade={"keep": 10, "pick": "first-stage"})
    RerankConfig(max_length=128, cascade={"keep": 10, "max_length": 512, "pick": "first-stage"})
    with pytest.raises(ConfigError, match=r"cascade\.pick"):
        RerankConfig.from_mapping({"cascade": {"pick": "bm25"}})
    cfg = RerankConfig(model=tiny_model, device="cpu", top_n=None, cascade={"pick": "first-stage"})
    full = get_scorer(cfg)
    resolved = resolve_cascade(cfg, full)
    assert resolved is not None
    assert (resolved.keep, resolved.scorer) == (AUTO_CASCADE_KEEP, None)
    items = [Candidate(str(i), f"passage {i} about bread") for i in range(AUTO_CASCADE_KEEP + 5)]
    result = rerank_candidates("bread", items, full, cfg)
    assert result.scored == AUTO_CASCADE_KEEP
    assert {r.candidate.id for r in result.items if r.note.how == "pruned"} == {str(i) for i in range(30, 35)}
    assert resolve_cascade(cfg, OverlapScorer()) is None  # 'auto': only for a cross-encoder on a CPU
    assert resolve_cascade(cfg.merged(cascade={"keep": 5}), OverlapScorer()) is not None  # a number: any scorer
