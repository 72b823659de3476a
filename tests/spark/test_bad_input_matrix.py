"""Bad-input matrix: the cases not already covered elsewhere, each through the real stages.

Already covered by tests/spark/test_clean_events.py::test_bad_input_fails_clearly_and_writes_no_events
(land -> clean, nothing written): missing column, wrong type, null user ids, unknown event type, negative
prices, duplicated events, timestamps in the future of the logical date, an empty partition, a file that
is not CSV at all, a truncated last line. Here: a 10x volume spike (land -> clean -> events gate) and a
constant column (events -> features -> features gate).
"""

from __future__ import annotations

import datetime as dt

import pytest

from expectations.runner import DataQualityError
from spark_jobs import features as features_job
from spark_jobs.clean_events import clean_day
from spark_jobs.validate import validate_events, validate_features
from tasks.land import land_day
from tasks.layers import incoming_partition
from tasks.schema import EVENT_COLUMNS
from tests.helpers.events import ev, write_events_layer

DAY = dt.date(2026, 1, 5)


def _csv_rows(day: dt.date, n: int) -> list[str]:
    return [
        f"{day.isoformat()}T{i % 24:02d}:{(i * 7) % 60:02d}:{i % 60:02d}Z,u{i % 17},i{i},c{i % 5},view,3.50,s1,,,"
        for i in range(n)
    ]


def test_ten_fold_volume_spike_is_stopped_by_the_events_gate(spark, cfg):
    for back in (1, 2, 3):
        day = DAY - dt.timedelta(days=back)
        write_events_layer(cfg, [ev(f"{day.isoformat()}T{h:02d}:00:00", f"u{h}", item_id=f"i{h}") for h in range(20)])
    incoming = incoming_partition(cfg, "synthetic", DAY)
    incoming.mkdir(parents=True)
    (incoming / "events.csv").write_text("\n".join([",".join(EVENT_COLUMNS), *_csv_rows(DAY, 200)]) + "\n")
    land_day(cfg, DAY, "synthetic")
    report = clean_day(spark, cfg, DAY)
    assert report.n_events == 200  # every row is individually valid; only the volume is wrong

    with pytest.raises(DataQualityError) as err:
        validate_events(cfg, DAY)
    (failure,) = err.value.summary.failures
    # Median of the 3 earlier days is 20; band factor 5 -> [4, 100].
    assert "expect_table_row_count_to_be_between(min_value=4, max_value=100): observed 200" in failure.describe()


def test_constant_column_is_stopped_by_the_features_gate(spark, cfg):
    cfg = cfg.model_copy(
        update={"features": cfg.features.model_copy(update={"lookback_days": 3, "windows_days": [1, 3]})}
    )
    # An export that stamped every event with one time and one item: recency and item counts collapse.
    stamp = f"{(DAY - dt.timedelta(days=1)).isoformat()}T12:00:00"
    write_events_layer(cfg, [ev(stamp, f"u{u:02d}", item_id="i1") for u in range(25)])
    report = features_job.run(cfg, DAY, spark=spark)
    assert report.n_users == 25 and not report.with_labels

    with pytest.raises(DataQualityError) as err:
        validate_features(cfg, DAY)
    failed = {(f.expectation, f.kwargs.get("column")) for f in err.value.summary.failures}
    assert failed == {
        ("expect_column_unique_value_count_to_be_between", "f_recency_any"),
        ("expect_column_unique_value_count_to_be_between", "f_distinct_items"),
    }
    assert "expect_column_unique_value_count_to_be_between(column=f_recency_any, min_value=2): observed 1" in str(
        err.value
    )


def test_rfc4180_quoted_query_survives_land_and_clean(spark, cfg):
    from tasks.layers import events_partition

    incoming = incoming_partition(cfg, "synthetic", DAY)
    incoming.mkdir(parents=True)
    rows = _csv_rows(DAY, 20)
    rows[0] = rows[0][: -len(",,,")] + ',"U""Q",acme,"a,b"'
    (incoming / "events.csv").write_text("\n".join([",".join(EVENT_COLUMNS), *rows]) + "\n")
    land_day(cfg, DAY, "synthetic")
    report = clean_day(spark, cfg, DAY)
    assert report.n_events == 20 and not report.quarantined
    events = spark.read.parquet(str(events_partition(cfg, DAY)))
    (row,) = events.filter("query IS NOT NULL").collect()
    assert (row.query, row.brand, row.category_code) == ('U"Q', "acme", "a,b")


def test_ambiguous_zone_abbreviation_is_quarantined_with_its_reason(spark, cfg):
    from spark_jobs.clean_events import CleaningError
    from tasks.layers import events_partition, quarantine_partition

    # A Chinese REES46-style export stamped "CST": Java would read US Central, 13 hours off.
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
    good = [f"{DAY.isoformat()} {h:02d}:00:00 UTC,view,{h},2,,,1.00,u{h},s" for h in range(10)]
    bad = [f"{DAY.isoformat()} {h:02d}:30:00 CST,view,{h},2,,,1.00,u{h},s" for h in range(3)]
    incoming = incoming_partition(cfg, "rees46", DAY)
    incoming.mkdir(parents=True)
    (incoming / "export.csv").write_text("\n".join([header, *good, *bad]) + "\n")
    land_day(cfg, DAY, "rees46")
    with pytest.raises(CleaningError, match=r"'ambiguous_time_zone': 3"):
        clean_day(spark, cfg, DAY, source="rees46")
    assert not events_partition(cfg, DAY).exists()
    quarantined = spark.read.parquet(str(quarantine_partition(cfg, DAY))).collect()
    assert {(r.reason, r.raw_event_time) for r in quarantined} == {
        ("ambiguous_time_zone", f"{DAY.isoformat()} {h:02d}:30:00 CST") for h in range(3)
    }
