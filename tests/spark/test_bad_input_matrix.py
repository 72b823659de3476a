"""Bad-input matrix: the cases not already covered elsewhere, each through the real stages.

Already covered by tests/spark/test_clean_events.py::test_bad_input_fails_clearly_and_writes_no_events
(land -> clean, nothing written): missing column, wrong type, null user ids, unknown event type, negative
prices, duplicated events, timestamps in the future of the logical date, an empty partition, a file that
is not CSV at all, a truncated last line. Here: a 10x volume spike (land -> clean -> events gate) and a
constant column (events -> features -> features gate). Issue 29's bad exports (land -> clean -> events gate):
non-finite or huge prices, a ``_``-named part file, out-of-range and millisecond Taobao times, broken or
unreadable compressed/encoded files, compressed REES46 exports, a UTF-8 BOM and latin-1 text; and the way out
of a refused (or wrong) day, a corrected re-delivery (land --redeliver -> clean -> events gate).
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import json

import pytest

from expectations.runner import DataQualityError
from spark_jobs import features as features_job
from spark_jobs.clean_events import CleaningError, clean_day, local_midnight
from spark_jobs.loaders import RawFormatError
from spark_jobs.validate import validate_events, validate_features
from tasks.errors import DataError
from tasks.land import RawConflictError, land_day
from tasks.layers import (
    events_partition,
    features_partition,
    incoming_partition,
    quarantine_partition,
    raw_partition,
    redelivery_record,
    superseded_copies,
)
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


# Issue 29: bad exports, each through land -> clean -> events gate.
def _deliver(cfg, files: dict[str, bytes], source: str = "synthetic", day: dt.date = DAY) -> None:
    incoming = incoming_partition(cfg, source, day)
    incoming.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (incoming / name).write_bytes(body)
    land_day(cfg, day, source)


def _synthetic(rows: list[str]) -> bytes:
    return ("\n".join([",".join(EVENT_COLUMNS), *rows]) + "\n").encode()


def _taobao(n: int, day: dt.date, cfg, first: int = 0) -> list[str]:
    start = int(local_midnight(cfg, day).timestamp())
    return [f"{i},{1000 + i},{i % 5},pv,{start + i * 60}" for i in range(first, first + n)]


def _rees46(n: int, day: dt.date) -> list[str]:
    return [
        f"{day.isoformat()} {i % 24:02d}:{i % 60:02d}:00 UTC,view,{i},{i % 5},,acme,3.5,{i % 17},s{i}" for i in range(n)
    ]


REES46_HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"


def test_non_finite_and_huge_prices_are_quarantined_and_features_stay_finite(spark, cfg):
    bad = [
        f"{DAY.isoformat()}T10:00:00Z,u1,ibad{i},c1,view,{price},s1,,,"
        for i, price in enumerate(("1e999", "-1e999", "1e300"))
    ]
    _deliver(cfg, {"events.csv": _synthetic([*_csv_rows(DAY, 400), *bad])})
    report = clean_day(spark, cfg, DAY)
    assert report.quarantined == {"bad_price": 3} and report.n_events == 400
    validate_events(cfg, DAY)
    (q,) = {r.raw_price for r in spark.read.parquet(str(quarantine_partition(cfg, DAY))).collect()} & {"1e999"}
    assert q == "1e999"
    features_cfg = cfg.model_copy(
        update={"features": cfg.features.model_copy(update={"lookback_days": 3, "windows_days": [1, 3]})}
    )
    features_job.run(features_cfg, DAY + dt.timedelta(days=1), spark=spark)
    f = spark.read.parquet(str(features_partition(features_cfg, "user", DAY + dt.timedelta(days=1))))
    assert f.filter("isnan(f_price_mean) or abs(f_price_mean) = double('inf')").count() == 0
    assert f.agg({"f_price_mean": "max"}).first()[0] == 3.5


def test_underscore_named_part_of_a_multi_part_export_is_read(spark, cfg):
    part1, part2 = _csv_rows(DAY, 400), _csv_rows(DAY, 800)[400:]
    _deliver(cfg, {"part1.csv": _synthetic(part1), "_part2.csv": _synthetic(part2)})
    landed = raw_partition(cfg, "synthetic", DAY)
    assert sorted(p.name for p in landed.iterdir()) == ["_delivered_names.json", "delivered_part2.csv", "part1.csv"]
    assert json.loads((landed / "_delivered_names.json").read_text()) == {"delivered_part2.csv": "_part2.csv"}
    land_day(cfg, DAY, "synthetic")  # the same delivery again is a no-op, not a conflict
    report = clean_day(spark, cfg, DAY)
    assert report.n_raw == 800 and report.n_events == 800
    validate_events(cfg, DAY)


def test_raw_file_spark_would_skip_fails_naming_it(spark, cfg):
    # A partition landed before tasks.land renamed such files: refuse rather than read half the day.
    folder = raw_partition(cfg, "synthetic", DAY)
    folder.mkdir(parents=True)
    (folder / "part1.csv").write_bytes(_synthetic(_csv_rows(DAY, 10)))
    (folder / "_part2.csv").write_bytes(_synthetic(_csv_rows(DAY, 10)))
    with pytest.raises(RawFormatError, match=r"_part2.csv would be skipped by Spark"):
        clean_day(spark, cfg, DAY)
    assert not events_partition(cfg, DAY).exists()


def test_out_of_range_and_millisecond_taobao_timestamps_are_quarantined(spark, cfg):
    good = _taobao(400, DAY, cfg)
    millis = int(local_midnight(cfg, DAY).timestamp()) * 1000 + 5
    bad = ["7,77,1,pv,99999999999999", f"8,88,1,pv,{millis}"]
    _deliver(cfg, {"UserBehavior.csv": "\n".join([*good, *bad]).encode() + b"\n"}, source="taobao")
    report = clean_day(spark, cfg, DAY, source="taobao")
    assert report.quarantined == {"unparseable_timestamp": 2} and report.n_events == 400
    validate_events(cfg, DAY)
    raw_times = {r.raw_event_time for r in spark.read.parquet(str(quarantine_partition(cfg, DAY))).collect()}
    assert raw_times == {"99999999999999", str(millis)}


def test_taobao_export_in_milliseconds_fails_the_day(spark, cfg):
    rows = [f"{i},{i},1,pv,{int(local_midnight(cfg, DAY).timestamp()) * 1000 + i}" for i in range(50)]
    _deliver(cfg, {"UserBehavior.csv": ("\n".join(rows) + "\n").encode()}, source="taobao")
    with pytest.raises(CleaningError, match=r"50 of 50 raw rows are bad.*'unparseable_timestamp': 50"):
        clean_day(spark, cfg, DAY, source="taobao")
    assert not events_partition(cfg, DAY).exists()


def _truncated_gzip() -> bytes:
    whole = gzip.compress(_synthetic(_csv_rows(DAY, 400)))
    return whole[: len(whole) // 2]


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("events.csv.gz", _truncated_gzip(), r"events.csv.gz is not a complete .gz file"),
        ("events.csv.gz", _synthetic(_csv_rows(DAY, 5)), r"events.csv.gz is not a complete .gz file.*Not a gzip"),
        ("events.csv.bz2", bz2.compress(_synthetic(_csv_rows(DAY, 400)))[:-40], r"not a complete .bz2 file"),
        ("events.csv", gzip.compress(_synthetic(_csv_rows(DAY, 5))), r"events.csv is gzip data not named .gz"),
        ("events.csv.zst", b"\x28\xb5\x2f\xfd", r"\.zst compression cannot be checked"),
        ("events.csv", "\n".join([",".join(EVENT_COLUMNS), *_csv_rows(DAY, 5)]).encode("utf-16"), "UTF-16"),
    ],
    ids=["truncated_gz", "fake_gz", "truncated_bz2", "unnamed_gzip", "zstd", "utf16"],
)
def test_broken_or_unreadable_file_is_a_data_error_naming_it(spark, cfg, name, body, message):
    _deliver(cfg, {name: body})
    with pytest.raises(RawFormatError, match=message) as err:
        clean_day(spark, cfg, DAY)
    assert isinstance(err.value, DataError)  # not retried
    assert not events_partition(cfg, DAY).exists()


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress], ids=["gz", "bz2"])
def test_compressed_rees46_export_is_read(spark, cfg, compress):
    body = ("\n".join([REES46_HEADER, *_rees46(400, DAY)]) + "\n").encode()
    _deliver(cfg, {f"2026-Jan.csv.{'gz' if compress is gzip.compress else 'bz2'}": compress(body)}, source="rees46")
    report = clean_day(spark, cfg, DAY, source="rees46")
    assert report.n_events == 400 and report.quarantined == {}
    validate_events(cfg, DAY)


def test_utf8_bom_is_dropped_for_headed_and_headerless_exports(spark, cfg):
    rees = ("\ufeff" + "\n".join([REES46_HEADER, *_rees46(400, DAY)]) + "\n").encode()
    _deliver(cfg, {"2026-Jan.csv": rees}, source="rees46")
    assert clean_day(spark, cfg, DAY, source="rees46").n_events == 400
    other = DAY + dt.timedelta(days=1)
    _deliver(
        cfg, {"UserBehavior.csv": ("\ufeff" + "\n".join(_taobao(400, other, cfg)) + "\n").encode()}, "taobao", other
    )
    report = clean_day(spark, cfg, other, source="taobao")
    assert report.n_events == 400 and report.quarantined == {}
    users = {r.user_id for r in spark.read.parquet(str(events_partition(cfg, other))).collect()}
    assert "0" in users and not any(u.startswith("\ufeff") for u in users)


def test_latin1_text_is_quarantined_not_cleaned_with_replacement_characters(spark, cfg):
    good = _rees46(400, DAY)
    latin = [f"{DAY.isoformat()} 10:00:00 UTC,view,9{i},1,,Café,3.5,9,s9" for i in range(2)]
    body = ("\n".join([REES46_HEADER, *good]) + "\n").encode() + ("\n".join(latin) + "\n").encode("latin-1")
    _deliver(cfg, {"2026-Jan.csv": body}, source="rees46")
    report = clean_day(spark, cfg, DAY, source="rees46")
    assert report.quarantined == {"malformed_line": 2} and report.n_events == 400
    validate_events(cfg, DAY)


def _refused_by_cleaning() -> dict[str, bytes]:
    teleports = [f"{DAY.isoformat()}T11:00:{i:02d}Z,u{i},i{i},c1,teleport,-5.0,s{i},,," for i in range(20)]
    return {"events.csv": _synthetic([*_csv_rows(DAY, 50), *teleports])}


@pytest.mark.parametrize(
    ("first", "refusal"),
    [
        (_refused_by_cleaning(), (CleaningError, r"'unknown_event_type': 20")),
        ({"events.csv.gz": _truncated_gzip()}, (RawFormatError, r"events.csv.gz is not a complete .gz file")),
        ({"events.csv": _synthetic(_csv_rows(DAY, 600))}, None),
    ],
    ids=["refused_by_cleaning", "refused_by_the_loader", "accepted_then_corrected"],
)
def test_corrected_redelivery_replaces_the_day_once_and_keeps_the_old_raw(spark, cfg, first, refusal):
    _deliver(cfg, first)
    if refusal is None:
        assert clean_day(spark, cfg, DAY).n_events == 600
    else:
        with pytest.raises(refusal[0], match=refusal[1]):
            clean_day(spark, cfg, DAY)
        assert not events_partition(cfg, DAY).exists()
    incoming = incoming_partition(cfg, "synthetic", DAY)
    for stale in incoming.iterdir():
        stale.unlink()
    corrected = _synthetic(_csv_rows(DAY, 400))
    (incoming / "events.csv").write_bytes(corrected)
    with pytest.raises(
        RawConflictError, match=r"python -m tasks.land --day 2026-01-05 --source synthetic --redeliver$"
    ):
        land_day(cfg, DAY)

    report = land_day(cfg, DAY, redeliver=True, reason="corrected export")
    assert (raw_partition(cfg, "synthetic", DAY) / "events.csv").read_bytes() == corrected
    (kept,) = superseded_copies(cfg, "synthetic", DAY)
    assert kept == report.superseded
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == first
    record = json.loads(redelivery_record(kept).read_text())
    assert record["reason"] == "corrected export" and set(record["superseded_sha256"]) == set(first)

    for _ in range(2):  # cleaning the re-delivered day (twice: a retry) leaves exactly the corrected rows
        cleaned = clean_day(spark, cfg, DAY)
        assert (cleaned.n_raw, cleaned.n_events, cleaned.quarantined) == (400, 400, {})
        assert spark.read.parquet(str(events_partition(cfg, DAY))).count() == 400
        assert not quarantine_partition(cfg, DAY).exists()
    validate_events(cfg, DAY)
