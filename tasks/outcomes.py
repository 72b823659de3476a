"""Realized outcomes of the nightly scores: how good the scores of a day were, once its answer is known.

The scores of cutoff ``ds`` predict what each user does in ``[ds, ds + horizon)``. Those events arrive with
the nightly runs that follow, so the run at cutoff ``C`` can judge every scored ``ds`` whose label window
has closed: its end, the midnight of ``ds + horizon`` in ``pipeline.timezone``, is not after ``C``'s
midnight. This module holds that rule and the metrics of one day (plain numpy over the joined rows);
``spark_jobs.outcomes`` builds the labels with the same Spark transforms that label the training sets and
writes one row per ds, model version and role to the warehouse table ``warehouse.outcomes_table``.

It also holds the two rules read from those outcomes: ``assess_health`` (has the champion gone stale, which
triggers retraining; gathered by ``tasks.monitoring``) and ``live_decision`` (does the shadow challenger beat
the champion on the same users and days; applied by ``tasks.registry.live_gate``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from tasks.evaluate import (
    binary_metrics,
    expected_calibration_error,
    lift_by_decile,
    reliability_curve,
)
from tasks.layers import SCORING_ROLES
from tasks.schema import INTENTS, OUTCOME_COLUMNS

# Bootstrap resamples evaluated at once by live_decision.
LIVE_BOOTSTRAP_CHUNK = 25


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
    if role not in SCORING_ROLES:
        raise ValueError(f"role must be one of {SCORING_ROLES}, not {role!r}")
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


@dataclass(frozen=True)
class Health:
    """Whether the champion has gone stale as of cutoff ``ds``, and why (``assess_health``)."""

    ds: dt.date
    model_version: str | None
    degraded: bool
    reason: str
    floor: float | None  # the realized purchase ROC-AUC below which a judged day counts as bad
    recent: tuple[tuple[str, float | None], ...]  # (ds, realized purchase ROC-AUC) of the days judged

    def describe(self) -> str:
        state = "DEGRADED" if self.degraded else "healthy"
        version = f"v{self.model_version}" if self.model_version else "no champion"
        return f"model health at cutoff {self.ds}: {state} ({version}): {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ds": self.ds.isoformat(), "recent": [list(r) for r in self.recent]}


def health_floor(min_auc: float | None, max_drop: float | None, test_auc: float | None) -> float | None:
    """The realized ROC-AUC a judged day must reach: ``min_auc``, or the champion's test ROC-AUC less
    ``max_drop`` when that is higher; None when neither applies."""
    floors = [
        f for f in (min_auc, None if test_auc is None or max_drop is None else test_auc - max_drop) if f is not None
    ]
    return max(floors) if floors else None


def assess_health(
    ds: dt.date,
    model_version: str | None,
    history: Sequence[dict[str, Any]],
    *,
    floor: float | None,
    days: int,
    drifted: Sequence[str] = (),
) -> Health:
    """Degraded when each of the champion's last ``days`` judged days (consecutive ones, from ``history``, its
    outcome rows oldest first) has a realized purchase ROC-AUC below ``floor``, or when ``drifted`` (the
    cutoff's drifted feature columns, empty unless drift counts) is not empty. A day without a defined AUC
    breaks the run of bad days: it says nothing against the model."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    recent = tuple((r["ds"].isoformat(), r["purchase_roc_auc"]) for r in history[-days:])
    if drifted:
        return Health(ds, model_version, True, f"features drifted: {', '.join(drifted)}", floor, recent)
    if model_version is None:
        return Health(ds, None, False, "no champion to judge", floor, recent)
    if floor is None:
        return Health(ds, model_version, False, "no ROC-AUC floor configured", floor, recent)
    last = list(history[-days:])
    if len(last) < days:
        return Health(ds, model_version, False, f"{len(history)} judged day(s), {days} needed", floor, recent)
    consecutive = all((b["ds"] - a["ds"]).days == 1 for a, b in zip(last, last[1:], strict=False))
    bad = [r for r in last if r["purchase_roc_auc"] is not None and r["purchase_roc_auc"] < floor]
    aucs = ", ".join(f"{d} {'n/a' if a is None else f'{a:.3f}'}" for d, a in recent)
    if consecutive and len(bad) == days:
        return Health(
            ds,
            model_version,
            True,
            f"realized purchase ROC-AUC below {floor:.3f} on {days} days: {aucs}",
            floor,
            recent,
        )
    return Health(ds, model_version, False, f"realized purchase ROC-AUC {aucs} (floor {floor:.3f})", floor, recent)


@dataclass(frozen=True)
class LiveDecision:
    """The live comparison of @challenger with @champion on realized outcomes (``live_decision``)."""

    action: str  # promote | recommend | hold | wait
    champion_version: str
    challenger_version: str
    days: int  # closed days both were judged on
    users: int
    champion_auc: float | None
    challenger_auc: float | None
    delta_auc: float | None  # challenger - champion, same rows
    interval: tuple[float, float] | None  # 95% paired bootstrap interval of delta_auc
    reason: str

    def tags(self) -> dict[str, str]:
        """The version tags that record the decision and its evidence."""

        def num(v: float | None) -> str:
            return "" if v is None else f"{v:.6f}"

        return {
            "live_decision": self.action,
            "live_champion_version": self.champion_version,
            "live_days": str(self.days),
            "live_users": str(self.users),
            "live_champion_auc": num(self.champion_auc),
            "live_challenger_auc": num(self.challenger_auc),
            "live_delta_auc": num(self.delta_auc),
            "live_delta_interval": "" if self.interval is None else f"[{self.interval[0]:.6f}, {self.interval[1]:.6f}]",
            "live_reason": self.reason,
        }


def live_decision(
    users: np.ndarray,
    labels: np.ndarray,
    p_champion: np.ndarray,
    p_challenger: np.ndarray,
    *,
    champion_version: str,
    challenger_version: str,
    days: int,
    min_days: int,
    min_gain: float,
    mode: str,
    resamples: int,
    seed: int = 0,
) -> LiveDecision:
    """Judge the challenger on the rows both versions scored over ``days`` closed days: ``users`` [N] (a user id per
    row; a user's rows are resampled together), ``labels`` [N] 0/1 purchases, each version's p_purchase [N].

    ``promote`` (``mode`` auto) or ``recommend`` (``mode`` recommend) when its purchase ROC-AUC beats the
    champion's by at least ``min_gain`` and the 95% paired bootstrap interval of the difference lies above
    zero; ``hold`` otherwise; ``wait`` before ``min_days`` days.
    """
    from tasks.backtest_report import interval, weighted_auc_ap

    if mode not in ("auto", "recommend"):
        raise ValueError(f"mode must be auto or recommend, not {mode!r}")
    y = np.asarray(labels, dtype=np.float64)
    _, unit = np.unique(np.asarray(users), return_inverse=True)
    n_users = int(unit.max()) + 1 if len(unit) else 0

    def decided(
        action: str, reason: str, champ: float | None = None, chal: float | None = None, iv=None
    ) -> LiveDecision:
        delta = None if champ is None or chal is None else chal - champ
        return LiveDecision(action, champion_version, challenger_version, days, n_users, champ, chal, delta, iv, reason)

    if days < min_days:
        return decided("wait", f"{days} closed day(s) judged for both, {min_days} needed")
    if len(y) == 0 or y.min() == y.max():
        return decided("hold", "the judged rows hold a single class: ROC-AUC undefined")
    s_champ = np.asarray(p_champion, dtype=np.float64)
    s_chal = np.asarray(p_challenger, dtype=np.float64)
    ones = np.ones((1, len(y)))
    champ = float(weighted_auc_ap(y, s_champ, ones)[0][0])
    chal = float(weighted_auc_ap(y, s_chal, ones)[0][0])
    rng = np.random.default_rng(seed)
    deltas = []
    # Resamples in chunks: the [chunk, N] weights of a week of 100k users a day stay within memory.
    for start in range(0, resamples, LIVE_BOOTSTRAP_CHUNK):
        size = min(LIVE_BOOTSTRAP_CHUNK, resamples - start)
        counts = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=size).astype(np.float64)[:, unit]
        deltas.append(weighted_auc_ap(y, s_chal, counts)[0] - weighted_auc_ap(y, s_champ, counts)[0])
    lo, hi = interval(np.concatenate(deltas))
    delta = chal - champ
    evidence = (
        f"challenger v{challenger_version} purchase ROC-AUC {chal:.4f} vs champion v{champion_version} {champ:.4f} "
        f"on {n_users} users over {days} days: difference {delta:+.4f}, 95% interval [{lo:+.4f}, {hi:+.4f}]"
    )
    if delta >= min_gain and lo > 0:
        action = "promote" if mode == "auto" else "recommend"
        return decided(action, f"{evidence}; it beats the champion by >= {min_gain:.4f}", champ, chal, (lo, hi))
    why = f"not better by >= {min_gain:.4f} with the interval above 0"
    return decided("hold", f"{evidence}; {why}", champ, chal, (lo, hi))
