"""Point-in-time user features and labels from the canonical events layer.

For a cutoff ``ds`` (a midnight in ``pipeline.timezone``) a feature row reads only events in
``[ds - lookback_days, ds)`` and its labels only events in ``[ds, ds + horizon_days)``; all window
boundaries are local midnights, so a window of N days is N calendar days of the events layer.

The transforms (``user_features``, ``labels``, ``build_features``, ``user_category_features``) are
pure DataFrame -> DataFrame; each has an ``*_at`` form taking several cutoffs that computes them all in
one pass (events joined to a small table of per-cutoff boundaries) and keys rows by ``ds``, which the
training sets use. ``run`` is the driver that reads the events partitions it needs and writes
``features/user_category/ds=<ds>/`` and then ``features/user/ds=<ds>/``, whose rows also carry each user's
candidate categories as parallel arrays (``attach_candidates``): scoring reads one row per user and ranks
its categories without a join.

Tabular columns (all double, prefix ``f_``), with T in EVENT_TYPES and W in ``windows_days``:
- ``f_<T>_<W>d``: events of type T in the last W days.
- ``f_recency_<T>`` / ``f_recency_any``: days from the last such event to the cutoff;
  ``lookback_days + 1`` when there is none in the lookback (the 'never' fill).
- ``f_distinct_items``, ``f_distinct_categories``, ``f_active_days``: over the lookback.
- ``f_cart_per_view`` = (carts + 1) / (views + 2), ``f_purchase_per_cart`` = (purchases + 1) / (carts + 2),
  ``f_fav_per_view`` = (favs + 1) / (views + 2): Laplace-smoothed conversion ratios over the lookback.
- ``f_sessions``, ``f_session_events_mean``, ``f_session_duration_mean`` (seconds): a session starts at
  the user's first event, after more than ``session_gap_minutes`` of inactivity, or where
  ``session_id`` changes (null-safe), so sources without session ids get inactivity sessions.
- ``f_hour_share_{night,morning,afternoon,evening}`` (local hours 0-5, 6-11, 12-17, 18-23) and
  ``f_weekend_share`` (local Saturday/Sunday): shares of the lookback events.
- ``f_price_known_share``; ``f_price_mean``, ``f_price_max`` over events with a price and
  ``f_purchase_amount`` (sum of purchase prices): 0.0 when no price is known.
- ``f_trend_1d_vs_7d`` = (events in 1 day + 1) / (events in 7 days / 7 + 1), the 7 days clipped to the lookback.

Sequences (tasks.schema.SEQUENCE_COLUMNS): the last ``sequence_length`` events in the lookback,
oldest first, ordered by (event_time, event_type, item_id, category_id). Gap buckets map s whole
seconds to ``min(1 + floor(log2(1 + s)), gap_bucket_cap)``; ``seq_gap_prev_bucket`` is 0 for the
user's first event in the lookback (no previous event), the same value as padding. With ``text.enabled``,
``seq_text`` holds each of those events' normalised text (its search query, else its category code, "" with
neither; ``event_text``) and each candidate row its category's code (``category_text``).
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from spark_jobs.text_embeddings import normalised
from tasks.availability import newest_text
from tasks.config import FeaturesConfig, PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import DataError, NoDataError, run_cli
from tasks.layers import CUTOFF_KEY, DAY_KEY, events_root, features_partition, features_root, partition_day
from tasks.schema import (
    CANDIDATE_ARRAY_CATEGORY,
    CANDIDATE_ARRAY_PREFIX,
    CANDIDATE_CATEGORY_COLUMN,
    CANDIDATE_TEXT_COLUMN,
    EVENT_COLUMNS,
    EVENT_TYPE_INDEX,
    EVENT_TYPES,
    HOUR_BLOCKS,
    INTENTS,
    LABEL_COLUMNS,
    SEQUENCE_COLUMNS,
    SEQUENCE_TEXT_COLUMN,
    USER_CATEGORY_LABEL,
    tabular_columns,
    user_category_columns,
)

UTC = dt.UTC
_MICROS_PER_DAY = 86_400_000_000


class FeaturesError(DataError, RuntimeError):
    """The events layer cannot support the requested cutoff (no history, missing partitions)."""


class NoEventsError(FeaturesError, NoDataError):
    """No events partition the cutoff needs has landed (exit 65 like any data error: not retried)."""


@dataclass(frozen=True)
class FeaturesReport:
    ds: dt.date
    path: Path
    user_category_path: Path
    n_users: int
    n_user_category_rows: int
    with_labels: bool
    events_dts: tuple[dt.date, ...]
    positives: dict[str, int]


def local_midnight_utc(day: dt.date, tz: str) -> dt.datetime:
    """The UTC instant of midnight starting ``day`` in ``tz``."""
    return dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(tz)).astimezone(UTC)


def cutoff_instant(ds: dt.date, tz: str) -> dt.datetime:
    return local_midnight_utc(ds, tz)


def _as_utc(instant: dt.datetime) -> dt.datetime:
    # Naive datetimes are taken as UTC: Spark's own timestamps are UTC instants here.
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _cutoff_day(cutoff: dt.datetime, tz: str) -> dt.date:
    local = _as_utc(cutoff).astimezone(ZoneInfo(tz))
    if local.time() != dt.time():
        raise ValueError(f"cutoff {cutoff.isoformat()} is not a midnight in {tz} (local time {local.isoformat()})")
    return local.date()


def _micros(instant: dt.datetime) -> int:
    u = _as_utc(instant)
    return calendar.timegm(u.utctimetuple()) * 1_000_000 + u.microsecond


def _check_windows(fcfg: FeaturesConfig) -> None:
    if max(fcfg.windows_days) > fcfg.lookback_days:
        raise ValueError(
            f"features.windows_days {fcfg.windows_days} reach beyond features.lookback_days={fcfg.lookback_days}"
        )


def _bounds(
    spark: SparkSession, cutoffs: Sequence[dt.datetime], tz: str | None, back_days: set[int], horizon_days: int
) -> DataFrame:
    """One row per cutoff: ds and every window boundary as UTC microseconds (local midnights when tz is set).

    Boundaries are data, not literals, so one plan (one aggregation, one code generation) serves
    any number of cutoffs.
    """
    if not cutoffs:
        raise ValueError("at least one cutoff is needed")
    windows = sorted(back_days)
    rows = []
    for c in cutoffs:
        if tz is None:
            day = _as_utc(c).date()
            before = lambda n, c=c: _as_utc(c) - dt.timedelta(days=n)  # noqa: E731
            after = lambda n, c=c: _as_utc(c) + dt.timedelta(days=n)  # noqa: E731
        else:
            day = _cutoff_day(c, tz)
            before = lambda n, day=day: local_midnight_utc(day - dt.timedelta(days=n), tz)  # noqa: E731
            after = lambda n, day=day: local_midnight_utc(day + dt.timedelta(days=n), tz)  # noqa: E731
        rows.append((day, _micros(c), *[_micros(before(w)) for w in windows], _micros(after(horizon_days))))
    if len({r[0] for r in rows}) != len(rows):
        raise ValueError(f"cutoffs must fall on distinct days: {[r[0].isoformat() for r in rows]}")
    schema = ", ".join(["ds date", "_cut_us long", *[f"_w{w}_us long" for w in windows], "_end_us long"])
    return spark.createDataFrame(rows, schema)


def _with_us(events: DataFrame) -> DataFrame:
    return events.where(F.col("user_id").isNotNull()).withColumn("_us", F.unix_micros(F.col("event_time")))


def _lookback_events(events: DataFrame, cutoffs: Sequence[dt.datetime], fcfg: FeaturesConfig, tz: str) -> DataFrame:
    # Each event joins every cutoff whose lookback [start, cutoff) holds it (a broadcast range join).
    back_days = {*fcfg.windows_days, 1, min(7, fcfg.lookback_days), fcfg.lookback_days}
    bounds = _bounds(events.sparkSession, cutoffs, tz, back_days, fcfg.horizon_days)
    ev = _with_us(events).where(F.col("event_type").isin(*EVENT_TYPES))
    in_lookback = (F.col("_us") >= F.col(f"_w{fcfg.lookback_days}_us")) & (F.col("_us") < F.col("_cut_us"))
    # Local hour, day and weekday by integer arithmetic on the local wall-clock microseconds: one time-zone
    # conversion per event instead of one per derived field.
    local_us = F.unix_micros(F.from_utc_timestamp(F.col("event_time"), tz))
    time_of_day = F.pmod(local_us, F.lit(_MICROS_PER_DAY))
    day = ((local_us - time_of_day) / F.lit(_MICROS_PER_DAY)).cast("int")
    return (
        ev.join(F.broadcast(bounds), in_lookback, "inner")
        .withColumn("_hour", (time_of_day / F.lit(3_600_000_000)).cast("int"))
        # _day: local calendar day as days since 1970-01-01; _dow as dayofweek (1 = Sunday .. 7 = Saturday),
        # 1970-01-01 being a Thursday.
        .withColumn("_day", day)
        .withColumn("_dow", F.pmod(day + F.lit(4), F.lit(7)) + F.lit(1))
    )


def _count_where(cond: Column) -> Column:
    return F.sum(F.when(cond, 1).otherwise(0)).cast("double")


def _sum_columns(names: list[str]) -> Column:
    total = F.col(names[0])
    for name in names[1:]:
        total = total + F.col(name)
    return total


def _recency(last_col: str, never: float) -> Column:
    return F.coalesce((F.col("_cut_us") - F.col(last_col)) / F.lit(float(_MICROS_PER_DAY)), F.lit(never))


def _is_type(t: str) -> Column:
    return F.col("event_type") == t


def _nonempty(c: Column) -> Column:
    text = normalised(c)
    return F.when(F.length(text) > 0, text)


def event_text(events: DataFrame) -> Column:
    """An event's normalised text: its search query, else its category code; "" where it has neither (an
    array of strings without nulls is what the packaged model's signature takes)."""
    present = [F.col(c) for c in ("query", "category_code") if c in events.columns]
    return F.coalesce(*[_nonempty(c) for c in present], F.lit(""))


