"""Yardsticks trained on the same splits as every candidate: logistic regression and LightGBM on f_* features,
and LightGBM on the user x category pair features (f_uc_*) for the category-intent ranking.

They read only the tabular columns; their test metrics are logged beside the candidate's so a
sequence model that fails to beat a linear model on counts is visible in the run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.linear_model import LogisticRegression

from tasks.config import PipelineConfig
from tasks.evaluate import category_ranking_metrics, evaluate_intents, evaluate_user_groups, new_user_mask
from tasks.models.encoding import FeatureEncoder, encode_targets
from tasks.schema import INTENTS, USER_CATEGORY_LABEL


def fit_predict(make, x_train: np.ndarray, y: np.ndarray, w: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """P(y = 1) on ``x_test`` of the classifier ``make()`` fitted on (``x_train``, ``y``) with sample weights ``w``."""
    if len(np.unique(y)) < 2:
        # A head with one class in train has nothing to learn; predict its train rate.
        return np.full(len(x_test), float(y.mean()))
    clf = make()
    clf.fit(x_train, y, sample_weight=w)
    return clf.predict_proba(x_test)[:, 1]


def lgbm_classifier(seed: int) -> LGBMClassifier:
    """The LightGBM yardstick's settings (shared with the benchmarks, so both fit the same model)."""
    return LGBMClassifier(
        n_estimators=100,
        num_leaves=15,
        learning_rate=0.05,
        min_child_samples=10,
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )


def evaluate_category_baseline(
    cfg: PipelineConfig, train: pd.DataFrame, test: pd.DataFrame, pair_columns: list[str]
) -> dict[str, float]:
    """LightGBM on the raw pair features of candidate rows (ds, user_id, f_uc_*, label), ranked per
    (ds, user_id) on ``test`` with the same HitRate@k / NDCG@k as the candidate model."""
    y_train = train[USER_CATEGORY_LABEL].to_numpy(dtype=np.int64)
    x_train = train[pair_columns].to_numpy(dtype=np.float64, na_value=np.nan)
    x_test = test[pair_columns].to_numpy(dtype=np.float64, na_value=np.nan)
    scores = fit_predict(lambda: lgbm_classifier(cfg.training.seed), x_train, y_train, np.ones(len(y_train)), x_test)
    groups = (test["ds"].astype(str) + "|" + test["user_id"].astype(str)).to_numpy()
    return category_ranking_metrics(
        groups, test[USER_CATEGORY_LABEL].to_numpy(dtype=np.float64), scores, k=cfg.training.category_eval_k
    )


def evaluate_baselines(
    cfg: PipelineConfig, encoder: FeatureEncoder, train: pd.DataFrame, test: pd.DataFrame
) -> dict[str, dict[str, float]]:
    """{"lr": metrics, "lgbm": metrics} on ``test`` (flat ``<intent>_<metric>`` keys, as evaluate_intents,
    plus the new/returning-user breakdown of ``evaluate_user_groups`` when the features allow it)."""
    y_train, w_train = (t.numpy() for t in encode_targets(train))
    y_test, _ = encode_targets(test)
    y_test = y_test.numpy()
    seed = cfg.training.seed
    models = {
        # LR sees the encoder's imputed, log-scaled, standardised features.
        "lr": (
            lambda: LogisticRegression(max_iter=500, random_state=seed),
            encoder.encode_tabular(train),
            encoder.encode_tabular(test),
        ),
        # LightGBM handles missing values and scale itself, so it gets the raw columns.
        "lgbm": (
            lambda: lgbm_classifier(seed),
            train[encoder.feature_columns].to_numpy(dtype=np.float64, na_value=np.nan),
            test[encoder.feature_columns].to_numpy(dtype=np.float64, na_value=np.nan),
        ),
    }
    new_mask = new_user_mask(test, encoder.feature_columns, cfg.training.new_user_days)
    out = {}
    for name, (make, x_train, x_test) in models.items():
        probs = np.column_stack(
            [fit_predict(make, x_train, y_train[:, j], w_train, x_test) for j in range(len(INTENTS))]
        )  # [N_test, 3]
        kw = dict(threshold=cfg.training.threshold, top_k_fraction=cfg.training.top_k_fraction)
        out[name] = {**evaluate_intents(y_test, probs, **kw), **evaluate_user_groups(y_test, probs, new_mask, **kw)}
    return out
