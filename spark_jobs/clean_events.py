"""Clean one day of raw events into the canonical events layer; reject bad rows to quarantine with a reason.

Pure part: ``tag_reasons`` gives every row its first matching ``tasks.schema.QUARANTINE_REASONS`` entry
and ``clean`` splits rows into events and quarantine. Exact duplicate events (equal on every canonical
column) are dropped from the events and counted in the report as ``n_duplicates``; they are not quarantined
(the first copy is a valid event, so nothing is lost), but more than ``cleaning.max_duplicate_fraction``
of them (a repeated delivery) fails the run. A price that is present but not a number, or a row with
text that was not valid UTF-8 (decoded by Spark as U+FFFD), makes the row a ``malformed_line``; a
non-finite price or one above ``tasks.schema.MAX_PRICE`` is a ``bad_price``. Tagged rows then go through
``scrub_pii``, which replaces personal data in free text (``cleaning.pii_patterns``: e-mail addresses,
card-like digit runs, phone numbers) by ``[NAME]``, and ``split`` every column of a malformed line, so
neither the events nor the quarantine hold it; the report counts the rows whose free text a pattern
changed (``scrubbed``).

Driver: reads ``raw/source=<source>/dt=<day>/``, writes ``events/dt=<day>/`` and ``quarantine/dt=<day>/``
(Parquet, dynamic partition overwrite: a rerun replaces exactly its partition). When the bad fraction
(reasons outside ``NON_ERROR_REASONS``, over all raw rows) exceeds ``cleaning.max_bad_fraction``, the
quarantine is written for inspection, the events partition is not, and ``CleaningError`` is raised.

    python -m spark_jobs.clean_events --day 2026-01-02
    spark-submit spark_jobs/clean_events.py --from 2026-01-01 --to 2026-01-14
    python -m spark_jobs.clean_events --import 2017-12-01 --source taobao --from 2017-11-25 --to 2017-12-01
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.loaders import CORRUPT_COLUMN, RAW_EXTRA_COLUMNS, read_raw, zone_abbreviation
from spark_jobs.session import build_session
from tasks.availability import require_raw_day
from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import DataError, run_cli
from tasks.layers import DAY_KEY, events_root, quarantine_partition, quarantine_root, raw_partition
from tasks.schema import (
    EVENT_COLUMNS,
    EXCLUDED_RAW_EVENT_TYPES,
    MAX_PRICE,
    NON_ERROR_REASONS,
    QUARANTINE_REASONS,
)

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = (*EVENT_COLUMNS, *RAW_EXTRA_COLUMNS, "reason")
# Free text that may carry what a user typed; ids, times and prices are checked by type, not scrubbed.
SCRUBBED_COLUMNS = ("query", "brand", "category_code", CORRUPT_COLUMN)
PII_FLAG = "pii_"


class CleaningError(DataError):
    """Too many bad rows (or no rows at all) in a raw partition; the events partition was not written."""


@dataclass(frozen=True)
class CleanReport:
    source: str
    days: tuple[dt.date, ...]
    n_raw: int
    n_events: int
    n_duplicates: int
    quarantined: dict[str, int] = field(default_factory=dict)
    n_bad: int = 0
    bad_fraction: float = 0.0
    events_written: bool = False
    scrubbed: dict[str, int] = field(default_factory=dict)

    @property
    def day(self) -> dt.date:
        return self.days[0]


def _blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def _not_utf8(df: DataFrame) -> Column:
    # Spark decodes bytes that are not UTF-8 (e.g. a latin-1 export) as U+FFFD instead of failing: a row
    # holding one lost its original text, so it is quarantined rather than cleaned with altered values.
    strings = [n for n, t in df.dtypes if t == "string"]
    return reduce(lambda a, b: a | b, [F.col(n).contains("\ufffd") for n in strings], F.lit(False))


def _aware(ts: dt.datetime, name: str) -> dt.datetime:
    if ts.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {ts.isoformat()})")
    return ts


def scrub_pii(
    df: DataFrame,
    patterns: Mapping[str, str],
    columns: tuple[str, ...] = SCRUBBED_COLUMNS,
    rows: Column | None = None,
) -> DataFrame:
    """Replace every match of each pattern (in order) in ``columns`` by ``[NAME]`` (only in ``rows`` when
    given) and add a boolean ``pii_<name>`` per pattern: whether it changed the row (``split`` drops it)."""
    present = [c for c in columns if c in df.columns]
    if not patterns or not present:
        return df
    # One scan of each value with all patterns at once; only the (rare) values it finds anything in go through
    # the patterns one by one. A column of its own, so the optimizer computes it once per value.
    any_pattern = "|".join(f"(?:{p})" for p in patterns.values())
    found = {c: f"{PII_FLAG}_in_{c}" for c in present}
    selected = F.lit(True) if rows is None else F.coalesce(rows, F.lit(False))
    for c, flag in found.items():
        df = df.withColumn(flag, selected & F.coalesce(F.col(c).rlike(any_pattern), F.lit(False)))
    for name, pattern in patterns.items():
        token = F.lit(f"[{name.upper()}]")
        hits = [F.col(flag) & F.coalesce(F.col(c).rlike(pattern), F.lit(False)) for c, flag in found.items()]
        df = df.withColumn(f"{PII_FLAG}{name}", reduce(Column.__or__, hits))
        for c, flag in found.items():
            df = df.withColumn(c, F.when(F.col(flag), F.regexp_replace(F.col(c), pattern, token)).otherwise(F.col(c)))
    return df.drop(*found.values())


def tag_reasons(
    df: DataFrame, day_start: dt.datetime, day_end: dt.datetime, logical_ts: dt.datetime | None
) -> DataFrame:
    """Add ``reason``: the first quarantine reason that applies to the row, null for a valid event.

    ``logical_ts`` None disables the future check (imports of a past export, where rows after the range
    are ``outside_partition``).
    """
    c = F.col
    start, end = F.lit(_aware(day_start, "day_start")), F.lit(_aware(day_end, "day_end"))
    checks: dict[str, Column] = {
        "malformed_line": (
            c(CORRUPT_COLUMN).isNotNull() | (c("raw_price").isNotNull() & c("price").isNull()) | _not_utf8(df)
        ),
        "null_user_id": _blank(c("user_id")),
        "null_item_id": _blank(c("item_id")),
        "null_category_id": _blank(c("category_id")),
        "ambiguous_time_zone": c("event_time").isNull() & zone_abbreviation(c("raw_event_time")).isNotNull(),
        "unparseable_timestamp": c("event_time").isNull(),
        "excluded_event_type": c("raw_event_type").isin(*EXCLUDED_RAW_EVENT_TYPES),
        "unknown_event_type": c("event_type").isNull(),
        # abs() of +-inf (and NaN, which Spark orders above every number) is above any bound.
        "bad_price": F.abs(c("price")) > MAX_PRICE,
        "negative_price": c("price") < 0,
        "future_timestamp": (
            c("event_time") >= F.lit(_aware(logical_ts, "logical_ts")) if logical_ts is not None else F.lit(False)
        ),
        "outside_partition": (c("event_time") < start) | (c("event_time") >= end),
    }
    assert tuple(checks) == QUARANTINE_REASONS, "reason checks must follow tasks.schema.QUARANTINE_REASONS"
    reason = F.lit(None).cast("string")
    for name, cond in reversed(checks.items()):
        reason = F.when(F.coalesce(cond, F.lit(False)), F.lit(name)).otherwise(reason)
    return df.withColumn("reason", reason)


def split(tagged: DataFrame, patterns: Mapping[str, str] | None = None) -> tuple[DataFrame, DataFrame]:
    """(events without exact duplicates, quarantine rows as strings) of a ``tag_reasons`` result. ``patterns``
    scrub every column of a ``malformed_line`` row, whose parser may have shifted typed text into any of
    them; the other quarantined rows keep their ids, times and prices, which say why they were rejected."""
    events = tagged.filter(F.col("reason").isNull()).select(*EVENT_COLUMNS).dropDuplicates()
    quarantine = tagged.filter(F.col("reason").isNotNull()).select(
        *[F.col(n).cast("string").alias(n) for n in QUARANTINE_COLUMNS]
    )
    if patterns:
        every_column = tuple(c for c in QUARANTINE_COLUMNS if c not in ("reason", "raw_file"))
        malformed = F.col("reason") == "malformed_line"
        quarantine = scrub_pii(quarantine, patterns, every_column, malformed).select(*QUARANTINE_COLUMNS)
    return events, quarantine


def clean(
    df: DataFrame, day_start: dt.datetime, day_end: dt.datetime, logical_ts: dt.datetime | None
) -> tuple[DataFrame, DataFrame]:
    """Canonical loader output -> (clean events, quarantine with ``reason``)."""
    return split(tag_reasons(df, day_start, day_end, logical_ts))


def local_midnight(cfg: PipelineConfig, day: dt.date) -> dt.datetime:
    """The day's midnight in ``pipeline.timezone``, as an aware UTC datetime."""
    return dt.datetime.combine(day, dt.time(), tzinfo=cfg.pipeline.tz).astimezone(dt.UTC)


