"""The backtest's rules without a JVM or torchrun: ranges and their errors, the data checks, and the report's
statistics (weighted AUC / AP against sklearn, the paired bootstrap, the heuristic, the seed spread)."""

from __future__ import annotations

import argparse
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tasks import backtest_report as rep
from tasks.backtest import BacktestError, DayRange, check_data, parse_range, plan_backtest, work_config
from tasks.cutoffs import plan_cutoffs
from tasks.errors import DataError
from tasks.layers import events_partition

D = dt.date


def test_ranges_parse_and_reject_nonsense():
    assert parse_range("2017-11-26:2017-11-29") == DayRange(D(2017, 11, 26), D(2017, 11, 29))
    assert parse_range("2017-12-01").days == (D(2017, 12, 1),)
    for bad in ("2017-11-29:2017-11-26", "yesterday", "2017-11-01:2017-11-02:2017-11-03"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_range(bad)


def test_the_plan_is_the_configs_layout(cfg, tmp_path):
    plan = plan_backtest(parse_range("2017-11-26:2017-11-29"), parse_range("2017-11-30"), parse_range("2017-12-01"), 1)
    assert plan.train == parse_range("2017-11-26:2017-11-29").days and plan.test == (D(2017, 12, 1),)
    # A 2-day horizon leaves one cutoff out between splits, as tasks.cutoffs.plan_cutoffs does.
    plan2 = plan_backtest(parse_range("2017-11-20:2017-11-24"), parse_range("2017-11-26"), parse_range("2017-11-28"), 2)
    assert plan2.dropped == (D(2017, 11, 25), D(2017, 11, 27))
    wcfg = work_config(cfg, tmp_path / "w", plan2, source="taobao", timezone="Asia/Shanghai", horizon_days=2)
    assert plan_cutoffs(wcfg, D(2017, 11, 28)) == plan2
    assert wcfg.paths.var == tmp_path / "w" / "var"
    assert wcfg.mlflow.experiment == f"{cfg.mlflow.experiment}_backtest"
    assert not wcfg.training.search.enabled


@pytest.mark.parametrize(
    ("train", "val", "test", "h", "message"),
    [
        ("2017-11-26:2017-11-29", "2017-11-25", "2017-12-01", 1, "validation 2017-11-25 must come after train"),
        ("2017-11-26:2017-11-29", "2017-11-30", "2017-11-20", 1, "test 2017-11-20 must come after validation"),
        ("2017-11-26:2017-11-29", "2017-12-01", "2017-12-02", 1, "1-day label horizon it must start 2017-11-30"),
        ("2017-11-26:2017-11-29", "2017-11-30", "2017-12-01", 2, "2-day label horizon it must start 2017-12-01"),
        ("2017-11-26:2017-11-29", "2017-11-30", "2017-12-01", 0, "--horizon must be at least 1 day"),
    ],
)  # fmt: skip
def test_bad_ranges_are_named(train, val, test, h, message):
    with pytest.raises(BacktestError) as err:
        plan_backtest(parse_range(train), parse_range(val), parse_range(test), h)
    assert message in str(err.value)
    assert isinstance(err.value, DataError)  # the CLI's one-line "DATA ERROR" and exit code 65


def _events(cfg, first: dt.date, n: int) -> None:
    for i in range(n):
        folder = events_partition(cfg, first + dt.timedelta(days=i))
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_bytes(b"PAR1")


def test_cutoffs_outside_the_data_are_named(cfg, tmp_path):
    plan = plan_backtest(parse_range("2017-11-26:2017-11-29"), parse_range("2017-11-30"), parse_range("2017-12-01"), 1)
    wcfg = work_config(cfg, tmp_path / "w", plan, source="taobao", timezone="UTC", horizon_days=1)
    with pytest.raises(BacktestError, match="no events in the backtest's days"):
        check_data(wcfg, plan)
    _events(wcfg, D(2017, 11, 25), 6)  # 11-25 .. 11-30: the test day's labels have not landed
    with pytest.raises(BacktestError) as err:
        check_data(wcfg, plan)
    assert str(err.value) == (
        "the label window of the test cutoff 2017-12-01 (1 day(s)) has not passed: it needs events through "
        "2017-12-01, the data ends 2017-11-30; choose a test cutoff up to 2017-11-30"
    )
    _events(wcfg, D(2017, 12, 1), 1)
    assert check_data(wcfg, plan) == "events 2017-11-25..2017-12-01"
    late = plan_backtest(parse_range("2017-11-25:2017-11-29"), parse_range("2017-11-30"), parse_range("2017-12-01"), 1)
    with pytest.raises(BacktestError, match="first train cutoff 2017-11-25 has no history before it: the data starts"):
        check_data(work_config(cfg, tmp_path / "w", late, source="taobao", timezone="UTC", horizon_days=1), late)


def test_weighted_auc_and_ap_match_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    s = np.round(rng.random(300) + 0.4 * y, 1)  # many ties
    w = rng.integers(0, 3, size=(4, 300)).astype(float)
    auc, ap = rep.weighted_auc_ap(y, s, w)
    for b in range(4):
        assert auc[b] == pytest.approx(roc_auc_score(y, s, sample_weight=w[b]), abs=1e-12)
        assert ap[b] == pytest.approx(average_precision_score(y, s, sample_weight=w[b]), abs=1e-12)
    one_class = rep.weighted_auc_ap(y, s, np.where(y == 1, 0.0, 1.0)[None, :])
    assert math.isnan(one_class[0][0]) and math.isnan(one_class[1][0])


def _split(n_users: int = 60, days: int = 2, seed: int = 0) -> rep.TestSplit:
    rng = np.random.default_rng(seed)
    ids = [f"u{i}" for i in range(n_users) for _ in range(days)]
    users = pd.DataFrame({"user_id": ids, "ds": [f"d{d}" for _ in range(n_users) for d in range(days)]})
    n = len(users)
    y = (rng.random((n, 3)) < 0.3).astype(np.int64)
    cand_rows = np.repeat(np.arange(n), 3)
    cand_y = (rng.random(len(cand_rows)) < 0.2).astype(np.int64)
    return rep.TestSplit(users, y, cand_rows, np.array([f"c{i % 3}" for i in range(len(cand_rows))]), cand_y)


def _pred(split: rep.TestSplit, model: str, noise: float, seed: int, kind: str = rep.SINGLE) -> rep.ModelPredictions:
    rng = np.random.default_rng(seed)
    p = np.clip(0.3 * split.y + noise * rng.random(split.y.shape), 0.01, 0.99)
    cand_p = np.clip(0.3 * split.cand_y + noise * rng.random(len(split.cand_y)), 0.01, 0.99)
    return rep.ModelPredictions(model, kind, None if kind == rep.HEURISTIC else seed, p, cand_p, p[:, 0])


def test_the_bootstrap_moves_a_users_days_together_and_pairs_models():
    split = _split()
    boot = rep.Bootstrap(split, k=2, resamples=200, seed=1)
    # Every resample draws users, not rows: both days of a user carry the same count.
    per_row = boot.counts[:, boot.unit]
    assert (per_row[:, 0::2] == per_row[:, 1::2]).all()
    assert (boot.counts.sum(axis=1) == 60).all()
    a = _pred(split, "lstm", 1.0, 3)
    same = rep.Bootstrap(split, k=2, resamples=200, seed=1).values(a)
    again = boot.values(a)
    # Paired: the same model on the same resamples gives exactly the same values, so a difference of 0.
    for m in again:
        np.testing.assert_array_equal(same[m], again[m])
    # No HitRate on unseen categories where the split does not say which categories training saw.
    assert set(again) == {*rep.BOOTSTRAP_METRICS, "ece", "ece_uncalibrated"} - set(rep.UNSEEN_METRICS)
    lo, hi = rep.interval(again["roc_auc"])
    point = roc_auc_score(split.y[:, 0], a.p[:, 0])
    assert lo < point < hi


def test_hit_rate_on_categories_unseen_in_training_counts_the_days_that_bought_one():
    base = _split(n_users=80)
    # Candidate c2 of every user-day is a category the train split never saw.
    unseen = base.cand_category == "c2"
    split = rep.TestSplit(base.users, base.y, base.cand_rows, base.cand_category, base.cand_y, unseen)

    def ranking(scores: dict[str, float]) -> rep.ModelPredictions:
        cand_p = np.array([scores[c] for c in base.cand_category])
        return rep.ModelPredictions("lstm", rep.SINGLE, 0, base.y * 0.5, cand_p, None)

    first, second, last = (
        rep.model_metrics(split, ranking(s), k=2, top_k_fraction=0.1)
        for s in (
            {"c0": 0.2, "c1": 0.1, "c2": 0.9},
            {"c0": 0.9, "c1": 0.1, "c2": 0.5},
            {"c0": 0.9, "c1": 0.5, "c2": 0.1},
        )
    )
    bought_unseen = np.unique(split.cand_rows[(split.cand_y == 1) & unseen])
    assert first["unseen_buyer_days"] == last["unseen_buyer_days"] == len(bought_unseen) > 0
    assert first["unseen_candidates"] == 3.0
    assert (first["hit_rate_unseen"], first["top1_unseen"]) == (1.0, 1.0)
    assert (second["hit_rate_unseen"], second["top1_unseen"]) == (1.0, 0.0)
    assert (last["hit_rate_unseen"], last["top1_unseen"]) == (0.0, 0.0)
    # The ranking over all bought categories is the same metric as before; a split without the flag has no unseen.
    plain = rep.model_metrics(base, ranking({"c0": 0.2, "c1": 0.1, "c2": 0.9}), k=2, top_k_fraction=0.1)
    assert plain["hit_rate"] == first["hit_rate"]
    assert not set(rep.UNSEEN_METRICS) & set(plain)
    values = rep.Bootstrap(split, k=2, resamples=100, seed=0).values(ranking({"c0": 0.9, "c1": 0.1, "c2": 0.5}))
    assert (values["hit_rate_unseen"] == 1.0).all() and (values["top1_unseen"] == 0.0).all()


def test_compare_reports_each_model_against_the_best_yardstick():
    split = _split()
    heuristic = _pred(split, rep.HEURISTIC, 2.0, 1, kind=rep.HEURISTIC)
    strong_lr = _pred(split, "lr", 0.5, 2)
    weak_lstm = _pred(split, "lstm", 3.0, 3)
    preds = [heuristic, strong_lr, weak_lstm]
    metrics = {p.label: rep.model_metrics(split, p, k=2, top_k_fraction=0.1) for p in preds}
    rows, own = rep.compare(split, preds, metrics, k=2, resamples=300, seed=0)
    roc = {r["model"]: r for r in rows if r["metric"] == "roc_auc"}
    # LR is the best yardstick; the noisier LSTM is compared with it and loses with an interval below zero.
    assert set(roc) == {heuristic.label, weak_lstm.label}
    assert roc[weak_lstm.label]["reference"] == strong_lr.label
    assert roc[weak_lstm.label]["high"] < 0 < metrics[strong_lr.label]["roc_auc"] - metrics[weak_lstm.label]["roc_auc"]
    assert roc[weak_lstm.label]["difference"] == pytest.approx(
        metrics[weak_lstm.label]["roc_auc"] - metrics[strong_lr.label]["roc_auc"]
    )
    assert own[strong_lr.label]["roc_auc"][0] < metrics[strong_lr.label]["roc_auc"] < own[strong_lr.label]["roc_auc"][1]
    # Rank scores are not probabilities: no calibration figures for the heuristic.
    assert math.isnan(metrics[heuristic.label]["ece"]) and math.isfinite(metrics[strong_lr.label]["ece"])


def test_a_pretrained_family_is_also_compared_with_the_same_family_from_fresh_weights():
    split = _split()
    lr = _pred(split, "lr", 1.0, 2)
    fresh = _pred(split, "bert", 3.0, 3)
    pretrained = _pred(split, "bert" + rep.PRETRAINED, 0.5, 4)
    preds = [_pred(split, rep.HEURISTIC, 2.0, 1, kind=rep.HEURISTIC), lr, fresh, pretrained]
    metrics = {p.label: rep.model_metrics(split, p, k=2, top_k_fraction=0.1) for p in preds}
    rows, _ = rep.compare(split, preds, metrics, k=2, resamples=300, seed=0)
    against_fresh = {r["metric"]: r for r in rows if r["reference"] == fresh.label}
    assert set(against_fresh) == set(rep.BOOTSTRAP_METRICS) - set(rep.UNSEEN_METRICS)
    assert {r["model"] for r in against_fresh.values()} == {pretrained.label}
    roc = against_fresh["roc_auc"]
    assert roc["difference"] == pytest.approx(metrics[pretrained.label]["roc_auc"] - metrics[fresh.label]["roc_auc"])
    assert roc["low"] > 0  # less noise: better on every resample's users
    # Both are still judged against the best yardstick too.
    assert {r["model"] for r in rows if r["reference"] == lr.label and r["metric"] == "roc_auc"} >= {
        fresh.label,
        pretrained.label,
    }


def test_a_family_that_reads_text_is_also_compared_with_the_same_family_without_it():
    split = _split()
    without = _pred(split, "lstm" + rep.NO_TEXT, 3.0, 3)
    with_text = _pred(split, "lstm", 0.5, 4)
    both = _pred(split, "lstm" + rep.PRETRAINED, 1.0, 5)
    preds = [_pred(split, rep.HEURISTIC, 2.0, 1, kind=rep.HEURISTIC), _pred(split, "lr", 1.0, 2), without, with_text]
    preds.append(both)
    metrics = {p.label: rep.model_metrics(split, p, k=2, top_k_fraction=0.1) for p in preds}
    rows, _ = rep.compare(split, preds, metrics, k=2, resamples=300, seed=0)
    against = {(r["model"], r["metric"]): r for r in rows if r["reference"] == without.label}
    # Text alone, and text with pretraining, each against no text; the variant without text against nothing of its own.
    assert {m for m, _ in against} == {with_text.label, both.label}
    assert against[(with_text.label, "roc_auc")]["low"] > 0
    assert not [r for r in rows if r["model"] == without.label and r["reference"] in (with_text.label, both.label)]


def test_recency_heuristic_ranks_recent_carters_first():
    users = pd.DataFrame({"f_recency_cart": [np.nan, 1.0, 5.0, np.nan], "f_recency_any": [0.5, 3.0, 0.1, 9.0]})
    cand = pd.DataFrame({"f_uc_recency_cart": [2.0, np.nan, np.nan], "f_uc_recency_any": [2.0, 0.1, 4.0]})
    user, pair = rep.recency_heuristic(users, cand, 3)
    assert list(np.argsort(-user[:, 0])) == [1, 2, 0, 3]  # carted 1 day ago, 5 days ago; then by activity
    assert (user[:, 0] == user[:, 2]).all()
    assert list(np.argsort(-pair)) == [0, 1, 2]


def test_seed_spread_and_ensemble():
    rows = [{"model": "lstm", "kind": rep.SINGLE, "metrics": {"roc_auc": v}} for v in (0.60, 0.64, 0.62)] + [
        {"model": "lstm", "kind": rep.ENSEMBLE, "metrics": {"roc_auc": 0.65}}
    ]
    rows.append({"model": "lr", "kind": rep.SINGLE, "metrics": {"roc_auc": 0.6}})  # one seed: no spread
    (s,) = rep.seed_spread(rows, ["roc_auc"])
    assert s["model"] == "lstm" and s["seeds"] == 3 and s["ensemble"] == 0.65
    assert s["mean"] == pytest.approx(0.62) and s["sd"] == pytest.approx(0.02) and s["range"] == pytest.approx(0.04)


def test_predictions_frames_are_long_and_keyed():
    split = _split(n_users=5, days=1)
    preds = [_pred(split, "lr", 0.5, 2), _pred(split, rep.HEURISTIC, 1.0, 1, kind=rep.HEURISTIC)]
    users, pairs = rep.predictions_frames(split, preds)
    assert len(users) == 2 * 5 and len(pairs) == 2 * 15
    assert list(users.columns[:5]) == ["user_id", "ds", "label_purchase", "label_cart", "label_fav"]
    assert users["seed"].isna().sum() == 5  # the heuristic has no seed
    lr = pairs[pairs["model"] == "lr"]
    assert (lr["user_id"].to_numpy() == np.repeat(split.users["user_id"].to_numpy(), 3)).all()


def test_ensemble_stability_compares_disjoint_seed_groups_with_single_seeds():
    split = _split(n_users=80)
    singles = [_pred(split, "lstm", 1.5, seed) for seed in range(6)]
    rows = rep.ensemble_stability(split, singles, 3, k=2, top_k_fraction=0.1)
    roc = next(r for r in rows if r["metric"] == "roc_auc")
    assert (roc["single_seeds"], roc["ensemble_draws"], roc["ensemble_size"]) == (6, 2, 3)
    single = [rep.model_metrics(split, p, k=2, top_k_fraction=0.1)["roc_auc"] for p in singles]
    assert roc["single_range"] == pytest.approx(max(single) - min(single))
    first = rep.ModelPredictions(
        "lstm", rep.ENSEMBLE, None, np.mean([p.p for p in singles[:3]], axis=0), singles[0].cand_p
    )
    assert roc["ensemble_values"][0] == pytest.approx(roc_auc_score(split.y[:, 0], first.p[:, 0]))
    # Averaging independent noise: the ensembles move less than the single seeds.
    assert roc["ensemble_range"] < roc["single_range"]
    assert {r["metric"] for r in rows} == set(rep.STABILITY_METRICS)
    assert rep.ensemble_stability(split, singles[:5], 3, k=2, top_k_fraction=0.1) == []  # one full group only


def test_ensemble_stability_regroups_the_same_seeds_into_random_disjoint_groups():
    split = _split(n_users=80)
    singles = [_pred(split, "lstm", 1.5, seed) for seed in range(7)]
    (roc,) = [
        r
        for r in rep.ensemble_stability(split, singles, 3, k=2, top_k_fraction=0.1, regroupings=1, seed=0)
        if r["metric"] == "roc_auc"
    ]
    # The one regrouping: the same generator deals the 7 seeds into 2 groups of 3 and leaves one out.
    groups = np.random.default_rng(0).permutation(7)[:6].reshape(2, 3)
    assert {frozenset(g.tolist()) for g in groups} != {frozenset({0, 1, 2}), frozenset({3, 4, 5})}
    aucs = [roc_auc_score(split.y[:, 0], np.mean([singles[i].p[:, 0] for i in g], axis=0)) for g in groups]
    assert roc["regrouped_ratio_mean"] == pytest.approx(abs(aucs[0] - aucs[1]) / roc["single_range"])
    assert roc["regrouped_ratio_p90"] == pytest.approx(roc["regrouped_ratio_mean"])
    many = rep.ensemble_stability(split, singles, 3, k=2, top_k_fraction=0.1, regroupings=40)
    for r in many:
        assert 0 <= r["regrouped_ratio_mean"] <= r["regrouped_ratio_p90"], r


def test_a_used_work_dir_or_report_folder_is_refused_before_anything_runs(cfg, tmp_path):
    from tasks.backtest import run_backtest

    plan = plan_backtest(parse_range("2017-11-26:2017-11-29"), parse_range("2017-11-30"), parse_range("2017-12-01"), 1)
    kwargs = dict(source="taobao", input_path=tmp_path / "x.csv", plan=plan, horizon_days=1, timezone="UTC")
    used = tmp_path / "used"
    (used / "var").mkdir(parents=True)
    with pytest.raises(BacktestError, match=f"work dir {used} is not empty"):
        run_backtest(cfg, **kwargs, candidates=["lr"], seeds=1, work=used, out=tmp_path / "out")
    (tmp_path / "report" / "report.md").parent.mkdir()
    (tmp_path / "report" / "report.md").write_text("an old report")
    with pytest.raises(BacktestError, match="report folder .*report exists and is not empty"):
        run_backtest(cfg, **kwargs, candidates=["lr"], seeds=1, work=tmp_path / "new", out=tmp_path / "report")
    assert not (tmp_path / "new").exists()
