"""DuckDB-SQL reference for spark_jobs.features, written independently of the Spark code.

Window boundaries are computed by DuckDB's ICU time zones, the item hash by a pure-Python XXH64
(Spark's ``xxhash64`` is XXH64 with seed 42 over the UTF-8 bytes, read as a signed long) and the
gap buckets by ``int.bit_length``. The ``*_sql`` builders read a relation named ``events`` with the
canonical event columns; the ``reference_*`` functions run them over pandas events
(tests.helpers.events.events_pdf), and bench.duckdb_features.duckdb_job over Parquet files.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pandas as pd

from tasks.config import FeaturesConfig
from tasks.schema import EVENT_TYPE_INDEX, EVENT_TYPES, SEQUENCE_COLUMNS, USER_CATEGORY_LABEL

_M = (1 << 64) - 1
_P1, _P2, _P3, _P4, _P5 = (
    11400714785074694791,
    14029467366897019727,
    1609587929392839161,
    9650029242287828579,
    2870177450012600261,
)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def xxh64(data: bytes, seed: int = 42) -> int:
    """XXH64 of ``data``, as an unsigned 64-bit integer."""
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed & _M, (seed - _P1) & _M]
        while i + 32 <= n:
            v = [_round(v[k], int.from_bytes(data[i + 8 * k : i + 8 * k + 8], "little")) for k in range(4)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
        for lane in v:
            h = ((h ^ _round(0, lane)) * _P1 + _P4) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while i + 8 <= n:
        h = (_rotl(h ^ _round(0, int.from_bytes(data[i : i + 8], "little")), 27) * _P1 + _P4) & _M
        i += 8
    if i + 4 <= n:
        h = (_rotl(h ^ ((int.from_bytes(data[i : i + 4], "little") * _P1) & _M), 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        h = (_rotl(h ^ ((data[i] * _P5) & _M), 11) * _P1) & _M
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M
    h ^= h >> 29
    h = (h * _P3) & _M
    return h ^ (h >> 32)


def item_bucket(item_id: str, n_buckets: int) -> int:
    signed = xxh64(item_id.encode("utf-8"))
    signed = signed - (1 << 64) if signed >= 1 << 63 else signed
    return 1 + signed % n_buckets  # Python's % is already non-negative for n_buckets > 0


def gap_bucket(seconds: int, cap: int) -> int:
    return min((1 + seconds).bit_length(), cap)


def register_exact_functions(con: duckdb.DuckDBPyConnection, fcfg: FeaturesConfig) -> None:
    """ref_item_bucket and ref_gap_bucket as Python functions, exact and independent of Spark's expressions."""
    con.create_function(
        "ref_item_bucket", lambda s: item_bucket(s, fcfg.item_buckets), ["VARCHAR"], "INTEGER", side_effects=False
    )
    con.create_function(
        "ref_gap_bucket", lambda s: gap_bucket(s, fcfg.gap_bucket_cap), ["BIGINT"], "INTEGER", side_effects=False
    )