def _read_day(spark: SparkSession, cfg: PipelineConfig, source: str, day: dt.date) -> DataFrame:
    require_raw_day(cfg, source, day)
    return read_raw(spark, source, [str(raw_partition(cfg, source, day))])


def _write_partitions(df: DataFrame, root: Path, partition_col: Column, sort_cols: tuple[str, ...] = ()) -> None:
    # Dynamic partition overwrite (set by build_session): only the partitions present in df are replaced.
    (
        df.withColumn(DAY_KEY, partition_col)
        .repartition(DAY_KEY)
        .sortWithinPartitions(DAY_KEY, *sort_cols)
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy(DAY_KEY)
        .parquet(str(root))
    )


def _write_quarantine(cfg: PipelineConfig, quarantine: DataFrame, n_quarantined: int, day: dt.date) -> None:
    if n_quarantined:
        _write_partitions(quarantine, quarantine_root(cfg), F.lit(day.isoformat()))
    else:
        # An empty DataFrame would replace nothing: drop a stale partition of an earlier run explicitly.
        shutil.rmtree(quarantine_partition(cfg, day), ignore_errors=True)


def _counts(tagged: DataFrame, patterns: Mapping[str, str]) -> tuple[dict[str | None, int], dict[str, int]]:
    """(rows per reason, rows scrubbed per pattern) in one pass."""
    flags = [f"{PII_FLAG}{name}" for name in patterns]
    rows = (
        tagged.groupBy("reason")
        .agg(F.count(F.lit(1)).alias("n"), *[F.sum(F.col(f).cast("long")).alias(f) for f in flags])
        .collect()
    )
    scrubbed = {name: sum(int(r[f] or 0) for r in rows) for name, f in zip(patterns, flags, strict=True)}
    return {r["reason"]: int(r["n"]) for r in rows}, {name: n for name, n in scrubbed.items() if n}


