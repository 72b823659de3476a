"""Point-in-time features and labels (spark_jobs.features) against hand-computed values and a DuckDB reference."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_jobs import features as F
from tasks.layers import layer_root
from tasks.schema import (
    CANDIDATE_ARRAY_CATEGORY,
    CANDIDATE_ARRAY_PREFIX,
    EVENT_TYPES,
    LABEL_COLUMNS,
    SEQUENCE_COLUMNS,
    user_category_columns,
)
from tests.conftest import shared_data
from tests.helpers.events import (
    ev,
    events_df,
    events_pdf,
    random_events,
    spark_from_pdf,
    taobao_events,
    write_events_layer,
)
from tests.reference.features_duckdb import (
    reference_category_labels,
    reference_labels,
    reference_user_category,
    reference_user_features,
)

# Floating aggregates whose summation order may differ between engines; everything else is compared exactly.
APPROX_COLUMNS = {"f_price_mean", "f_purchase_amount"}


def small(cfg, tz: str = "UTC", **features):
    values = {
        "lookback_days": 7,
        "windows_days": [1, 3, 7],
        "sequence_length": 5,
        "item_buckets": 16,
        "horizon_days": 1,
    }
    values.update(features)
    return cfg.model_copy(
        update={
            "features": cfg.features.model_copy(update=values),
            "pipeline": cfg.pipeline.model_copy(update={"timezone": tz}),
        }
    )


def spark_rows(df, key=("user_id",)) -> pd.DataFrame:
    pdf = df.toPandas().sort_values(list(key)).reset_index(drop=True)
    for c in SEQUENCE_COLUMNS:
        if c in pdf.columns:
            pdf[c] = pdf[c].map(list)
    return pdf


def assert_frames_match(actual: pd.DataFrame, expected: pd.DataFrame, key=("user_id",)) -> None:
    expected = expected.sort_values(list(key)).reset_index(drop=True)
    assert list(actual.columns) == list(expected.columns)
    assert actual[list(key)].equals(expected[list(key)].astype(actual[list(key)].dtypes.to_dict()))
    for c in actual.columns:
        if c in key:
            continue
        if c in SEQUENCE_COLUMNS:
            exp = expected[c].map(lambda a: [x.item() if hasattr(x, "item") else x for x in a])
            mismatched = [i for i in range(len(actual)) if list(actual[c][i]) != list(exp[i])]
            assert not mismatched, f"{c} differs for users {actual['user_id'][mismatched].tolist()[:5]}"
        elif c in APPROX_COLUMNS:
            np.testing.assert_allclose(actual[c].to_numpy(float), expected[c].to_numpy(float), rtol=1e-12, err_msg=c)
        else:
            a, e = actual[c].to_numpy(float), expected[c].to_numpy(float)
            bad = np.flatnonzero(a != e)
            assert bad.size == 0, (
                f"{c}: spark {a[bad][:5]} != reference {e[bad][:5]} for {actual['user_id'][bad].tolist()[:5]}"
            )


def test_hand_computed_features_and_sequences(spark, cfg):
    c = small(cfg, sequence_length=3)
    cutoff = F.cutoff_instant(dt.date(2026, 1, 8), "UTC")
    rows = [
        ev("2025-12-31T23:59:59", "a"),  # before the 7-day lookback: ignored
        ev("2026-01-01T00:00:00", "a", "i1", "c1", "view", session_id=None),
        ev("2026-01-07T10:00:00", "a", "i2", "c2", "cart", price=4.0),
        ev("2026-01-07T10:00:00", "a", "i1", "c1", "view"),  # same instant: 'cart' < 'view' orders it second
        ev("2026-01-07T23:59:59", "a", "i3", "c2", "purchase", price=6.0),
        ev("2026-01-08T00:00:00", "a", "i9", "c9", "purchase"),  # at the cutoff: label only
        ev("2026-01-08T23:59:59", "b", "i1", "c1", "fav"),  # horizon only: no feature row for b
        ev("2026-01-09T00:00:00", "a", "i1", "c1", "fav"),  # after the horizon: nothing
    ]
    out = spark_rows(F.build_features(events_df(spark, rows), cutoff, c.features, "UTC", with_labels=True))
    assert out["user_id"].tolist() == ["a"]
    r = out.iloc[0]
    assert (r["f_view_1d"], r["f_cart_1d"], r["f_purchase_1d"], r["f_view_7d"]) == (1.0, 1.0, 1.0, 2.0)
    assert r["f_recency_purchase"] == 1 / 86400
    assert r["f_recency_view"] == (14 * 3600) / 86400
    assert r["f_recency_fav"] == 8.0  # 'never' fill: lookback_days + 1
    assert (r["f_distinct_items"], r["f_distinct_categories"], r["f_active_days"]) == (3.0, 2.0, 2.0)
    assert r["f_cart_per_view"] == 2 / 4 and r["f_purchase_per_cart"] == 2 / 3
    # Inactivity sessions: Jan 1, then the three Jan 7 events (10:00, 10:00, 23:59:59 -> a new one).
    assert r["f_sessions"] == 3.0 and r["f_session_events_mean"] == 4 / 3
    assert r["f_price_known_share"] == 0.5 and r["f_price_max"] == 6.0 and r["f_purchase_amount"] == 6.0
    assert r["seq_event_type"] == [2, 1, 4]
    assert r["seq_category"] == ["c2", "c1", "c2"]
    # 1 + floor(log2(1 + s)): s = 50400 -> 16; s = 1 -> 2; gaps to previous: 6d10h -> 20, 0 -> 1, 50399 -> 16.
    assert r["seq_gap_cutoff_bucket"] == [16, 16, 2]
    assert r["seq_gap_prev_bucket"] == [20, 1, 16]
    assert r["seq_hour"] == [10, 10, 23]
    assert all(1 <= b <= 16 for b in r["seq_item_bucket"]) and r["seq_item_bucket"][1] != 0
    assert (r["label_purchase"], r["label_cart"], r["label_fav"]) == (1, 0, 0)


def test_first_event_has_no_previous_gap_and_short_history_is_not_padded(spark, cfg):
    c = small(cfg)
    cutoff = F.cutoff_instant(dt.date(2026, 1, 8), "UTC")
    out = spark_rows(F.user_features(events_df(spark, [ev("2026-01-07T12:00:00", "z")]), cutoff, c.features, "UTC"))
    assert out["seq_gap_prev_bucket"][0] == [0] and out["seq_event_type"][0] == [1]


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_matches_duckdb_reference(spark, cfg, tz):
    # March 2026 crosses the US DST change (Mar 8), so local-midnight windows are 23 hours once.
    c = small(cfg, tz=tz, horizon_days=2)
    rows = random_events(25, dt.date(2026, 3, 1), 14, seed=3, tz=tz)
    pdf = events_pdf(rows)
    sdf = events_df(spark, rows)
    cutoff = F.cutoff_instant(dt.date(2026, 3, 11), tz)
    actual = spark_rows(F.user_features(sdf, cutoff, c.features, tz))
    assert len(actual) > 10
    assert_frames_match(actual, reference_user_features(pdf, cutoff, c.features, tz))
    assert list(actual.columns[1 : 1 + len(F.tabular_columns(c.features))]) == F.tabular_columns(c.features)

    lab = spark_rows(F.labels(sdf, cutoff, 2, tz))
    assert_frames_match(lab, reference_labels(pdf, cutoff, 2, tz))
    assert lab[list(LABEL_COLUMNS)].to_numpy().sum() > 0

    uc = spark_rows(F.user_category_features(sdf, cutoff, c.features, tz), key=("user_id", "category_id"))
    assert_frames_match(uc, reference_user_category(pdf, cutoff, c.features, tz), key=("user_id", "category_id"))

    pairs = ("user_id", "category_id")
    cat_lab = spark_rows(F.category_labels_at(sdf, [cutoff], c.features, tz).drop("ds"), key=pairs)
    assert len(cat_lab) > 0
    assert_frames_match(cat_lab, reference_category_labels(pdf, cutoff, 2, tz), key=pairs)


def test_totals_without_matching_windows_match_duckdb_reference(spark, cfg):
    # With no 1-day, 7-day or lookback-long window the per-type totals and the 1/7-day counts behind
    # f_trend_1d_vs_7d are counted themselves instead of summed from window counts.
    c = small(cfg, windows_days=[3])
    rows = random_events(25, dt.date(2026, 3, 1), 14, seed=5, tz="UTC")
    cutoff = F.cutoff_instant(dt.date(2026, 3, 11), "UTC")
    actual = spark_rows(F.user_features(events_df(spark, rows), cutoff, c.features, "UTC"))
    assert len(actual) > 10
    assert_frames_match(actual, reference_user_features(events_pdf(rows), cutoff, c.features, "UTC"))


def test_events_at_or_after_cutoff_change_no_feature(spark, cfg):
    c = small(cfg)
    cutoff = F.cutoff_instant(dt.date(2026, 1, 10), "UTC")
    rows = random_events(12, dt.date(2026, 1, 1), 9, seed=5)
    later = [
        ev("2026-01-10T00:00:00", "u000", "i7", "c7", "purchase", price=9.0),
        ev("2026-01-10T00:00:00", "u001", "i0", "c0", "view"),
        ev("2026-01-11T05:00:00", "u002", "i1", "c1", "cart"),
        ev("2026-02-01T00:00:00", "new-user", "i1", "c1", "view"),
    ]
    before = spark_rows(F.user_features(events_df(spark, rows), cutoff, c.features, "UTC"))
    after = spark_rows(F.user_features(events_df(spark, rows + later), cutoff, c.features, "UTC"))
    pd.testing.assert_frame_equal(before, after)

    lab = spark_rows(F.labels(events_df(spark, rows + later), cutoff, 1))
    assert lab.set_index("user_id")[list(LABEL_COLUMNS)].to_dict("index") == {
        "u000": {"label_purchase": 1, "label_cart": 0, "label_fav": 0},
        "u001": {"label_purchase": 0, "label_cart": 0, "label_fav": 0},
    }
    # Events before the cutoff or at its horizon's end never make a label.
    edge = rows + [
        ev("2026-01-09T23:59:59", "u003", event_type="purchase"),
        ev("2026-01-11T00:00:00", "u003", event_type="purchase"),
    ]
    assert "u003" not in set(spark_rows(F.labels(events_df(spark, edge), cutoff, 1))["user_id"])


_late_event = st.builds(
    lambda secs, user, item, etype: ev(
        dt.datetime(2026, 1, 10, tzinfo=dt.UTC) + dt.timedelta(seconds=secs), user, item, f"c{item[-1]}", etype
    ),
    st.integers(min_value=0, max_value=40 * 86400),
    st.sampled_from(["u000", "u001", "u004", "zz"]),
    st.sampled_from(["i1", "i2", "i9"]),
    st.sampled_from(EVENT_TYPES),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(late=st.lists(_late_event, min_size=1, max_size=6))
def test_property_late_events_change_nothing(spark, cfg, late):
    c = small(cfg)
    cutoff = F.cutoff_instant(dt.date(2026, 1, 10), "UTC")
    rows = random_events(6, dt.date(2026, 1, 2), 8, seed=11)
    base = spark_rows(F.user_features(events_df(spark, rows), cutoff, c.features, "UTC"))
    with_late = spark_rows(F.user_features(events_df(spark, rows + late), cutoff, c.features, "UTC"))
    pd.testing.assert_frame_equal(base, with_late)


def test_build_features_label_fill(spark, cfg):
    c = small(cfg)
    cutoff = F.cutoff_instant(dt.date(2026, 1, 5), "UTC")
    rows = [
        ev("2026-01-04T10:00:00", "a"),
        ev("2026-01-04T11:00:00", "b"),
        ev("2026-01-05T01:00:00", "b", event_type="cart"),
    ]
    df = events_df(spark, rows)
    labelled = spark_rows(F.build_features(df, cutoff, c.features, "UTC", with_labels=True))
    assert labelled[list(LABEL_COLUMNS)].to_numpy().tolist() == [[0, 0, 0], [0, 1, 0]]
    unlabelled = F.build_features(df, cutoff, c.features, "UTC", with_labels=False)
    assert dict(unlabelled.dtypes)["label_purchase"] == "int"
    assert unlabelled.where("label_purchase IS NOT NULL OR label_cart IS NOT NULL").count() == 0


def test_bad_arguments_are_named(spark, cfg):
    df = events_df(spark, [ev("2026-01-04T10:00:00", "a")])
    with pytest.raises(ValueError, match="not a midnight"):
        F.user_features(df, dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC), small(cfg).features, "UTC")
    with pytest.raises(ValueError, match="windows_days"):
        F.user_features(
            df, F.cutoff_instant(dt.date(2026, 1, 5), "UTC"), small(cfg, windows_days=[1, 14]).features, "UTC"
        )
    with pytest.raises(ValueError, match="horizon_days"):
        F.labels(df, F.cutoff_instant(dt.date(2026, 1, 5), "UTC"), 0)


def _partition_files(path):
    return sorted((p.name, p.stat().st_mtime_ns) for p in path.glob("*.parquet"))


def test_run_writes_partition_and_rerun_replaces_only_it(spark, cfg):
    c = small(cfg)
    rows = random_events(10, dt.date(2026, 1, 1), 9, seed=2)
    write_events_layer(c, rows)
    assert F.latest_labelled_cutoff(c) == dt.date(2026, 1, 9)
    assert F.label_window_available(c, dt.date(2026, 1, 9)) and not F.label_window_available(c, dt.date(2026, 1, 10))

    r8 = F.run(c, dt.date(2026, 1, 8), spark=spark)
    r9 = F.run(c, dt.date(2026, 1, 9), spark=spark)
    assert r8.with_labels and r8.events_dts == tuple(dt.date(2026, 1, d) for d in range(1, 9))
    assert r8.path == layer_root(c, "features") / "user" / "ds=2026-01-08"
    before9 = _partition_files(r9.path)
    first = spark.read.parquet(str(r8.path)).count()
    assert first == r8.n_users > 0

    # New history for an extra user; rerunning ds=2026-01-08 must replace (not append to) that partition.
    write_events_layer(
        c, [r for r in rows if r["event_time"].date() == dt.date(2026, 1, 7)] + [ev("2026-01-07T08:00:00", "extra")]
    )
    again = F.run(c, dt.date(2026, 1, 8), spark=spark)
    table = spark.read.parquet(str(layer_root(c, "features") / "user"))
    assert again.n_users == first + 1
    assert table.where("ds = DATE'2026-01-08'").count() == first + 1
    assert table.where("ds = DATE'2026-01-08'").select("user_id").distinct().count() == first + 1
    assert _partition_files(r9.path) == before9
    assert spark.read.parquet(str(again.user_category_path)).count() == again.n_user_category_rows > 0


def test_run_packs_each_users_candidate_rows_onto_the_user_row(spark, cfg):
    c = small(cfg)
    write_events_layer(c, random_events(12, dt.date(2026, 1, 1), 9, seed=4))
    rep = F.run(c, dt.date(2026, 1, 8), spark=spark)
    users = spark.read.parquet(str(rep.path)).toPandas().set_index("user_id")
    pairs = spark.read.parquet(str(rep.user_category_path)).toPandas()
    pair_columns = user_category_columns(c.features)
    assert c.text.enabled
    assert list(users.columns[-len(LABEL_COLUMNS) - len(pair_columns) - 2 :]) == [
        CANDIDATE_ARRAY_CATEGORY, *(CANDIDATE_ARRAY_PREFIX + p for p in pair_columns), "cand_category_text",
        *LABEL_COLUMNS,
    ]  # fmt: skip
    assert set(pairs["user_id"]) == set(users.index)
    for user_id, rows in pairs.sort_values("category_id").groupby("user_id"):
        row = users.loc[user_id]
        assert list(row[CANDIDATE_ARRAY_CATEGORY]) == list(rows["category_id"])
        for p in pair_columns:
            assert list(row[CANDIDATE_ARRAY_PREFIX + p]) == list(rows[p]), (user_id, p)


def test_each_event_carries_its_query_else_its_category_code_and_each_candidate_its_code(spark, cfg):
    c = small(cfg, sequence_length=4)
    cutoff = F.cutoff_instant(dt.date(2026, 1, 8), "UTC")
    rows = [
        ev("2026-01-05T10:00:00", "a", "i1", "c1", "view", category_code="Electronics.Smartphone"),
        ev("2026-01-05T10:01:00", "a", "i0", "c1", "view", query="  Cheap   PHONE ", category_code="x.y"),
        ev("2026-01-05T10:02:00", "a", "i2", "c2", "view"),
        ev("2026-01-05T10:03:00", "a", "i3", "c2", "cart", query="", category_code="kids.toys"),
    ]
    events = events_df(spark, rows)
    users = spark_rows(F.build_features(events, cutoff, c.features, "UTC", with_labels=False, text=True))
    # Normalised as the text-embedding layer keys them; "" for an event with neither.
    assert list(users.iloc[0]["seq_text"]) == ["electronics.smartphone", "cheap phone", "", "kids.toys"]
    assert "seq_text" not in spark_rows(F.build_features(events, cutoff, c.features, "UTC", with_labels=False))
    pairs = F.user_category_features(events, cutoff, c.features, "UTC", text=True).toPandas()
    assert dict(zip(pairs["category_id"], pairs["category_text"], strict=True)) == {
        "c1": "x.y",  # two codes for one category: the greatest
        "c2": "kids.toys",
    }


def test_run_without_label_window_writes_null_labels(spark, cfg):
    c = small(cfg)
    write_events_layer(c, random_events(5, dt.date(2026, 1, 1), 3, seed=1))
    rep = F.run(c, dt.date(2026, 1, 4), spark=spark)
    assert not rep.with_labels and rep.positives == {}
    assert spark.read.parquet(str(rep.path)).where("label_purchase IS NOT NULL").count() == 0


def test_run_without_history_is_a_clear_error(spark, cfg):
    c = small(cfg)
    with pytest.raises(F.FeaturesError, match="no events partitions"):
        F.latest_labelled_cutoff(c)
    write_events_layer(c, [ev("2026-01-20T10:00:00", "a")])
    with pytest.raises(F.FeaturesError, match=r"no events in the lookback 2026-01-01\.\.2026-01-07"):
        F.run(c, dt.date(2026, 1, 8), spark=spark)
    assert not (layer_root(c, "features") / "user" / "ds=2026-01-08").exists()


def test_taobao_sample_matches_duckdb_reference(spark, cfg):
    pdf = taobao_events(shared_data("taobao_userbehavior_sample.csv"))
    tz = "Asia/Shanghai"
    c = cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={"timezone": tz})})
    cutoff = F.cutoff_instant(dt.date(2017, 11, 30), tz)
    sdf = spark_from_pdf(spark, pdf).cache()
    try:
        actual = spark_rows(F.build_features(sdf, cutoff, c.features, tz, with_labels=True))
    finally:
        sdf.unpersist()
    expected = reference_user_features(pdf, cutoff, c.features, tz)
    lab = reference_labels(pdf, cutoff, c.features.horizon_days, tz)
    expected = expected.merge(lab, on="user_id", how="left")
    for col in LABEL_COLUMNS:
        expected[col] = expected[col].fillna(0).astype("int32")
    assert len(actual) > 700
    assert 0 < actual["label_purchase"].sum() < len(actual)
    assert_frames_match(actual, expected)
