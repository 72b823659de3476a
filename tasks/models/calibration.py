"""Calibration of any family's probabilities on the validation split, packaged with the model.

Positive weighting, class imbalance and early stopping leave a model's probabilities ranked well but not
honest: a p_purchase of 0.8 need not mean that 80% of such users buy. After training, one calibrator per
user-level head and one for the candidate categories is fitted on the validation split's predictions and
applied inside the packaged pyfunc (``CalibratedPredictor``), so scoring, the gate and the warehouse read
calibrated probabilities whatever the family.

Methods (``training.calibration``): ``platt`` fits sigmoid(a * logit(p) + b), strictly increasing, so every
ranking metric stays exactly as it was; ``isotonic`` fits a monotone step function (usually the lower
calibration error, but equal scores within a step tie, which can move ranking metrics slightly); ``none``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.models.base import Prediction, Predictor
from tasks.schema import INTENTS

METHODS = ("platt", "isotonic", "none")
# Probabilities are clipped away from 0 and 1 before the logit.
_EPS = 1e-6
CALIBRATION_ARTIFACT = "calibration"


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibrator:
    """A fitted monotone map of probabilities; ``method`` "none" is the identity."""

    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    # Why the fit fell back to the identity, if it did (one class in validation, a non-increasing fit).
    note: str = ""

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            z = self.params["a"] * _logit(p) + self.params["b"]
            return 1.0 / (1.0 + np.exp(-z))
        if self.method == "isotonic":
            return np.interp(p, self.params["x"], self.params["y"])
        return p

    @classmethod
    def fit(cls, method: str, p: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> Calibrator:
        """The ``method`` calibrator of probabilities ``p`` [N] against 0/1 labels ``y`` [N] (row weights ``w``)."""
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
        p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if method == "none":
            return cls()
        if len(np.unique(y)) < 2:
            return cls(note=f"not calibrated: validation holds one class ({len(y)} rows)")
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            # Almost no regularisation: two parameters fitted on thousands of rows.
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], y, sample_weight=w)
            a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
            if a <= 0:
                return cls(note=f"not calibrated: the Platt slope {a:.3g} would reverse the ranking")
            return cls("platt", {"a": a, "b": b})
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y, sample_weight=w)
        return cls("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(d["method"], dict(d["params"]), d.get("note", ""))


@dataclass(frozen=True)
class Calibration:
    """One calibrator per user-level head (INTENTS order) and one for the candidate categories."""

    heads: list[Calibrator]
    category: Calibrator

    def named(self) -> list[tuple[str, Calibrator]]:
        return [*zip(INTENTS, self.heads, strict=True), ("category", self.category)]

    def apply(self, intent: np.ndarray, category: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """intent [N, len(INTENTS)], category [C] -> the same, calibrated."""
        out = np.column_stack([c.apply(intent[:, j]) for j, c in enumerate(self.heads)]) if len(intent) else intent
        return out, self.category.apply(category)

    @classmethod
    def fit(
        cls,
        method: str,
        intent: np.ndarray,
        labels: np.ndarray,
        category: np.ndarray,
        category_labels: np.ndarray,
    ) -> Calibration:
        """Fit on the validation split's probabilities and labels: intent/labels [N, heads], category [C]."""
        heads = [Calibrator.fit(method, intent[:, j], labels[:, j]) for j in range(labels.shape[1])]
        return cls(heads, Calibrator.fit(method, category, category_labels))

    def to_json(self) -> str:
        return json.dumps({"heads": [c.to_dict() for c in self.heads], "category": self.category.to_dict()})

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        d = json.loads(text)
        return cls([Calibrator.from_dict(c) for c in d["heads"]], Calibrator.from_dict(d["category"]))


class CalibratedPredictor:
    """A ``Predictor`` whose probabilities pass through a ``Calibration``; reasons are the inner model's."""

    def __init__(self, inner: Predictor, calibration: Calibration):
        self.inner = inner
        self.calibration = calibration
        self.model_type = inner.model_type
        self.feature_columns = inner.feature_columns
        self.pair_feature_columns = inner.pair_feature_columns
        self.reads_text = getattr(inner, "reads_text", False)
        self.text_encoder = getattr(inner, "text_encoder", "")
        self.text_through = getattr(inner, "text_through", "")

    def add_texts(self, texts: list[str], vectors: np.ndarray) -> int:
        """``TorchPredictor.add_texts`` of the inner model (0 for one that reads no text)."""
        add = getattr(self.inner, "add_texts", None)
        return add(texts, vectors) if add is not None else 0

    def predict_chunk(
        self, users: pd.DataFrame, cand_rows: np.ndarray | None, cand: pd.DataFrame | None, reasons_k: int
    ) -> Prediction:
        out = self.inner.predict_chunk(users, cand_rows, cand, reasons_k)
        intent, category = self.calibration.apply(out.intent, out.category)
        return Prediction(intent, category, out.reasons)

    def spec(self) -> dict[str, Any]:
        return self.inner.spec()

    def save(self, folder: Path) -> dict[str, str]:
        artifacts = self.inner.save(folder)
        path = folder / "calibration.json"
        path.write_text(self.calibration.to_json())
        return {**artifacts, CALIBRATION_ARTIFACT: str(path)}


def with_calibration(predictor: Predictor, artifacts: dict[str, str]) -> Predictor:
    """``predictor`` wrapped in the calibration packaged beside it, if the model has one."""
    path = artifacts.get(CALIBRATION_ARTIFACT)
    if path is None:
        return predictor
    return CalibratedPredictor(predictor, Calibration.from_json(Path(path).read_text()))
