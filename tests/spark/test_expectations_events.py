"""Events gate: a clean partition passes through GX on Spark; each broken property fails naming itself."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from expectations.events import build_suite
from expectations.runner import DataQualityError, check, validate_dataframe
from spark_jobs.validate import main, validate_events, validate_layer
from tasks.config import with_overrides
from tasks.layers import data_docs_site, events_partition
from tasks.schema import EVENT_COLUMNS

DAY = dt.date(2026, 1, 2)
SCHEMA = ", ".join(f"{c} {t}" for c, t in EVENT_COLUMNS.items())


def _event(hour=1, user="u1", item="i1", cat="c1", etype="view", price=2.5, t=None):
    return (t or dt.datetime(2026, 1, 2, hour), user, item, cat, etype, price, "s1", None, None, None)


def _write(spark, cfg, rows, schema=SCHEMA):
    path = events_partition(cfg, DAY)
    spark.createDataFrame(rows, schema).coalesce(1).write.mode("overwrite").parquet(str(path))
    return path


def test_good_partition_passes_and_builds_data_docs(spark, cfg):
    _write(spark, cfg, [_event(h, user=f"u{h}", price=None if h == 3 else 1.0) for h in range(24)])
    summary = validate_events(cfg, DAY)
    assert summary.success and summary.failures == () and summary.n_expectations >= 15
    assert summary.data_docs is not None and summary.data_docs.is_file()
    assert summary.data_docs.is_relative_to(cfg.paths.gx_dir)
    assert "passed" in summary.describe()


def test_non_finite_price_fails_the_gate(spark, cfg):
    rows = [_event(h, user=f"u{h}") for h in range(24)] + [_event(5, price=float("inf")), _event(6, price=1e300)]
    with pytest.raises(DataQualityError) as err:
        check(spark.createDataFrame(rows, SCHEMA), build_suite(cfg, DAY), name="events_inf", gx_dir=cfg.paths.gx_dir)
    failed = {(f.expectation, f.kwargs.get("column")) for f in err.value.summary.failures}
    assert failed == {("expect_column_values_to_be_between", "price")}
    assert "2 unexpected row(s)" in str(err.value)


def test_data_docs_index_lists_only_the_latest_results(spark, cfg):
    cfg = with_overrides(cfg, {"quality": {"data_docs_index_limit": 2}})
    _write(spark, cfg, [_event(h, user=f"u{h}") for h in range(24)])
    runs = [validate_events(cfg, DAY) for _ in range(3)]
    assert all(r.success for r in runs)
    site = data_docs_site(cfg.paths.gx_dir)
    pages = sorted(site.glob("validations/**/*.html"))
    listed = set(re.findall(r"validations/[^'\"]+?\.html", (site / "index.html").read_text()))
    # Every run keeps its stored result and page; the index names only the two latest.
    assert len(list((cfg.paths.gx_dir / "gx" / "uncommitted" / "validations").glob("**/*.json"))) == 3
    assert len(pages) == 3
    assert listed == {p.relative_to(site).as_posix() for p in pages[1:]}


def test_each_broken_property_is_named(spark, cfg):
    rows = [
        _event(1),
        _event(2, user=None),
        _event(3, item=None),
        _event(4, cat=None),
        _event(5, etype="click"),
        _event(6, price=-3.0),
        _event(t=dt.datetime(2026, 1, 3, 0, 0)),
        _event(t=dt.datetime(2026, 1, 1, 23, 59, 59)),
    ]
    df = spark.createDataFrame(rows, SCHEMA)
    with pytest.raises(DataQualityError) as err:
        check(df, build_suite(cfg, DAY), name="events_broken", gx_dir=cfg.paths.gx_dir)
    message = str(err.value)
    failed = {(f.expectation, f.kwargs.get("column")) for f in err.value.summary.failures}
    assert failed == {
        ("expect_column_values_to_not_be_null", "user_id"),
        ("expect_column_values_to_not_be_null", "item_id"),
        ("expect_column_values_to_not_be_null", "category_id"),
        ("expect_column_values_to_be_in_set", "event_type"),
        ("expect_column_values_to_be_between", "price"),
        ("expect_column_values_to_be_between", "event_time"),
    }
    assert "expect_column_values_to_be_in_set(column=event_type" in message and "'click'" in message
    assert "expect_column_values_to_be_between(column=price" in message and "-3.0" in message
    assert "column=event_time" in message and "2 unexpected row(s)" in message
    assert "row: {" in message and "Data Docs:" in message


def test_schema_and_type_breaks_are_named(spark, cfg):
    schema = SCHEMA.replace("price double", "price string").replace(", category_code string", "")
    df = spark.createDataFrame([_event()[:-1]], schema)
    summary = validate_dataframe(df, build_suite(cfg, DAY), name="events_schema", gx_dir=cfg.paths.gx_dir)
    assert not summary.success
    text = summary.describe()
    assert "expect_table_columns_to_match_ordered_list" in text
    assert "expect_column_values_to_be_of_type(column=price, type_=DoubleType)" in text
    assert "expect_column_values_to_be_of_type(column=category_code" in text


def test_empty_and_missing_partition_fail_clearly(spark, cfg):
    with pytest.raises(DataQualityError, match=r"events/dt=2026-01-02 is missing or empty"):
        validate_events(cfg, DAY)
    _write(spark, cfg, [])
    with pytest.raises(DataQualityError, match=r"expect_table_row_count_to_be_between\(min_value=1\): observed 0"):
        main(["events", "--day", DAY.isoformat(), "--config", str(_config_file(cfg))])


def test_unknown_layer_is_rejected(cfg):
    with pytest.raises(ValueError, match="no expectation suite for layer 'nope'"):
        validate_layer(cfg, "nope", DAY)


def _config_file(cfg):
    import yaml

    from tasks.config import DEFAULT_CONFIG

    merged = yaml.safe_load(DEFAULT_CONFIG.read_text())
    merged["paths"] = {"var_dir": str(cfg.paths.var), "incoming_dir": str(cfg.paths.incoming)}
    path = cfg.paths.var / "test-config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(merged))
    return path


def _write_day(spark, cfg, day: dt.date, n: int) -> None:
    rows = [_event(t=dt.datetime.combine(day, dt.time(h % 24, h // 24)), user=f"u{h}") for h in range(n)]
    path = events_partition(cfg, day)
    spark.createDataFrame(rows, SCHEMA).coalesce(1).write.mode("overwrite").parquet(str(path))


def test_volume_band_needs_history(spark, cfg):
    from expectations.events import volume_band

    assert volume_band(cfg, DAY) is None
    for i, n in enumerate((10, 12, 30), start=1):
        _write_day(spark, cfg, DAY - dt.timedelta(days=i), n)
    # median 12, band factor 5 -> [ceil(12 / 5), 12 * 5]
    assert volume_band(cfg, DAY) == (3, 60)
    assert volume_band(cfg, DAY + dt.timedelta(days=7)) is None


def test_volume_spike_and_duplicate_keys_fail(spark, cfg):
    for i in range(1, 4):
        _write_day(spark, cfg, DAY - dt.timedelta(days=i), 6)
    # 6-row median -> at most 30 rows; 40 rows where each event is recorded twice under one key.
    rows = [_event(t=dt.datetime(2026, 1, 2, h % 24), user=f"u{h}", price=float(p)) for h in range(20) for p in (1, 2)]
    _write(spark, cfg, rows)
    with pytest.raises(DataQualityError) as err:
        validate_events(cfg, DAY)
    failed = {f.expectation: f for f in err.value.summary.failures}
    assert set(failed) == {"expect_table_row_count_to_be_between", "expect_compound_key_duplicates_to_be_at_most"}
    message = str(err.value)
    assert "expect_table_row_count_to_be_between(min_value=2, max_value=30): observed 40" in message
    assert (
        "expect_compound_key_duplicates_to_be_at_most(column_list=['event_time', 'user_id', 'item_id', "
        "'event_type'], max_fraction=0.001): 40 unexpected row(s) (100%), e.g. values [{'key': {'event_time': "
    ) in message
    # 20 keys with 2 rows each; one of them is the example.
    observed = failed["expect_compound_key_duplicates_to_be_at_most"].observed
    assert observed["duplicate_rows"] == 40 and observed["duplicate_keys"] == 20
    assert observed["most_repeated"]["rows"] == 2 and observed["most_repeated"]["key"]["item_id"] == "i1"


def test_range_suite_checks_several_days_as_one_frame(spark, cfg):
    first = DAY - dt.timedelta(days=1)
    rows = [_event(t=dt.datetime(2026, 1, 1, 5)), _event(t=dt.datetime(2026, 1, 2, 5), user="u2")]
    df = spark.createDataFrame(rows, SCHEMA)
    assert validate_dataframe(df, build_suite(cfg, DAY, first), name="events_range", gx_dir=cfg.paths.gx_dir).success
    one_day = validate_dataframe(df, build_suite(cfg, DAY), name="events_one_day", gx_dir=cfg.paths.gx_dir)
    assert [f.kwargs.get("column") for f in one_day.failures] == ["event_time"]
    with pytest.raises(ValueError, match="first_day 2026-01-03 is after day 2026-01-02"):
        build_suite(cfg, DAY, DAY + dt.timedelta(days=1))


def _spark_jobs(spark, fn):
    group = f"test-{id(fn)}"
    spark.sparkContext.setJobGroup(group, group)
    try:
        out = fn()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    return out, len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def test_samples_are_fetched_only_for_failed_expectations(spark, cfg):
    clean = spark.createDataFrame([_event(h, user=f"u{h}") for h in range(24)], SCHEMA).cache()
    broken = spark.createDataFrame([_event(1), _event(2, etype="click")], SCHEMA).cache()
    clean.count(), broken.count()
    ok, clean_jobs = _spark_jobs(
        spark,
        lambda: validate_dataframe(clean, build_suite(cfg, DAY), name="events_clean_jobs", gx_dir=cfg.paths.gx_dir),
    )
    bad, broken_jobs = _spark_jobs(
        spark,
        lambda: validate_dataframe(broken, build_suite(cfg, DAY), name="events_broken_jobs", gx_dir=cfg.paths.gx_dir),
    )
    assert ok.success and not bad.success
    # The failed expectation's rerun adds its sample queries; a clean frame needs none of them.
    assert clean_jobs < broken_jobs
    (failure,) = bad.failures
    assert failure.sample_values == ("click",) and failure.sample_rows[0]["event_type"] == "click"
