"""Read raw files of each supported source format and map them to canonical event columns.

Raw files are read as all-string CSV (no schema inference) in PERMISSIVE mode with a corrupt-record
column, so a truncated line or a file that is not CSV at all is kept and flagged rather than dropped.
Quotes inside a quoted field are doubled as in RFC 4180 (``"U""Q"`` is ``U"Q``); a backslash is an
ordinary character.

Event times with zone text accept only unambiguous zones: UTC, GMT, UT, Z, numeric offsets and IANA
``Region/City`` names. Any other letters-only zone (CST: US Central or China? IST, BST, EST, ...) gives
a null ``event_time`` (``zone_abbreviation`` names it; cleaning quarantines the row as
``ambiguous_time_zone``), never a guessed offset.
Each format has one pure transform (``DataFrame -> DataFrame``) to ``tasks.schema.EVENT_COLUMNS``
plus the raw strings cleaning needs to give reasons (``RAW_EXTRA_COLUMNS``).

Source rules:
- synthetic: the canonical CSV written by ``tasks.sources.synthetic`` (ISO-8601 UTC ``...Z`` times).
- taobao: no header; ``user_id,item_id,category_id,behavior_type,timestamp``; Unix seconds;
  pv -> view, cart, fav, buy -> purchase. No price, session, query, brand or category code.
- rees46: header ``event_time,event_type,product_id,category_id,category_code,brand,price,user_id,
  user_session``; times like ``2019-10-01 00:00:00 UTC``; ``remove_from_cart`` keeps no canonical type
  (cleaning quarantines it as ``excluded_event_type``, see ``tasks.schema.EXCLUDED_RAW_EVENT_TYPES``).
- retailrocket: header ``timestamp,visitorid,event,itemid,transactionid``; Unix milliseconds;
  view, addtocart -> cart, transaction -> purchase. The events file carries no category (it lives in
  the separate, time-versioned item_properties files), so every event gets the constant category
  ``RETAILROCKET_CATEGORY`` ("unknown"): category features are uninformative for this source by design,
  rather than guessed from item ids.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from tasks.errors import DataError
from tasks.schema import EVENT_COLUMNS, EVENT_TYPES

CORRUPT_COLUMN = "corrupt_record"
RAW_EXTRA_COLUMNS = ("raw_event_time", "raw_event_type", "raw_price", CORRUPT_COLUMN, "raw_file")
RETAILROCKET_CATEGORY = "unknown"


class RawFormatError(DataError, ValueError):
    """A raw file does not have the layout its source format requires (e.g. a missing column)."""


# Columns of each raw format, in file order, and whether the files start with that header line.
RAW_COLUMNS: dict[str, tuple[tuple[str, ...], bool]] = {
    "synthetic": (tuple(EVENT_COLUMNS), True),
    "taobao": (("user_id", "item_id", "category_id", "behavior_type", "timestamp"), False),
    "rees46": (
        (
            "event_time",
            "event_type",
            "product_id",
            "category_id",
            "category_code",
            "brand",
            "price",
            "user_id",
            "user_session",
        ),
        True,
    ),
    "retailrocket": (("timestamp", "visitorid", "event", "itemid", "transactionid"), True),
}

_INT = r"^-?[0-9]{1,15}$"
# Letters-only zone text right after a time of day ("... 00:00:00 CST", "...T10:00:00CST").
_ZONE_WORD = r"[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?\s*([A-Za-z]+)$"
UNAMBIGUOUS_ZONE_WORDS = ("UTC", "GMT", "UT", "Z")


def zone_abbreviation(raw: Column) -> Column:
    """The letters-only zone abbreviation ending a raw time when it is not one of ``UNAMBIGUOUS_ZONE_WORDS``
    (Java reads CST as US Central, 13 hours off for a Chinese export), else null."""
    word = F.regexp_extract(raw, _ZONE_WORD, 1)
    return F.when((word != "") & ~F.upper(word).isin(*UNAMBIGUOUS_ZONE_WORDS), word)


def _zoned_time(raw: Column, pattern: str) -> Column:
    return F.when(zone_abbreviation(raw).isNull(), F.try_to_timestamp(raw, F.lit(pattern)))


def _map_type(raw: Column, mapping: dict[str, str]) -> Column:
    out = F.lit(None).cast("string")
    for src, dst in mapping.items():
        out = F.when(raw == src, F.lit(dst)).otherwise(out)
    return out


def _price(raw: Column) -> Column:
    # A price that is present but not a number becomes null here; cleaning sees raw_price and rejects it.
    return F.when(raw.rlike(r"^\s*[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*$"), raw.cast("double"))


def _finish(
    df: DataFrame, canon: dict[str, Column], raw_time: Column, raw_type: Column, raw_price: Column
) -> DataFrame:
    cols = [canon[name].cast(EVENT_COLUMNS[name]).alias(name) for name in EVENT_COLUMNS]
    return df.select(
        *cols,
        raw_time.cast("string").alias("raw_event_time"),
        raw_type.cast("string").alias("raw_event_type"),
        raw_price.cast("string").alias("raw_price"),
        F.col(CORRUPT_COLUMN),
        F.col("raw_file"),
    )


def transform_synthetic(df: DataFrame) -> DataFrame:
    c = F.col
    canon = {name: c(name) for name in EVENT_COLUMNS}
    canon["event_time"] = _zoned_time(c("event_time"), "yyyy-MM-dd'T'HH:mm:ssX")
    canon["event_type"] = _map_type(c("event_type"), {t: t for t in EVENT_TYPES})
    canon["price"] = _price(c("price"))
    return _finish(df, canon, c("event_time"), c("event_type"), c("price"))


def transform_taobao(df: DataFrame) -> DataFrame:
    c = F.col
    ts = c("timestamp")
    canon = {
        "event_time": F.when(ts.rlike(_INT), F.timestamp_seconds(ts.cast("long"))),
        "user_id": c("user_id"),
        "item_id": c("item_id"),
        "category_id": c("category_id"),
        "event_type": _map_type(c("behavior_type"), {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}),
        "price": F.lit(None),
        "session_id": F.lit(None),
        "query": F.lit(None),
        "brand": F.lit(None),
        "category_code": F.lit(None),
    }
    return _finish(df, canon, ts, c("behavior_type"), F.lit(None))


def transform_rees46(df: DataFrame) -> DataFrame:
    c = F.col
    canon = {
        "event_time": _zoned_time(c("event_time"), "yyyy-MM-dd HH:mm:ss z"),
        "user_id": c("user_id"),
        "item_id": c("product_id"),
        "category_id": c("category_id"),
        "event_type": _map_type(c("event_type"), {"view": "view", "cart": "cart", "purchase": "purchase"}),
        "price": _price(c("price")),
        "session_id": c("user_session"),
        "query": F.lit(None),
        "brand": c("brand"),
        "category_code": c("category_code"),
    }
    return _finish(df, canon, c("event_time"), c("event_type"), c("price"))


def transform_retailrocket(df: DataFrame) -> DataFrame:
    c = F.col
    ts = c("timestamp")
    canon = {
        "event_time": F.when(ts.rlike(_INT), F.timestamp_millis(ts.cast("long"))),
        "user_id": c("visitorid"),
        "item_id": c("itemid"),
        # A category only where an item id exists, so a row without item stays visibly incomplete.
        "category_id": F.when(c("itemid").isNotNull(), F.lit(RETAILROCKET_CATEGORY)),
        "event_type": _map_type(c("event"), {"view": "view", "addtocart": "cart", "transaction": "purchase"}),
        "price": F.lit(None),
        "session_id": F.lit(None),
        "query": F.lit(None),
        "brand": F.lit(None),
        "category_code": F.lit(None),
    }
    return _finish(df, canon, ts, c("event"), F.lit(None))


TRANSFORMS: dict[str, Callable[[DataFrame], DataFrame]] = {
    "synthetic": transform_synthetic,
    "taobao": transform_taobao,
    "rees46": transform_rees46,
    "retailrocket": transform_retailrocket,
}


def raw_schema(source: str) -> StructType:
    columns, _ = _format(source)
    return StructType([StructField(n, StringType()) for n in columns] + [StructField(CORRUPT_COLUMN, StringType())])


def _format(source: str) -> tuple[tuple[str, ...], bool]:
    if source not in RAW_COLUMNS:
        raise ValueError(f"unknown raw source format {source!r}; known: {', '.join(RAW_COLUMNS)}")
    return RAW_COLUMNS[source]


def _local_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        parsed = urlparse(p)
        if parsed.scheme not in ("", "file"):
            continue
        path = Path(parsed.path if parsed.scheme else p)
        if path.is_dir():
            out.extend(sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith((".", "_"))))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"raw path {p} does not exist")
    return out


def check_headers(source: str, paths: list[str]) -> None:
    """Fail naming the file when a headed format's first line is not exactly its expected header.

    Only local files are checked (others are left to Spark); Spark itself would silently skip any first line.
    """
    columns, has_header = _format(source)
    if not has_header:
        return
    expected = ",".join(columns)
    for f in _local_files(paths):
        with f.open("rb") as fh:
            first = fh.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        if first.lstrip("\ufeff") != expected:
            got = first[:200] if first.isprintable() else repr(first[:80])
            missing = [c for c in columns if c not in first.split(",")]
            detail = f"; missing column(s): {', '.join(missing)}" if missing else ""
            raise RawFormatError(f"raw file {f} is not a {source} CSV: header {got!r} != expected {expected!r}{detail}")


def read_raw(spark: SparkSession, source: str, paths: list[str]) -> DataFrame:
    """Raw files of ``source`` as canonical columns plus ``RAW_EXTRA_COLUMNS`` (no rows dropped)."""
    if not paths:
        raise ValueError(f"no raw paths given for source {source!r}")
    _, has_header = _format(source)
    check_headers(source, paths)
    df = (
        spark.read.schema(raw_schema(source))
        .option("header", has_header)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COLUMN)
        .option("encoding", "UTF-8")
        # RFC 4180: a quote inside a quoted field is doubled. Spark's default escape is a backslash, which
        # would keep "U""Q" as "U""Q" (and eat backslashes that are data).
        .option("escape", '"')
        .csv(paths)
    )
    df = df.withColumn("raw_file", F.col("_metadata.file_path"))
    return TRANSFORMS[source](df)
