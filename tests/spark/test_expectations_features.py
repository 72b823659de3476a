"""Features gate: a partition built by spark_jobs.features passes; each broken property fails naming itself."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml
from pyspark.sql import functions as F

from expectations.features import labels_present, partition
from expectations.runner import DataQualityError
from spark_jobs import features as features_job
from spark_jobs.validate import main, validate_features
from tests.helpers.config import isolated_config
from tests.helpers.events import random_events, write_events_layer

START = dt.date(2026, 1, 1)
DS = dt.date(2026, 1, 9)
BROKEN = dt.date(2026, 1, 20)
UNLABELLED = dt.date(2026, 1, 21)
BROKEN_SCHEMA = dt.date(2026, 1, 22)


def small(cfg):
    values = {"lookback_days": 7, "windows_days": [1, 3, 7], "sequence_length": 5, "item_buckets": 16}
    # new_user_days must stay one of the shorter windows (config rule, checked when a CLI reloads it).
    return cfg.model_copy(
        update={
            "features": cfg.features.model_copy(update=values),
            "training": cfg.training.model_copy(update={"new_user_days": 3}),
        }
    )


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """One labelled features partition built by the real job, shared by the tests (each writes other days)."""
    cfg = small(isolated_config(tmp_path_factory.mktemp("features_gate") / "var"))
    write_events_layer(cfg, random_events(40, START, 9, seed=3))
    report = features_job.run(cfg, DS, spark=spark)
    assert report.with_labels and report.n_users >= cfg.quality.constant_check_min_rows
    return cfg


def test_built_partition_passes(spark, built):
    assert labels_present(partition(built, DS)) is True
    summary = validate_features(built, DS)
    assert summary.success, summary.describe()
    # 11 base checks (each per-column property is one SQL check), 2 label checks, the personal-data check of
    # the texts, the constant-column checks.
    assert built.text.enabled
    assert summary.n_expectations == 14 + len(built.quality.non_constant_features)


def test_each_broken_property_is_named(spark, built):
    cfg = built
    df = spark.read.parquet(str(partition(cfg, DS)))
    first = df.orderBy("user_id").first()["user_id"]
    second = df.orderBy(F.col("user_id").desc()).first()["user_id"]
    is_first, is_second = F.col("user_id") == first, F.col("user_id") == second
    broken = (
        df.withColumn("f_view_1d", F.when(is_first, F.lit(-1.0)).otherwise(F.col("f_view_1d")))
        .withColumn("f_cart_3d", F.when(is_first, F.lit(1e6)).otherwise(F.col("f_cart_3d")))
        .withColumn("f_recency_view", F.when(is_second, F.lit(99.0)).otherwise(F.col("f_recency_view")))
        .withColumn("f_weekend_share", F.when(is_second, F.lit(1.5)).otherwise(F.col("f_weekend_share")))
        .withColumn("f_price_mean", F.when(is_second, F.lit(None)).otherwise(F.col("f_price_mean")))
        .withColumn("seq_hour", F.when(is_first, F.array_repeat(F.lit(1), 6)).otherwise(F.col("seq_hour")))
        # Texts that escaped cleaning's scrub: an e-mail address and a phone number in a query.
        .withColumn(
            "seq_text",
            F.when(
                is_second,
                F.transform("seq_text", lambda x: F.concat(x, F.lit(" mail ann.lee@example.com or +44 20 7946 0958"))),
            ).otherwise(F.col("seq_text")),
        )
        .withColumn(
            "cand_f_uc_share", F.when(is_second, F.array().cast("array<double>")).otherwise(F.col("cand_f_uc_share"))
        )
        .withColumn("f_recency_any", F.lit(2.0))
        .withColumn("label_purchase", F.lit(1))
    )
    broken = broken.unionByName(broken.where(is_second))
    broken.coalesce(1).write.mode("overwrite").parquet(str(partition(cfg, BROKEN)))

    with pytest.raises(DataQualityError) as err:
        validate_features(cfg, BROKEN)
    failed = {(f.expectation, f.kwargs.get("column")) for f in err.value.summary.failures}
    queries = {
        f.kwargs["unexpected_rows_query"].split("*/")[0] + "*/": f
        for f in err.value.summary.failures
        if f.expectation == "unexpected_rows_expectation"
    }
    assert failed == {
        ("expect_column_values_to_be_unique", "user_id"),
        ("expect_column_mean_to_be_between", "label_purchase"),
        ("expect_column_unique_value_count_to_be_between", "f_recency_any"),
        ("unexpected_rows_expectation", None),
    }
    assert set(queries) == {
        "/* feature values outside their range */",
        "/* null fraction above quality.max_feature_null_fraction=0.0 */",
        "/* a shorter window counts more events than a longer one */",
        "/* sequence arrays of unequal length or outside [1, 5] */",
        "/* candidate arrays of unequal length */",
        "/* texts that match a cleaning.pii_patterns pattern (personal data past cleaning) */",
    }
    pii = queries["/* texts that match a cleaning.pii_patterns pattern (personal data past cleaning) */"].sample_rows
    assert {(r["user_id"], r["pattern"]) for r in pii} == {(second, "email"), (second, "phone")}
    out_of_range = {r["column"]: r for r in queries["/* feature values outside their range */"].sample_rows}
    assert queries["/* feature values outside their range */"].observed == 3
    assert set(out_of_range) == {"f_view_1d", "f_recency_view", "f_weekend_share"}
    nulls = queries["/* null fraction above quality.max_feature_null_fraction=0.0 */"].sample_rows
    assert [r["column"] for r in nulls] == ["f_price_mean"] and nulls[0]["example_user"] == second
    lengths = queries["/* sequence arrays of unequal length or outside [1, 5] */"].sample_rows
    assert [(r["user_id"], r["n_hour"]) for r in lengths] == [(first, 6)]
    candidates = queries["/* candidate arrays of unequal length */"].sample_rows
    assert {r["user_id"] for r in candidates} == {second} and candidates[0]["candidates"] >= 1
    message = str(err.value)
    assert "'column': 'f_recency_view', 'rows': 2, 'min': 99.0, 'max': 99.0, 'lo': 0.0, 'hi': 8.0" in message
    assert "expect_column_mean_to_be_between(column=label_purchase" in message and "observed 1.0" in message
    assert "expect_column_unique_value_count_to_be_between(column=f_recency_any, min_value=2): observed 1" in message


def test_unlabelled_partition_needs_null_labels_and_cli_exits_65(spark, built, tmp_path, capsys):
    from tasks.errors import EXIT_DATA_ERROR, run_cli

    cfg = built
    df = spark.read.parquet(str(partition(cfg, DS)))
    unlabelled = df.select(
        *[F.lit(None).cast("int").alias(c) if c.startswith("label_") else F.col(c) for c in df.columns]
    )
    unlabelled.coalesce(1).write.mode("overwrite").parquet(str(partition(cfg, UNLABELLED)))
    assert labels_present(partition(cfg, UNLABELLED)) is False
    assert validate_features(cfg, UNLABELLED).success

    broken = unlabelled.withColumn("label_cart", F.lit(1)).drop("f_trend_1d_vs_7d")
    broken.coalesce(1).write.mode("overwrite").parquet(str(partition(cfg, BROKEN_SCHEMA)))
    config = tmp_path / "features-gate.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump()))
    argv = ["features", "--day", BROKEN_SCHEMA.isoformat(), "--config", str(config)]
    assert run_cli(lambda: main(argv)) == EXIT_DATA_ERROR
    err = capsys.readouterr().err
    assert "DATA ERROR (DataQualityError)" in err and "expect_table_columns_to_match_ordered_list" in err
    assert "/* labels present although the partition has no label window */" in err and "'label_cart': 1" in err
