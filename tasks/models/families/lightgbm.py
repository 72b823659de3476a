"""LightGBM intent model: one gradient-boosted tree ensemble per head on the raw f_* features (LightGBM
handles missing values and scale itself), and one on the raw f_uc_* pair features that ranks each user's
candidate categories (with the pair yardstick's regularised tree settings; the config's tree settings are
the heads'). Each ensemble stops adding trees when the validation log loss has not improved for
``early_stopping_rounds``. Reasons are LightGBM's own per-row feature contributions (``pred_contrib``).

Its own settings (``LightGBMConfig`` beyond the shared ones) are the ``models.lightgbm`` config section.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from tasks.models.base import register_model
from tasks.models.baselines import lgbm_pair_classifier
from tasks.models.tabular import TabularIntentModel, TabularModelConfig


@dataclass(frozen=True)
class LightGBMConfig(TabularModelConfig):
    # Most trees per ensemble; early stopping on the validation split usually keeps fewer.
    n_estimators: int = 1000
    # Shrinkage per tree.
    learning_rate: float = 0.05
    # Leaves per tree.
    num_leaves: int = 15
    # Fewest rows in a leaf.
    min_child_samples: int = 20
    # Rounds without a better validation log loss before an ensemble stops; 0 never stops early.
    early_stopping_rounds: int = 50
    # Threads per fit; 0 is LightGBM's default (all cores).
    n_jobs: int = 0

    def __post_init__(self) -> None:
        if min(self.n_estimators, self.num_leaves, self.min_child_samples) < 1 or self.learning_rate <= 0:
            raise ValueError("n_estimators, num_leaves, min_child_samples must be >= 1 and learning_rate > 0")
        if self.early_stopping_rounds < 0 or self.n_jobs < 0:
            raise ValueError("early_stopping_rounds and n_jobs must be >= 0")


@register_model("lightgbm")
class LightGBMIntentModel(TabularIntentModel):
    config_class = LightGBMConfig
    cfg: LightGBMConfig

    def user_matrix(self, users: pd.DataFrame) -> np.ndarray:
        return self._encoder().raw_tabular(users)

    def pair_matrix(self, cand: pd.DataFrame) -> np.ndarray:
        return self._encoder().raw_tabular(cand, pair=True)

    def new_classifier(self, pair: bool) -> lgb.LGBMClassifier:
        c = self.cfg
        if pair:
            # A user's candidates hold few positive pairs: the small, subsampled, L2-regularised trees measured
            # for the pair yardstick (tasks.models.baselines.PAIR_LGBM_PARAMS), stopped early like the heads.
            return lgbm_pair_classifier(c.seed, c.n_estimators)
        return lgb.LGBMClassifier(
            n_estimators=c.n_estimators,
            learning_rate=c.learning_rate,
            num_leaves=c.num_leaves,
            min_child_samples=c.min_child_samples,
            random_state=c.seed,
            n_jobs=c.n_jobs or None,
            verbose=-1,
        )

    def fit_classifier(self, clf, x, y, w, x_val, y_val) -> dict[str, float]:
        if x_val is None or not self.cfg.early_stopping_rounds:
            clf.fit(x, y, sample_weight=w)
            return {"trees": float(clf.n_estimators)}
        clf.fit(
            x,
            y,
            sample_weight=w,
            eval_X=x_val,
            eval_y=y_val,
            eval_metric="binary_logloss",
            callbacks=[lgb.early_stopping(self.cfg.early_stopping_rounds, verbose=False)],
        )
        return {"trees": float(clf.best_iteration_ or clf.n_estimators)}

    def contributions(self, x: np.ndarray) -> np.ndarray:
        # [B, F + 1] raw-score contributions of the kept trees; the last column is the bias.
        return np.asarray(self.heads[0].predict(x, pred_contrib=True))[:, :-1]