def user_features_at(
    events: DataFrame, cutoffs: Sequence[dt.datetime], fcfg: FeaturesConfig, tz: str, text: bool = False
) -> DataFrame:
    """user_features for several cutoffs in one pass: one row per (ds, user_id), ds the cutoff's local day;
    with ``text``, also seq_text (tasks.schema.SEQUENCE_TEXT_COLUMN)."""
    _check_windows(fcfg)
    never = float(fcfg.lookback_days + 1)
    ev = _lookback_events(events, cutoffs, fcfg, tz)
    seven = min(7, fcfg.lookback_days)

    # Each user's events travel as one array, sorted in memory after the shuffle, instead of a window
    # over a globally sorted table: sessions, distinct counts and the sequence all read that array, so the
    # events are shuffled once and never go through an external sort or a distinct-aggregation Expand.
    # Struct comparison is field by field, so sorting the array orders by (event_time, event_type,
    # item_id, category_id), the documented sequence order (_us orders exactly as event_time).
    event = F.struct(
        F.col("_us").alias("us"),
        F.col("event_type").alias("t"),
        F.col("item_id").alias("item"),
        F.col("category_id").alias("cat"),
        F.col("session_id").alias("sid"),
        F.col("_hour").alias("hour"),
        F.col("_day").alias("day"),
        *([event_text(ev).alias("txt")] if text else []),
    )

    # Every aggregate below is evaluated row by row (collect_list makes this an object aggregation, which
    # Spark does not compile), so totals a window count already holds are summed from it, not counted again.
    aggs: list[Column] = []
    for w in fcfg.windows_days:
        since = F.col("_us") >= F.col(f"_w{w}_us")
        aggs += [_count_where(_is_type(t) & since).alias(f"f_{t}_{w}d") for t in EVENT_TYPES]
    aggs += [F.max(F.when(_is_type(t), F.col("_us"))).alias(f"_last_{t}") for t in EVENT_TYPES]
    aggs += [F.max("_us").alias("_last_any")]
    # name -> (condition, the event types and span of the window counts that add up to it)
    totals = {f"_tot_{t}": (_is_type(t), (t,), fcfg.lookback_days) for t in EVENT_TYPES}
    totals["_n_1d"] = (F.col("_us") >= F.col("_w1_us"), EVENT_TYPES, 1)
    totals["_n_7d"] = (F.col("_us") >= F.col(f"_w{seven}_us"), EVENT_TYPES, seven)
    from_windows = {
        name: [f"f_{t}_{w}d" for t in types] for name, (_, types, w) in totals.items() if w in fcfg.windows_days
    }
    aggs += [_count_where(cond).alias(name) for name, (cond, _, _) in totals.items() if name not in from_windows]
    aggs += [
        _count_where(F.col("_dow").isin(1, 7)).alias("_n_weekend"),
        _count_where(F.col("price").isNotNull()).alias("_n_price"),
        F.avg("price").alias("_price_mean"),
        F.max("price").alias("_price_max"),
        F.sum(F.when(_is_type("purchase"), F.col("price"))).alias("_purchase_amount"),
        F.collect_list(event).alias("_ev"),
    ]
    aggs += [_count_where(F.col("_hour").between(lo, hi)).alias(f"_n_hour_{b}") for b, (lo, hi) in HOUR_BLOCKS.items()]
    # Repartitioned by user first, the aggregation runs once after the shuffle: no map-side partial
    # aggregation that sorts (and spills) every event only to ship the same events on. user_id leads the
    # grouping key so the sort that object aggregation falls back to compares users by their key prefix.
    # Measured by bench features_vs_duckdb, as are the local-time arithmetic, sort_array and the field
    # extractions below.
    g = ev.repartition("user_id", "ds").groupBy("user_id", "ds", "_cut_us").agg(*aggs)
    for name, window_counts in from_windows.items():
        g = g.withColumn(name, _sum_columns(window_counts))
    g = g.withColumn("_n_events", _sum_columns([f"_tot_{t}" for t in EVENT_TYPES]))
    # sort_array orders with the struct ordering directly; array_sort would call a comparator lambda.
    g = g.withColumn("_ev", F.sort_array("_ev"))

    # A gap between consecutive events opens a new session when it exceeds the inactivity limit or the
    # session id changes (null-safe); the user's first event always opens one.
    gap_limit = fcfg.session_gap_minutes * 60 * 1_000_000
    g = g.withColumn(
        "_gaps",
        F.expr(
            "zip_with(slice(_ev, 2, size(_ev)), slice(_ev, 1, greatest(size(_ev) - 1, 0)), "
            f"(c, p) -> named_struct('us', c.us - p.us, 'new', c.us - p.us > {gap_limit} OR NOT (c.sid <=> p.sid)))"
        ),
    )
    # The last sequence_length events: _ev[_start - 1 ...] (0-based), _start the 1-based slice start.
    g = g.withColumn("_start", F.greatest(F.size("_ev") - F.lit(fcfg.sequence_length - 1), F.lit(1)))
    g = g.withColumn("_seq", F.expr(f"slice(_ev, _start, {fcfg.sequence_length})"))

    cap = fcfg.gap_bucket_cap
    type_index = " ".join(f"WHEN '{name}' THEN {idx}" for name, idx in EVENT_TYPE_INDEX.items())
    # _seq.cat and the like extract a field from every element without evaluating a lambda per element.
    sequences = {
        "seq_event_type": f"transform(_seq, x -> CAST(CASE x.t {type_index} END AS INT))",
        "seq_category": "_seq.cat",
        "seq_item_bucket": f"transform(_seq, x -> CAST(1 + pmod(xxhash64(x.item), {fcfg.item_buckets}) AS INT))",
        "seq_gap_cutoff_bucket": (
            f"transform(_seq, x -> CAST(least(length(bin((_cut_us - x.us) div 1000000 + 1)), {cap}) AS INT))"
        ),
        # 0 for the user's first event in the lookback (no previous event), as for padding.
        "seq_gap_prev_bucket": (
            "transform(_seq, (x, i) -> CAST(IF(_start + i >= 2, "
            f"least(length(bin((x.us - _ev[_start + i - 2].us) div 1000000 + 1)), {cap}), 0) AS INT))"
        ),
        "seq_hour": "_seq.hour",
    }
    from_arrays = {
        "f_distinct_items": F.expr("size(array_distinct(_ev.item))"),
        "f_distinct_categories": F.expr("size(array_distinct(_ev.cat))"),
        "f_active_days": F.expr("size(array_distinct(_ev.day))"),
        "f_sessions": F.expr("1 + size(filter(_gaps, x -> x.new))"),
        "_session_us": F.expr("aggregate(_gaps, 0L, (acc, x) -> acc + IF(x.new, 0L, x.us))"),
    }
    g = g.select("*", *[c.alias(name) for name, c in from_arrays.items()])

    n = F.col("_n_events")
    derived = {
        **{f"f_recency_{t}": _recency(f"_last_{t}", never) for t in EVENT_TYPES},
        "f_recency_any": _recency("_last_any", never),
        "f_cart_per_view": (F.col("_tot_cart") + 1) / (F.col("_tot_view") + 2),
        "f_purchase_per_cart": (F.col("_tot_purchase") + 1) / (F.col("_tot_cart") + 2),
        "f_fav_per_view": (F.col("_tot_fav") + 1) / (F.col("_tot_view") + 2),
        "f_session_events_mean": n / F.col("f_sessions"),
        "f_session_duration_mean": (F.col("_session_us") / F.lit(1e6)) / F.col("f_sessions"),
        **{f"f_hour_share_{b}": F.col(f"_n_hour_{b}") / n for b in HOUR_BLOCKS},
        "f_weekend_share": F.col("_n_weekend") / n,
        "f_price_known_share": F.col("_n_price") / n,
        "f_price_mean": F.coalesce(F.col("_price_mean"), F.lit(0.0)),
        "f_price_max": F.coalesce(F.col("_price_max"), F.lit(0.0)),
        "f_purchase_amount": F.coalesce(F.col("_purchase_amount"), F.lit(0.0)),
        "f_trend_1d_vs_7d": (F.col("_n_1d") + 1) / (F.col("_n_7d") / F.lit(float(seven)) + 1),
    }
    out = [F.col("ds"), F.col("user_id")]
    for c in tabular_columns(fcfg):
        out.append((derived[c] if c in derived else F.col(c)).cast("double").alias(c))
    out += [F.expr(sequences[c]).alias(c) for c in SEQUENCE_COLUMNS]
    if text:
        out.append(F.expr("_seq.txt").alias(SEQUENCE_TEXT_COLUMN))
    return g.select(*out)


