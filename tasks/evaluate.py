"""Metrics of intent probabilities, computed with scikit-learn; the one definition used by training and the gate."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from tasks.schema import INTENTS

# The metric the gate reads.
GATE_METRIC = "purchase_roc_auc"


def _equal_mass_bins(p: np.ndarray, bins: int) -> list[np.ndarray]:
    """Row indices of ``bins`` equal-mass bins of ``p`` sorted ascending (ties may straddle a bin edge)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return np.array_split(np.argsort(p, kind="stable"), min(bins, len(p)))


def reliability_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean prediction, observed rate, rows) per equal-mass bin of ``p``, ascending: the points of a
    calibration plot, the same bins ``expected_calibration_error`` averages over."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"labels and probabilities differ in length: {len(y)} vs {len(p)}")
    if len(y) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    parts = _equal_mass_bins(p, bins)
    return (
        np.array([p[b].mean() for b in parts]),
        np.array([y[b].mean() for b in parts]),
        np.array([len(b) for b in parts], dtype=np.int64),
    )


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean prediction| over ``bins`` equal-mass bins of the sorted predictions,
    weighted by bin size (ties may straddle a bin edge)."""
    predicted, observed, rows = reliability_curve(y, p, bins)
    if not rows.sum():
        return float("nan")
    return float((rows * np.abs(observed - predicted)).sum() / rows.sum())


def lift_by_decile(y: np.ndarray, p: np.ndarray, groups: int = 10) -> np.ndarray:
    """Positive rate of each equal-mass group of ``p``, highest scores first, over the overall positive rate
    [groups]: 3.0 in the first entry means the top tenth holds three times its share of buyers. NaN
    throughout when there is no positive."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"labels and probabilities differ in length: {len(y)} vs {len(p)}")
    if len(y) == 0 or y.sum() == 0:
        return np.full(min(groups, max(len(y), 1)), np.nan)
    # Bins of -p, so the first group holds the highest scores.
    parts = _equal_mass_bins(-p, groups)
    return np.array([y[b].mean() for b in parts]) / y.mean()


def binary_metrics(
    y_true: np.ndarray, p: np.ndarray, *, threshold: float = 0.5, top_k_fraction: float = 0.1
) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, expected calibration error (10 equal-mass bins), expected over
    observed positives, precision/recall/F1 at ``threshold``, recall of positives in the top k%.

    Ranking metrics are NaN when ``y_true`` has a single class (undefined, not zero).
    """
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.shape} vs {p.shape}")
    if len(y) == 0:
        raise ValueError("cannot evaluate on zero rows")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1] without NaN")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    both = len(np.unique(y)) == 2
    pred = (p >= threshold).astype(np.int64)
    k = max(1, math.ceil(top_k_fraction * len(y)))
    top = np.argsort(-p, kind="stable")[:k]
    n_pos = int(y.sum())
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        # Expected positives (the sum of probabilities) over observed ones: 1 when the scores count buyers right.
        "predicted_over_observed": float(p.sum() / n_pos) if n_pos else float("nan"),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        f"recall_top_{round(top_k_fraction * 100)}pct": float(y[top].sum() / n_pos) if n_pos else float("nan"),
        "positive_rate": float(y.mean()),
    }


def evaluate_intents(
    y_true: np.ndarray, probs: np.ndarray, *, threshold: float = 0.5, top_k_fraction: float = 0.1
) -> dict[str, float]:
    """y_true, probs [N, 3] in INTENTS order -> flat {"<intent>_<metric>": value}."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    if y_true.ndim != 2 or y_true.shape[1] != len(INTENTS) or y_true.shape != probs.shape:
        raise ValueError(f"expected [N, {len(INTENTS)}] labels and probabilities, got {y_true.shape} and {probs.shape}")
    out: dict[str, float] = {}
    for j, intent in enumerate(INTENTS):
        m = binary_metrics(y_true[:, j], probs[:, j], threshold=threshold, top_k_fraction=top_k_fraction)
        out.update({f"{intent}_{k}": v for k, v in m.items()})
    return out


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Only the defined (finite) metrics, for stores that reject NaN."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


# f_<event type>_<N>d: the per-event-type count over the N days before the cutoff (spark_jobs.features).
_WINDOW_COUNT = re.compile(r"^f_([a-z][a-z_]*?)_(\d+)d$")
USER_GROUPS = ("new_users", "returning_users")


