"""Base of the tabular families (``lr``, ``lightgbm``): per-head classifiers on the f_* features and a pair
classifier on the f_uc_* features of each user's candidate categories, fitted in one process.

A tabular model is its own ``Predictor`` (``tasks.models.base``): it holds the ``FeatureEncoder`` fitted on
the train split (feature names, and the imputation / log / standardisation a linear model needs), and the
packaged pyfunc calls ``predict_chunk`` exactly as it does for a sequence model. A family file subclasses
``TabularIntentModel`` and supplies three things: ``user_matrix`` / ``pair_matrix`` (its view of the
features), ``new_classifier`` (an unfitted classifier per head) with ``fit_classifier`` (how it fits, with
the validation rows for early stopping), and ``contributions`` (each feature's push on the purchase logit,
for ``reasons``).
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from tasks.models.base import Prediction, known_fields, top_positive
from tasks.models.encoding import FeatureEncoder
from tasks.schema import INTENTS


@dataclass(frozen=True)
class TabularModelConfig:
    """Settings shared by every tabular family; a family's config subclasses it with its own keys."""

    seed: int = 13

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularModelConfig:
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class TabularSplit:
    """One split as a tabular model fits or evaluates on it."""

    users: pd.DataFrame  # f_* columns (and the rest of the training-set row)
    labels: np.ndarray  # [N, len(INTENTS)] 0/1
    weights: np.ndarray  # [N] row weights (negative sampling)
    cand_rows: np.ndarray  # [C] row of each candidate's user, ascending
    cand: pd.DataFrame  # category_id and f_uc_* per candidate
    cand_labels: np.ndarray  # [C] 0/1


class TabularIntentModel:
    """Per-head user classifiers plus a pair classifier; subclasses choose the learner (see the module doc)."""

    config_class: ClassVar[type[TabularModelConfig]] = TabularModelConfig
    shared_config: ClassVar[type] = TabularModelConfig
    trainer: ClassVar[str] = "local"
    model_type: str = ""

    def __init__(self, cfg: TabularModelConfig):
        self.cfg = cfg
        self.encoder: FeatureEncoder | None = None
        # Per INTENTS head: a fitted classifier, or the train rate (float) when the head had one class.
        self.heads: list[Any] = []
        self.pair: Any = None
        # Iterations each classifier kept (early stopping), for the run's record; empty for closed-form fits.
        self.fit_info: dict[str, float] = {}

    # ---- what a family file supplies ------------------------------------------------------
    def user_matrix(self, users: pd.DataFrame) -> np.ndarray:
        """[B, F] the user-level classifiers read."""
        raise NotImplementedError

    def pair_matrix(self, cand: pd.DataFrame) -> np.ndarray:
        """[C, P] the pair classifier reads."""
        raise NotImplementedError

    def new_classifier(self, pair: bool) -> Any:
        raise NotImplementedError

    def fit_classifier(
        self, clf: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None
    ) -> dict[str, float]:
        """Fit ``clf`` (validation rows for early stopping where the learner has it); returns facts to log."""
        raise NotImplementedError

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """[B, F] each feature's additive push on the purchase head's logit for the rows ``x`` (user_matrix)."""
        raise NotImplementedError

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, encoder: FeatureEncoder, train: TabularSplit, val: TabularSplit | None) -> TabularIntentModel:
        self.encoder = encoder
        x = self.user_matrix(train.users)
        x_val = None if val is None else self.user_matrix(val.users)
        self.heads = []
        for j, intent in enumerate(INTENTS):
            y = train.labels[:, j]
            y_val = None if val is None else val.labels[:, j]
            self.heads.append(self._fit_one(intent, x, y, train.weights, x_val, y_val, pair=False))
        xp = self.pair_matrix(train.cand)
        xp_val = None if val is None else self.pair_matrix(val.cand)
        self.pair = self._fit_one(
            "category",
            xp,
            train.cand_labels,
            train.weights[train.cand_rows],
            xp_val,
            None if val is None else val.cand_labels,
            pair=True,
        )
        return self

    def _fit_one(self, name, x, y, w, x_val, y_val, *, pair: bool) -> Any:
        if len(np.unique(y)) < 2:
            # One class in train: nothing to learn; predict its train rate.
            return float(y.mean()) if len(y) else 0.0
        clf = self.new_classifier(pair)
        usable_val = x_val is not None and y_val is not None and len(np.unique(y_val)) == 2
        facts = self.fit_classifier(clf, x, y, w, x_val if usable_val else None, y_val if usable_val else None)
        self.fit_info.update({f"{name}_{k}": v for k, v in facts.items()})
        return clf

    @staticmethod
    def _proba(clf: Any, x: np.ndarray) -> np.ndarray:
        if isinstance(clf, float):
            return np.full(len(x), clf)
        return clf.predict_proba(x)[:, 1]

    # ---- Predictor ------------------------------------------------------------------------------
    @property
    def feature_columns(self) -> list[str]:
        return self._encoder().feature_columns

    @property
    def pair_feature_columns(self) -> list[str]:
        return self._encoder().pair_feature_columns

    def _encoder(self) -> FeatureEncoder:
        if self.encoder is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self.encoder

    def predict_chunk(
        self, users: pd.DataFrame, cand_rows: np.ndarray | None, cand: pd.DataFrame | None, reasons_k: int
    ) -> Prediction:
        x = self.user_matrix(users)  # [B, F]
        intent = np.column_stack([self._proba(h, x) for h in self.heads]) if len(x) else np.zeros((0, len(INTENTS)))
        category = np.zeros(0)
        if cand is not None and len(cand):
            category = self._proba(self.pair, self.pair_matrix(cand))  # [C]
        reasons: list[list[str]] | None = None
        if reasons_k:
            if isinstance(self.heads[0], float) or not len(x):
                reasons = [[] for _ in range(len(x))]
            else:
                reasons = top_positive(self.contributions(x), self.feature_columns, reasons_k)
        return Prediction(intent.astype(np.float64), np.asarray(category, dtype=np.float64), reasons)

    def spec(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "model_config": self.cfg.to_dict()}

    def save(self, folder: Path) -> dict[str, str]:
        (folder / "encoder.json").write_text(self._encoder().to_json())
        with open(folder / "classifiers.pkl", "wb") as f:
            pickle.dump({"heads": self.heads, "pair": self.pair, "fit_info": self.fit_info}, f)
        return {"encoder": str(folder / "encoder.json"), "classifiers": str(folder / "classifiers.pkl")}

    @classmethod
    def from_artifacts(cls, spec: dict[str, Any], artifacts: dict[str, str]) -> TabularIntentModel:
        model = cls(cls.config_class.from_dict(spec["model_config"]))
        model.encoder = FeatureEncoder.from_json(Path(artifacts["encoder"]).read_text())
        # The pickle is this model's own artifact, written by ``save`` into the run it was logged with.
        with open(artifacts["classifiers"], "rb") as f:
            state = pickle.load(f)
        model.heads, model.pair, model.fit_info = state["heads"], state["pair"], state["fit_info"]
        return model