def user_features(events: DataFrame, cutoff: dt.datetime, fcfg: FeaturesConfig, tz: str) -> DataFrame:
    """One row per user with an event in [cutoff - lookback_days, cutoff): user_id, f_* doubles, seq_* arrays."""
    return user_features_at(events, [cutoff], fcfg, tz).drop("ds")


def labels_at(events: DataFrame, cutoffs: Sequence[dt.datetime], horizon_days: int, tz: str | None = None) -> DataFrame:
    """ds, user_id, label_* (int 0/1) for several cutoffs, each from events in [cutoff, cutoff + horizon)."""
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    bounds = _bounds(events.sparkSession, cutoffs, tz, set(), horizon_days)
    in_horizon = (F.col("_us") >= F.col("_cut_us")) & (F.col("_us") < F.col("_end_us"))
    ev = _with_us(events).join(F.broadcast(bounds), in_horizon, "inner")
    return ev.groupBy("ds", "user_id").agg(
        *[F.max(F.when(_is_type(intent), 1).otherwise(0)).cast("int").alias(f"label_{intent}") for intent in INTENTS]
    )


def labels(events: DataFrame, cutoff: dt.datetime, horizon_days: int, tz: str | None = None) -> DataFrame:
    """user_id, label_purchase, label_cart, label_fav (int 0/1) from events in [cutoff, cutoff + horizon).

    With ``tz`` the horizon ends at the local midnight ``horizon_days`` calendar days later (DST-safe);
    without it, ``horizon_days`` * 24 hours later.
    """
    return labels_at(events, [cutoff], horizon_days, tz).drop("ds")


