"""Score calibration: turn a cross-encoder's logits into probabilities of relevance.

Sigmoid of a raw logit is ordered like the logit but is not a probability: a
model trained with a listwise loss can put every relevant passage at 0.05.
Platt scaling (Platt, 1999) fits ``p = sigmoid(a * logit + b)`` on labelled pairs
of a dev split by maximum likelihood; temperature scaling (Guo et al., ICML 2017)
is the special case ``b = 0``. The fit is stored next to the model as
``rerank_calibration.json`` and used automatically by ``activation="auto"``, so
that ``score_threshold=0.5`` means "more likely relevant than not".

Example:
    >>> cal = fit_calibration([-2.0, -1.0, 1.0, 2.0, 0.5, -0.5], [0, 0, 1, 1, 1, 0])
    >>> round(cal.apply(0.0), 3)
    0.5
    >>> brier_score([0.9, 0.2], [1, 0])
    0.025
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "brier_score",
    "expected_calibration_error",
    "fit_calibration",
    "load_calibration",
]

#: File name of a calibration stored in a model directory.
CALIBRATION_FILE = "rerank_calibration.json"


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large negative x."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True)
class Calibration:
    """``p = sigmoid(a * logit + b)``.

    Attributes:
        a: Slope (1 / temperature).
        b: Offset (0 for temperature scaling).
        method: ``"platt"`` or ``"temperature"``.
        fitted_on: Free text naming the labelled data of the fit.
        n_pairs: Number of labelled pairs in the fit.
    """

    a: float
    b: float = 0.0
    method: Literal["platt", "temperature"] = "platt"
    fitted_on: str = ""
    n_pairs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def apply(self, logit: float) -> float:
        """Calibrated probability of one logit."""
        return sigmoid(self.a * logit + self.b)

    def save(self, directory: Path | str) -> Path:
        """Write ``rerank_calibration.json`` into ``directory``."""
        path = Path(directory) / CALIBRATION_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path


def load_calibration(directory: Path | str) -> Calibration | None:
    """The calibration stored in a model directory, or None."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Calibration(
        float(data["a"]),
        float(data.get("b", 0.0)),
        data.get("method", "platt"),
        data.get("fitted_on", ""),
        int(data.get("n_pairs", 0)),
        dict(data.get("extra", {})),
    )


def _loss(xs: list[float], ys: list[float], a: float, b: float, reg: float) -> float:
    total = 0.5 * reg * ((a - 1.0) ** 2 + b * b)
    for x, y in zip(xs, ys, strict=True):
        z = a * x + b
        # log(1 + e^z) - y * z, computed stably
        total += (z if z > 0 else 0.0) + math.log1p(math.exp(-abs(z))) - y * z
    return total


def fit_calibration(
    logits: Sequence[float],
    labels: Sequence[int],
    *,
    method: Literal["platt", "temperature"] = "platt",
    fitted_on: str = "",
    iterations: int = 100,
) -> Calibration:
    """Fit Platt or temperature scaling by Newton's method on the log loss.

    A small L2 pull towards (a=1, b=0) keeps the fit finite on separable data.

    Raises:
        ValueError: on mismatched lengths or when only one class is present.
    """
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} logits but {len(labels)} labels")
    ys = [1.0 if y > 0 else 0.0 for y in labels]
    if not 0 < sum(ys) < len(ys):
        raise ValueError("calibration needs both relevant and non-relevant pairs")
    xs = [float(x) for x in logits]
    a, b, reg = 1.0, 0.0, 1e-3
    for _ in range(iterations):
        ga = reg * (a - 1.0)
        gb = reg * b
        haa, hab, hbb = reg, 0.0, reg
        for x, y in zip(xs, ys, strict=True):
            p = sigmoid(a * x + b)
            r = p - y
            w = p * (1 - p)
            ga += r * x
            gb += r
            haa += w * x * x
            hab += w * x
            hbb += w
        if method == "temperature":
            step_a, step_b = ga / haa, 0.0
        else:
            det = haa * hbb - hab * hab
            if det <= 1e-12:
                break
            step_a = (hbb * ga - hab * gb) / det
            step_b = (haa * gb - hab * ga) / det
        # Backtracking: Newton steps on the logistic loss can overshoot from a poor start.
        current = _loss(xs, ys, a, b, reg)
        scale = 1.0
        while scale > 1e-6 and _loss(xs, ys, a - scale * step_a, b - scale * step_b, reg) > current:
            scale /= 2
        a -= scale * step_a
        b -= scale * step_b
        if abs(scale * step_a) < 1e-9 and abs(scale * step_b) < 1e-9:
            break
    return Calibration(a, b if method == "platt" else 0.0, method, fitted_on, len(xs))


def brier_score(probs: Sequence[float], labels: Sequence[int]) -> float:
    """Mean squared error between probabilities and 0/1 labels."""
    return sum((p - (1.0 if y > 0 else 0.0)) ** 2 for p, y in zip(probs, labels, strict=True)) / len(probs)


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of |accuracy - confidence| weighted by bin size."""
    total = len(probs)
    ece = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        idx = [i for i, p in enumerate(probs) if (lo <= p < hi) or (k == bins - 1 and p == 1.0)]
        if not idx:
            continue
        conf = sum(probs[i] for i in idx) / len(idx)
        acc = sum(1.0 for i in idx if labels[i] > 0) / len(idx)
        ece += len(idx) / total * abs(acc - conf)
    return ece
