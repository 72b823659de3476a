"""Logistic-regression intent model: one L2-regularised logistic regression per head on the encoder's
imputed, log-scaled, standardised f_* features, and one on the standardised f_uc_* pair features that
ranks each user's candidate categories. Reasons are coefficient x standardised value.

Its own settings (``LRConfig`` beyond the shared ones) are the ``models.lr`` config section.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from tasks.models.base import register_model
from tasks.models.tabular import TabularIntentModel, TabularModelConfig


@dataclass(frozen=True)
class LRConfig(TabularModelConfig):
    # Inverse L2 regularisation strength (scikit-learn's C).
    c: float = 1.0
    # Solver iterations (lbfgs).
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if self.c <= 0 or self.max_iter < 1:
            raise ValueError(f"c must be > 0 and max_iter >= 1, got c={self.c}, max_iter={self.max_iter}")


@register_model("lr")
class LRIntentModel(TabularIntentModel):
    config_class = LRConfig
    cfg: LRConfig

    def user_matrix(self, users: pd.DataFrame) -> np.ndarray:
        return self._encoder().encode_tabular(users).astype(np.float64)

    def pair_matrix(self, cand: pd.DataFrame) -> np.ndarray:
        return self._encoder().encode_pair_tabular(cand).astype(np.float64)

    def new_classifier(self, pair: bool) -> LogisticRegression:
        return LogisticRegression(C=self.cfg.c, max_iter=self.cfg.max_iter, random_state=self.cfg.seed)

    def fit_classifier(self, clf, x, y, w, x_val, y_val) -> dict[str, float]:
        clf.fit(x, y, sample_weight=w)
        return {"iterations": float(np.max(clf.n_iter_))}

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return x * self.heads[0].coef_[0]  # [B, F]: the logit is intercept + sum of these
