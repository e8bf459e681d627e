from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from rerank_plugins import ConfigError, RerankConfig


def test_defaults() -> None:
    cfg = RerankConfig()
    assert (cfg.model, cfg.device, cfg.activation, cfg.top_n, cfg.score_threshold) == (None, "auto", "auto", 5, None)
    assert cfg.trust_remote_code is False
    assert cfg.allow_download is None  # downloads follow HF_HUB_OFFLINE


def test_every_field_is_described() -> None:
    missing = [name for name, f in RerankConfig.model_fields.items() if not f.description]
    assert missing == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_n": -1}, "top_n"),
        ({"top_n": 0}, "top_n"),
        ({"batch_size": 0}, "batch_size"),
        ({"score_threshold": 3.0}, "outside \\[0, 1\\]"),
        ({"device": "tpu"}, "unknown device"),
        ({"min_keep": 4, "top_n": 2}, "min_keep=4 exceeds top_n=2"),
        ({"activation": "softmax"}, "activation"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_values_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RerankConfig(**kwargs)  # type: ignore[arg-type]


def test_raw_activation_allows_logit_thresholds() -> None:
    assert RerankConfig(activation="raw", score_threshold=-2.5).score_threshold == -2.5


def test_devices_accepted() -> None:
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert RerankConfig(device=device).device == device


def test_from_toml_yaml_json_and_subtable(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('top_n = 3\nscore_threshold = 0.4\nmetadata_keys = ["title"]\n')
    (tmp_path / "b.yaml").write_text("rerank:\n  top_n: 3\n  score_threshold: 0.4\n  metadata_keys: [title]\n")
    (tmp_path / "c.json").write_text('{"top_n": 3, "score_threshold": 0.4, "metadata_keys": ["title"]}')
    configs = [RerankConfig.from_file(tmp_path / n) for n in ("a.toml", "b.yaml", "c.json")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].metadata_keys == ("title",)


def test_yaml_is_parsed_without_code_execution(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("top_n: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="Could not parse"):
        RerankConfig.from_file(tmp_path / "evil.yaml")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        RerankConfig.from_file(tmp_path / "missing.toml")
    (tmp_path / "x.ini").write_text("")
    with pytest.raises(ConfigError, match="Unsupported"):
        RerankConfig.from_file(tmp_path / "x.ini")
    (tmp_path / "bad.toml").write_text("top_n = 0\n")
    with pytest.raises(ConfigError, match="top_n"):
        RerankConfig.from_file(tmp_path / "bad.toml")


def test_from_env() -> None:
    env = {
        "RERANK_PLUGINS_TOP_N": "2",
        "RERANK_PLUGINS_SCORE_THRESHOLD": "none",
        "RERANK_PLUGINS_METADATA_KEYS": "title, section",
        "RERANK_PLUGINS_ALLOW_DOWNLOAD": "true",
        "OTHER": "ignored",
    }
    cfg = RerankConfig.from_env(env)
    assert (cfg.top_n, cfg.score_threshold, cfg.metadata_keys, cfg.allow_download) == (
        2,
        None,
        ("title", "section"),
        True,
    )


def test_from_env_overrides_a_base_and_rejects_unknown_names() -> None:
    base = RerankConfig(top_n=7, batch_size=8)
    cfg = RerankConfig.from_env({"RERANK_PLUGINS_BATCH_SIZE": "4"}, base=base)
    assert (cfg.top_n, cfg.batch_size) == (7, 4)
    with pytest.raises(ConfigError, match="RERANK_PLUGINS_TOPN"):
        RerankConfig.from_env({"RERANK_PLUGINS_TOPN": "3"})


def test_merged_validates_again() -> None:
    with pytest.raises(ConfigError, match="top_n"):
        RerankConfig().merged(top_n=0)
    assert RerankConfig(top_n=3).merged(top_n=None).top_n is None


def test_the_shipped_scorer_variants_are_valid_settings() -> None:
    from rerank_plugins.config import load_settings_file

    folder = Path(__file__).resolve().parents[1] / "rerank_plugins" / "evaluation" / "variants"
    variants = {f.stem: RerankConfig.from_mapping(load_settings_file(f)) for f in sorted(folder.glob("*.toml"))}
    assert len(variants) >= 10
    guard = variants["first-stage-0.9"]
    # the guard reads every candidate in full (no cascade) and blends with the first-stage rank
    assert (guard.first_stage_weight, guard.cascade_keep) == (0.9, None)
    assert variants["cascade"].cascade_keep == 30


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    """Issue 22 #4: a 1 KB 'billion laughs' file ran 108 s and reached 2.5 GB; now it is refused at once."""
    import time

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("top_n: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines))
    assert bomb.stat().st_size < 1024
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="alias"):
        RerankConfig.from_file(bomb)
    assert time.perf_counter() - started < 5


def test_oversized_settings_files_are_refused(tmp_path: Path) -> None:
    from rerank_plugins.config import MAX_SETTINGS_BYTES

    big = tmp_path / "big.json"
    big.write_text('{"top_n": 3, "pad": "' + "x" * MAX_SETTINGS_BYTES + '"}')
    with pytest.raises(ConfigError, match="at most"):
        RerankConfig.from_file(big)


def test_validation_errors_do_not_echo_huge_inputs() -> None:
    """Issue 22 #4: explain() bounds the repr of the offending value."""
    with pytest.raises(ConfigError) as info:
        RerankConfig.from_mapping({"top_n": "x" * 100_000})
    assert len(str(info.value)) < 600


@pytest.mark.parametrize("weights", [(float("nan"),), (float("inf"),), (-1.0,), (0.0,)])
def test_member_weights_must_be_finite_non_negative_and_not_all_zero(weights: tuple[float, ...]) -> None:
    """Issue 22 #11: member_weights=(nan,) passed validation."""
    with pytest.raises(ConfigError, match="weights"):
        RerankConfig.from_mapping({"scorer": "ensemble", "members": [{}], "member_weights": weights})


def test_a_settings_file_with_other_tools_tables_loads(tmp_path: Path) -> None:
    """Issue 23 #4: a [serve] table (as docs/serving.md recommends) was rejected by from_file."""
    path = tmp_path / "settings.toml"
    path.write_text('top_n = 2\nmodel = "m"\n\n[serve]\nport = 9000\n\n[tool.other]\nx = 1\n')
    cfg = RerankConfig.from_file(path)
    assert cfg.top_n == 2
    assert cfg.model == "m"
    path.write_text("top_nn = 2\n")
    with pytest.raises(ConfigError, match="top_nn"):
        RerankConfig.from_file(path)  # a typo at the top level is still an error


def test_environment_values_list_forms_and_precedence() -> None:
    """Issue 23 #5: JSON and comma lists; every documented variable settable; keywords > config > env."""
    env = {
        "RERANK_PLUGINS_METADATA_KEYS": '["src", "title"]',
        "RERANK_PLUGINS_TOP_N": "1",
        "RERANK_PLUGINS_SCORER": "ensemble",
        "RERANK_PLUGINS_MEMBERS": '[{"model": "a"}, {"model": "b"}]',
        "RERANK_PLUGINS_MEMBER_WEIGHTS": "1,3",
    }
    cfg = RerankConfig.resolve(environ=env)
    assert cfg.metadata_keys == ("src", "title")
    assert [m.model for m in cfg.members] == ["a", "b"]
    assert cfg.member_weights == (1.0, 3.0)
    assert RerankConfig.resolve(environ={"RERANK_PLUGINS_METADATA_KEYS": "src, title"}).metadata_keys == (
        "src",
        "title",
    )
    assert RerankConfig.resolve(RerankConfig(top_n=4), environ=env).top_n == 4  # config over environment
    assert RerankConfig.resolve(RerankConfig(top_n=4), environ=env, top_n=7).top_n == 7  # keywords over config
    assert RerankConfig.resolve(environ=env).top_n == 1  # environment over defaults
    with pytest.raises(ConfigError, match="RERANK_PLUGINS_MEMBERS"):
        RerankConfig.resolve(environ={"RERANK_PLUGINS_MEMBERS": "[{broken"})


def test_the_documented_settings_files_load_without_a_warning(tmp_path: Path) -> None:
    """Issue 24: every TOML example of docs/configuration.md is a valid sectioned settings file."""
    import re
    import warnings

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert len(blocks) >= 4
    for i, block in enumerate(blocks):
        (tmp_path / f"{i}.toml").write_text(block)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            RerankConfig.from_file(tmp_path / f"{i}.toml")


def test_the_projects_own_code_builds_configs_with_sections() -> None:
    """The library, benchmarks and examples never pass a deprecated flat name to ``RerankConfig(...)``
    (it would print the deprecation warning to a user running them; ``merged`` and ``resolve`` take the
    flat names quietly by design)."""
    import ast

    from rerank_plugins.config import FLAT_NAMES

    root = Path(__file__).parents[1]
    files = [p for d in ("rerank_plugins", "benchmarks", "examples") for p in sorted((root / d).rglob("*.py"))]
    assert len(files) > 40
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                flat = [k.arg for k in node.keywords if name == "RerankConfig" and k.arg in FLAT_NAMES]
                if flat:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {flat}")
    assert not found, f"flat (deprecated) settings names passed to RerankConfig: {found}"


FLAT_FILE = """
scorer = "windowed"
device = "cpu"
max_length = 128
window_stride = 48
top_n = 3
cascade_keep = 8
cascade_max_length = 64
cache_entries = 100
"""
SECTIONED_FILE = """
top_n = 3
[scorer]
kind = "cross-encoder"
device = "cpu"
max_length = 128
windows = { stride = 48 }
[cascade]
keep = 8
max_length = 64
[cache]
entries = 100
"""
FLAT_ENV = {
    "RERANK_PLUGINS_DEVICE": "cpu",
    "RERANK_PLUGINS_MAX_LENGTH": "128",
    "RERANK_PLUGINS_WINDOW_STRIDE": "48",
    "RERANK_PLUGINS_TOP_N": "3",
    "RERANK_PLUGINS_CASCADE_KEEP": "8",
    "RERANK_PLUGINS_CASCADE_MAX_LENGTH": "64",
    "RERANK_PLUGINS_CACHE_ENTRIES": "100",
}
SECTIONED_ENV = {
    "RERANK_PLUGINS_SCORER__DEVICE": "cpu",
    "RERANK_PLUGINS_SCORER__MAX_LENGTH": "128",
    "RERANK_PLUGINS_SCORER__WINDOWS__STRIDE": "48",
    "RERANK_PLUGINS_TOP_N": "3",
    "RERANK_PLUGINS_CASCADE__KEEP": "8",
    "RERANK_PLUGINS_CASCADE__MAX_LENGTH": "64",
    "RERANK_PLUGINS_CACHE__ENTRIES": "100",
}


@pytest.mark.slow
def test_old_flat_files_and_variables_load_with_a_warning_and_rank_the_demo_identically(tmp_path: Path) -> None:
    """Issue 24: the flat names of the previous release still work, warn, and change nothing."""
    import warnings

    from rerank_plugins.data import load_demo_corpus, load_demo_questions
    from rerank_plugins.pipeline import Candidate, rerank_candidates
    from rerank_plugins.scoring.factory import get_scorer, resolve_cascade

    (tmp_path / "flat.toml").write_text(FLAT_FILE)
    (tmp_path / "sections.toml").write_text(SECTIONED_FILE)
    with pytest.warns(DeprecationWarning, match=r"max_length -> scorer\.max_length.*"):
        flat = RerankConfig.from_file(tmp_path / "flat.toml")
    with pytest.warns(DeprecationWarning, match=r"cascade_keep -> cascade\.keep"):
        flat_env = RerankConfig.resolve(environ=FLAT_ENV)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        sectioned = RerankConfig.from_file(tmp_path / "sections.toml")
        sectioned_env = RerankConfig.resolve(environ=SECTIONED_ENV)
    assert flat == sectioned == flat_env == sectioned_env
    assert (flat.max_length, flat.window_stride, flat.cascade_keep, flat.cache_entries) == (128, 48, 8, 100)

    corpus = load_demo_corpus()
    rankings = []
    for cfg in (flat, sectioned_env):
        scorer = get_scorer(cfg)
        cascade = resolve_cascade(cfg, scorer)
        assert cascade is not None  # 12 candidates > keep 8: the cheap pass runs
        ranked = []
        for question, _ in load_demo_questions():
            candidates = [Candidate(p.id, p.text) for p in corpus[:12]]
            result = rerank_candidates(question, candidates, scorer, cfg, cascade=cascade)
            ranked.append([(r.candidate.id, r.score) for r in result.items])
        rankings.append(ranked)
    assert rankings[0] == rankings[1]
    assert get_scorer(flat) is get_scorer(sectioned)  # one shared scorer: the key is the sections
