from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest

from rerank_plugins import ModelLoadError, RerankConfig
from rerank_plugins.scoring.calibration import (
    CALIBRATION_FILE,
    Calibration,
    brier_score,
    expected_calibration_error,
    fit_calibration,
    load_calibration,
)


def _synthetic(a: float, b: float, n: int = 6000, seed: int = 0) -> tuple[list[float], list[int]]:
    rng = random.Random(seed)
    xs = [rng.uniform(-6, 6) for _ in range(n)]
    ys = [1 if rng.random() < 1 / (1 + math.exp(-(a * x + b))) else 0 for x in xs]
    return xs, ys


def test_temperature_fit_recovers_a_known_temperature() -> None:
    xs, ys = _synthetic(1 / 2.5, 0.0)
    cal = fit_calibration(xs, ys, method="temperature")
    assert 1 / cal.a == pytest.approx(2.5, rel=0.1)
    assert cal.b == 0.0


def test_platt_fit_recovers_slope_and_offset() -> None:
    xs, ys = _synthetic(0.7, -1.2)
    cal = fit_calibration(xs, ys)
    assert cal.a == pytest.approx(0.7, abs=0.08)
    assert cal.b == pytest.approx(-1.2, abs=0.15)


def test_fit_stays_finite_on_separable_data_and_rejects_one_class() -> None:
    cal = fit_calibration([-3.0, -2.0, 2.0, 3.0], [0, 0, 1, 1])
    assert math.isfinite(cal.a)
    assert cal.apply(3.0) > 0.9
    assert cal.apply(-3.0) < 0.1
    with pytest.raises(ValueError, match="both relevant and non-relevant"):
        fit_calibration([1.0, 2.0], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        fit_calibration([1.0], [1, 0])


def test_brier_and_ece_by_hand() -> None:
    assert brier_score([1.0, 0.0, 0.5], [1, 0, 1]) == pytest.approx(0.25 / 3)
    # bins of width 0.5: [0.2, 0.4] -> conf 0.3, acc 0.5 ; [0.8] -> conf 0.8, acc 1.0
    assert expected_calibration_error([0.2, 0.4, 0.8], [0, 1, 1], bins=2) == pytest.approx(2 / 3 * 0.2 + 1 / 3 * 0.2)
    assert expected_calibration_error([1.0, 0.0], [1, 0], bins=10) == 0.0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    cal = Calibration(0.5, -1.0, "platt", "toy/dev", 10)
    cal.save(tmp_path)
    assert load_calibration(tmp_path) == cal
    assert load_calibration(tmp_path / "nowhere") is None


def test_scorer_uses_a_stored_calibration_automatically(tiny_model: str, tmp_path: Path) -> None:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    pairs = [("why bread rises", "yeast"), ("q", "venus is hot")]
    cpu = RerankConfig(device="cpu")
    raw = CrossEncoderScorer(str(model), config=cpu, activation="raw").score(pairs)
    with pytest.raises(ModelLoadError, match="rerank-plugins calibrate"):
        CrossEncoderScorer(str(model), config=cpu, activation="calibrated")
    plain = CrossEncoderScorer(str(model), config=cpu)  # auto, no calibration yet -> sigmoid
    assert plain.score(pairs) == pytest.approx([1 / (1 + math.exp(-x)) for x in raw], abs=1e-6)
    Calibration(2.0, 1.0).save(model)
    auto = CrossEncoderScorer(str(model), config=cpu)
    assert auto.score(pairs) == pytest.approx([1 / (1 + math.exp(-(2 * x + 1))) for x in raw], abs=1e-6)
    assert auto.fingerprint != plain.fingerprint  # caches never mix calibrated and plain scores
    sigmoid = CrossEncoderScorer(str(model), config=cpu, activation="sigmoid")
    assert sigmoid.score(pairs) == pytest.approx(plain.score(pairs), abs=1e-6)


def test_calibrate_command_fits_and_stores(tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_cli import run
    from tests.test_training import _toy_beir

    root = _toy_beir(tmp_path / "toy")
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    code, out, err = run(
        [
            "calibrate",
            "--model",
            str(model),
            "--device",
            "cpu",
            "--data",
            str(root),
            "--split",
            "dev",
            "--eval-data",
            str(root),
            "--eval-split",
            "dev",
        ],
        monkeypatch,
    )
    assert code == 0, err
    stored = json.loads((model / CALIBRATION_FILE).read_text())
    assert stored["fitted_on"] == "toy/dev"
    assert stored["n_pairs"] == 4
    assert "ECE calibrated" in out
    code, _, err = run(["calibrate", "--model", str(model), "--data", str(root), "--split", "test"], monkeypatch)
    assert code == 2
    assert "refusing" in err


def test_calibrate_creates_its_output_folder_and_checks_the_target_before_scoring(
    tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rerank_plugins.scoring.cross_encoder import CrossEncoderScorer
    from tests.test_cli import run
    from tests.test_training import _toy_beir

    root = _toy_beir(tmp_path / "toy")
    out_dir = tmp_path / "not" / "yet" / "there"
    args = ["calibrate", "--model", tiny_model, "--device", "cpu", "--data", str(root), "--split", "dev"]
    code, _, err = run([*args, "--output", str(out_dir)], monkeypatch)
    assert code == 0, err
    assert json.loads((out_dir / CALIBRATION_FILE).read_text())["fitted_on"] == "toy/dev"
    assert not (Path(tiny_model) / CALIBRATION_FILE).exists()  # the model folder is left alone

    # a model that is not a local folder: the error comes before any pair is scored
    original_init = CrossEncoderScorer.__init__

    def hub_named(self: CrossEncoderScorer, *a: object, **k: object) -> None:
        original_init(self, *a, **k)  # type: ignore[arg-type]
        self.name = "org/hub-model"  # as if loaded from the Hub cache by id

    monkeypatch.setattr(CrossEncoderScorer, "__init__", hub_named)
    monkeypatch.setattr(CrossEncoderScorer, "score", lambda self, pairs: pytest.fail("scored before failing"))
    code, _, err = run(args, monkeypatch)
    assert code == 2
    assert "not a local folder" in err
    assert "--output" in err
