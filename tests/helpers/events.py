"""Builders of small canonical-events tables (tasks.schema.EVENT_COLUMNS) for tests.

Rows are plain dicts; ``events_df`` turns them into a Spark DataFrame with the contract's types,
``events_pdf`` into pandas (event_time tz-aware UTC), and ``write_events_layer`` writes them as an
events layer (``events/dt=<local day>/part-0.parquet``) the way ``spark_jobs.clean_events`` does.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.config import PipelineConfig
from tasks.layers import events_partition
from tasks.schema import EVENT_COLUMNS, EVENT_TYPES

UTC = dt.UTC

# Personal data users paste into a search box, each with a piece of it that must never be stored past the raw
# layer (cleaning scrubs it: conf/pipeline.yaml cleaning.pii_patterns).
PASTED_QUERIES = [
    ("email me at john.doe+shop@example.co.uk pls", "john.doe"),
    ("refund card 4111 1111 1111 1111", "4111"),
    ("call 415-555-0132 for delivery", "555-0132"),
    ("+44 20 7946 0958 sofa", "7946"),
]

_ARROW_TYPES = {"timestamp": pa.timestamp("us", tz="UTC"), "string": pa.string(), "double": pa.float64()}
ARROW_SCHEMA = pa.schema([(c, _ARROW_TYPES[t]) for c, t in EVENT_COLUMNS.items()])


def utc(value: str | dt.datetime) -> dt.datetime:
    """An aware UTC datetime from an ISO string or datetime (naive values are taken as UTC)."""
    d = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def ev(
    ts: str | dt.datetime,
    user_id: str,
    item_id: str = "i1",
    category_id: str = "c1",
    event_type: str = "view",
    price: float | None = None,
    session_id: str | None = None,
    **optional: str | None,
) -> dict:
    """One canonical event; unknown optional columns are an error."""
    unknown = set(optional) - set(EVENT_COLUMNS)
    if unknown:
        raise KeyError(f"not event columns: {sorted(unknown)}")
    row = {c: None for c in EVENT_COLUMNS}
    row.update(
        event_time=utc(ts),
        user_id=user_id,
        item_id=item_id,
        category_id=category_id,
        event_type=event_type,
        price=price,
        session_id=session_id,
        **optional,
    )
    return row


def spark_schema():
    from pyspark.sql.types import StructType

    return StructType.fromDDL(", ".join(f"{c} {t}" for c, t in EVENT_COLUMNS.items()))


def events_df(spark, rows: Iterable[dict]):
    """A Spark DataFrame of canonical events with the contract's column order and types."""
    data = [tuple(r[c] for c in EVENT_COLUMNS) for r in rows]
    return spark.createDataFrame(data, schema=spark_schema())


def events_pdf(rows: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """Canonical events as pandas, event_time datetime64[us, UTC]."""
    pdf = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=list(EVENT_COLUMNS))
    for c in EVENT_COLUMNS:
        if c not in pdf.columns:
            pdf[c] = None
    pdf = pdf[list(EVENT_COLUMNS)]
    pdf["event_time"] = pd.to_datetime(pdf["event_time"], utc=True).astype("datetime64[us, UTC]")
    pdf["price"] = pdf["price"].astype("float64")
    return pdf


def spark_from_pdf(spark, pdf: pd.DataFrame):
    """A Spark DataFrame from canonical pandas events (Arrow path; fast for tens of thousands of rows)."""
    table = pa.Table.from_pandas(events_pdf(pdf), schema=ARROW_SCHEMA, preserve_index=False)
    return spark.createDataFrame(table.to_pandas(), schema=spark_schema())


def write_events_layer(cfg: PipelineConfig, rows: Iterable[dict] | pd.DataFrame) -> list[dt.date]:
    """Write events as cfg's events layer, one Parquet file per local day; returns the days written.

    An existing partition of a written day is replaced.
    """
    pdf = events_pdf(rows)
    tz = ZoneInfo(cfg.pipeline.timezone)
    days = pdf["event_time"].dt.tz_convert(tz).dt.date
    written = []
    for day, part in pdf.groupby(days, sort=True):
        folder = events_partition(cfg, day)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.parquet"):
            old.unlink()
        table = pa.Table.from_pandas(part.reset_index(drop=True), schema=ARROW_SCHEMA, preserve_index=False)
        pq.write_table(table, folder / "part-0.parquet")
        written.append(day)
    return written


def random_events(
    n_users: int,
    start: dt.date,
    n_days: int,
    seed: int,
    tz: str = "UTC",
    max_events_per_day: int = 6,
    n_items: int = 40,
    n_categories: int = 6,
) -> list[dict]:
    """A small random but reproducible log: users active on random days, all four event types,
    prices on some events, session ids on some users only, and same-second ties."""
    rng = random.Random(seed)
    zone = ZoneInfo(tz)
    weights = [0.7, 0.12, 0.08, 0.1]
    rows = []
    for u in range(n_users):
        user = f"u{u:03d}"
        with_sessions = rng.random() < 0.5
        for d in range(n_days):
            if rng.random() < 0.35:
                continue
            day = start + dt.timedelta(days=d)
            base = dt.datetime.combine(day, dt.time(), tzinfo=zone)
            for k in range(rng.randint(1, max_events_per_day)):
                ts = base + dt.timedelta(seconds=rng.randint(0, 86_399))
                if k and rng.random() < 0.15:
                    # Same-second events exercise the deterministic sequence tie-break.
                    ts = rows[-1]["event_time"]
                item = rng.randrange(n_items)
                rows.append(
                    ev(
                        ts,
                        user,
                        item_id=f"i{item}",
                        category_id=f"c{item % n_categories}",
                        event_type=rng.choices(EVENT_TYPES, weights)[0],
                        price=round(rng.uniform(1, 100), 2) if rng.random() < 0.6 else None,
                        session_id=f"s{user}-{d}-{k // 3}" if with_sessions else None,
                    )
                )
    return rows


TAOBAO_TYPES = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}


def taobao_events(path: Path) -> pd.DataFrame:
    """The Taobao UserBehavior sample as canonical pandas events (no header; Unix seconds)."""
    raw = pd.read_csv(
        path,
        header=None,
        names=["user_id", "item_id", "category_id", "behavior_type", "timestamp"],
        dtype={"user_id": str, "item_id": str, "category_id": str, "behavior_type": str, "timestamp": "int64"},
    )
    unknown = set(raw["behavior_type"]) - set(TAOBAO_TYPES)
    if unknown:
        raise ValueError(f"unknown Taobao behavior_type values: {sorted(unknown)}")
    pdf = pd.DataFrame(
        {
            "event_time": pd.to_datetime(raw["timestamp"], unit="s", utc=True),
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "category_id": raw["category_id"],
            "event_type": raw["behavior_type"].map(TAOBAO_TYPES),
        }
    )
    return events_pdf(pdf)
