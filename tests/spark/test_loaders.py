"""Raw loaders on real rows of the shared samples and a RetailRocket fixture: mapping, time zones, corruption."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from spark_jobs.loaders import RAW_EXTRA_COLUMNS, RETAILROCKET_CATEGORY, RawFormatError, read_raw
from tasks.schema import EVENT_COLUMNS
from tests.conftest import shared_data

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
UTC = dt.UTC


def _head(src: Path, dst: Path, n: int, extra: str = "") -> str:
    with src.open() as fh:
        lines = [next(fh) for _ in range(n)]
    dst.write_text("".join(lines) + extra)
    return str(dst)


def _utc(ts) -> dt.datetime:
    # Collected timestamps are naive in the session time zone, which build_session fixes to UTC.
    return ts.replace(tzinfo=UTC)


def test_output_columns_are_canonical_plus_raw(spark, tmp_path):
    path = _head(shared_data("taobao_userbehavior_sample.csv"), tmp_path / "t.csv", 5)
    df = read_raw(spark, "taobao", [path])
    assert df.columns == [*EVENT_COLUMNS, *RAW_EXTRA_COLUMNS]
    assert dict(df.dtypes)["event_time"] == "timestamp" and dict(df.dtypes)["price"] == "double"


def test_taobao_real_rows(spark, tmp_path):
    path = _head(shared_data("taobao_userbehavior_sample.csv"), tmp_path / "t.csv", 400)
    rows = read_raw(spark, "taobao", [path]).collect()
    assert len(rows) == 400
    first = rows[0]
    assert (first.user_id, first.item_id, first.category_id, first.event_type) == ("1", "2268318", "2520377", "view")
    assert _utc(first.event_time) == dt.datetime.fromtimestamp(1511544070, UTC)
    # 1511544070 is 2017-11-25 01:21:10 in China but still 2017-11-24 in UTC: days must use Asia/Shanghai.
    shanghai = _utc(first.event_time).astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert shanghai.date() == dt.date(2017, 11, 25) and _utc(first.event_time).date() == dt.date(2017, 11, 24)
    assert {r.raw_event_type for r in rows} <= {"pv", "cart", "fav", "buy"}
    mapping = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}
    assert all(r.event_type == mapping[r.raw_event_type] for r in rows)
    assert all(r.corrupt_record is None and r.price is None for r in rows)


def test_rees46_real_rows(spark, tmp_path):
    path = _head(shared_data("rees46_2019oct_sample.csv"), tmp_path / "r.csv", 600)
    rows = read_raw(spark, "rees46", [path]).collect()
    assert len(rows) == 599
    r = rows[0]
    assert _utc(r.event_time) == dt.datetime(2019, 10, 1, tzinfo=UTC)
    assert (r.user_id, r.item_id, r.category_id, r.brand, r.price) == (
        "541312140",
        "44600062",
        "2103807459595387724",
        "shiseido",
        35.79,
    )
    assert r.category_code is None and r.session_id == "72d76fde-8bb3-4e00-8c23-a032dfed738c"
    assert rows[1].category_code == "appliances.environment.water_heater"
    assert {x.event_type for x in rows} <= {"view", "cart", "purchase"}
    assert all(x.corrupt_record is None and x.event_time is not None for x in rows)


def test_rees46_remove_from_cart_has_no_canonical_type(spark, tmp_path):
    src = tmp_path / "r.csv"
    src.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-10-01 00:00:05 UTC,remove_from_cart,1,2,,,1.00,3,s\n"
    )
    (row,) = read_raw(spark, "rees46", [str(src)]).collect()
    assert row.event_type is None and row.raw_event_type == "remove_from_cart"


def test_retailrocket_fixture(spark):
    rows = read_raw(spark, "retailrocket", [str(FIXTURES / "retailrocket_events.csv")]).collect()
    assert len(rows) == 15
    first = rows[0]
    assert _utc(first.event_time) == dt.datetime.fromtimestamp(1433221332.117, UTC)
    assert (first.user_id, first.item_id, first.category_id) == ("257597", "355908", RETAILROCKET_CATEGORY)
    by_raw = {r.raw_event_type: r.event_type for r in rows}
    assert by_raw["addtocart"] == "cart" and by_raw["transaction"] == "purchase" and by_raw["event_x"] is None
    assert next(r for r in rows if r.raw_event_time == "not_a_time").event_time is None
    assert any(r.user_id is None for r in rows)


def test_synthetic_canonical_csv(spark, tmp_path):
    src = tmp_path / "events.csv"
    src.write_text(
        ",".join(EVENT_COLUMNS) + "\n"
        "2026-01-01T08:15:02Z,1,10,5,cart,12.50,1-1,red shoe,acme,apparel.shoes\n"
        "2026-01-01T08:16:02Z,1,10,5,purchase,12.50,1-1,,,\n"
    )
    a, b = read_raw(spark, "synthetic", [str(src)]).orderBy("event_time").collect()
    assert _utc(a.event_time) == dt.datetime(2026, 1, 1, 8, 15, 2, tzinfo=UTC)
    assert (a.query, a.brand, a.category_code, a.price) == ("red shoe", "acme", "apparel.shoes", 12.5)
    assert b.query is None and b.event_type == "purchase"


def test_truncated_last_line_and_extra_fields_are_flagged(spark, tmp_path):
    path = _head(
        shared_data("taobao_userbehavior_sample.csv"),
        tmp_path / "t.csv",
        3,
        extra="1,2268318,252,pv,1511544070,9\n1,46259",
    )
    rows = read_raw(spark, "taobao", [path]).collect()
    assert len(rows) == 5
    flagged = [r.corrupt_record for r in rows if r.corrupt_record is not None]
    assert flagged == ["1,2268318,252,pv,1511544070,9", "1,46259"]


def test_binary_file_is_flagged_not_dropped(spark, tmp_path):
    blob = tmp_path / "blob.csv"
    blob.write_bytes(b"PAR1\x00\x15\x04\x15\x80\x01\n\x00\x01\x02garbage\x00\n")
    rows = read_raw(spark, "taobao", [str(blob)]).collect()
    assert rows and all(r.corrupt_record is not None for r in rows)


def test_wrong_header_names_file_and_missing_column(spark, tmp_path):
    src = tmp_path / "rr.csv"
    src.write_text("timestamp,visitorid,event,transactionid\n1433221332117,1,view,\n")
    with pytest.raises(RawFormatError, match=r"rr.csv.*missing column\(s\): itemid"):
        read_raw(spark, "retailrocket", [str(src)])


def test_unknown_source_and_missing_path(spark, tmp_path):
    with pytest.raises(ValueError, match="unknown raw source format 'nope'"):
        read_raw(spark, "nope", [str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_raw(spark, "rees46", [str(tmp_path / "missing.csv")])


REES46_HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"


def _synthetic(tmp_path: Path, *lines: str) -> str:
    src = tmp_path / "events.csv"
    src.write_text("".join(f"{line}\n" for line in (",".join(EVENT_COLUMNS), *lines)))
    return str(src)


def test_rfc4180_doubled_quotes_are_one_quote(spark, tmp_path):
    src = _synthetic(
        tmp_path,
        '2026-01-01T08:15:02Z,1,10,5,view,1.00,1-1,"U""Q",acme,',
        '2026-01-01T08:16:02Z,1,11,5,view,1.00,1-1,"a ""b"", c",acme,',
        "2026-01-01T08:17:02Z,1,12,5,view,1.00,1-1,back\\slash,acme,",
    )
    rows = read_raw(spark, "synthetic", [src]).orderBy("event_time").collect()
    assert [r.query for r in rows] == ['U"Q', 'a "b", c', "back\\slash"]
    assert all(r.corrupt_record is None for r in rows)
    rees = tmp_path / "r.csv"
    rees.write_text(REES46_HEADER + '2019-10-01 00:00:05 UTC,view,1,2,,"Dr. ""Q""",1.00,3,s\n')
    (row,) = read_raw(spark, "rees46", [str(rees)]).collect()
    assert row.brand == 'Dr. "Q"' and row.corrupt_record is None