def _connect(events: pd.DataFrame, fcfg: FeaturesConfig | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", events)
    if fcfg is not None:
        register_exact_functions(con, fcfg)
    return con


def _bound(cutoff: dt.datetime, tz: str, days: int) -> str:
    """SQL for the instant of local midnight ``days`` calendar days from the cutoff's local day."""
    return (
        f"timezone('{tz}', (CAST(timezone('{tz}', TIMESTAMPTZ '{cutoff.isoformat()}') AS DATE) "
        f"+ INTERVAL ({days}) DAY)::TIMESTAMP)"
    )


def user_features_sql(cutoff: dt.datetime, fcfg: FeaturesConfig, tz: str) -> str:
    """SELECT of the user feature rows from relation ``events``, columns as spark_jobs.features.user_features.

    Calls ``ref_item_bucket`` and ``ref_gap_bucket``, which the connection defines
    (register_exact_functions). One window sort per user serves the session gaps and the position
    from the end; the last ``sequence_length`` events travel as one list of structs.
    """
    cut = f"TIMESTAMPTZ '{cutoff.isoformat()}'"
    cut_us = f"epoch_us({cut})"
    never = float(fcfg.lookback_days + 1)
    types = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    type_index = "CASE event_type " + " ".join(f"WHEN '{t}' THEN {i}" for t, i in EVENT_TYPE_INDEX.items()) + " END"
    asc = "event_time, event_type, item_id, category_id"

    sel = []
    for w in fcfg.windows_days:
        for t in EVENT_TYPES:
            sel.append(
                f"CAST(count(*) FILTER (WHERE event_type = '{t}' AND event_time >= {_bound(cutoff, tz, -w)}) AS DOUBLE)"
                f" AS f_{t}_{w}d"
            )
    for t in EVENT_TYPES:
        sel.append(
            f"coalesce(({cut_us} - max(us) FILTER (WHERE event_type = '{t}')) / 86400000000.0, {never})"
            f" AS f_recency_{t}"
        )
    sel.append(f"coalesce(({cut_us} - max(us)) / 86400000000.0, {never}) AS f_recency_any")
    sel += [
        "CAST(count(DISTINCT item_id) AS DOUBLE) AS f_distinct_items",
        "CAST(count(DISTINCT category_id) AS DOUBLE) AS f_distinct_categories",
        "CAST(count(DISTINCT CAST(local_ts AS DATE)) AS DOUBLE) AS f_active_days",
    ]
    n_t = {t: f"CAST(count(*) FILTER (WHERE event_type = '{t}') AS DOUBLE)" for t in EVENT_TYPES}
    sel += [
        f"({n_t['cart']} + 1) / ({n_t['view']} + 2) AS f_cart_per_view",
        f"({n_t['purchase']} + 1) / ({n_t['cart']} + 2) AS f_purchase_per_cart",
        f"({n_t['fav']} + 1) / ({n_t['view']} + 2) AS f_fav_per_view",
    ]
    sessions = "CAST(count(*) FILTER (WHERE new_session) AS DOUBLE)"
    sel += [
        f"{sessions} AS f_sessions",
        f"count(*) / {sessions} AS f_session_events_mean",
        f"(coalesce(sum(us - prev_us) FILTER (WHERE NOT new_session), 0) / 1e6) / {sessions}"
        " AS f_session_duration_mean",
    ]
    for name, (lo, hi) in {"night": (0, 5), "morning": (6, 11), "afternoon": (12, 17), "evening": (18, 23)}.items():
        sel.append(
            f"CAST(count(*) FILTER (WHERE hour(local_ts) BETWEEN {lo} AND {hi}) AS DOUBLE) / count(*)"
            f" AS f_hour_share_{name}"
        )
    sel += [
        "CAST(count(*) FILTER (WHERE isodow(local_ts) IN (6, 7)) AS DOUBLE) / count(*) AS f_weekend_share",
        "CAST(count(price) AS DOUBLE) / count(*) AS f_price_known_share",
        "coalesce(avg(price), 0.0) AS f_price_mean",
        "coalesce(max(price), 0.0) AS f_price_max",
        "coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0.0) AS f_purchase_amount",
    ]
    seven = min(7, fcfg.lookback_days)
    sel.append(
        f"(CAST(count(*) FILTER (WHERE event_time >= {_bound(cutoff, tz, -1)}) AS DOUBLE) + 1) / "
        f"(CAST(count(*) FILTER (WHERE event_time >= {_bound(cutoff, tz, -seven)}) AS DOUBLE) / {float(seven)} + 1)"
        " AS f_trend_1d_vs_7d"
    )
    seq_exprs = {
        "seq_event_type": "type_idx",
        "seq_category": "category_id",
        "seq_item_bucket": "ref_item_bucket(item_id)",
        "seq_gap_cutoff_bucket": f"ref_gap_bucket(({cut_us} - us) // 1000000)",
        "seq_gap_prev_bucket": "CASE WHEN prev_us IS NULL THEN 0 ELSE ref_gap_bucket((us - prev_us) // 1000000) END",
        "seq_hour": "CAST(hour(local_ts) AS INTEGER)",
    }
    step = "struct_pack(" + ", ".join(f"{c} := {seq_exprs[c]}" for c in SEQUENCE_COLUMNS) + ")"
    # n_after: events after this one in the user's order, so the sequence is n_after < sequence_length.
    sel.append(f"list({step} ORDER BY n_after DESC) FILTER (WHERE n_after < {fcfg.sequence_length}) AS _seq")
    unpack = ", ".join(f"list_transform(_seq, lambda x: x.{c}) AS {c}" for c in SEQUENCE_COLUMNS)

    gap_us = fcfg.session_gap_minutes * 60 * 1_000_000
    return f"""
    WITH ev AS (
        SELECT *, epoch_us(event_time) AS us, timezone('{tz}', event_time) AS local_ts, {type_index} AS type_idx
        FROM events
        WHERE event_time >= {_bound(cutoff, tz, -fcfg.lookback_days)} AND event_time < {cut}
          AND user_id IS NOT NULL AND event_type IN ({types})
    ), ordered AS (
        SELECT *,
            lag(us) OVER w AS prev_us,
            lag(session_id) OVER w AS prev_session,
            count(*) OVER (PARTITION BY user_id) - row_number() OVER w AS n_after
        FROM ev
        WINDOW w AS (PARTITION BY user_id ORDER BY {asc})
    ), flagged AS (
        SELECT *,
            (prev_us IS NULL OR us - prev_us > {gap_us} OR session_id IS DISTINCT FROM prev_session) AS new_session
        FROM ordered
    ), per_user AS (
        SELECT user_id, {", ".join(sel)}
        FROM flagged GROUP BY user_id
    )
    SELECT * EXCLUDE (_seq), {unpack} FROM per_user
    """


def labels_sql(cutoff: dt.datetime, horizon_days: int, tz: str) -> str:
    """SELECT of user_id, label_* (0/1) from relation ``events`` in [cutoff, cutoff + horizon_days local days)."""
    return f"""
    SELECT user_id,
        CAST(bool_or(event_type = 'purchase') AS INTEGER) AS label_purchase,
        CAST(bool_or(event_type = 'cart') AS INTEGER) AS label_cart,
        CAST(bool_or(event_type = 'fav') AS INTEGER) AS label_fav
    FROM events
    WHERE event_time >= TIMESTAMPTZ '{cutoff.isoformat()}' AND event_time < {_bound(cutoff, tz, horizon_days)}
      AND user_id IS NOT NULL
    GROUP BY user_id
    """


def user_category_sql(cutoff: dt.datetime, fcfg: FeaturesConfig, tz: str) -> str:
    """SELECT of the (user, category) rows from relation ``events``, columns as user_category_features."""
    cut = f"TIMESTAMPTZ '{cutoff.isoformat()}'"
    never = float(fcfg.lookback_days + 1)
    sel = [
        f"CAST(count(*) FILTER (WHERE event_type = '{t}' AND event_time >= {_bound(cutoff, tz, -w)}) AS DOUBLE)"
        f" AS f_uc_{t}_{w}d"
        for w in fcfg.windows_days
        for t in EVENT_TYPES
    ]
    sel += [
        f"coalesce((epoch_us({cut}) - max(epoch_us(event_time)) FILTER (WHERE event_type = '{t}'))"
        f" / 86400000000.0, {never})"
        f" AS f_uc_recency_{t}"
        for t in EVENT_TYPES
    ]
    sel.append(f"coalesce((epoch_us({cut}) - max(epoch_us(event_time))) / 86400000000.0, {never}) AS f_uc_recency_any")
    sel.append("count(*) / sum(count(*)) OVER (PARTITION BY user_id) AS f_uc_share")
    types = ", ".join(f"'{t}'" for t in EVENT_TYPES)
    return f"""
    SELECT user_id, category_id, {", ".join(sel)}
    FROM events
    WHERE event_time >= {_bound(cutoff, tz, -fcfg.lookback_days)} AND event_time < {cut}
      AND user_id IS NOT NULL AND event_type IN ({types})
    GROUP BY user_id, category_id
    """


def category_labels_sql(cutoff: dt.datetime, horizon_days: int, tz: str) -> str:
    """SELECT of the (user, category) pairs with a purchase in the horizon, label_purchase_in_category = 1."""
    return f"""
    SELECT DISTINCT user_id, category_id, 1 AS {USER_CATEGORY_LABEL}
    FROM events
    WHERE event_time >= TIMESTAMPTZ '{cutoff.isoformat()}' AND event_time < {_bound(cutoff, tz, horizon_days)}
      AND user_id IS NOT NULL AND event_type = 'purchase'
    """


def reference_user_features(events: pd.DataFrame, cutoff: dt.datetime, fcfg: FeaturesConfig, tz: str) -> pd.DataFrame:
    """The user feature rows, sorted by user_id, with the same columns as spark_jobs.features.user_features."""
    return _connect(events, fcfg).sql(f"{user_features_sql(cutoff, fcfg, tz)} ORDER BY user_id").df()


def reference_labels(events: pd.DataFrame, cutoff: dt.datetime, horizon_days: int, tz: str) -> pd.DataFrame:
    con = _connect(events, None)
    return con.sql(f"{labels_sql(cutoff, horizon_days, tz)} ORDER BY user_id").df()


def reference_user_category(events: pd.DataFrame, cutoff: dt.datetime, fcfg: FeaturesConfig, tz: str) -> pd.DataFrame:
    con = _connect(events, fcfg)
    return con.sql(f"{user_category_sql(cutoff, fcfg, tz)} ORDER BY user_id, category_id").df()


def reference_category_labels(events: pd.DataFrame, cutoff: dt.datetime, horizon_days: int, tz: str) -> pd.DataFrame:
    con = _connect(events, None)
    return con.sql(f"{category_labels_sql(cutoff, horizon_days, tz)} ORDER BY user_id, category_id").df()
