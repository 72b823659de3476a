"""The user x category pair yardsticks: LightGBM with early-stopped trees and LR on encoder-scaled features.

Candidate rows are built by hand (no JVM): per cutoff ``ds`` and user a few categories whose purchase
probability is a monotone function of a heavy-tailed view count, beside an unrelated recency column.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from tasks.config import DEFAULT_CONFIG, PipelineConfig, load_config
from tasks.evaluate import category_ranking_metrics
from tasks.models.baselines import (
    PAIR_DEFAULT_TREES,
    _pair_holdout,
    evaluate_category_baseline,
    fit_lgbm_pair,
)
from tasks.models.encoding import TABULAR_CLIP, standardised
from tasks.schema import USER_CATEGORY_LABEL

DAYS = [dt.date(2024, 1, d) for d in (1, 2, 3, 4)]
COLS = ["f_uc_view_7d", "f_uc_recency_any"]
METRIC_KEYS = {
    "category_hit_rate_at_5",
    "category_ndcg_at_5",
    "category_users",
    "category_pair_roc_auc",
    "category_pair_pr_auc",
}


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return load_config(DEFAULT_CONFIG, use_env=False)


def candidates(seed: int, n_users: int = 150, *, base: float = -3.0, slope: float = 1.2, noise_labels: bool = False):
    """Candidate rows of ``n_users`` per day of DAYS; P(buy) = sigmoid(base + slope * log1p(views)) with views
    Pareto-tailed (most 0-3, a few in the hundreds); with ``noise_labels`` the labels ignore the features."""
    rng = np.random.default_rng(seed)
    parts = []
    for day in DAYS:
        for u in range(n_users):
            n = int(rng.integers(2, 9))
            views = np.floor(rng.pareto(1.2, n) * 3)
            p = 0.2 if noise_labels else 1.0 / (1.0 + np.exp(-(base + slope * np.log1p(views))))
            parts.append(
                pd.DataFrame(
                    {
                        "ds": day,
                        "user_id": f"u{u}",
                        "category_id": [f"c{j}" for j in range(n)],
                        "f_uc_view_7d": views,
                        "f_uc_recency_any": rng.exponential(2.0, n),
                        USER_CATEGORY_LABEL: (rng.random(n) < p).astype(np.int32),
                    }
                )
            )
    df = pd.concat(parts, ignore_index=True)
    return df[df["ds"] < DAYS[-1]].reset_index(drop=True), df[df["ds"] == DAYS[-1]].reset_index(drop=True)


def random_ndcg(test: pd.DataFrame, seed: int = 0) -> float:
    groups = (test["ds"].astype(str) + "|" + test["user_id"]).to_numpy()
    scores = np.random.default_rng(seed).random(len(test))
    return category_ranking_metrics(groups, test[USER_CATEGORY_LABEL].to_numpy(), scores, k=5)["category_ndcg_at_5"]


@pytest.mark.parametrize("seed", [0, 1])
def test_both_pair_yardsticks_rank_a_heavy_tailed_monotone_signal(cfg, seed):
    train, test = candidates(seed)
    y = test[USER_CATEGORY_LABEL].to_numpy()
    oracle = roc_auc_score(y, test["f_uc_view_7d"])  # the true score is monotone in views
    assert oracle > 0.75
    out = evaluate_category_baseline(cfg, train, test, COLS)
    assert set(out) == {"lgbm", "lr"}
    chance_ndcg = random_ndcg(test)
    for name, m in out.items():
        assert set(m) == METRIC_KEYS, name
        assert m["category_users"] == float((test.groupby("user_id")[USER_CATEGORY_LABEL].max() > 0).sum())
        # Well above chance and within a few points of the oracle ordering.
        assert m["category_pair_roc_auc"] > max(0.7, oracle - 0.05), (name, m, oracle)
        assert m["category_pair_pr_auc"] > 2 * y.mean(), (name, m)
        assert m["category_ndcg_at_5"] > chance_ndcg + 0.05, (name, m, chance_ndcg)
        assert 0.0 <= m["category_hit_rate_at_5"] <= 1.0


def test_lr_features_are_log_scaled_and_standardised_on_train():
    train, test = candidates(3)
    x_train, x_test = standardised(train, [train, test], COLS)
    assert x_train.shape == (len(train), 2) and x_test.shape == (len(test), 2)
    views = np.log1p(train["f_uc_view_7d"].to_numpy())
    expected = (views - views.mean()) / views.std()
    np.testing.assert_allclose(x_train[:, 0], np.clip(expected, -TABULAR_CLIP, TABULAR_CLIP), atol=1e-4)
    # Heavy tails are tamed: the raw column's max sits dozens of raw std's out, the scaled one a few.
    raw = train["f_uc_view_7d"].to_numpy()
    assert (raw.max() - raw.mean()) / raw.std() > 10
    assert np.abs(x_train).max() < 6
    # The same statistics (train's) scale test: order is kept.
    order = np.argsort(test["f_uc_view_7d"].to_numpy(), kind="stable")
    assert np.all(np.diff(x_test[order, 0]) >= 0)


def test_early_stopping_grows_few_trees_on_noise_and_more_on_signal():
    noise_train, _ = candidates(4, noise_labels=True)
    y = noise_train[USER_CATEGORY_LABEL].to_numpy()
    x = noise_train[COLS].to_numpy(dtype=np.float64)
    noisy = fit_lgbm_pair(noise_train, x, y, np.ones(len(y)), seed=0)
    # Nothing to learn: the holdout log loss stops improving at once (the old settings always grew 100 trees).
    assert noisy.n_estimators < PAIR_DEFAULT_TREES // 2
    train, _ = candidates(4, n_users=300)
    y = train[USER_CATEGORY_LABEL].to_numpy()
    fitted = fit_lgbm_pair(train, train[COLS].to_numpy(dtype=np.float64), y, np.ones(len(y)), seed=0)
    assert fitted.n_estimators > noisy.n_estimators


def test_holdout_is_the_latest_cutoff_or_whole_user_groups():
    train, _ = candidates(5)
    y = train[USER_CATEGORY_LABEL].to_numpy()
    hold = _pair_holdout(train, y)
    assert hold is not None
    assert set(train.loc[hold, "ds"]) == {max(DAYS[:-1])} and set(train.loc[~hold, "ds"]) == set(DAYS[:-2])
    one_day = train[train["ds"] == DAYS[0]].reset_index(drop=True)
    hold = _pair_holdout(one_day, one_day[USER_CATEGORY_LABEL].to_numpy())
    assert hold is not None and 0.05 < hold.mean() < 0.4
    # A user's candidates are all on one side.
    assert one_day.assign(h=hold).groupby("user_id")["h"].nunique().max() == 1
    # A side without positives cannot early-stop.
    assert _pair_holdout(train, np.where(train["ds"] == max(DAYS[:-1]), 0, y)) is None


def test_single_cutoff_train_still_fits_both(cfg):
    train, test = candidates(6, n_users=300)
    out = evaluate_category_baseline(cfg, train[train["ds"] == DAYS[0]], test, COLS)
    assert out["lgbm"]["category_pair_roc_auc"] > 0.7 and out["lr"]["category_pair_roc_auc"] > 0.7


def test_one_class_train_gives_chance_not_an_error(cfg):
    train, test = candidates(7)
    train = train.assign(**{USER_CATEGORY_LABEL: 0})
    out = evaluate_category_baseline(cfg, train, test, COLS)
    for m in out.values():
        assert m["category_pair_roc_auc"] == pytest.approx(0.5)


def test_train_weights_are_honoured(cfg):
    # Half the train rows get their label flipped; with weight 0 on those rows both yardsticks still learn
    # the signal, without weights they see none.
    train, test = candidates(8, n_users=300)
    flip = np.random.default_rng(8).random(len(train)) < 0.5
    noisy = train.assign(
        **{USER_CATEGORY_LABEL: np.where(flip, 1 - train[USER_CATEGORY_LABEL], train[USER_CATEGORY_LABEL])}
    )
    weighted = evaluate_category_baseline(cfg, noisy.assign(weight=np.where(flip, 0.0, 1.0)), test, COLS)
    unweighted = evaluate_category_baseline(cfg, noisy, test, COLS)
    for name in ("lgbm", "lr"):
        assert weighted[name]["category_pair_roc_auc"] > 0.75, name
        assert unweighted[name]["category_pair_roc_auc"] < 0.6, name
