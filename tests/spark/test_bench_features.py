"""bench.duckdb_features.duckdb_job writes what the Spark job writes, and compare_job catches a difference."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from bench.duckdb_features import compare_job, duckdb_job
from spark_jobs import features as F
from tasks.layers import events_partition
from tests.helpers.events import random_events, write_events_layer


@pytest.fixture
def both_jobs(spark, cfg, tmp_path):
    c = cfg.model_copy(
        update={
            "features": cfg.features.model_copy(
                update={"lookback_days": 7, "windows_days": [1, 3, 7], "sequence_length": 5, "horizon_days": 1}
            ),
            "pipeline": cfg.pipeline.model_copy(update={"timezone": "America/New_York"}),
            # The DuckDB job computes no text columns.
            "text": cfg.text.model_copy(update={"enabled": False}),
        }
    )
    days = write_events_layer(c, random_events(20, dt.date(2026, 3, 2), 10, seed=5, tz="America/New_York"))
    ds = dt.date(2026, 3, 10)
    report = F.run(c, ds, spark=spark)
    files = sorted(f for d in days for f in events_partition(c, d).glob("*.parquet"))
    counts = duckdb_job(c, files, ds, tmp_path / "duck", threads=1)
    return report, counts, tmp_path / "duck"


def test_duckdb_job_writes_what_the_spark_job_writes(both_jobs):
    report, (n_users, n_uc), out = both_jobs
    assert report.with_labels and (n_users, n_uc) == (report.n_users, report.n_user_category_rows)
    user = compare_job(out / "user.parquet", report.path, ["user_id"])
    pairs = compare_job(out / "user_category.parquet", report.user_category_path, ["user_id", "category_id"])
    assert {"f_sessions", "seq_gap_prev_bucket", "label_purchase"} <= user.keys()
    assert "seq_item_bucket" not in user
    assert "label_purchase_in_category" in pairs
    assert not any(user.values()) and not any(pairs.values()), (user, pairs)


def test_compare_job_counts_differing_rows_and_refuses_other_keys(both_jobs, tmp_path):
    report, _, out = both_jobs
    con = duckdb.connect()
    first = con.execute(f"SELECT min(user_id) FROM read_parquet('{out / 'user.parquet'}')").fetchone()[0]
    con.execute(
        f"COPY (SELECT * REPLACE (CASE WHEN user_id = '{first}' THEN f_sessions + 1 ELSE f_sessions END AS f_sessions, "
        f"CASE WHEN user_id = '{first}' THEN [] ELSE seq_hour END AS seq_hour) "
        f"FROM read_parquet('{out / 'user.parquet'}')) TO '{tmp_path / 'changed.parquet'}' (FORMAT parquet)"
    )
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{out / 'user.parquet'}') WHERE user_id <> '{first}') "
        f"TO '{tmp_path / 'fewer.parquet'}' (FORMAT parquet)"
    )
    con.close()
    diffs = compare_job(tmp_path / "changed.parquet", report.path, ["user_id"])
    assert {k: v for k, v in diffs.items() if v} == {"f_sessions": 1, "seq_hour": 1}
    with pytest.raises(RuntimeError, match="feature rows differ"):
        compare_job(tmp_path / "fewer.parquet", report.path, ["user_id"])
