"""Realized outcomes: the label-window rule and every metric of one day, on hand-computed examples."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from tasks.evaluate import category_ranking_metrics, expected_calibration_error, lift_by_decile, reliability_curve
from tasks.outcomes import days_to_evaluate, label_window_end, outcome_row, top_list_ranking, window_closed
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
