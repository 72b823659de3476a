"""Cleaning: one test per quarantine reason, duplicates, partition-scoped reruns, the bad-fraction gate, imports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spark_jobs.clean_events import CleaningError, clean, clean_day, local_midnight, run_import, run_range
from spark_jobs.loaders import RawFormatError, read_raw
from tasks.land import land_day, land_file
from tasks.layers import events_partition, incoming_partition, layer_root, quarantine_partition, raw_partition
from tasks.partitions import parquet_files
from tasks.schema import EVENT_COLUMNS, QUARANTINE_REASONS
from tests.conftest import shared_data

UTC = dt.UTC
DAY = dt.date(2026, 1, 2)
HEADER = ",".join(EVENT_COLUMNS)


def _row(t="2026-01-02T10:00:00Z", user="1", item="10", cat="5", etype="view", price="3.50", extra=""):
    return f"{t},{user},{item},{cat},{etype},{price},s1,,,{extra}"


def _good(n: int, day: dt.date = DAY) -> list[str]:
    return [
        _row(t=f"{day.isoformat()}T{h % 24:02d}:{(h * 7) % 60:02d}:{h % 60:02d}Z", user=str(h % 13), item=str(h))
        for h in range(n)
    ]


def _raw(cfg, lines: list[str], day: dt.date = DAY, source: str = "synthetic") -> Path:
    folder = raw_partition(cfg, source, day)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    return folder


def _with(cfg, **cleaning):
    return cfg.model_copy(update={"cleaning": cfg.cleaning.model_copy(update=cleaning)})


CASES = {
    "malformed_line": "2026-01-02T10:00:00Z,1,10",
    "null_user_id": _row(user="", t="garbage"),
    "null_item_id": _row(item=""),
    "null_category_id": _row(cat=" "),
    "ambiguous_time_zone": _row(t="2026-01-02T10:00:00 CST"),
    "unparseable_timestamp": _row(t="2026-01-02 10:00"),
    "excluded_event_type": _row(etype="remove_from_cart"),
    "unknown_event_type": _row(etype="click"),
    "bad_price": _row(price="1e999"),
    "negative_price": _row(price="-0.01"),
    "future_timestamp": _row(t="2026-01-03T00:00:00Z"),
    "outside_partition": _row(t="2026-01-01T23:59:59Z"),
}


@pytest.mark.parametrize("reason", QUARANTINE_REASONS)
def test_each_reason(spark, cfg, tmp_path, reason):
    folder = _raw(cfg, [_row(), CASES[reason]])
    df = read_raw(spark, "synthetic", [str(folder)])
    events, quarantine = clean(
        df,
        local_midnight(cfg, DAY),
        local_midnight(cfg, DAY + dt.timedelta(days=1)),
        local_midnight(cfg, DAY + dt.timedelta(days=1)),
    )
    assert events.count() == 1
    rows = quarantine.collect()
    assert [r.reason for r in rows] == [reason]
    assert all(isinstance(v, str) or v is None for v in rows[0])


def test_wrong_typed_price_is_malformed(spark, cfg):
    df = read_raw(spark, "synthetic", [str(_raw(cfg, [_row(price="abc")]))])
    _, quarantine = clean(df, local_midnight(cfg, DAY), local_midnight(cfg, DAY + dt.timedelta(days=1)), None)
    (row,) = quarantine.collect()
    assert row.reason == "malformed_line" and row.raw_price == "abc"


def test_naive_boundaries_rejected(spark, cfg):
    df = read_raw(spark, "synthetic", [str(_raw(cfg, [_row()]))])
    with pytest.raises(ValueError, match="day_start must be timezone-aware"):
        clean(df, dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 3, tzinfo=UTC), None)


def test_day_writes_events_quarantine_and_counts_duplicates(spark, cfg):
    _raw(cfg, [*_good(200), _row(), _row(), _row(etype="remove_from_cart")])
    report = clean_day(spark, cfg, DAY)
    assert report.events_written and report.n_raw == 203
    assert report.n_duplicates == 1 and report.n_events == 201
    assert report.quarantined == {"excluded_event_type": 1} and report.n_bad == 0
    events = spark.read.parquet(str(layer_root(cfg, "events") / "dt=2026-01-02"))
    assert events.count() == 201 and events.columns == list(EVENT_COLUMNS)
    assert dict(events.dtypes) == EVENT_COLUMNS
    # INT64 microseconds in UTC (spark_jobs.session); Spark's legacy INT96 would read back as timestamp[ns].
    (part,) = parquet_files(layer_root(cfg, "events") / "dt=2026-01-02")
    assert pq.read_schema(part).field("event_time").type == pa.timestamp("us", tz="UTC")
    q = spark.read.parquet(str(layer_root(cfg, "quarantine") / "dt=2026-01-02")).collect()
    assert [r.reason for r in q] == ["excluded_event_type"]


def test_rerun_replaces_only_its_partition(spark, cfg):
    other = DAY - dt.timedelta(days=1)
    _raw(cfg, _good(50, other), day=other)
    _raw(cfg, _good(80))
    run_range(cfg.model_copy(), other, DAY)
    before = sorted(p.name for p in events_partition(cfg, other).iterdir())
    assert clean_day(spark, cfg, DAY).n_events == 80
    # Raw is immutable in production; rewritten here only to prove the rerun replaces the partition.
    _raw(cfg, _good(30))
    assert clean_day(spark, cfg, DAY).n_events == 30
    assert spark.read.parquet(str(events_partition(cfg, DAY))).count() == 30
    assert spark.read.parquet(str(events_partition(cfg, other))).count() == 50
    assert sorted(p.name for p in events_partition(cfg, other).iterdir()) == before


def test_too_many_bad_rows_fail_and_write_no_events(spark, cfg):
    _raw(cfg, [*_good(20), _row(user=""), _row(price="-5")])
    with pytest.raises(CleaningError, match=r"2 of 22 raw rows are bad.*null_user_id': 1.*negative_price': 1"):
        clean_day(spark, cfg, DAY)
    assert not events_partition(cfg, DAY).exists()
    q = spark.read.parquet(str(quarantine_partition(cfg, DAY)))
    assert sorted(r.reason for r in q.collect()) == ["negative_price", "null_user_id"]
    relaxed = _with(cfg, max_bad_fraction=0.2)
    assert clean_day(spark, relaxed, DAY).n_events == 20


def test_excluded_rows_do_not_count_as_bad(spark, cfg):
    _raw(cfg, [*_good(5), *[_row(etype="remove_from_cart", item=str(i)) for i in range(5)]])
    report = clean_day(spark, cfg, DAY)
    assert report.n_bad == 0 and report.quarantined == {"excluded_event_type": 5}


def test_missing_and_empty_raw_partition(spark, cfg):
    with pytest.raises(FileNotFoundError, match="source=synthetic/dt=2026-01-02"):
        clean_day(spark, cfg, DAY)
    _raw(cfg, [])
    with pytest.raises(CleaningError, match="holds no rows"):
        clean_day(spark, cfg, DAY)
    assert not events_partition(cfg, DAY).exists()


def test_day_boundaries_use_pipeline_timezone(spark, cfg):
    sh = cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={"timezone": "Asia/Shanghai"})})
    # Shanghai day 2026-01-02 is [2026-01-01T16:00Z, 2026-01-02T16:00Z).
    _raw(
        sh,
        [
            _row(t="2026-01-01T16:00:00Z"),
            _row(t="2026-01-02T15:59:59Z"),
            _row(t="2026-01-01T15:59:59Z"),
            _row(t="2026-01-02T16:00:00Z"),
        ],
    )
    with pytest.raises(CleaningError, match="'future_timestamp': 1, 'outside_partition': 1"):
        clean_day(spark, sh, DAY)
    report = clean_day(spark, _with(sh, max_bad_fraction=0.5), DAY)
    assert report.n_events == 2
    assert report.quarantined == {"future_timestamp": 1, "outside_partition": 1}


def test_import_real_taobao_sample_into_days(spark, cfg, tmp_path):
    sample = shared_data("taobao_userbehavior_sample.csv")
    sh = cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={"timezone": "Asia/Shanghai"})})
    land_file(sh, "taobao", sample, dt.date(2017, 12, 1))
    report = run_import(sh, "taobao", dt.date(2017, 12, 1), dt.date(2017, 11, 25), dt.date(2017, 12, 1))
    assert report.n_raw == 61453
    assert set(report.quarantined) <= {"outside_partition"} and 0 < report.quarantined["outside_partition"] < 200
    days = sorted(p.name for p in layer_root(sh, "events").glob("dt=*"))
    assert days == [f"dt=2017-11-{d}" for d in range(25, 31)] + ["dt=2017-12-01"]
    first = spark.read.parquet(str(layer_root(sh, "events") / "dt=2017-11-25"))
    bounds = first.selectExpr("min(event_time) lo", "max(event_time) hi").first()
    assert bounds.lo.replace(tzinfo=UTC) >= dt.datetime(2017, 11, 24, 16, tzinfo=UTC)
    assert bounds.hi.replace(tzinfo=UTC) < dt.datetime(2017, 11, 25, 16, tzinfo=UTC)
    total = spark.read.parquet(str(layer_root(sh, "events"))).count()
    assert total == report.n_events == 61453 - report.quarantined["outside_partition"] - report.n_duplicates


# Bad inputs through the real stages (land -> clean): each fails naming the problem and writes no events.
def _deliver(cfg, body: bytes | str, name: str = "events.csv", source: str = "synthetic") -> None:
    folder = incoming_partition(cfg, source, DAY)
    folder.mkdir(parents=True, exist_ok=True)
    data = body.encode() if isinstance(body, str) else body
    (folder / name).write_bytes(data)
    land_day(cfg, DAY, source)


def _csv(lines: list[str], header: str = HEADER) -> str:
    return "\n".join([header, *lines]) + "\n"


BAD_INPUTS = {
    "missing_column": (
        _csv(["2026-01-02T10:00:00Z,1,10,5,view,s1,,,"], HEADER.replace(",price", "")),
        RawFormatError,
        r"missing column\(s\): price",
    ),
    "wrong_type": (
        _csv([*_good(20), *[_row(price="cheap", item=str(i)) for i in range(3)]]),
        CleaningError,
        "malformed_line': 3",
    ),
    "null_user_ids": (
        _csv([*_good(20), *[_row(user="", item=str(i)) for i in range(3)]]),
        CleaningError,
        "null_user_id': 3",
    ),
    "unknown_event_type": (_csv([*_good(20), _row(etype="click")]), CleaningError, "unknown_event_type': 1"),
    "negative_prices": (_csv([*_good(20), _row(price="-1")]), CleaningError, "negative_price': 1"),
    "duplicated_events": (_csv(_good(20) * 2), CleaningError, "20 of 40 raw rows are exact duplicates"),
    "future_timestamps": (_csv([*_good(20), _row(t="2026-01-05T00:00:00Z")]), CleaningError, "future_timestamp': 1"),
    "empty_partition": (_csv([]), CleaningError, "holds no rows"),
    "not_csv": (b"PAR1\x00\x15\x04\x15\x80\x01binary\x00\n", RawFormatError, "is not a synthetic CSV"),
    "truncated_last_line": (_csv(_good(20))[:-20], CleaningError, "malformed_line': 1"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_clearly_and_writes_no_events(spark, cfg, case):
    body, error, message = BAD_INPUTS[case]
    _deliver(cfg, body)
    with pytest.raises(error, match=message):
        clean_day(spark, cfg, DAY)
    assert not events_partition(cfg, DAY).exists()


def test_headerless_source_not_csv_is_malformed(spark, cfg):
    _deliver(cfg, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\n\x01\x02", name="dump.csv", source="taobao")
    with pytest.raises(CleaningError, match="malformed_line"):
        clean_day(spark, cfg, DAY, source="taobao")
    assert not events_partition(cfg, DAY).exists()


# What users type into a search box when they paste their own details; each case: (query, what is stored).
PII_QUERIES = [
    ("email me at john.doe+shop@example.co.uk pls", "email me at [EMAIL] pls"),
    ("refund card 4111 1111 1111 1111", "refund card [CARD]"),
    ("4111-1111-1111-1111 expired", "[CARD] expired"),
    ("call 415-555-0132 for delivery", "call [PHONE] for delivery"),
    ("+44 20 7946 0958", "[PHONE]"),
    ("+1 (415) 555-0132 or li.wei@mail.cn", "[PHONE] or [EMAIL]"),
    ("13800138000", "[PHONE]"),
]
PLAIN_QUERIES = ["iphone 15 pro max 256gb", "samsung 65 inch tv 2024", "size 10 12 14", "rtx 4090 24gb", "sm-g991b"]


def test_personal_data_is_scrubbed_from_events_and_quarantine_and_counted(spark, cfg):
    queries = [q for q, _ in PII_QUERIES] + PLAIN_QUERIES
    lines = [
        f"2026-01-02T10:{i:02d}:00Z,{i},{100 + i},5,view,1.0,s{i},{q},,electronics.smartphone"
        for i, q in enumerate(queries)
    ]
    malformed = "2026-01-02T11:00:00Z,99,bob@example.com"
    _raw(cfg, [*_good(200), *lines, malformed])
    report = clean_day(spark, _with(cfg, max_bad_fraction=0.05), DAY)
    assert report.scrubbed == {"email": 3, "card": 2, "phone": 4}  # the malformed line holds the third e-mail
    stored = dict(
        spark.read.parquet(str(events_partition(cfg, DAY)))
        .where("query is not null")
        .select("user_id", "query")
        .collect()
    )
    assert [stored[str(i)] for i in range(len(queries))] == [s for _, s in PII_QUERIES] + PLAIN_QUERIES
    (q,) = spark.read.parquet(str(quarantine_partition(cfg, DAY))).collect()
    assert q.reason == "malformed_line" and "bob@" not in str(q.asDict()) and "[EMAIL]" in str(q.asDict())


def test_no_patterns_leave_text_as_typed(spark, cfg):
    _raw(cfg, [*_good(50), "2026-01-02T10:00:00Z,1,10,5,view,1.0,s1,mail a@b.io,,"])
    report = clean_day(spark, _with(cfg, pii_patterns={}), DAY)
    assert report.scrubbed == {}
    queries = spark.read.parquet(str(events_partition(cfg, DAY))).where("query is not null").collect()
    assert [r.query for r in queries] == ["mail a@b.io"]