def _process(
    cfg: PipelineConfig,
    source: str,
    raw: DataFrame,
    days: tuple[dt.date, ...],
    logical_ts: dt.datetime | None,
    quarantine_day: dt.date,
    tolerated: tuple[str, ...] = (),
) -> CleanReport:
    tz = cfg.pipeline.timezone
    day_start, day_end = local_midnight(cfg, days[0]), local_midnight(cfg, days[-1] + dt.timedelta(days=1))
    patterns = cfg.cleaning.pii_patterns
    tagged = scrub_pii(tag_reasons(raw, day_start, day_end, logical_ts), patterns).persist()
    try:
        counts, scrubbed = _counts(tagged, patterns)
        n_raw = sum(counts.values())
        where = f"{source} {days[0]}" + (f"..{days[-1]}" if len(days) > 1 else "")
        if n_raw == 0:
            raise CleaningError(f"raw data of {where} holds no rows; refusing to write an empty events partition")
        quarantined = {r: counts[r] for r in QUARANTINE_REASONS if counts.get(r)}
        n_bad = sum(n for r, n in quarantined.items() if r not in NON_ERROR_REASONS and r not in tolerated)
        bad_fraction = n_bad / n_raw
        events, quarantine = split(tagged, patterns)
        _write_quarantine(cfg, quarantine, sum(quarantined.values()), quarantine_day)
        if bad_fraction > cfg.cleaning.max_bad_fraction:
            raise CleaningError(
                f"{where}: {n_bad} of {n_raw} raw rows are bad ({bad_fraction:.2%} > cleaning.max_bad_fraction "
                f"{cfg.cleaning.max_bad_fraction:.2%}); quarantined by reason: {quarantined}; events not written, "
                f"see {quarantine_partition(cfg, quarantine_day)}"
            )
        events = events.persist()
        try:
            n_events = events.count()
            if n_events == 0:
                raise CleaningError(f"{where}: no valid events among {n_raw} raw rows ({quarantined})")
            n_duplicates = n_raw - sum(quarantined.values()) - n_events
            if n_duplicates / n_raw > cfg.cleaning.max_duplicate_fraction:
                raise CleaningError(
                    f"{where}: {n_duplicates} of {n_raw} raw rows are exact duplicates ({n_duplicates / n_raw:.2%} > "
                    f"cleaning.max_duplicate_fraction {cfg.cleaning.max_duplicate_fraction:.2%}; was a delivery "
                    "repeated?); events not written"
                )
            local_day = F.date_format(F.from_utc_timestamp(F.col("event_time"), tz), "yyyy-MM-dd")
            _write_partitions(events, events_root(cfg), local_day, ("user_id", "event_time"))
        finally:
            events.unpersist()
        report = CleanReport(
            source=source,
            days=days,
            n_raw=n_raw,
            n_events=n_events,
            n_duplicates=n_duplicates,
            quarantined=quarantined,
            n_bad=n_bad,
            bad_fraction=bad_fraction,
            events_written=True,
            scrubbed=scrubbed,
        )
        log.info("cleaned %s: %s", where, report)
        return report
    finally:
        tagged.unpersist()