def build_features_at(
    events: DataFrame,
    cutoffs: Sequence[dt.datetime],
    fcfg: FeaturesConfig,
    tz: str,
    with_labels: bool,
    text: bool = False,
) -> DataFrame:
    """build_features for several cutoffs in one pass, keyed by (ds, user_id)."""
    feats = user_features_at(events, cutoffs, fcfg, tz, text)
    if not with_labels:
        return feats.select("*", *[F.lit(None).cast("int").alias(c) for c in LABEL_COLUMNS])
    lab = labels_at(events, cutoffs, fcfg.horizon_days, tz)
    joined = feats.join(lab, on=["ds", "user_id"], how="left")
    return joined.select(*feats.columns, *[F.coalesce(F.col(c), F.lit(0)).cast("int").alias(c) for c in LABEL_COLUMNS])


def build_features(
    events: DataFrame, cutoff: dt.datetime, fcfg: FeaturesConfig, tz: str, with_labels: bool, text: bool = False
) -> DataFrame:
    """user_features left-joined with labels: 0 for users without a horizon event, null without labels."""
    return build_features_at(events, [cutoff], fcfg, tz, with_labels, text).drop("ds")


def user_category_features_at(
    events: DataFrame, cutoffs: Sequence[dt.datetime], fcfg: FeaturesConfig, tz: str, text: bool = False
) -> DataFrame:
    """One row per (ds, user, category) active in the lookback: window counts, recency, share of the user's
    events; with ``text``, also category_text (the category's normalised code, the greatest if it has several)."""
    _check_windows(fcfg)
    never = float(fcfg.lookback_days + 1)
    ev = _lookback_events(events, cutoffs, fcfg, tz)
    aggs: list[Column] = []
    for w in fcfg.windows_days:
        since = F.col("_us") >= F.col(f"_w{w}_us")
        aggs += [_count_where(_is_type(t) & since).alias(f"f_uc_{t}_{w}d") for t in EVENT_TYPES]
    aggs += [F.max(F.when(_is_type(t), F.col("_us"))).alias(f"_last_{t}") for t in EVENT_TYPES]
    aggs += [F.max("_us").alias("_last_any"), F.count(F.lit(1)).alias("_n")]
    if text:
        code = _nonempty(F.col("category_code")) if "category_code" in ev.columns else F.lit(None).cast("string")
        aggs.append(F.coalesce(F.max(code), F.lit("")).alias(CANDIDATE_TEXT_COLUMN))
    g = ev.groupBy("user_id", "category_id", "ds", "_cut_us").agg(*aggs)
    derived = {
        **{f"f_uc_recency_{t}": _recency(f"_last_{t}", never) for t in EVENT_TYPES},
        "f_uc_recency_any": _recency("_last_any", never),
        "f_uc_share": F.col("_n") / F.sum("_n").over(Window.partitionBy("user_id", "ds")),
    }
    return g.select(
        "ds",
        "user_id",
        "category_id",
        *[(derived[c] if c in derived else F.col(c)).cast("double").alias(c) for c in user_category_columns(fcfg)],
        *([CANDIDATE_TEXT_COLUMN] if text else []),
    )


