"""Scores gate: a matching staging partition passes; each broken property and a score shift fail by name."""

from __future__ import annotations

import datetime as dt
import logging
import math

import pytest

from expectations.runner import DataQualityError
from expectations.scores import PSI_CHECK, extra_checks, partition, score_psi
from spark_jobs.validate import validate_scores
from tasks.layers import features_partition
from tasks.schema import SCORE_COLUMNS

DS = dt.date(2026, 1, 10)
SCHEMA = ", ".join(f"{c} {t}" for c, t in SCORE_COLUMNS.items() if c != "ds")
USERS = [f"u{i:03d}" for i in range(40)]


def _with_quality(cfg, **quality):
    return cfg.model_copy(update={"quality": cfg.quality.model_copy(update=quality)})


def _score(user, p, version="3", p_cart=0.2, p_fav=0.1):
    return (user, p, p_cart, p_fav, "purchase_intent", version, "run1", dt.datetime(2026, 1, 10), "pipe1")


def _scores(probabilities):
    return [_score(u, p) for u, p in zip(USERS, probabilities, strict=True)]


def _write_scores(spark, cfg, day, rows):
    spark.createDataFrame(rows, SCHEMA).coalesce(1).write.mode("overwrite").parquet(str(partition(cfg, day)))


def _write_features(spark, cfg, day, users):
    path = features_partition(cfg, "user", day)
    spark.createDataFrame([(u, 1.0) for u in users], "user_id string, f_view_1d double").coalesce(1).write.mode(
        "overwrite"
    ).parquet(str(path))


def _spread(n, lo=0.0, hi=1.0):
    return [lo + (hi - lo) * (i + 0.5) / n for i in range(n)]


def test_good_partition_passes(spark, cfg):
    _write_features(spark, cfg, DS, USERS)
    _write_scores(spark, cfg, DS - dt.timedelta(days=1), _scores(_spread(40)))
    _write_scores(spark, cfg, DS, _scores(reversed(_spread(40))))
    summary = validate_scores(cfg, DS)
    assert summary.success, summary.describe()
    assert summary.n_expectations == 9
    # Same distribution as the day before (other users hold the values): no shift.
    assert score_psi(cfg, DS, spark.read.parquet(str(partition(cfg, DS)))) == pytest.approx(0.0, abs=1e-9)


def test_each_broken_property_and_the_shift_are_named(spark, cfg):
    cfg = _with_quality(cfg, score_psi_action="fail")
    _write_features(spark, cfg, DS, USERS)
    _write_scores(spark, cfg, DS - dt.timedelta(days=1), _scores(_spread(40)))
    rows = [_score(u, 0.9) for u in USERS[1:]]  # u000 not scored; p_purchase constant and shifted
    rows[0] = _score(USERS[1], 0.9, p_fav=1.5)
    rows[1] = _score(USERS[2], 0.9, p_cart=None)
    rows[2] = _score(USERS[3], 0.9, version="4")
    rows += [_score("stranger", 0.9), rows[5]]
    _write_scores(spark, cfg, DS, rows)

    with pytest.raises(DataQualityError) as err:
        validate_scores(cfg, DS)
    named = {
        f.kwargs["unexpected_rows_query"].split("*/")[0] + "*/"
        if f.expectation == "unexpected_rows_expectation"
        else (f.expectation, f.kwargs.get("column")): f
        for f in err.value.summary.failures
    }
    users = "/* users differ from the active users of features/user/ds=2026-01-10 */"
    probs = "/* probabilities null, NaN or outside [0, 1] */"
    assert set(named) == {
        ("expect_column_values_to_be_unique", "user_id"),
        ("expect_column_unique_value_count_to_be_between", "model_version"),
        ("expect_column_unique_value_count_to_be_between", "p_purchase"),
        (PSI_CHECK, "p_purchase"),
        probs,
        users,
    }
    assert {(r["user_id"], r["problem"]) for r in named[users].sample_rows} == {
        ("u000", "not scored"),
        ("stranger", "not an active user"),
    }
    assert {r["column"] for r in named[probs].sample_rows} == {"p_fav", "p_cart"}
    # Yesterday's 40 values give decile edges at ranks 4, 8, ..., 36 (a value at an edge goes up), so its
    # bins hold 3, 4 x 8 and 5 values; all of today's 0.9 sit in the last bin, the empty ones floor at 1e-4.
    psi = named[(PSI_CHECK, "p_purchase")].observed
    by_hand = (1 - 5 / 40) * math.log(40 / 5) + (1e-4 - 3 / 40) * math.log(1e-4 * 40 / 3)
    by_hand += 8 * (1e-4 - 4 / 40) * math.log(1e-4 * 40 / 4)
    assert psi == pytest.approx(by_hand, rel=1e-5)
    message = str(err.value)
    assert f"{PSI_CHECK}(column=p_purchase, threshold=0.25, bins=10" in message and "observed 7.83" in message
    assert (
        "expect_column_unique_value_count_to_be_between(column=model_version, min_value=1, max_value=1): observed 2"
        in message
    )


def test_shift_only_warns_by_default_and_first_day_is_skipped(spark, cfg, caplog):
    _write_scores(spark, cfg, DS - dt.timedelta(days=1), _scores(_spread(40, 0.0, 0.5)))
    _write_scores(spark, cfg, DS, _scores(_spread(40, 0.5, 1.0)))
    today = spark.read.parquet(str(partition(cfg, DS)))
    with caplog.at_level(logging.WARNING, logger="expectations.scores"):
        assert extra_checks(cfg, DS, today) == []
    assert "exceeds 0.25 (score_psi_action=warn" in caplog.text
    assert score_psi(cfg, DS + dt.timedelta(days=5), today) is None