def new_user_mask(frame, feature_columns: list[str], new_user_days: int) -> np.ndarray | None:
    """Boolean [N]: True for a "new" user, None when the features cannot tell.

    Definition (config ``training.new_user_days`` = N): a user is new at a cutoff when every event of
    theirs inside the feature lookback happened in the last N days, i.e. for each event type the
    N-day count equals the longest window's count; a user with any activity earlier in the lookback
    is returning. Only event types with both windows count; a missing count is read as 0.
    """
    windows: dict[str, dict[int, str]] = {}
    for col in feature_columns:
        if m := _WINDOW_COUNT.match(col):
            windows.setdefault(m.group(1), {})[int(m.group(2))] = col
    if not windows:
        return None
    longest = max(w for per_type in windows.values() for w in per_type)
    pairs = [
        (cols[new_user_days], cols[longest])
        for cols in windows.values()
        if new_user_days in cols and longest in cols and new_user_days != longest
    ]
    if not pairs:
        return None
    new = np.ones(len(frame), dtype=bool)
    for recent, whole in pairs:
        r = np.nan_to_num(frame[recent].to_numpy(dtype=np.float64, na_value=np.nan))
        w = np.nan_to_num(frame[whole].to_numpy(dtype=np.float64, na_value=np.nan))
        new &= w <= r
    return new


def evaluate_user_groups(
    y_true: np.ndarray,
    probs: np.ndarray,
    new_mask: np.ndarray | None,
    *,
    threshold: float = 0.5,
    top_k_fraction: float = 0.1,
) -> dict[str, float]:
    """``evaluate_intents`` per user group, keys ``<group>_<intent>_<metric>`` plus ``<group>_rows``.

    A group without rows reports only its row count (0); nothing is reported when ``new_mask`` is None.
    """
    if new_mask is None:
        return {}
    new_mask = np.asarray(new_mask, dtype=bool)
    if len(new_mask) != len(y_true):
        raise ValueError(f"user-group mask has {len(new_mask)} rows, labels {len(y_true)}")
    out: dict[str, float] = {}
    for group, rows in zip(USER_GROUPS, (new_mask, ~new_mask), strict=True):
        out[f"{group}_rows"] = float(rows.sum())
        if rows.any():
            m = evaluate_intents(y_true[rows], probs[rows], threshold=threshold, top_k_fraction=top_k_fraction)
            out.update({f"{group}_{k}": v for k, v in m.items()})
    return out


def category_ranking_metrics(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, *, k: int) -> dict[str, float]:
    """HitRate@k and NDCG@k of ranking each user's candidate categories by score.

    ``groups`` [C] identifies the user (any hashable per row), ``labels`` [C] 0/1, ``scores`` [C].
    Only users with at least one positive candidate count (a user who bought in none of their
    candidates has no right answer to rank); both metrics are NaN when there is none. Hit: a positive
    among the top k. NDCG: binary gains, log2 discount, divided by the ideal DCG of that user.
    Ties in score keep the input order.
    """
    _, hit, ndcg = category_ranking_per_user(groups, labels, scores, k=k)
    n = len(hit)
    if n == 0:
        return {f"category_hit_rate_at_{k}": float("nan"), f"category_ndcg_at_{k}": float("nan"), "category_users": 0.0}
    return {
        f"category_hit_rate_at_{k}": float(hit.mean()),
        f"category_ndcg_at_{k}": float(ndcg.mean()),
        "category_users": float(n),
    }


def category_ranking_per_user(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, *, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user with a positive candidate (see ``category_ranking_metrics``): (the user's ``groups`` value,
    hit 0/1, NDCG@k), each [U]; users in sorted order of ``groups``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    g = np.asarray(groups).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not (len(g) == len(y) == len(s)):
        raise ValueError(f"groups, labels and scores differ in length: {len(g)}, {len(y)}, {len(s)}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("candidate labels must be 0/1")
    if np.isnan(s).any():
        raise ValueError("candidate scores must not be NaN")
    if not len(g):
        return g, np.zeros(0), np.zeros(0)
    keys, gid = np.unique(g, return_inverse=True)
    # Sort by user, then score descending, keeping input order among ties.
    order = np.lexsort((np.arange(len(s)), -s, gid))
    gid, y = gid[order], y[order]
    starts = np.flatnonzero(np.r_[True, gid[1:] != gid[:-1]])
    rank = np.arange(len(gid)) - np.repeat(starts, np.diff(np.r_[starts, len(gid)]))  # 0-based rank in user
    discount = 1.0 / np.log2(rank + 2.0)
    in_top = rank < k
    n_groups = len(starts)
    dcg = np.bincount(gid, weights=y * discount * in_top, minlength=n_groups)
    hits = np.bincount(gid, weights=y * in_top, minlength=n_groups)
    positives = np.bincount(gid, weights=y, minlength=n_groups)
    ideal_disc = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))  # IDCG of a user with n positives: ideal_disc[min(n,k)-1]
    eligible = positives > 0
    idcg = ideal_disc[np.minimum(positives[eligible], k).astype(np.int64) - 1]
    return keys[eligible], (hits[eligible] > 0).astype(np.float64), dcg[eligible] / idcg