def user_category_features(
    events: DataFrame, cutoff: dt.datetime, fcfg: FeaturesConfig, tz: str, text: bool = False
) -> DataFrame:
    return user_category_features_at(events, [cutoff], fcfg, tz, text).drop("ds")


def category_labels_at(
    events: DataFrame, cutoffs: Sequence[dt.datetime], fcfg: FeaturesConfig, tz: str | None
) -> DataFrame:
    """ds, user_id, category_id, label_purchase_in_category = 1 for each pair with a purchase in the horizon."""
    bounds = _bounds(events.sparkSession, cutoffs, tz, set(), fcfg.horizon_days)
    in_horizon = (F.col("_us") >= F.col("_cut_us")) & (F.col("_us") < F.col("_end_us"))
    ev = _with_us(events).where(_is_type("purchase")).join(F.broadcast(bounds), in_horizon, "inner")
    return ev.select("ds", "user_id", "category_id").distinct().withColumn(USER_CATEGORY_LABEL, F.lit(1))


def build_user_category_at(
    events: DataFrame,
    cutoffs: Sequence[dt.datetime],
    fcfg: FeaturesConfig,
    tz: str,
    with_labels: bool,
    text: bool = False,
) -> DataFrame:
    feats = user_category_features_at(events, cutoffs, fcfg, tz, text)
    if not with_labels:
        return feats.withColumn(USER_CATEGORY_LABEL, F.lit(None).cast("int"))
    lab = category_labels_at(events, cutoffs, fcfg, tz)
    return feats.join(lab, on=["ds", "user_id", "category_id"], how="left").select(
        *feats.columns, F.coalesce(F.col(USER_CATEGORY_LABEL), F.lit(0)).cast("int").alias(USER_CATEGORY_LABEL)
    )


