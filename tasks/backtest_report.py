"""What ``python -m tasks.backtest`` reports: metrics of every model's test predictions, a recency heuristic,
the spread over seeds, paired bootstrap intervals against the best yardstick, and the report files.

Pure numpy / pandas on predictions already made (no Spark, no torch): ``tasks.backtest`` produces the
predictions, this module judges them. A "model" here is one row of the report: a single trained seed of a
family, the seed ensemble of a family (the mean of its seeds' probabilities), or the heuristic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.evaluate import binary_metrics, category_ranking_per_user, expected_calibration_error
from tasks.schema import CANDIDATE_CATEGORY_COLUMN, LABEL_COLUMNS

HEURISTIC = "heuristic"
SINGLE, ENSEMBLE = "single", "ensemble"
# Suffix of a family trained from its masked-event pretrained encoder (``python -m tasks.backtest --pretrain``).
PRETRAINED = "-pretrained"
# Suffix of a family trained without text on the same training set (``python -m tasks.backtest --without-text``).
NO_TEXT = "-notext"
# Families whose models are the yardsticks a candidate must beat, beside the heuristic.
YARDSTICK_FAMILIES = ("lr", "lightgbm")
# Metrics of the bootstrap comparisons (higher is better): user level, then user x category level.
BOOTSTRAP_METRICS = ("roc_auc", "pr_auc", "ndcg", "pair_roc_auc", "hit_rate_unseen", "top1_unseen")
# Per user-day that bought in a category unseen in training: one of those in the top k (HitRate@k), or first
# (top1); a user-day has few candidates, so the top k often holds them all and only the top 1 tells models apart.
UNSEEN_METRICS = ("hit_rate_unseen", "top1_unseen")
BOOTSTRAP_CHUNK = 50  # resamples evaluated per vectorised pass: bounds memory at [chunk, pairs] floats


@dataclass(frozen=True)
class TestSplit:
    """The test rows every model is judged on: user-days and their candidate categories."""

    users: pd.DataFrame  # user_id, ds (one row per user-day)
    y: np.ndarray  # [N, len(INTENTS)] 0/1
    cand_rows: np.ndarray  # [C] row of each candidate's user-day, ascending
    cand_category: np.ndarray  # [C] category_id
    cand_y: np.ndarray  # [C] 0/1: bought in that category in the horizon
    cand_unseen: np.ndarray | None = None  # [C] bool: the category appears nowhere in the train split

    def __post_init__(self) -> None:
        n, c = len(self.users), len(self.cand_rows)
        unseen = c if self.cand_unseen is None else len(self.cand_unseen)
        if self.y.shape[0] != n or len(self.cand_category) != c or len(self.cand_y) != c or unseen != c:
            raise ValueError(f"test split arrays disagree: {n} users, y {self.y.shape}, {c} candidates")

    @property
    def cand_y_unseen(self) -> np.ndarray | None:
        """[C] 0/1: bought in that category in the horizon, and the category is unseen in training; None when the
        split does not say which categories are."""
        return None if self.cand_unseen is None else self.cand_y * self.cand_unseen

    @property
    def user_index(self) -> np.ndarray:
        """[N] the resampling unit of each row: its user (a user's days move together)."""
        return pd.factorize(self.users["user_id"].astype(str))[0]


@dataclass
class ModelPredictions:
    """One report row's test predictions."""

    model: str  # family, or HEURISTIC
    kind: str  # SINGLE | ENSEMBLE | HEURISTIC
    seed: int | None
    p: np.ndarray  # [N, len(INTENTS)] probabilities (the heuristic: rank scores in [0, 1])
    cand_p: np.ndarray  # [C]
    p_uncalibrated: np.ndarray | None = None  # [N] p_purchase before the packaged calibration
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.kind == SINGLE:
            return f"{self.model} (seed {self.seed})"
        if self.kind == ENSEMBLE:
            return f"{self.model} (mean of {self.extra.get('seeds', '?')} seeds)"
        return self.model

    @property
    def probabilistic(self) -> bool:
        return self.kind != HEURISTIC


def _rank_score(keys: list[np.ndarray]) -> np.ndarray:
    """Scores in (0, 1] ordering rows by ``keys`` (most significant last, as ``np.lexsort``), ascending."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0)
    order = np.lexsort(keys)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.arange(1, n + 1)
    return ranks / n


def _recency(frame: pd.DataFrame, column: str) -> np.ndarray:
    # Days since the last such event; never (null) ranks below any number.
    return frame[column].astype(np.float64).fillna(np.inf).to_numpy()


def recency_heuristic(users: pd.DataFrame, cand: pd.DataFrame, n_intents: int) -> tuple[np.ndarray, np.ndarray]:
    """The yardstick every model must beat: users ranked by how recently they carted, then by how recently they
    were active; each user's categories by how recently the user carted in them, then touched them at all.
    Returns rank scores ([N, n_intents] with the same ranking for every head, [C]); not probabilities."""
    user = _rank_score([-_recency(users, "f_recency_any"), -_recency(users, "f_recency_cart")])
    pair = _rank_score([-_recency(cand, "f_uc_recency_any"), -_recency(cand, "f_uc_recency_cart")])
    return np.repeat(user[:, None], n_intents, axis=1), pair


def model_metrics(split: TestSplit, pred: ModelPredictions, *, k: int, top_k_fraction: float) -> dict[str, float]:
    """The report's metrics of one model: purchase head at user level, candidates at user x category level."""
    m = binary_metrics(split.y[:, 0], pred.p[:, 0], top_k_fraction=top_k_fraction)
    pct = round(top_k_fraction * 100)
    out = {
        "roc_auc": m["roc_auc"],
        "pr_auc": m["pr_auc"],
        "log_loss": m["log_loss"],
        "brier": m["brier"],
        "ece": m["ece"],
        f"recall_top_{pct}pct": m[f"recall_top_{pct}pct"],
        "predicted_over_observed": m["predicted_over_observed"],
    }
    if not pred.probabilistic:
        # Rank scores are not probabilities: the calibration-sensitive metrics would be meaningless.
        for name in ("log_loss", "brier", "ece", "predicted_over_observed"):
            out[name] = math.nan
    if pred.p_uncalibrated is not None:
        out["ece_uncalibrated"] = expected_calibration_error(split.y[:, 0], pred.p_uncalibrated)
    _, hit, ndcg = category_ranking_per_user(split.cand_rows, split.cand_y, pred.cand_p, k=k)
    out["hit_rate"] = float(hit.mean()) if len(hit) else math.nan
    out["ndcg"] = float(ndcg.mean()) if len(ndcg) else math.nan
    if (y_unseen := split.cand_y_unseen) is not None:
        # Over the user-days that bought in a category never seen in training: one of those in the top k.
        for name, at in zip(UNSEEN_METRICS, (k, 1), strict=True):
            rows, hit_unseen, _ = category_ranking_per_user(split.cand_rows, y_unseen, pred.cand_p, k=at)
            out[name] = float(hit_unseen.mean()) if len(hit_unseen) else math.nan
        out["unseen_buyer_days"] = float(len(rows))
        out["unseen_candidates"] = float(np.isin(split.cand_rows, rows).sum() / len(rows)) if len(rows) else math.nan
    pair = binary_metrics(split.cand_y.astype(np.int64), np.clip(pred.cand_p, 0.0, 1.0)) if len(split.cand_y) else {}
    out["pair_roc_auc"] = pair.get("roc_auc", math.nan)
    out["pair_pr_auc"] = pair.get("pr_auc", math.nan)
    return out


def weighted_auc_ap(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and average precision (sklearn's step-wise PR-AUC) of scores ``s`` [N] against 0/1 ``y`` [N]
    under each row of weights ``w`` [B, N] (bootstrap counts); ties count half, as in sklearn. Returns [B]
    each; NaN where a resample holds one class."""
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(-np.asarray(s, dtype=np.float64), kind="stable")
    ss = np.asarray(s, dtype=np.float64)[order]
    if not len(ss):
        return np.full(w.shape[0], math.nan), np.full(w.shape[0], math.nan)
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # first sorted row of each group of equal scores
    wy = w[:, order] * y[order]  # [B, N] positive weight per row
    pos = np.add.reduceat(wy, starts, axis=1)  # [B, G]
    neg = np.add.reduceat(w[:, order] - wy, starts, axis=1)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)  # [B, G] at each threshold, descending
    p_total, n_total = tp[:, -1], fp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        # AUC: each positive group beats the negatives in later (lower) groups, ties count half.
        neg_below = n_total[:, None] - fp
        auc = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (p_total * n_total)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        ap = (pos * precision).sum(axis=1) / p_total
    bad = (p_total == 0) | (n_total == 0)
    auc[bad], ap[bad] = math.nan, math.nan
    return auc, ap


def user_resamples(unit: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[B, U] how often each user is drawn in each of ``resamples`` bootstrap resamples of the users, ``unit`` [N]
    being the user index (0..U-1) of each row; ``counts[:, unit]`` weights the rows."""
    n = int(unit.max()) + 1 if len(unit) else 0
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


class Bootstrap:
    """Paired bootstrap over users: every model is evaluated on the same resamples, a user's days and
    candidate pairs moving together; yields per model and metric the [B] resampled values."""

    def __init__(self, split: TestSplit, *, k: int, resamples: int, seed: int):
        self.split, self.k, self.resamples = split, k, resamples
        self.unit = split.user_index
        self.counts = user_resamples(self.unit, resamples, seed)

    def values(self, pred: ModelPredictions) -> dict[str, np.ndarray]:
        s = self.split
        out: dict[str, list[np.ndarray]] = {m: [] for m in (*BOOTSTRAP_METRICS, "ece")}
        rows, hit, ndcg = category_ranking_per_user(s.cand_rows, s.cand_y, pred.cand_p, k=self.k)
        unseen = {}
        if s.cand_y_unseen is not None and s.cand_y_unseen.any():
            unseen = {
                name: category_ranking_per_user(s.cand_rows, s.cand_y_unseen, pred.cand_p, k=at)[:2]
                for name, at in zip(UNSEEN_METRICS, (self.k, 1), strict=True)
            }
        for start in range(0, self.resamples, BOOTSTRAP_CHUNK):
            c = self.counts[start : start + BOOTSTRAP_CHUNK]
            auc, ap = weighted_auc_ap(s.y[:, 0], pred.p[:, 0], c[:, self.unit])
            out["roc_auc"].append(auc)
            out["pr_auc"].append(ap)
            wr = c[:, self.unit[rows.astype(np.int64)]] if len(rows) else np.zeros((len(c), 0))
            with np.errstate(invalid="ignore", divide="ignore"):
                out["ndcg"].append((wr * ndcg).sum(axis=1) / wr.sum(axis=1))
                for name, (unseen_rows, unseen_hit) in unseen.items():
                    wu = c[:, self.unit[unseen_rows.astype(np.int64)]]
                    out[name].append((wu * unseen_hit).sum(axis=1) / wu.sum(axis=1))
            pair_auc, _ = weighted_auc_ap(s.cand_y, pred.cand_p, c[:, self.unit[s.cand_rows]])
            out["pair_roc_auc"].append(pair_auc)
            if pred.probabilistic:
                out["ece"].append(np.array([self._ece(pred.p[:, 0], row) for row in c]))
        result = {m: np.concatenate(v) for m, v in out.items() if v}
        if pred.p_uncalibrated is not None:
            result["ece_uncalibrated"] = np.array([self._ece(pred.p_uncalibrated, row) for row in self.counts])
        return result

    def _ece(self, p: np.ndarray, counts: np.ndarray) -> float:
        idx = np.repeat(np.arange(len(p)), counts[self.unit].astype(np.int64))
        return expected_calibration_error(self.split.y[idx, 0], p[idx])


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return math.nan, math.nan
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def seed_spread(rows: list[dict[str, Any]], metrics: Iterable[str]) -> list[dict[str, Any]]:
    """Per family trained with several seeds and per metric: mean, sd, min and max over its single seeds, and
    its seed ensemble's value."""
    out = []
    families = dict.fromkeys(r["model"] for r in rows if r["kind"] == SINGLE)
    for fam in families:
        singles = [r for r in rows if r["model"] == fam and r["kind"] == SINGLE]
        if len(singles) < 2:
            continue
        ens = next((r for r in rows if r["model"] == fam and r["kind"] == ENSEMBLE), None)
        for m in metrics:
            v = np.array([r["metrics"][m] for r in singles], dtype=np.float64)
            out.append(
                {
                    "model": fam,
                    "metric": m,
                    "seeds": len(v),
                    "mean": float(np.mean(v)),
                    "sd": float(np.std(v, ddof=1)),
                    "min": float(np.min(v)),
                    "max": float(np.max(v)),
                    "range": float(np.max(v) - np.min(v)),
                    "ensemble": ens["metrics"][m] if ens else math.nan,
                }
            )
    return out


# Metrics of the ensemble-stability table: who buys, and what they buy.
STABILITY_METRICS = ("roc_auc", "pair_roc_auc", "ndcg")
# Random regroupings of the same single seeds into disjoint groups, beside the consecutive grouping: the range of
# a few ensembles is a noisy statistic, and which seeds share a group is arbitrary.
STABILITY_REGROUPINGS = 100


def ensemble_stability(
    split: TestSplit,
    preds: list[ModelPredictions],
    size: int,
    *,
    k: int,
    top_k_fraction: float,
    regroupings: int = STABILITY_REGROUPINGS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """How much a retrain moves the test metrics, for one model and for a ``size``-seed ensemble: per family with
    at least two disjoint groups of ``size`` seeds, the range of each metric over its single seeds and over the
    ensembles of its consecutive seed groups (independent draws: no seed shared). Over ``regroupings`` random
    partitions of the same seeds into as many disjoint groups, the mean and 90th percentile of the ratio of the
    ensembles' range to the single seeds' range: what the ratio is to be expected, not for one grouping."""
    rng = np.random.default_rng(seed)
    out = []
    for fam in dict.fromkeys(p.model for p in preds if p.kind == SINGLE):
        singles = [p for p in preds if p.model == fam and p.kind == SINGLE]
        n_groups = len(singles) // size
        if n_groups < 2:
            continue
        group_metrics = partial(_group_metrics, split, singles, cache={}, k=k, top_k_fraction=top_k_fraction)
        ens_m = [group_metrics(range(i * size, (i + 1) * size)) for i in range(n_groups)]
        deals = [rng.permutation(len(singles))[: n_groups * size].reshape(n_groups, size) for _ in range(regroupings)]
        regrouped = [[group_metrics(g) for g in deal] for deal in deals]
        single_m = [model_metrics(split, q, k=k, top_k_fraction=top_k_fraction) for q in singles]
        for m in STABILITY_METRICS:
            sv = np.array([x[m] for x in single_m])
            ev = np.array([x[m] for x in ens_m])
            s_range, e_range = float(np.ptp(sv)), float(np.ptp(ev))
            ratios = np.array([np.ptp([x[m] for x in groups]) for groups in regrouped])
            ratios = ratios / s_range if s_range > 0 else np.array([])
            out.append(
                {
                    "model": fam,
                    "metric": m,
                    "single_seeds": len(sv),
                    "single_range": s_range,
                    "single_sd": float(np.std(sv, ddof=1)),
                    "ensemble_size": size,
                    "ensemble_draws": len(ev),
                    "ensemble_values": [float(v) for v in ev],
                    "ensemble_range": e_range,
                    "range_ratio": e_range / s_range if s_range > 0 else math.nan,
                    "regroupings": regroupings,
                    "regrouped_ratio_mean": float(np.mean(ratios)) if len(ratios) else math.nan,
                    "regrouped_ratio_p90": float(np.quantile(ratios, 0.9)) if len(ratios) else math.nan,
                }
            )
    return out


def _group_metrics(
    split: TestSplit,
    singles: list[ModelPredictions],
    group: Iterable[int],
    *,
    cache: dict[tuple[int, ...], dict[str, float]],
    k: int,
    top_k_fraction: float,
) -> dict[str, float]:
    """model_metrics of the ensemble of ``singles`` at the indices ``group``, once per distinct group."""
    key = tuple(sorted(int(i) for i in group))
    if key not in cache:
        members = [singles[i] for i in key]
        ens = ModelPredictions(
            members[0].model,
            ENSEMBLE,
            None,
            np.mean([q.p for q in members], axis=0),
            np.mean([q.cand_p for q in members], axis=0),
        )
        cache[key] = model_metrics(split, ens, k=k, top_k_fraction=top_k_fraction)
    return cache[key]


def headline(preds: list[ModelPredictions]) -> list[ModelPredictions]:
    """One row per family (its ensemble when it has several seeds) plus the heuristic: what is compared."""
    out = []
    for fam in dict.fromkeys(p.model for p in preds):
        own = [p for p in preds if p.model == fam]
        out.append(next((p for p in own if p.kind in (ENSEMBLE, HEURISTIC)), own[0]))
    return out


def compare(
    split: TestSplit,
    preds: list[ModelPredictions],
    metrics: dict[str, dict[str, float]],
    *,
    k: int,
    resamples: int,
    seed: int,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, tuple[float, float]]]]:
    """Paired bootstrap of every headline model against the best yardstick (the heuristic, LR, LightGBM: the best
    of them on test for each metric, so the bar is the highest one). Returns the comparison rows and each
    headline model's own interval per metric."""
    boot = Bootstrap(split, k=k, resamples=resamples, seed=seed)
    heads = headline(preds)
    values = {p.label: boot.values(p) for p in heads}
    own = {label: {m: interval(v) for m, v in vals.items()} for label, vals in values.items()}
    yardsticks = [p.label for p in heads if p.kind == HEURISTIC or p.model in YARDSTICK_FAMILIES]

    def row(label: str, ref: str, m: str) -> dict[str, Any]:
        diff = values[label][m] - values[ref][m]
        lo, hi = interval(diff)
        return {
            "model": label,
            "metric": m,
            "reference": ref,
            "difference": metrics[label][m] - metrics[ref][m],
            "low": lo,
            "high": hi,
            # Share of resamples in which the model beats the reference.
            "p_better": float(np.mean(diff[np.isfinite(diff)] > 0)) if np.isfinite(diff).any() else math.nan,
        }

    rows = []
    for m in BOOTSTRAP_METRICS:
        usable = [y for y in yardsticks if math.isfinite(metrics[y].get(m, math.nan))]
        if usable:
            ref = max(usable, key=lambda y: metrics[y][m])
            rows += [row(p.label, ref, m) for p in heads if p.label != ref]
    # A family trained from a pretrained encoder is also judged against the same family from fresh weights, and
    # a family that read text against the same family without it.
    by_model = {p.model: p.label for p in heads}
    for p in heads:
        fresh = by_model.get(p.model.removesuffix(PRETRAINED)) if p.model.endswith(PRETRAINED) else None
        without_text = None if p.model.endswith(NO_TEXT) else by_model.get(p.model.removesuffix(PRETRAINED) + NO_TEXT)
        for other in (fresh, without_text):
            if other is not None:
                rows += [
                    row(p.label, other, m) for m in BOOTSTRAP_METRICS if math.isfinite(metrics[other].get(m, math.nan))
                ]
    return rows, own


def predictions_frames(split: TestSplit, preds: list[ModelPredictions]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-row test predictions, long format: users (one row per user-day and model) and candidate pairs."""
    users, pairs = [], []
    base = split.users[["user_id", "ds"]].reset_index(drop=True)
    labels = pd.DataFrame(split.y, columns=list(LABEL_COLUMNS))
    cand_keys = base.iloc[split.cand_rows].reset_index(drop=True)
    for p in preds:
        u = pd.concat([base, labels], axis=1)
        u["model"], u["kind"], u["seed"] = p.model, p.kind, p.seed
        u["p_purchase"], u["p_cart"], u["p_fav"] = p.p[:, 0], p.p[:, 1], p.p[:, 2]
        u["p_purchase_uncalibrated"] = p.p_uncalibrated if p.p_uncalibrated is not None else np.nan
        users.append(u)
        c = cand_keys.copy()
        c[CANDIDATE_CATEGORY_COLUMN] = split.cand_category
        c["label"] = split.cand_y
        c["model"], c["kind"], c["seed"] = p.model, p.kind, p.seed
        c["p"] = p.cand_p
        pairs.append(c)
    out_u, out_p = pd.concat(users, ignore_index=True), pd.concat(pairs, ignore_index=True)
    for f in (out_u, out_p):
        f["seed"] = f["seed"].astype("Int64")
    return out_u, out_p


def curves_figure(split: TestSplit, preds: list[ModelPredictions]):
    """ROC, precision-recall and calibration curves (purchase head) of the headline models, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = split.y[:, 0]
    fig, (roc, pr, cal) = plt.subplots(1, 3, figsize=(16, 5))
    for i, p in enumerate(headline(preds)):
        color = f"C{i}"  # one colour per model in all three panels
        fpr, tpr, _ = roc_curve(y, p.p[:, 0])
        roc.plot(fpr, tpr, label=p.label, color=color)
        prec, rec, _ = precision_recall_curve(y, p.p[:, 0])
        pr.plot(rec, prec, label=p.label, color=color)
        if p.probabilistic:
            order = np.argsort(p.p[:, 0], kind="stable")
            bins = [b for b in np.array_split(order, min(10, len(order))) if len(b)]
            cal.plot(
                [p.p[b, 0].mean() for b in bins], [y[b].mean() for b in bins], marker="o", label=p.label, color=color
            )
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":")
    pr.axhline(y.mean(), color="grey", linestyle=":", label=f"base rate {y.mean():.3f}")
    cal.plot([0, 1], [0, 1], color="grey", linestyle=":")
    for ax, title, xl, yl in (
        (roc, "ROC (purchase, test)", "false positive rate", "true positive rate"),
        (pr, "Precision-recall (purchase, test)", "recall", "precision"),
        (cal, "Calibration (10 equal-mass bins)", "mean predicted p_purchase", "observed purchase rate"),
    ):
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def with_interval(v: float, iv: tuple[float, float] | None) -> str:
    if not math.isfinite(v):
        return ""
    if iv is None or not all(map(math.isfinite, iv)):
        return fmt(v)
    return f"{v:.4f} [{iv[0]:.3f}, {iv[1]:.3f}]"


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _model_table(report: dict[str, Any], columns: list[tuple[str, str, bool]]) -> list[str]:
    """One row per model of ``columns`` (header, metric, with its bootstrap interval when there is one)."""
    own = report["intervals"]
    rows = []
    for r in report["models"]:
        m, iv = r["metrics"], own.get(r["label"], {})
        cells = [with_interval(m.get(name, math.nan), iv.get(name) if ci else None) for _, name, ci in columns]
        rows.append([r["label"], *cells])
    return md_table(["model", *(h for h, _, _ in columns)], rows)


def markdown(report: dict[str, Any]) -> str:
    """report.md: the tables of report.json in words and numbers."""
    k, pct = report["k"], report["top_k_percent"]
    plan, data = report["cutoffs"], report["data"]
    lines = [
        f"# Backtest: {report['source']} ({report['input']})",
        "",
        f"`{report['command']}`",
        "",
        f"Cutoffs: train {plan['train'][0]}..{plan['train'][-1]} ({len(plan['train'])}), validation "
        f"{', '.join(plan['val'])}, test {', '.join(plan['test'])}; label horizon {report['horizon_days']} day(s); "
        f"business time zone {report['timezone']}.",
        "",
        *md_table(
            ["split", "user-days", "buyers", "purchase rate", "candidate pairs"],
            [
                [s, str(d["rows"]), str(d["buyers"]), fmt(d["purchase_rate"], 3), str(d["candidate_rows"])]
                for s, d in data.items()
            ],
        ),
        "",
        f"Negatives of the train split subsampled at {report['negative_sample_rate']}; validation and test keep "
        "every user-day.",
        "",
    ]
    if sel := report.get("selection"):
        lines += [f"**Selection on validation** (`training.selection`): **{sel['model']}**: {sel['reason']}.", ""]
    lines += [
        "## User level: who buys (purchase head, test split)",
        "",
        f"95% bootstrap intervals in brackets ({report['bootstrap']['resamples']} resamples of users). ECE: "
        "expected calibration error over 10 equal-mass bins, after / before the packaged calibration. "
        "sum p / buyers: 1.0 when the probabilities count the buyers right. The heuristic gives ranks, not "
        "probabilities.",
        "",
    ]
    lines += _model_table(
        report,
        [
            ("ROC-AUC", "roc_auc", True),
            ("PR-AUC", "pr_auc", True),
            ("log loss", "log_loss", False),
            ("ECE", "ece", True),
            ("ECE uncalibrated", "ece_uncalibrated", True),
            (f"recall top {pct}%", f"recall_top_{pct}pct", False),
            ("sum p / buyers", "predicted_over_observed", False),
        ],
    )
    lines += [
        "",
        "## User x category level: what they buy (each user-day's candidate categories, test split)",
        "",
        f"HitRate@{k} / NDCG@{k} over the user-days that bought in a candidate category; pair ROC-AUC / PR-AUC over "
        "all candidate pairs.",
        "",
    ]
    first = report["models"][0]["metrics"] if report["models"] else {}
    unseen = first.get("unseen_buyer_days", 0.0)
    if unseen:
        lines += [
            f"HitRate@{k} / top 1 unseen: over the {int(unseen)} user-days that bought in a candidate category that "
            f"appears nowhere in the train split ({first['unseen_candidates']:.1f} candidates each on average), "
            f"one of those in the top {k} / ranked first.",
            "",
        ]
    lines += _model_table(
        report,
        [
            (f"HitRate@{k}", "hit_rate", False),
            (f"NDCG@{k}", "ndcg", True),
            ("pair ROC-AUC", "pair_roc_auc", True),
            ("pair PR-AUC", "pair_pr_auc", False),
            *(
                [(f"HitRate@{k} unseen", "hit_rate_unseen", True), ("top 1 unseen", "top1_unseen", True)]
                if unseen
                else []
            ),
        ],
    )
    boot = report["bootstrap"]
    lines += [
        "",
        "## Against the best yardstick (paired bootstrap)",
        "",
        f"Each model minus the best of the yardsticks ({', '.join(boot['yardsticks'])}) on that metric; "
        f"{boot['resamples']} resamples of users, a user's days and candidate pairs moving together; 95% "
        "interval. An interval above zero: better than every yardstick on this test split. A family trained from "
        f"its pretrained encoder (`<family>{PRETRAINED}`) is also compared with the same family from fresh weights, "
        f"and a family that read text with the same family trained without it (`<family>{NO_TEXT}`).",
        "",
    ]
    lines += md_table(
        ["model", "metric", "reference", "difference", "95% interval", "share of resamples better"],
        [
            [
                c["model"],
                c["metric"],
                c["reference"],
                f"{c['difference']:+.4f}",
                f"[{c['low']:+.4f}, {c['high']:+.4f}]",
                fmt(c["p_better"], 2),
            ]
            for c in boot["comparisons"]
        ],
    )
    if report.get("pretrained"):
        fields = ("event_type", "category", "item")
        lines += [
            "",
            "## Pretrained encoders",
            "",
            "Masked-event pretraining (`--pretrain`) on the train rows: accuracy of the masked events' fields on the "
            "users held out of it, with the majority guess in brackets.",
            "",
        ]
        lines += md_table(
            ["family", "encoder", *fields, "seconds"],
            [
                [
                    family,
                    e["model_uri"],
                    *(
                        f"{e['metrics'][f'holdout_acc_{f}']:.3f} ({e['metrics'][f'majority_acc_{f}']:.3f})"
                        for f in fields
                    ),
                    f"{e['wall_s']:.0f}",
                ]
                for family, e in report["pretrained"].items()
            ],
        )
    if report["seed_spread"]:
        lines += [
            "",
            "## Spread over seeds",
            "",
            "Single models of each family trained with different seeds (training.seed, +1, ...) on the same splits, "
            "and the seed ensemble (their mean probabilities).",
            "",
        ]
        lines += md_table(
            ["model", "metric", "seeds", "mean", "sd", "min", "max", "ensemble"],
            [
                [
                    s["model"],
                    s["metric"],
                    str(s["seeds"]),
                    fmt(s["mean"]),
                    fmt(s["sd"]),
                    fmt(s["min"]),
                    fmt(s["max"]),
                    fmt(s["ensemble"]),
                ]
                for s in report["seed_spread"]
            ],
        )
    if report.get("ensemble_stability"):
        lines += [
            "",
            "## Ensemble stability",
            "",
            "Range of each test metric over the single seeds and over ensembles of disjoint seed groups (independent "
            "draws of the ensemble): how far a retrain can move it. Ratio: the ensembles' range over the single "
            "seeds' range, for the consecutive groups and, over random regroupings of the same seeds, its mean and "
            "90th percentile.",
            "",
        ]
        lines += md_table(
            ["model", "metric", "single seeds", "range (sd)", "ensembles", "ensemble range", "ratio", "regrouped"],
            [
                [
                    s["model"],
                    s["metric"],
                    str(s["single_seeds"]),
                    f"{s['single_range']:.4f} ({s['single_sd']:.4f})",
                    f"{s['ensemble_draws']} x {s['ensemble_size']} seeds",
                    f"{s['ensemble_range']:.4f}",
                    fmt(s["range_ratio"], 2),
                    f"{fmt(s['regrouped_ratio_mean'], 2)} (p90 {fmt(s['regrouped_ratio_p90'], 2)})",
                ]
                for s in report["ensemble_stability"]
            ],
        )
    lines += ["", "## Files", ""]
    lines += [f"- `{name}`: {what}" for name, what in report["files"].items()]
    if report.get("mlflow"):
        lines += ["", f"MLflow: parent run `{report['mlflow']['parent_run_id']}` ({report['mlflow']['url']})."]
    return "\n".join(lines) + "\n"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    path.write_text(json.dumps(clean(payload), indent=2) + "\n")