def clean_day(
    spark: SparkSession,
    cfg: PipelineConfig,
    day: dt.date,
    logical_date: dt.date | None = None,
    source: str | None = None,
) -> CleanReport:
    """Clean one landed day with an existing session (``run`` builds the session)."""
    source = source or cfg.pipeline.source
    logical_date = logical_date or day + dt.timedelta(days=1)
    raw = _read_day(spark, cfg, source, day)
    return _process(cfg, source, raw, (day,), local_midnight(cfg, logical_date), day)


def run(cfg: PipelineConfig, day: dt.date, logical_date: dt.date | None = None) -> CleanReport:
    """Nightly cleaning of ``day`` (logical date defaults to ``day + 1``; events at/after it are future)."""
    spark = build_session(cfg, f"clean_events {day}")
    return clean_day(spark, cfg, day, logical_date)


def run_range(cfg: PipelineConfig, first: dt.date, last: dt.date, source: str | None = None) -> list[CleanReport]:
    """Clean every landed day in [first, last] in one Spark session (history backfill); stops at a failure."""
    if last < first:
        raise ValueError(f"empty day range {first}..{last}")
    spark = build_session(cfg, f"clean_events {first}..{last}")
    n = (last - first).days + 1
    return [clean_day(spark, cfg, first + dt.timedelta(days=i), source=source) for i in range(n)]


def run_import(cfg: PipelineConfig, source: str, raw_dt: dt.date, first: dt.date, last: dt.date) -> CleanReport:
    """Split one multi-day raw partition (e.g. the landed Taobao sample) into events/dt=<day> for [first, last].

    Rows outside the range are quarantined as ``outside_partition`` and tolerated (selecting a range is the
    point of an import); all quarantined rows go to ``quarantine/dt=<raw_dt>``.
    """
    if last < first:
        raise ValueError(f"empty day range {first}..{last}")
    spark = build_session(cfg, f"clean_events import {source} {raw_dt}")
    raw = _read_day(spark, cfg, source, raw_dt)
    days = tuple(first + dt.timedelta(days=i) for i in range((last - first).days + 1))
    return _process(cfg, source, raw, days, None, raw_dt, tolerated=("outside_partition",))


def main(argv: list[str] | None = None) -> list[CleanReport]:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--day", type=parse_ds, help="clean this day (the nightly run cleans ds - 1)")
    parser.add_argument("--logical-date", type=parse_ds, help="with --day: the run's logical date (default day + 1)")
    parser.add_argument("--from", dest="first", type=parse_ds, help="first day of a range (with --to)")
    parser.add_argument("--to", dest="last", type=parse_ds, help="last day of a range (inclusive)")
    parser.add_argument("--import", dest="raw_dt", type=parse_ds, help="split the multi-day raw partition dt=RAW_DT")
    parser.add_argument("--source", help="raw source (default: pipeline.source)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.raw_dt is not None:
        if not (args.first and args.last and args.source):
            parser.error("--import needs --source, --from and --to")
        reports = [run_import(cfg, args.source, args.raw_dt, args.first, args.last)]
    elif args.day is not None:
        if args.first or args.last:
            parser.error("give either --day or --from/--to")
        # A day that was never landed stops before the driver JVM starts.
        require_raw_day(cfg, args.source or cfg.pipeline.source, args.day)
        spark = build_session(cfg, f"clean_events {args.day}")
        reports = [clean_day(spark, cfg, args.day, args.logical_date, args.source)]
    elif args.first and args.last:
        reports = run_range(cfg, args.first, args.last, args.source)
    else:
        parser.error("give --day D, or --from D1 --to D2, or --import RAW_DT")
    for r in reports:
        print(
            f"{r.source} {r.days[0]}..{r.days[-1]}: {r.n_events} events, {r.n_duplicates} duplicates removed, "
            f"quarantined {r.quarantined}"
        )
    return reports


if __name__ == "__main__":
    sys.exit(run_cli(main))