def attach_candidates(users: DataFrame, candidates: DataFrame, pair_columns: Sequence[str]) -> DataFrame:
    """User rows + their candidate rows as parallel arrays: ``cand_category_id`` and ``cand_<f>`` for each
    of ``pair_columns`` (array<double>), and ``cand_category_text`` where the candidates carry it, ordered by
    category id; null for a user without candidates. Keyed by
    (user_id, ds) where both sides have ds, else user_id; one output row per user row, the user row's columns
    first.

    Only the candidate side moves: user rows that come out of ``build_features_at`` are already partitioned
    by (user_id, ds), so the wide rows (sequence arrays) are joined where they are.
    """
    keys = ["user_id", "ds"] if "ds" in users.columns and "ds" in candidates.columns else ["user_id"]
    texts = [CANDIDATE_TEXT_COLUMN] if CANDIDATE_TEXT_COLUMN in candidates.columns else []
    packed = candidates.groupBy(*keys).agg(
        F.sort_array(F.collect_list(F.struct(CANDIDATE_CATEGORY_COLUMN, *pair_columns, *texts))).alias("_cand")
    )
    arrays = packed.select(
        *keys,
        F.col(f"_cand.{CANDIDATE_CATEGORY_COLUMN}").alias(CANDIDATE_ARRAY_CATEGORY),
        *[F.col(f"_cand.{c}").cast("array<double>").alias(CANDIDATE_ARRAY_PREFIX + c) for c in pair_columns],
        *[F.col(f"_cand.{c}").alias(CANDIDATE_ARRAY_PREFIX + c) for c in texts],
    )
    joined = users.join(arrays, on=keys, how="left")
    return joined.select(*users.columns, *[c for c in arrays.columns if c not in keys])


