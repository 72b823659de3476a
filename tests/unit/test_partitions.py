"""Footer row counts: what Spark's reader would read, None for a missing partition."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.partitions import parquet_rows


def test_counts_rows_of_the_files_spark_reads(tmp_path):
    part = tmp_path / "ds=2026-01-02"
    part.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), part / "part-0.parquet")
    pq.write_table(pa.table({"x": [4]}), part / "part-1.parquet")
    # Hidden and underscore files (a writer's leftovers, _SUCCESS) are skipped by Spark, so here too.
    pq.write_table(pa.table({"x": [9, 9]}), part / "_temporary.parquet")
    pq.write_table(pa.table({"x": [9, 9]}), part / ".part-2.parquet")
    (part / "_SUCCESS").write_text("")
    assert parquet_rows(part) == 4


def test_missing_or_empty_partition_is_none(tmp_path):
    assert parquet_rows(tmp_path / "nope") is None
    (tmp_path / "empty").mkdir()
    assert parquet_rows(tmp_path / "empty") is None
