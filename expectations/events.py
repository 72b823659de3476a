"""Expectation suite of one canonical events partition (events/dt=<day>/), checked after cleaning.

Besides schema, nulls, event types, time bounds and prices, it bands the day's row count around the
median of the trailing ``cleaning.volume_lookback_days`` partitions (read from Parquet footers, so the
band costs no Spark job): a 10x spike or a near-empty day fails. A small fraction of rows may share an
event key (real logs record the same click twice with different details), bounded by
``cleaning.max_duplicate_key_fraction``.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe

from expectations.custom import ExpectCompoundKeyDuplicatesToBeAtMost
from tasks.config import PipelineConfig
from tasks.layers import events_partition
from tasks.partitions import parquet_rows
from tasks.schema import EVENT_COLUMNS, EVENT_KEY, EVENT_TYPES, MAX_PRICE, REQUIRED_EVENT_COLUMNS

# Spark SQL type names of tasks.schema.EVENT_COLUMNS as GX reports them for a Spark DataFrame.
SPARK_TYPES = {"timestamp": "TimestampType", "string": "StringType", "double": "DoubleType"}


def partition(cfg: PipelineConfig, day: dt.date) -> Path:
    return events_partition(cfg, day)


def day_bounds(cfg: PipelineConfig, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the local day as naive UTC datetimes (Spark sessions run in UTC)."""
    tz = cfg.pipeline.tz
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz).astimezone(dt.UTC)
    return start.replace(tzinfo=None), end.replace(tzinfo=None)


def volume_band(cfg: PipelineConfig, day: dt.date) -> tuple[int, int] | None:
    """(min, max) rows allowed for ``day``, or None while too few earlier partitions exist."""
    counts = [
        n
        for i in range(1, cfg.cleaning.volume_lookback_days + 1)
        if (n := parquet_rows(partition(cfg, day - dt.timedelta(days=i)))) is not None
    ]
    if len(counts) < cfg.cleaning.volume_min_history:
        return None
    median, factor = statistics.median(counts), cfg.cleaning.volume_band_factor
    return max(1, math.ceil(median / factor)), math.floor(median * factor)


def build_suite(cfg: PipelineConfig, day: dt.date, first_day: dt.date | None = None) -> gx.ExpectationSuite:
    """The suite of partition ``day``; with ``first_day``, of the partitions first_day..day read as one frame
    (a backfill checked at once): timestamps may then fall anywhere in those days and the per-day volume
    band is left out."""
    if first_day is not None and first_day > day:
        raise ValueError(f"first_day {first_day} is after day {day}")
    start, end = day_bounds(cfg, first_day or day)[0], day_bounds(cfg, day)[1]
    # Built from a list: adding to a suite one by one would need a live GX context.
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=list(EVENT_COLUMNS)),
    ]
    expectations += [
        gxe.ExpectColumnValuesToBeOfType(column=column, type_=SPARK_TYPES[sql_type])
        for column, sql_type in EVENT_COLUMNS.items()
    ]
    expectations += [gxe.ExpectColumnValuesToNotBeNull(column=column) for column in REQUIRED_EVENT_COLUMNS]
    expectations += [
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToBeBetween(
            column="event_time",
            min_value=start.isoformat(sep=" "),
            max_value=end.isoformat(sep=" "),
            strict_max=True,
        ),
        # Cleaning quarantines these as bad_price; the bound here stops an inf written by any other path.
        gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=MAX_PRICE),
        # GX's ExpectCompoundColumnsToBeUnique(mostly=...) gives the same count at about twice the cost.
        ExpectCompoundKeyDuplicatesToBeAtMost(
            column_list=list(EVENT_KEY), max_fraction=cfg.cleaning.max_duplicate_key_fraction
        ),
    ]
    band = volume_band(cfg, day) if first_day in (None, day) else None
    if band is not None:
        expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=band[0], max_value=band[1]))
    span = day.isoformat() if first_day in (None, day) else f"{first_day.isoformat()}_{day.isoformat()}"
    return gx.ExpectationSuite(name=f"events_{span}", expectations=expectations)
