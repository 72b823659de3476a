"""The feature job's work in DuckDB SQL, the yardstick of bench features_vs_duckdb: the core aggregates
(window counts, recencies) in DuckDB and in Spark, the whole job in DuckDB, and the check that two outputs
hold the same values (shared with tests/spark/test_bench_features.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tasks.config import PipelineConfig
from tasks.schema import (
    CANDIDATE_ARRAY_CATEGORY,
    CANDIDATE_ARRAY_PREFIX,
    CANDIDATE_CATEGORY_COLUMN,
    EVENT_TYPES,
    LABEL_COLUMNS,
    USER_CATEGORY_LABEL,
    user_category_columns,
)


def duckdb_core_sql(cfg: PipelineConfig, files: list[Path], ds: dt.date, out: Path) -> str:
    """User-level window counts per event type for every window and recency per type (and any), over the
    lookback of ``ds``, written to ``out`` as Parquet: the core aggregates of spark_jobs.features."""
    from spark_jobs.features import cutoff_instant, local_midnight_utc

    fcfg, tz = cfg.features, cfg.pipeline.timezone
    cut = cutoff_instant(ds, tz)
    start = local_midnight_utc(ds - dt.timedelta(days=fcfg.lookback_days), tz)
    never = float(fcfg.lookback_days + 1)

    def ts(x: dt.datetime) -> str:
        return f"TIMESTAMPTZ '{x.isoformat()}'"

    sel = [
        f"CAST(count(*) FILTER (WHERE event_type = '{t}' AND event_time >= "
        f"{ts(local_midnight_utc(ds - dt.timedelta(days=w), tz))}) AS DOUBLE) AS f_{t}_{w}d"
        for w in fcfg.windows_days
        for t in EVENT_TYPES
    ]
    sel += [
        f"coalesce((epoch_us({ts(cut)}) - max(epoch_us(event_time)) FILTER (WHERE event_type = '{t}')) "
        f"/ 86400000000.0, {never}) AS f_recency_{t}"
        for t in EVENT_TYPES
    ]
    sel.append(f"coalesce((epoch_us({ts(cut)}) - max(epoch_us(event_time))) / 86400000000.0, {never}) AS f_recency_any")
    types = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    file_list = ", ".join(f"'{f}'" for f in files)
    return (
        f"COPY (SELECT user_id, {', '.join(sel)} FROM read_parquet([{file_list}]) "
        f"WHERE event_time >= {ts(start)} AND event_time < {ts(cut)} AND user_id IS NOT NULL "
        f"AND event_type IN ({types}) GROUP BY user_id) TO '{out}' (FORMAT parquet)"
    )


def spark_core(spark, cfg: PipelineConfig, files: list[Path], ds: dt.date, out: Path) -> None:
    """The same core aggregates as ``duckdb_core_sql`` with the Spark DataFrame API (no sequences,
    sessions or user x category rows): separates the engine's cost from the job's extra work."""
    from pyspark.sql import functions as F

    from spark_jobs.features import cutoff_instant, local_midnight_utc

    fcfg, tz = cfg.features, cfg.pipeline.timezone
    cut = cutoff_instant(ds, tz)
    start = local_midnight_utc(ds - dt.timedelta(days=fcfg.lookback_days), tz)
    never = float(fcfg.lookback_days + 1)
    us = F.unix_micros("event_time")
    ev = spark.read.parquet(*[str(f) for f in files]).where(
        (F.col("event_time") >= F.lit(start))
        & (F.col("event_time") < F.lit(cut))
        & F.col("user_id").isNotNull()
        & F.col("event_type").isin(*EVENT_TYPES)
    )
    aggs = [
        F.sum(
            F.when(
                (F.col("event_type") == t)
                & (F.col("event_time") >= F.lit(local_midnight_utc(ds - dt.timedelta(days=w), tz))),
                1,
            ).otherwise(0)
        )
        .cast("double")
        .alias(f"f_{t}_{w}d")
        for w in fcfg.windows_days
        for t in EVENT_TYPES
    ]
    cut_us = F.lit(int(cut.timestamp() * 1_000_000))
    aggs += [
        F.coalesce(
            (cut_us - F.max(F.when(F.col("event_type") == t, us))) / F.lit(86_400_000_000.0), F.lit(never)
        ).alias(f"f_recency_{t}")
        for t in EVENT_TYPES
    ]
    aggs.append(F.coalesce((cut_us - F.max(us)) / F.lit(86_400_000_000.0), F.lit(never)).alias("f_recency_any"))
    ev.groupBy("user_id").agg(*aggs).write.mode("overwrite").parquet(str(out))


def duckdb_job(cfg: PipelineConfig, files: list[Path], ds: dt.date, out: Path, threads: int) -> tuple[int, int]:
    """The whole feature job of ``ds`` in DuckDB SQL, for an equal-work comparison with the Spark job.

    The same outputs as spark_jobs.features.run: user rows (f_* columns, sequences, candidate arrays, labels)
    and (user, category) rows with the category label, from tests.reference.features_duckdb's SQL, each
    written to Parquet (``out``/user.parquet, ``out``/user_category.parquet) and then counted, as the
    Spark driver counts its partitions. ``files`` are the lookback and label days. Returns (users,
    user x category rows).
    """
    import duckdb

    from spark_jobs.features import cutoff_instant
    from tests.reference.features_duckdb import (
        category_labels_sql,
        labels_sql,
        user_category_sql,
        user_features_sql,
    )

    fcfg, tz = cfg.features, cfg.pipeline.timezone
    cut = cutoff_instant(ds, tz)
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": threads})
    try:
        con.execute("SET TimeZone = 'UTC'")
        file_list = ", ".join(f"'{f}'" for f in files)
        con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet([{file_list}])")
        # Native forms of the reference's Python functions: the gap bucket exactly (bit length of 1 + s);
        # the item bucket with DuckDB's own 64-bit string hash: the work of Spark's xxhash64, other values.
        cap = fcfg.gap_bucket_cap
        con.execute(f"CREATE MACRO ref_gap_bucket(s) AS CAST(least(length(bin(1 + s)), {cap}) AS INTEGER)")
        con.execute(f"CREATE MACRO ref_item_bucket(s) AS CAST(1 + hash(s) % {fcfg.item_buckets} AS INTEGER)")
        uc_file = out / "user_category.parquet"
        con.execute(
            f"COPY (SELECT f.*, CAST(coalesce(l.{USER_CATEGORY_LABEL}, 0) AS INTEGER) AS {USER_CATEGORY_LABEL} "
            f"FROM ({user_category_sql(cut, fcfg, tz)}) f "
            f"LEFT JOIN ({category_labels_sql(cut, fcfg.horizon_days, tz)}) l USING (user_id, category_id)) "
            f"TO '{uc_file}' (FORMAT parquet)"
        )
        n_uc = con.execute(f"SELECT count(*) FROM read_parquet('{uc_file}')").fetchone()[0]
        # Each user's candidates as parallel arrays ordered by category id, from the rows just written, as the
        # Spark job packs them (spark_jobs.features.attach_candidates).
        order = f"ORDER BY {CANDIDATE_CATEGORY_COLUMN} NULLS FIRST"
        arrays = [f"list({CANDIDATE_CATEGORY_COLUMN} {order}) AS {CANDIDATE_ARRAY_CATEGORY}"] + [
            f"list(CAST({c} AS DOUBLE) {order}) AS {CANDIDATE_ARRAY_PREFIX}{c}" for c in user_category_columns(fcfg)
        ]
        packed = f"SELECT user_id, {', '.join(arrays)} FROM read_parquet('{uc_file}') GROUP BY user_id"
        labels = ", ".join(f"CAST(coalesce(l.{c}, 0) AS INTEGER) AS {c}" for c in LABEL_COLUMNS)
        con.execute(
            f"COPY (SELECT f.*, c.* EXCLUDE (user_id), {labels} FROM ({user_features_sql(cut, fcfg, tz)}) f "
            f"LEFT JOIN ({packed}) c USING (user_id) "
            f"LEFT JOIN ({labels_sql(cut, fcfg.horizon_days, tz)}) l USING (user_id)) "
            f"TO '{out / 'user.parquet'}' (FORMAT parquet)"
        )
        sums = ", ".join(f"sum({c})" for c in LABEL_COLUMNS)
        n_users = con.execute(f"SELECT count(*), {sums} FROM read_parquet('{out / 'user.parquet'}')").fetchone()[0]
    finally:
        con.close()
    return n_users, n_uc


def compare_job(duck: Path, spark: Path, key: list[str], columns: list[str] | None = None) -> dict[str, int]:
    """Per column, the rows where DuckDB's output and the Spark job's differ (f_* doubles: by more than
    1e-9 relative, for the order of floating-point sums), over the rows joined on ``key``; raises when the
    two outputs do not hold the same keys. ``columns`` defaults to all of the Spark job's but
    seq_item_bucket, which the two engines hash differently."""
    import duckdb

    con = duckdb.connect()
    try:
        d, s = f"read_parquet('{duck}')", f"read_parquet('{spark}/*.parquet', hive_partitioning = false)"
        if columns is None:
            every = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {s}").fetchall()]
            columns = [c for c in every if c not in key and c != "seq_item_bucket"]
        n_d = con.execute(f"SELECT count(*) FROM {d}").fetchone()[0]
        n_s = con.execute(f"SELECT count(*) FROM {s}").fetchone()[0]
        n_j = con.execute(f"SELECT count(*) FROM {d} d JOIN {s} s USING ({', '.join(key)})").fetchone()[0]
        if not n_d == n_s == n_j:
            raise RuntimeError(f"feature rows differ: duckdb {n_d}, spark {n_s}, joined on {key} {n_j}")
        checks = {
            c: (
                f"abs(d.{c} - s.{c}) > 1e-9 * greatest(abs(s.{c}), 1)"
                if c.startswith("f_")
                else f"d.{c} IS DISTINCT FROM s.{c}"
            )
            for c in columns
        }
        counts = con.execute(
            "SELECT "
            + ", ".join(f"count(*) FILTER (WHERE {cond})" for cond in checks.values())
            + f" FROM {d} d JOIN {s} s USING ({', '.join(key)})"
        ).fetchone()
    finally:
        con.close()
    return dict(zip(checks, counts, strict=True))


def core_columns(cfg: PipelineConfig) -> list[str]:
    return [f"f_{t}_{w}d" for w in cfg.features.windows_days for t in EVENT_TYPES] + [
        f"f_recency_{t}" for t in (*EVENT_TYPES, "any")
    ]