def event_partitions(cfg: PipelineConfig) -> dict[dt.date, Path]:
    """dt -> folder for every events partition holding at least one Parquet file."""
    root = events_root(cfg)
    found: dict[dt.date, Path] = {}
    if not root.is_dir():
        return found
    for child in root.iterdir():
        day = partition_day(child.name, DAY_KEY)
        if day is not None and child.is_dir() and any(child.glob("*.parquet")):
            found[day] = child
    return found


def _day_range(first: dt.date, n: int) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range(n)]


def missing_label_days(cfg: PipelineConfig, ds: dt.date) -> list[dt.date]:
    present = event_partitions(cfg)
    return [d for d in _day_range(ds, cfg.features.horizon_days) if d not in present]


def label_window_available(cfg: PipelineConfig, ds: dt.date) -> bool:
    """Whether every events partition of [ds, ds + horizon_days) exists."""
    return not missing_label_days(cfg, ds)


def latest_labelled_cutoff(cfg: PipelineConfig) -> dt.date:
    """The latest cutoff whose whole label window is present in the events layer."""
    present = event_partitions(cfg)
    if not present:
        raise NoEventsError(f"no events partitions under {events_root(cfg)}")
    h = cfg.features.horizon_days
    for last in sorted(present, reverse=True):
        ds = last - dt.timedelta(days=h - 1)
        if all(d in present for d in _day_range(ds, h)):
            return ds
    raise FeaturesError(
        f"no cutoff has all {h} label days present under {events_root(cfg)} "
        f"(partitions: {', '.join(map(str, sorted(present)))})"
    )


def read_events(spark: SparkSession, cfg: PipelineConfig, days: list[dt.date]) -> tuple[DataFrame, list[dt.date]]:
    """The canonical events of the given days that are present (and which ones those were)."""
    present = event_partitions(cfg)
    used = sorted(d for d in set(days) if d in present)
    if not used:
        raise NoEventsError(f"no events partitions for {min(days)}..{max(days)} under {events_root(cfg)}")
    df = spark.read.option("basePath", str(events_root(cfg))).parquet(*[str(present[d]) for d in used])
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise FeaturesError(f"events partitions lack columns {missing} (contract tasks.schema.EVENT_COLUMNS)")
    return df.select(*[F.col(c).cast(t).alias(c) for c, t in EVENT_COLUMNS.items()]), used