def test_zone_text_only_unambiguous_forms(spark, tmp_path):
    shanghai = dt.datetime(2019, 9, 30, 16, tzinfo=UTC)
    accepted = {
        "UTC": dt.datetime(2019, 10, 1, tzinfo=UTC),
        "GMT": dt.datetime(2019, 10, 1, tzinfo=UTC),
        "+08:00": shanghai,
        "GMT+08:00": shanghai,
        "Asia/Shanghai": shanghai,
    }
    refused = ["CST", "IST", "BST", "EST", "PST", "cst"]
    src = tmp_path / "r.csv"
    src.write_text(
        REES46_HEADER + "".join(f"2019-10-01 00:00:00 {z},view,1,2,,,1.00,{z},s\n" for z in [*accepted, *refused])
    )
    rows = {r.user_id: r for r in read_raw(spark, "rees46", [str(src)]).collect()}
    assert {z: _utc(rows[z].event_time) for z in accepted} == accepted
    assert {z: rows[z].event_time for z in refused} == dict.fromkeys(refused)
    syn = _synthetic(
        tmp_path,
        "2026-01-01T08:00:00Z,z,10,5,view,1.00,1-1,,,",
        "2026-01-01T08:00:00+0800,offset,10,5,view,1.00,1-1,,,",
        "2026-01-01T08:00:00CST,cst,10,5,view,1.00,1-1,,,",
    )
    got = {r.user_id: r.event_time for r in read_raw(spark, "synthetic", [syn]).collect()}
    assert _utc(got["z"]) == dt.datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert _utc(got["offset"]) == dt.datetime(2026, 1, 1, 0, tzinfo=UTC)
    assert got["cst"] is None
