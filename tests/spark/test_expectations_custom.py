"""ExpectCompoundKeyDuplicatesToBeAtMost: the same count as GX's compound-columns uniqueness, its threshold,
null keys, exact counts when distinct keys share a hash, the examples it reports (only when asked), and the
count started ahead of GX (taken once, its errors reported, cancelled when left running)."""

from __future__ import annotations

import random
import threading
import time

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
import pytest
from pyspark.sql import functions as F

from expectations import custom
from expectations.custom import ExpectCompoundKeyDuplicatesToBeAtMost
from expectations.runner import validate_dataframe

KEY = ["k1", "k2"]


def _rows(seed: int, n: int) -> list[tuple]:
    rng = random.Random(seed)
    # Few distinct values, so keys repeat 0..many times; some null key parts.
    return [(rng.choice(["a", "b", "c", None]), rng.randrange(6), rng.random()) for _ in range(n)]


def _run(spark, cfg, rows, *expectations):
    df = spark.createDataFrame(rows, "k1 string, k2 int, v double")
    suite = gx.ExpectationSuite(name="dups", expectations=list(expectations))
    return validate_dataframe(df, suite, name="dups", gx_dir=cfg.paths.gx_dir)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_count_as_gx_compound_columns_unique(spark, cfg, seed):
    rows = _rows(seed, 60)
    # Both fail (nothing allowed), so both report their unexpected row counts.
    summary = _run(
        spark,
        cfg,
        rows,
        ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=KEY, ignore_row_if="any_value_is_missing"),
    )
    counts = {f.expectation: f.unexpected_count for f in summary.failures}
    pdf = pd.DataFrame(rows, columns=["k1", "k2", "v"]).dropna(subset=KEY)
    expected = int(pdf.duplicated(subset=KEY, keep=False).sum())
    assert expected > 0
    assert counts == {
        "expect_compound_key_duplicates_to_be_at_most": expected,
        "expect_compound_columns_to_be_unique": expected,
    }


def test_threshold_null_keys_and_example(spark, cfg):
    unique = [(f"u{i}", i, 0.0) for i in range(98)]
    # 2 of 100 rows share a key; rows with a null key part never count (the not-null checks report them).
    rows = unique + [("dup", 1, 0.0), ("dup", 1, 1.0), (None, 5, 0.0), (None, 5, 0.0)]
    at = lambda f: ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY, max_fraction=f)  # noqa: E731
    assert _run(spark, cfg, rows, at(0.02)).success
    failed = _run(spark, cfg, rows, at(0.019))
    (f,) = failed.failures
    assert f.unexpected_count == 2 and f.unexpected_percent == pytest.approx(2 / 102 * 100)
    assert f.observed == {
        "duplicate_rows": 2,
        "duplicate_keys": 1,
        "most_repeated": {"key": {"k1": "dup", "k2": "1"}, "rows": 2},
    }
    assert "most_repeated" in failed.describe() or "'key': {'k1': 'dup'" in failed.describe()


def test_clean_and_empty_frames_pass(spark, cfg):
    assert _run(
        spark, cfg, [(f"u{i}", i, 0.0) for i in range(10)], ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY)
    ).success
    assert _run(spark, cfg, [], ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY)).success


def test_missing_key_column_is_a_failure_naming_it(spark, cfg):
    summary = _run(spark, cfg, _rows(0, 5), ExpectCompoundKeyDuplicatesToBeAtMost(column_list=["k1", "nope"]))
    (f,) = summary.failures
    assert f.exception == "key column(s) ['nope'] not in the batch (its columns: ['k1', 'k2', 'v'])"
    assert "raised key column(s)" in summary.describe()


def _expected(rows) -> tuple[int, int, list[dict]]:
    pdf = pd.DataFrame(rows, columns=["k1", "k2", "v"]).dropna(subset=KEY)
    sizes = pdf.groupby(KEY).size()
    sizes = sizes[sizes > 1].reset_index(name="n").sort_values(["n", *KEY], ascending=[False, True, True])
    examples = [{"key": {"k1": r.k1, "k2": str(r.k2)}, "rows": r.n} for r in sizes.itertuples()]
    return int(sizes["n"].sum()), len(sizes), examples


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_when_distinct_keys_share_the_first_hash(spark, monkeypatch, seed):
    # A first hash with 3 values: nearly every group of it mixes distinct keys, which must be told apart.
    monkeypatch.setattr(custom, "key_hash", lambda key: F.pmod(F.hash(*key), F.lit(3)).cast("long"))
    rows = _rows(seed, 80)
    df = spark.createDataFrame(rows, "k1 string, k2 int, v double")
    n_rows, n_keys, examples = _expected(rows)
    assert custom.spark_duplicate_rows(df, KEY) == {"rows": n_rows, "keys": n_keys}
    assert custom.spark_duplicate_examples(df, KEY, 3) == examples[:3]