def _write_partition(df: DataFrame, root: Path) -> None:
    (df.write.mode("overwrite").option("partitionOverwriteMode", "dynamic").partitionBy(CUTOFF_KEY).parquet(str(root)))


def run(cfg: PipelineConfig, ds: dt.date, spark: SparkSession | None = None) -> FeaturesReport:
    """Build and write the features of cutoff ``ds`` (labels too when its whole label window has landed)."""
    from spark_jobs.session import build_session

    fcfg, tz = cfg.features, cfg.pipeline.timezone
    lookback = _day_range(ds - dt.timedelta(days=fcfg.lookback_days), fcfg.lookback_days)
    with_labels = label_window_available(cfg, ds)
    days = lookback + (_day_range(ds, fcfg.horizon_days) if with_labels else [])
    present = event_partitions(cfg)
    # Checked before the driver JVM starts: a cutoff past the cleaned data stops at once.
    if not any(d in present for d in lookback):
        raise NoEventsError(
            f"no events in the lookback {lookback[0]}..{lookback[-1]} of cutoff {ds} under {events_root(cfg)}; "
            + newest_text(sorted(present), "cleaned", events_root(cfg))
        )
    spark = spark or build_session(cfg, f"features-{ds}")
    events, used = read_events(spark, cfg, days)
    cutoff = cutoff_instant(ds, tz)

    # Each aggregation re-reads the Parquet events: measured cheaper than caching them (columnar cache
    # encoding and memory pressure cost more than a second scan; bench features_vs_duckdb).
    if _lookback_events(events, [cutoff], fcfg, tz).isEmpty():
        raise FeaturesError(f"the events partitions {lookback[0]}..{lookback[-1]} of cutoff {ds} hold no events")
    user_path, uc_path = features_partition(cfg, "user", ds), features_partition(cfg, "user_category", ds)
    uc_root = features_root(cfg, "user_category")
    text = cfg.text.enabled
    _write_partition(build_user_category_at(events, [cutoff], fcfg, tz, with_labels, text), uc_root)
    # The user rows take their candidates from the partition just written, so the (user, category)
    # aggregation over the events runs once. ds comes from the partition path as a column, not a literal:
    # a constant key would leave the join keyed by user_id alone and move the wide user rows again.
    written_uc = spark.read.option("basePath", str(uc_root)).parquet(str(uc_path))
    written_uc = written_uc.withColumn(CUTOFF_KEY, F.col(CUTOFF_KEY).cast("date"))
    users = build_features_at(events, [cutoff], fcfg, tz, with_labels, text)
    with_cands = attach_candidates(users, written_uc, user_category_columns(fcfg))
    labels_last = [c for c in with_cands.columns if c not in LABEL_COLUMNS] + list(LABEL_COLUMNS)
    _write_partition(with_cands.select(*labels_last), features_root(cfg, "user"))
    # Counted from the written partitions: cheaper than caching the wide rows (sequence arrays) to count them.
    written = spark.read.parquet(str(user_path))
    row = written.agg(F.count(F.lit(1)).alias("n"), *[F.sum(c).alias(c) for c in LABEL_COLUMNS]).first()
    n_users = int(row["n"])
    positives = {c: int(row[c]) for c in LABEL_COLUMNS} if with_labels else {}
    n_uc = spark.read.parquet(str(uc_path)).count()
    return FeaturesReport(
        ds=ds,
        path=user_path,
        user_category_path=uc_path,
        n_users=n_users,
        n_user_category_rows=n_uc,
        with_labels=with_labels,
        events_dts=tuple(used),
        positives=positives,
    )


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--ds", type=parse_ds, required=True, help="cutoff date YYYY-MM-DD (logical date)")
    args = parser.parse_args(argv)
    report = run(config_from_args(args), args.ds)
    print(
        f"features ds={report.ds} users={report.n_users} labels={report.with_labels} "
        f"positives={report.positives} -> {report.path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
