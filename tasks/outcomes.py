"""Realized outcomes of the nightly scores: how good the scores of a day were, once its answer is known.

The scores of cutoff ``ds`` predict what each user does in ``[ds, ds + horizon)``. Those events arrive with
the nightly runs that follow, so the run at cutoff ``C`` can judge every scored ``ds`` whose label window
has closed: its end, the midnight of ``ds + horizon`` in ``pipeline.timezone``, is not after ``C``'s
midnight. This module holds that rule and the metrics of one day (plain numpy over the joined rows);
``spark_jobs.outcomes`` builds the labels with the same Spark transforms that label the training sets and
writes one row per ds, model version and role to the warehouse table ``warehouse.outcomes_table``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from tasks.evaluate import (
    binary_metrics,
    expected_calibration_error,
    lift_by_decile,
    reliability_curve,
)
from tasks.schema import INTENTS, OUTCOME_COLUMNS

ROLES = ("champion", "challenger")


def local_midnight(day: dt.date, tz: str) -> dt.datetime:
    """The UTC instant at which ``day`` starts in ``tz``."""
    return dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(tz)).astimezone(dt.UTC)


def label_window_end(ds: dt.date, horizon_days: int, tz: str) -> dt.datetime:
    """The instant the label window of ``ds`` closes: the local midnight ``horizon_days`` calendar days later
    (a DST day is 23 or 25 hours long, as the feature job's labels count it)."""
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1, got {horizon_days}")
    return local_midnight(ds + dt.timedelta(days=horizon_days), tz)


def window_closed(ds: dt.date, as_of: dt.datetime, horizon_days: int, tz: str) -> bool:
    """Whether every event that labels the scores of ``ds`` lies before ``as_of`` (an aware instant)."""
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must be time-zone aware, got {as_of.isoformat()}")
    return as_of >= label_window_end(ds, horizon_days, tz)


def days_to_evaluate(
    scored: Iterable[dt.date], evaluated: Iterable[dt.date], cutoff: dt.date, horizon_days: int, tz: str
) -> list[dt.date]:
    """The scored days the run at ``cutoff`` evaluates, oldest first: the day whose window closes at this
    cutoff (so a rerun of the cutoff recomputes it) and every earlier closed day without outcomes yet
    (nights that were skipped or failed). A window still open is never evaluated."""
    as_of = local_midnight(cutoff, tz)
    closing = cutoff - dt.timedelta(days=horizon_days)
    done = set(evaluated)
    return sorted(
        d for d in set(scored) if window_closed(d, as_of, horizon_days, tz) and (d == closing or d not in done)
    )


def parse_top_categories(entries: Sequence[str] | None) -> list[str]:
    """Category ids of a ``top_categories`` cell ("<category_id>:<probability>", best first)."""
    return [e.rsplit(":", 1)[0] for e in entries or []]


def top_list_ranking(
    top: Sequence[Sequence[str] | None], bought: Sequence[set[str]], k: int
) -> tuple[float, float, int]:
    """(HitRate@k, NDCG@k, users ranked) of each user's ``top_categories`` against the categories they bought.

    ``top`` [U] holds each user's ``top_categories`` cell, ``bought`` [U] the categories of their lookback they
    bought in the window (a category outside the lookback was never a candidate, as in training's metric).
    Users without such a purchase are not ranked. Gains are binary with a log2 discount over the ideal DCG of
    ``min(bought, k)`` hits, as ``tasks.evaluate.category_ranking_metrics`` counts them; a bought category
    the list does not hold is not in the top k, so both metrics are exact for k no longer than the list.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    discount = 1.0 / np.log2(np.arange(k) + 2.0)  # [k]
    hits: list[float] = []
    ndcgs: list[float] = []
    for cell, positives in zip(top, bought, strict=True):
        if not positives:
            continue
        ranked = parse_top_categories(cell)[:k]
        gains = np.array([1.0 if c in positives else 0.0 for c in ranked])
        hits.append(float(gains.any()))
        ndcgs.append(float((gains * discount[: len(gains)]).sum() / discount[: min(len(positives), k)].sum()))
    if not hits:
        return float("nan"), float("nan"), 0
    return float(np.mean(hits)), float(np.mean(ndcgs)), len(hits)


def _defined(value: float) -> float | None:
    return value if math.isfinite(value) else None


def outcome_row(
    *,
    ds: dt.date,
    model_name: str,
    model_version: str,
    role: str,
    probabilities: np.ndarray,
    labels: np.ndarray,
    top_categories: Sequence[Sequence[str] | None],
    bought: Sequence[set[str]],
    n_buyers_unscored: int,
    horizon_days: int,
    top_fraction: float,
    reliability_bins: int,
    category_k: int,
    evaluated_at: dt.datetime,
    pipeline_run_id: str,
) -> dict[str, Any]:
    """One row of ``OUTCOME_COLUMNS`` for the users one model version scored for ``ds``.

    ``probabilities`` and ``labels`` are [N, len(INTENTS)] in ``INTENTS`` order; ``top_categories`` and
    ``bought`` [N] as ``top_list_ranking`` reads them. An undefined metric (a day without buyers) is None.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        raise ValueError(f"no scored users for ds={ds}, model version {model_version}")
    if probabilities.shape != (n, len(INTENTS)) or labels.shape != (n, len(INTENTS)):
        raise ValueError(f"expected [N, {len(INTENTS)}] probabilities and labels, got {probabilities.shape}")
    per_intent = {
        intent: binary_metrics(labels[:, j], probabilities[:, j], top_k_fraction=top_fraction)
        for j, intent in enumerate(INTENTS)
    }
    y, p = labels[:, 0], probabilities[:, 0]
    buyers = int(y.sum())
    predicted, observed, _ = reliability_curve(y, p, reliability_bins)
    k_top = max(1, math.ceil(top_fraction * n))
    top = np.argsort(-p, kind="stable")[:k_top]
    hit_rate, ndcg, ranked = top_list_ranking(top_categories, bought, category_k)
    purchase = per_intent["purchase"]
    row: dict[str, Any] = {
        "ds": ds,
        "model_name": model_name,
        "model_version": model_version,
        "role": role,
        "horizon_days": horizon_days,
        "n_users": n,
        "n_buyers": buyers,
        "n_buyers_unscored": n_buyers_unscored,
        "purchase_rate": buyers / n,
        "mean_p_purchase": float(p.mean()),
        **{f"purchase_{m}": _defined(purchase[m]) for m in ("roc_auc", "pr_auc", "log_loss", "brier")},
        # Over the bins stored beside it (binary_metrics' own ECE uses a fixed 10).
        "purchase_ece": _defined(expected_calibration_error(y, p, reliability_bins)),
        **{f"{i}_{m}": _defined(per_intent[i][m]) for i in INTENTS[1:] for m in ("roc_auc", "pr_auc")},
        "top_fraction": top_fraction,
        "precision_top": float(y[top].mean()),
        "recall_top": float(y[top].sum() / buyers) if buyers else None,
        "lift_by_decile": [float(v) for v in lift_by_decile(y, p)] if buyers else None,
        "reliability_predicted": [float(v) for v in predicted],
        "reliability_observed": [float(v) for v in observed],
        "category_k": category_k,
        "category_users": ranked,
        "category_hit_rate": _defined(hit_rate),
        "category_ndcg": _defined(ndcg),
        "evaluated_at": evaluated_at,
        "pipeline_run_id": pipeline_run_id,
    }
    return {c: row[c] for c in OUTCOME_COLUMNS}