class SplitEval(NamedTuple):
    """One split's predictions and their metrics (``split_metrics``)."""

    metrics: dict[str, float]
    y: np.ndarray  # [N, len(INTENTS)] labels
    p: np.ndarray  # [N, len(INTENTS)] probabilities
    cand_groups: np.ndarray  # [C] the user (row) of each candidate
    cand_y: np.ndarray  # [C] 0/1
    cand_p: np.ndarray  # [C] probabilities


def split_metrics(
    y: np.ndarray,
    p: np.ndarray,
    cand_groups: np.ndarray,
    cand_y: np.ndarray,
    cand_p: np.ndarray,
    *,
    threshold: float,
    top_k_fraction: float,
    k: int,
) -> dict[str, float]:
    """Metrics of one evaluated split: ``evaluate_intents`` of the users (y, p [N, 3]) plus
    ``category_ranking_metrics`` of their candidates (cand_groups [C] the user of each, cand_y, cand_p [C])."""
    metrics = evaluate_intents(y, p, threshold=threshold, top_k_fraction=top_k_fraction)
    metrics.update(category_ranking_metrics(cand_groups, cand_y, cand_p, k=k))
    return metrics


# MLflow metric names of a training run. The UI puts a run's charts in one section per key prefix up
# to the last "/", so every name is "<group>/<metric>": train/ and val/ per epoch, test/ and
# test_<user group>/ for the candidate, yardstick/<name>/test.../ for each yardstick, and data/ for
# facts of the splits themselves (positive rates, row and user counts), logged once rather than once
# per model that was evaluated on the same rows.
# The validation metrics of the weights a training kept (its best epoch; the fitted tabular model): what the
# selection among candidate families reads.
VAL_KEPT = "val_kept"
# The test split before calibration (tasks.models.calibration): the metrics calibration changes.
UNCALIBRATED = "test_uncalibrated"
CALIBRATION_METRICS = ("_ece", "_log_loss", "_brier", "_predicted_over_observed")
TRAIN_LOSS = "train/loss"
TRAIN_LR = "train/lr"
TRAIN_SAMPLES_PER_S = "train/samples_per_s"
BEST_EPOCH = "val/best_epoch"
BEST_VAL_SCORE = "val/best_score"
DATA_GROUP = "data"
YARDSTICK_GROUP = "yardstick"
_COUNT_FACTS = ("rows", "category_users")


def metric_name(split: str, metric: str, *, user_group: str | None = None, yardstick: str | None = None) -> str:
    """The logged name of ``metric`` (an ``evaluate_intents`` / ``category_ranking_metrics`` key) of one
    evaluation: ``[yardstick/<name>/]<split>[_<user group>]/<metric>``."""
    if user_group is not None and user_group not in USER_GROUPS:
        raise ValueError(f"unknown user group {user_group!r}; expected one of {USER_GROUPS}")
    group = f"{split}_{user_group}" if user_group else split
    return f"{YARDSTICK_GROUP}/{yardstick}/{group}/{metric}" if yardstick else f"{group}/{metric}"


def _split_user_group(key: str) -> tuple[str | None, str]:
    for group in USER_GROUPS:
        if key.startswith(f"{group}_"):
            return group, key[len(group) + 1 :]
    return None, key


def _is_data_fact(metric: str) -> bool:
    return metric in _COUNT_FACTS or metric.endswith("_positive_rate")


def model_metrics(split: str, metrics: dict[str, float], *, yardstick: str | None = None) -> dict[str, float]:
    """The finite model metrics of one evaluation on ``split`` under their logged names.

    ``metrics`` holds ``evaluate_intents`` and ``category_ranking_metrics`` keys and optionally the
    ``<user group>_``-prefixed keys of ``evaluate_user_groups``, which go to ``<split>_<user group>/``.
    Data facts are left out: ``data_facts`` names them.
    """
    out = {}
    for key, value in finite(metrics).items():
        group, metric = _split_user_group(key)
        if not _is_data_fact(metric):
            out[metric_name(split, metric, user_group=group, yardstick=yardstick)] = value
    return out


def data_facts(split: str, metrics: dict[str, float]) -> dict[str, float]:
    """The facts of the evaluated rows in ``metrics`` (see ``model_metrics``): positive rates, row and user
    counts, as ``data/<split>[_<user group>]_<fact>``."""
    out = {}
    for key, value in finite(metrics).items():
        group, metric = _split_user_group(key)
        if _is_data_fact(metric):
            out[f"{DATA_GROUP}/{split}_{group}_{metric}" if group else f"{DATA_GROUP}/{split}_{metric}"] = value
    return out
