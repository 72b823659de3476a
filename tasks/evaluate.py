"""Metrics of intent probabilities, computed with scikit-learn; the one definition used by training and the gate."""

from __future__ import annotations

import math

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

# The metric the gate and early stopping read.
GATE_METRIC = "purchase_roc_auc"
EARLY_STOPPING_METRIC = "purchase_pr_auc"


def binary_metrics(
    y_true: np.ndarray, p: np.ndarray, *, threshold: float = 0.5, top_k_fraction: float = 0.1
) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, precision/recall/F1 at ``threshold``, recall of positives in the top k%.

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