def test_examples_of_a_heavily_duplicated_batch_group_the_whole_batch(spark, monkeypatch):
    monkeypatch.setattr(custom, "EXACT_LOOKUP_MAX_HASHES", 1)
    rows = _rows(3, 80)
    _, _, examples = _expected(rows)
    assert len(examples) > 1
    df = spark.createDataFrame(rows, "k1 string, k2 int, v double")
    assert custom.spark_duplicate_examples(df, KEY, 2) == examples[:2]


def test_examples_only_when_samples_are_asked_for(spark):
    rows = _rows(4, 60)
    n_rows, n_keys, examples = _expected(rows)
    df = spark.createDataFrame(rows, "k1 string, k2 int, v double")
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_spark("spark")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    expectation = ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY)
    counts_only = batch.validate(expectation, result_format={"result_format": "BASIC", "partial_unexpected_count": 0})
    assert counts_only.result["observed_value"] == {"duplicate_rows": n_rows, "duplicate_keys": n_keys}
    assert counts_only.result["partial_unexpected_list"] == []
    sampled = batch.validate(expectation, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 2})
    assert sampled.result["observed_value"]["most_repeated"] == examples[0]
    assert sampled.result["partial_unexpected_list"] == examples[:2]


@pytest.mark.parametrize("seed", [0, 1])
def test_pandas_engine_counts_alike(seed):
    # The metric's pandas implementation, through GX's pandas data source (no Spark).
    pdf = pd.DataFrame(_rows(seed, 60), columns=["k1", "k2", "v"])
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("pandas")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": pdf})
    )
    result = batch.validate(ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY))
    expected = pdf.dropna(subset=KEY)
    expected = expected[expected.duplicated(subset=KEY, keep=False)]
    assert not result.success and result.result["unexpected_count"] == len(expected) > 0
    top = result.result["observed_value"]["most_repeated"]
    assert top["rows"] == expected.groupby(KEY).size().max()


def test_validation_takes_the_count_started_ahead(spark, cfg, monkeypatch):
    threads: list[str] = []
    real = custom.spark_duplicate_rows

    def spy(df, key):
        threads.append(threading.current_thread().name)
        return real(df, key)

    monkeypatch.setattr(custom, "spark_duplicate_rows", spy)
    rows = [(f"u{i}", i, 0.0) for i in range(20)] + [("u1", 1, 5.0)]
    summary = _run(spark, cfg, rows, ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY, max_fraction=0.1))
    assert summary.success
    # Counted once, on the background thread, and nothing is left waiting to be taken.
    assert threads == ["compound-key-duplicates"]
    assert not custom._AHEAD
    failed = _run(spark, cfg, rows, ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY))
    assert [f.observed["duplicate_rows"] for f in failed.failures] == [2]


def test_a_count_that_fails_in_spark_is_reported(spark, cfg, monkeypatch):
    failing = spark.range(1).select(F.raise_error(F.lit("shuffle fetch failed")).alias("rows"), F.lit(0).alias("keys"))
    real = custom.spark_duplicate_rows
    monkeypatch.setattr(custom, "spark_duplicate_rows", lambda df, key: real(failing, ["rows"]))
    summary = _run(spark, cfg, _rows(0, 10), ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY))
    (f,) = summary.failures
    assert not summary.success and "shuffle fetch failed" in f.exception


def test_a_count_left_running_is_cancelled(spark, monkeypatch):
    started: list = []
    real = custom._count_in_background
    monkeypatch.setattr(custom, "_count_in_background", lambda *a: started.append(real(*a)) or started[-1])
    # One task of 200 rows at 0.1 s each: 20 s unless cancelled.
    slow = F.udf(lambda i: time.sleep(0.1) or str(i), "string")
    df = spark.range(200, numPartitions=1).select(slow("id").alias("k1"), F.lit(1).alias("k2"))
    suite = gx.ExpectationSuite(name="slow", expectations=[ExpectCompoundKeyDuplicatesToBeAtMost(column_list=KEY)])
    with pytest.raises(RuntimeError, match="GX failed"), custom.duplicates_counted_ahead(df, suite):
        deadline = time.monotonic() + 30
        while not spark.sparkContext.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError("GX failed before it took the count")
    (count,) = started
    with pytest.raises(Exception, match="cancel"):
        count.result(timeout=15)
    assert not custom._AHEAD
