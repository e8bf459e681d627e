from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerank_plugins.cli import build_parser, main
from rerank_plugins.data import load_demo_questions


def run(argv: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_every_command_has_help_with_examples() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():  # type: ignore[union-attr]
        text = command.format_help()
        assert "examples:" in text, name


def test_console_script_help_runs_fast_without_heavy_imports() -> None:
    code = "import sys; from rerank_plugins.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rerank_jsonl_keeps_fields_and_orders_by_score(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [
        {"id": "a", "text": "bread rises with yeast", "url": "x"},
        {"id": "b", "text": "venus is hot"},
        {"text": "no id here"},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    code, out, err = run(
        [
            "rerank",
            "-q",
            "why does bread rise",
            "-i",
            str(path),
            "--model",
            tiny_model,
            "--device",
            "cpu",
            "--top-n",
            "3",
        ],
        monkeypatch,
    )
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == 3
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert next(r for r in rows if r.get("id") == "a")["url"] == "x"


def test_rerank_config_file_with_a_serve_table_and_metadata_text(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23 #4, #7: `rerank --config` read a [serve] table as an error and ignored text/metadata_keys."""
    settings = tmp_path / "s.toml"
    settings.write_text(
        f'model = "{Path(tiny_model).as_posix()}"\ndevice = "cpu"\ntext = "content_with_metadata"\n'
        'metadata_keys = ["title"]\n\n[serve]\nport = 9001\n'
    )
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "bread rises", "title": "Baking", "url": "x"}) + "\n")
    from rerank_plugins.pipeline import Candidate

    made: list[Candidate] = []
    original = Candidate.__init__

    def spy(self: Candidate, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(Candidate, "__init__", spy)
    code, out, err = run(["rerank", "-q", "why", "-i", str(path), "--config", str(settings)], monkeypatch)
    assert code == 0, err
    assert made[0].text == "title: Baking\nbread rises"
    row = json.loads(out.splitlines()[0])
    assert row["score_kind"] == "sigmoid"


def test_rerank_tsv_from_stdin(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(
        ["rerank", "-q", "hot planet", "-f", "tsv", "--model", tiny_model, "--device", "cpu"],
        monkeypatch,
        stdin="a\tvenus is hot\nb\tbread\n",
    )
    assert code == 0, err
    assert sorted(json.loads(x)["id"] for x in out.splitlines()) == ["a", "b"]


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["rerank", "-q", "  "], '{"text": "a"}\n', "query is empty"),
        (["rerank", "-q", "x"], "not json\n", "line 1 is not valid JSON"),
        (["rerank", "-q", "x"], '{"id": 1}\n', "line 1 must be a JSON object with a string 'text'"),
        (["rerank", "-q", "x", "-i", "missing.jsonl"], "", "does not exist"),
        (["rerank", "-q", "x", "--top-n", "0"], '{"text": "a"}\n', "top_n"),
        (["rerank", "-q", "x", "--model", "./no/such/dir"], '{"text": "a"}\n', "does not exist"),
    ],
)
def test_user_mistakes_give_one_line_errors(
    argv: list[str], stdin: str, message: str, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "--model" not in argv:
        argv = [*argv, "--model", tiny_model, "--device", "cpu"]
    code, _, err = run(argv, monkeypatch, stdin=stdin)
    assert code == 2
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_errors_are_printed_whole_on_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Issue 23 #6: the CLI printed only the first line of a message, cutting off the fix."""
    pytest.importorskip("torch")  # the message is the model loader's
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    argv = ["rerank", "-q", "q", "--model", "example-org/not-cached", "--format", "tsv"]
    code, _, err = run(argv, monkeypatch, stdin="a passage\n")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "pass the path of a local copy" in err


def test_no_command_prints_help(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run([], monkeypatch)
    assert code == 2
    assert "rerank-plugins" in out


@pytest.mark.slow
def test_demo_runs_offline_with_both_pipelines(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(["demo", "--model", tiny_model, "--device", "cpu", "--top-k", "2"], monkeypatch)
    assert code == 0, err
    assert f"cross-encoder: {tiny_model}" in out
    assert "one shared scorer for both adapters: True" in out
    assert out.count("reranked (LangChain)") == len(load_demo_questions())
    assert "answer ranked first:" in out


def test_train_and_eval_commands_on_a_toy_dataset(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bm25s")
    from tests.test_training import _toy_beir

    root = _toy_beir(tmp_path / "toy")
    settings = tmp_path / "train.toml"
    settings.write_text("skip_top = 0\nmargin = 10.0\nn_hard_negatives = 2\nn_random_negatives = 1\n")
    code, out, err = run(
        [
            "train",
            "--config",
            str(settings),
            "--base-model",
            tiny_model,
            "--output",
            str(tmp_path / "run"),
            "--train-data",
            str(root),
            "--dev-data",
            str(root),
            "--max-steps",
            "1",
            "--eval-every",
            "1",
            "--max-length",
            "32",
            "--pseudo-queries",
            "3",
            "--loss",
            "listwise+bce",
            "--bce-weight",
            "0.2",
        ],
        monkeypatch,
    )
    assert code == 0, err
    assert "best checkpoint:" in out
    resolved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert (resolved["pseudo_queries"], resolved["loss"], resolved["bce_weight"]) == (3, "listwise+bce", 0.2)
    report = tmp_path / "report.json"
    code, out, err = run(
        [
            "eval",
            "--data",
            str(root),
            "--split",
            "dev",
            "--stages",
            "bm25",
            "--model",
            str(tmp_path / "run" / "best"),
            "--device",
            "cpu",
            "--output",
            str(report),
        ],
        monkeypatch,
    )
    assert code == 0, err
    assert "bm25 + rerank" in out
    assert json.loads(report.read_text())["dataset"] == "toy"
    code, _, err = run(["eval", "--data", str(root), "--split", "dev", "--stages", "bm42", "--no-rerank"], monkeypatch)
    assert code == 2
    assert "unknown first stage" in err


def test_eval_compares_variants_on_the_same_candidates(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bm25s")
    from tests.test_training import _toy_beir

    root = _toy_beir(tmp_path / "toy")
    (tmp_path / "short.toml").write_text("max_length = 32\n")
    (tmp_path / "windows.toml").write_text('scorer = "windowed"\nmax_length = 32\n')
    code, out, err = run(
        [
            "eval",
            "--data",
            str(root),
            "--split",
            "dev",
            "--stages",
            "bm25",
            "--model",
            tiny_model,
            "--device",
            "cpu",
            "--variants",
            str(tmp_path / "short.toml"),
            str(tmp_path / "windows.toml"),
        ],
        monkeypatch,
    )
    assert code == 0, err
    assert "bm25 + short" in out
    assert "bm25 + windows" in out


def test_export_command(tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(["export", tiny_model, str(tmp_path / "shipped")], monkeypatch)
    assert code == 0, err
    assert "float16" in out
    assert (tmp_path / "shipped" / "model.safetensors").is_file()
    code, _, err = run(["export", str(tmp_path / "missing"), str(tmp_path / "x")], monkeypatch)
    assert code == 2
    assert "does not exist" in err


@pytest.mark.slow
@pytest.mark.auto_backend
def test_demo_runs_with_no_arguments_on_the_shipped_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from rerank_plugins import default_model_path
    from rerank_plugins.scoring.factory import clear_model_cache
    from rerank_plugins.scoring.loading import has_int8_dot_product
    from rerank_plugins.scoring.onnx_backend import onnxruntime_available

    clear_model_cache()  # not a scorer an earlier test resolved with backend='auto' forced to torch
    code, out, err = run(["demo"], monkeypatch)
    assert code == 0, err
    # the shipped model's CPU backend: int8 where the CPU has int8 dot-product instructions, else fp32
    backend = ("onnx-int8" if has_int8_dot_product() else "onnx") if onnxruntime_available() else "torch"
    assert f"cross-encoder: {default_model_path()} ({backend})" in out
    assert "LangChain" in out


def test_train_mine_only_writes_the_groups_and_a_later_run_trains_from_them(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bm25s")
    from tests.test_training import _toy_beir

    root = _toy_beir(tmp_path / "toy")
    groups = tmp_path / "groups.json.gz"
    settings = tmp_path / "train.toml"
    settings.write_text(
        f'skip_top = 0\nmargin = 10.0\nmax_length = 32\ntrain_datasets = ["{root.as_posix()}"]\n'
        f'output_dir = "{(tmp_path / "run").as_posix()}"\n'
    )
    code, _, err = run(["train", "--config", str(settings), "--mine-only"], monkeypatch)
    assert code == 2
    assert "--mine-only writes the groups to --groups-file" in err
    code, out, err = run(["train", "--config", str(settings), "--groups-file", str(groups), "--mine-only"], monkeypatch)
    assert code == 0, err
    assert groups.is_file()
    assert "groups in" in out
    assert not (tmp_path / "run" / "last").exists()  # mined, not trained
    # the corpora are not needed once mined: the folder may be gone on the training machine
    moved = tmp_path / "moved"
    root.rename(moved)
    args = ["train", "--config", str(settings), "--groups-file", str(groups), "--base-model", tiny_model]
    code, out, err = run([*args, "--max-steps", "1", "--device", "cpu", "--max-seconds", "600"], monkeypatch)
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "data_summary.json").read_text())
    assert summary["groups_file"] == "groups.json.gz"


def test_score_pairs_stdout_is_only_the_json_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ray's driver prints cluster warnings to sys.stdout from a background thread; they go to stderr."""
    import threading

    from rerank_plugins.serving import batch_scoring

    def fake_score_pairs(*args: object, **kwargs: object) -> dict[str, object]:
        def warn() -> None:  # what ray._private.worker.print_to_stdstream does for a raylet warning
            print("(raylet) WARNING: 8 PYTHON worker processes have been started", file=sys.stdout)

        thread = threading.Thread(target=warn)
        thread.start()
        thread.join()
        return {"rows_done": 3, "complete": True}

    monkeypatch.setattr(batch_scoring, "score_pairs", fake_score_pairs)
    code, out, err = run(["score-pairs", str(tmp_path / "p.jsonl"), str(tmp_path / "o")], monkeypatch)
    assert code == 0
    assert json.loads(out) == {"rows_done": 3, "complete": True}
    assert "(raylet) WARNING" in err
