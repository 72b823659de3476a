"""Realized outcomes: the label-window rule and every metric of one day, on hand-computed examples."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from tasks.evaluate import category_ranking_metrics, expected_calibration_error, lift_by_decile, reliability_curve
from tasks.outcomes import (
    assess_health,
    days_to_evaluate,
    health_floor,
    label_window_end,
    outcome_row,
    top_list_ranking,
    window_closed,
)
from tasks.schema import OUTCOME_COLUMNS

D = dt.date


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_a_window_closes_exactly_at_the_midnight_horizon_days_later():
    assert label_window_end(D(2026, 1, 14), 1, "UTC") == utc(2026, 1, 15)
    assert label_window_end(D(2026, 1, 14), 3, "UTC") == utc(2026, 1, 17)
    assert not window_closed(D(2026, 1, 14), utc(2026, 1, 14, 23, 59, 59), 1, "UTC")
    assert window_closed(D(2026, 1, 14), utc(2026, 1, 15), 1, "UTC")
    assert not window_closed(D(2026, 1, 14), utc(2026, 1, 16, 23, 59), 3, "UTC")
    with pytest.raises(ValueError, match="horizon_days"):
        label_window_end(D(2026, 1, 14), 0, "UTC")
    with pytest.raises(ValueError, match="aware"):
        window_closed(D(2026, 1, 14), dt.datetime(2026, 1, 15), 1, "UTC")


def test_the_window_closes_at_the_local_midnight_of_the_pipeline_time_zone():
    # Shanghai is UTC+8: its 15 January starts at 16:00 UTC on the 14th.
    assert label_window_end(D(2026, 1, 14), 1, "Asia/Shanghai") == utc(2026, 1, 14, 16)
    assert not window_closed(D(2026, 1, 14), utc(2026, 1, 14, 15, 59), 1, "Asia/Shanghai")
    assert window_closed(D(2026, 1, 14), utc(2026, 1, 14, 16), 1, "Asia/Shanghai")
    # New York is UTC-5, so the window of the same ds is still open 16 hours later.
    assert not window_closed(D(2026, 1, 14), utc(2026, 1, 15, 4, 59), 1, "America/New_York")
    assert window_closed(D(2026, 1, 14), utc(2026, 1, 15, 5), 1, "America/New_York")
    # Across the start of daylight saving time (8 March 2026): that day has 23 hours, and its end is EDT (UTC-4).
    assert label_window_end(D(2026, 3, 7), 1, "America/New_York") == utc(2026, 3, 8, 5)
    assert label_window_end(D(2026, 3, 8), 1, "America/New_York") == utc(2026, 3, 9, 4)
    assert label_window_end(D(2026, 3, 7), 2, "America/New_York") == utc(2026, 3, 9, 4)


@pytest.mark.parametrize("tz", ["UTC", "Asia/Shanghai", "America/New_York", "Pacific/Kiritimati"])
def test_a_run_evaluates_the_day_closing_at_its_cutoff_and_closed_days_not_yet_evaluated(tz):
    scored = [D(2026, 1, d) for d in range(10, 16)]
    # Cutoff 15 with a one-day horizon: 14 closes now; 15 is still open; 10 and 12 were evaluated before.
    assert days_to_evaluate(scored, [D(2026, 1, 10), D(2026, 1, 12)], D(2026, 1, 15), 1, tz) == [
        D(2026, 1, 11),
        D(2026, 1, 13),
        D(2026, 1, 14),
    ]
    # A rerun of the same cutoff recomputes the day that closes at it, and nothing else evaluated.
    evaluated = [D(2026, 1, d) for d in range(10, 15)]
    assert days_to_evaluate(scored, evaluated, D(2026, 1, 15), 1, tz) == [D(2026, 1, 14)]
    # A two-day horizon: 13 closes at cutoff 15, 14 is open.
    assert days_to_evaluate(scored, evaluated, D(2026, 1, 15), 2, tz) == [D(2026, 1, 13)]
    # Nothing is closed before the first scored day's horizon has passed.
    assert days_to_evaluate(scored, [], D(2026, 1, 10), 1, tz) == []


def test_reliability_curve_and_calibration_error_share_equal_mass_bins():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.3, 0.6, 0.9])
    predicted, observed, rows = reliability_curve(y, p, bins=2)
    np.testing.assert_allclose(predicted, [0.2, 0.75])
    np.testing.assert_allclose(observed, [0.5, 0.5])
    np.testing.assert_array_equal(rows, [2, 2])
    assert expected_calibration_error(y, p, bins=2) == pytest.approx((2 * 0.3 + 2 * 0.25) / 4)


def test_lift_by_decile_is_each_tenth_of_users_buyer_rate_over_the_overall_rate():
    # 20 users, 4 buyers (rate 0.2): the top tenth (2 users) holds 2 buyers -> rate 1.0 -> lift 5.
    p = np.linspace(1.0, 0.05, 20)
    y = np.zeros(20)
    y[[0, 1, 5, 19]] = 1
    lift = lift_by_decile(y, p)
    np.testing.assert_allclose(lift, [5, 0, 2.5, 0, 0, 0, 0, 0, 0, 2.5])
    assert math.isnan(lift_by_decile(np.zeros(5), np.linspace(0, 1, 5))[0])


def test_top_list_ranking_reads_the_written_top_categories():
    top = [["c1:0.5", "c2:0.3"], ["c9:0.8"], ["c3:0.9"]]
    bought = [{"c2"}, set(), {"c4"}]
    # User 0: c2 at rank 2 (a hit at k=2, NDCG 1/log2(3)); user 1 bought nothing (not ranked); user 2 bought
    # c4, which the list does not hold.
    hit, ndcg, users = top_list_ranking(top, bought, k=2)
    assert (hit, users) == (0.5, 2)
    assert ndcg == pytest.approx((1 / math.log2(3)) / 2)
    hit1, ndcg1, _ = top_list_ranking(top, bought, k=1)
    assert (hit1, ndcg1) == (0.0, 0.0)
    # A category id holding ':' keeps it: only the last ':' separates the probability.
    assert top_list_ranking([["a:b:0.7"]], [{"a:b"}], k=1)[:2] == (1.0, 1.0)


def _row(**overrides):
    args = {
        "ds": D(2026, 1, 14),
        "model_name": "purchase_intent",
        "model_version": "3",
        "role": "champion",
        # purchase, cart, fav
        "probabilities": np.array([[0.9, 0.5, 0.2], [0.6, 0.4, 0.1], [0.3, 0.2, 0.4], [0.1, 0.1, 0.3]]),
        "labels": np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1], [0, 0, 0]]),
        "top_categories": [["c1:0.5", "c2:0.3"], None, ["c3:0.9"], ["c5:0.1"]],
        "bought": [{"c2"}, set(), {"c4"}, set()],
        "n_buyers_unscored": 7,
        "horizon_days": 1,
        "top_fraction": 0.25,
        "reliability_bins": 2,
        "category_k": 2,
        "evaluated_at": utc(2026, 1, 16),
        "pipeline_run_id": "scheduled__2026-01-16",
    }
    return outcome_row(**{**args, **overrides})


def test_outcome_row_metrics_match_hand_computed_values():
    row = _row()
    assert list(row) == list(OUTCOME_COLUMNS)
    assert (row["n_users"], row["n_buyers"], row["n_buyers_unscored"]) == (4, 2, 7)
    assert row["purchase_rate"] == 0.5
    assert row["mean_p_purchase"] == pytest.approx(0.475)
    # Positives 0.9 and 0.3 against negatives 0.6 and 0.1: 3 of 4 pairs ordered right.
    assert row["purchase_roc_auc"] == pytest.approx(0.75)
    # Precision 1 at the first buyer, 2/3 at the second.
    assert row["purchase_pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert row["purchase_brier"] == pytest.approx((0.01 + 0.36 + 0.49 + 0.01) / 4)
    assert row["purchase_log_loss"] == pytest.approx(-(2 * math.log(0.9) + math.log(0.4) + math.log(0.3)) / 4)
    assert row["reliability_predicted"] == pytest.approx([0.2, 0.75])
    assert row["reliability_observed"] == pytest.approx([0.5, 0.5])
    assert row["purchase_ece"] == pytest.approx(0.275)
    # Top 25% of 4 users is the one with 0.9, a buyer.
    assert (row["precision_top"], row["recall_top"]) == (1.0, 0.5)
    assert row["lift_by_decile"] == pytest.approx([2.0, 0.0, 2.0, 0.0])
    assert row["cart_roc_auc"] == 1.0
    assert row["fav_roc_auc"] == 1.0
    assert (row["category_users"], row["category_hit_rate"]) == (2, 0.5)
    assert row["category_ndcg"] == pytest.approx((1 / math.log2(3)) / 2)


def test_a_day_without_buyers_has_undefined_ranking_metrics_not_zeros():
    row = _row(labels=np.zeros((4, 3), dtype=int), bought=[set()] * 4)
    assert row["n_buyers"] == 0
    for column in ("purchase_roc_auc", "purchase_pr_auc", "recall_top", "lift_by_decile", "category_hit_rate"):
        assert row[column] is None, column
    assert row["precision_top"] == 0.0
    assert row["category_users"] == 0
    assert row["purchase_brier"] == pytest.approx(np.mean(np.array([0.9, 0.6, 0.3, 0.1]) ** 2))


def test_outcome_row_rejects_a_bad_role_and_misshapen_input():
    with pytest.raises(ValueError, match="role"):
        _row(role="shadow")
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        _row(probabilities=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="no scored users"):
        _row(probabilities=np.zeros((0, 3)), labels=np.zeros((0, 3)), top_categories=[], bought=[])


def test_top_list_ranking_agrees_with_trainings_metric_when_the_list_holds_every_candidate():
    rng = np.random.default_rng(3)
    groups, labels, scores, top, bought = [], [], [], [], []
    for u in range(50):
        cats = [f"u{u}c{i}" for i in range(rng.integers(1, 8))]
        p = rng.random(len(cats))
        y = rng.random(len(cats)) < 0.3
        groups += [u] * len(cats)
        labels += list(y.astype(float))
        scores += list(p)
        top.append([f"{c}:{v:.6f}" for c, v in sorted(zip(cats, p, strict=True), key=lambda t: -t[1])])
        bought.append({c for c, hit in zip(cats, y, strict=True) if hit})
    expected = category_ranking_metrics(np.array(groups), np.array(labels), np.array(scores), k=3)
    hit, ndcg, users = top_list_ranking(top, bought, k=3)
    assert users == expected["category_users"]
    assert hit == pytest.approx(expected["category_hit_rate_at_3"])
    assert ndcg == pytest.approx(expected["category_ndcg_at_3"])


FIRST_JUDGED = D(2026, 1, 10)


def _judged(aucs: list[float | None], first: dt.date = FIRST_JUDGED) -> list[dict]:
    return [{"ds": first + dt.timedelta(days=i), "purchase_roc_auc": a} for i, a in enumerate(aucs)]


def test_the_floor_is_the_higher_of_the_absolute_one_and_the_drop_from_the_test_auc():
    assert health_floor(0.55, 0.05, 0.70) == pytest.approx(0.65)
    assert health_floor(0.55, 0.05, 0.58) == 0.55
    assert health_floor(None, 0.05, 0.70) == pytest.approx(0.65)
    assert health_floor(0.55, 0.05, None) == 0.55
    assert health_floor(None, None, 0.70) is None


def test_the_champion_is_degraded_after_its_last_days_all_fall_below_the_floor():
    ds = D(2026, 1, 16)
    bad = assess_health(ds, "4", _judged([0.70, 0.58, 0.57, 0.59]), floor=0.6, days=3)
    assert bad.degraded
    assert bad.reason == (
        "realized purchase ROC-AUC below 0.600 on 3 days: 2026-01-11 0.580, 2026-01-12 0.570, 2026-01-13 0.590"
    )
    assert bad.describe().startswith("model health at cutoff 2026-01-16: DEGRADED (v4): ")
    # Hold: one good day among the last three, too few days, a gap between judged days, an undefined day.
    assert not assess_health(ds, "4", _judged([0.58, 0.61, 0.57]), floor=0.6, days=3).degraded
    few = assess_health(ds, "4", _judged([0.5, 0.5]), floor=0.6, days=3)
    assert (few.degraded, few.reason) == (False, "2 judged day(s), 3 needed")
    gap = _judged([0.5, 0.5]) + _judged([0.5], first=D(2026, 1, 14))
    assert not assess_health(ds, "4", gap, floor=0.6, days=3).degraded
    assert not assess_health(ds, "4", _judged([0.5, None, 0.5]), floor=0.6, days=3).degraded
    assert not assess_health(ds, "4", _judged([0.5] * 3), floor=None, days=3).degraded
    assert not assess_health(ds, None, [], floor=0.6, days=3).degraded


def test_drift_makes_the_champion_degraded_whatever_its_outcomes():
    health = assess_health(D(2026, 1, 16), "4", _judged([0.9]), floor=0.6, days=3, drifted=["f_view_1d", "f_cart_7d"])
    assert health.degraded and health.reason == "features drifted: f_view_1d, f_cart_7d"
    assert health.as_json()["recent"] == [["2026-01-10", 0.9]]


def test_nightly_health_reads_the_champions_outcomes_and_writes_its_report(tmp_path):
    import json

    import mlflow
    import pyarrow as pa

    from tasks.layers import health_report
    from tasks.monitoring import nightly_health
    from tasks.registry import mlflow_store
    from tasks.warehouse import Warehouse
    from tests.helpers.config import isolated_config

    cfg = isolated_config(tmp_path / "var")
    assert nightly_health(cfg, D(2026, 1, 16)).reason == "no champion to judge"
    with mlflow_store(cfg) as client:
        exp = client.create_experiment(cfg.mlflow.experiment, artifact_location=cfg.mlflow.artifact_location)
        with mlflow.start_run(experiment_id=exp) as run:
            client.create_registered_model(cfg.mlflow.model_name)
            mv = client.create_model_version(cfg.mlflow.model_name, f"{run.info.artifact_uri}/model", run.info.run_id)
        client.set_model_version_tag(cfg.mlflow.model_name, mv.version, "test_purchase_roc_auc", "0.700000")
        client.set_registered_model_alias(cfg.mlflow.model_name, cfg.mlflow.champion_alias, mv.version)
    wh = Warehouse.from_config(cfg)
    wh.ensure_schema()
    for i, auc in enumerate([0.66, 0.64, 0.63, 0.62]):
        ds = D(2026, 1, 11 + i)
        row = _row(ds=ds, model_version=str(mv.version))
        wh.replace_outcomes(ds, pa.Table.from_pylist([{**row, "purchase_roc_auc": auc}]))
    # The floor is the test ROC-AUC 0.70 less 0.05; the last three judged days before the cutoff are below it.
    health = nightly_health(cfg, D(2026, 1, 15))
    assert (health.degraded, health.model_version, health.floor) == (True, str(mv.version), pytest.approx(0.65))
    assert [d for d, _ in health.recent] == ["2026-01-12", "2026-01-13", "2026-01-14"]
    assert json.loads(health_report(cfg, D(2026, 1, 15)).read_text())["degraded"] is True
    # A day judged at or after the cutoff is not part of this cutoff's history.
    assert nightly_health(cfg, D(2026, 1, 14)).recent[-1][0] == "2026-01-13"


def _live(p_challenger_noise: float, *, days: int = 7, mode: str = "auto", min_gain: float = 0.005, seed: int = 1):
    """A week of 400 users a day: the champion's p_purchase is the signal plus noise 1.0; the challenger's noise
    is ``p_challenger_noise`` (less noise, better ranking)."""
    from tasks.outcomes import live_decision

    rng = np.random.default_rng(seed)
    users = np.tile(np.arange(400), days)
    signal = rng.normal(size=len(users))
    labels = (signal + rng.normal(scale=0.8, size=len(users)) > 1.0).astype(int)
    champion = signal + rng.normal(scale=1.0, size=len(users))
    challenger = signal + rng.normal(scale=p_challenger_noise, size=len(users))
    return live_decision(
        users,
        labels,
        1 / (1 + np.exp(-champion)),
        1 / (1 + np.exp(-challenger)),
        champion_version="3",
        challenger_version="5",
        days=days,
        min_days=7,
        min_gain=min_gain,
        mode=mode,
        resamples=200,
    )


def test_live_promotion_rule_promotes_a_clearly_better_challenger():
    decision = _live(0.3)
    assert decision.action == "promote"
    assert decision.delta_auc == pytest.approx(decision.challenger_auc - decision.champion_auc)
    assert decision.delta_auc > 0.05 and decision.interval[0] > 0
    assert decision.users == 400 and decision.days == 7
    tags = decision.tags()
    assert tags["live_decision"] == "promote" and tags["live_champion_version"] == "3"
    assert tags["live_reason"].startswith("challenger v5 purchase ROC-AUC ")


def test_live_promotion_rule_only_recommends_when_told_so():
    assert _live(0.3, mode="recommend").action == "recommend"


def test_live_promotion_rule_holds_an_equal_or_worse_challenger_and_waits_for_enough_days():
    same = _live(1.0)
    assert same.action == "hold"
    assert same.interval[0] <= 0 or same.delta_auc < 0.005
    assert _live(2.0).action == "hold"
    # Better, but not by the required margin.
    assert _live(0.3, min_gain=0.5).action == "hold"
    waiting = _live(0.3, days=3)
    assert (waiting.action, waiting.delta_auc) == ("wait", None)
    assert waiting.reason == "3 closed day(s) judged for both, 7 needed"


def test_live_paired_bootstrap_resamples_users_not_rows():
    from tasks.outcomes import live_decision

    # 20 users with 50 scored days each: the challenger ranks one half of the users' days much better and the
    # other half much worse. Resampling users (a user's days together) sees that the verdict hangs on which
    # users happen to be in the sample; resampling rows would take 1,000 independent rows for evidence.
    rng = np.random.default_rng(4)
    users = np.repeat(np.arange(20), 50)
    labels = rng.integers(0, 2, size=1000)
    helps = np.where(users % 2 == 0, 1.0, -1.0)
    champion = labels + rng.normal(scale=1.0, size=1000)
    challenger = labels * (1 + 2.0 * helps) + rng.normal(scale=1.0, size=1000)

    def width(unit: np.ndarray) -> float:
        d = live_decision(
            unit,
            labels,
            1 / (1 + np.exp(-champion)),
            1 / (1 + np.exp(-challenger)),
            champion_version="1",
            challenger_version="2",
            days=7,
            min_days=7,
            min_gain=0.0,
            mode="auto",
            resamples=300,
        )
        return d.interval[1] - d.interval[0]

    assert width(users) > 2 * width(np.arange(1000))
