"""Read raw files of each supported source format and map them to canonical event columns.

Before Spark reads anything, ``check_files`` fails naming the file (``RawFormatError``, a ``DataError``) when
a local file would be skipped by Spark, is a truncated or fake ``.gz``/``.bz2`` (other codecs are refused), is
compressed, archived or UTF-16 under a plain name, or lacks its format's header.
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
- taobao: no header; ``user_id,item_id,category_id,behavior_type,timestamp``; Unix seconds (at most 10
  digits: a 13-digit millisecond time is an ``unparseable_timestamp``, not a date in the year 49868);
  pv -> view, cart, fav, buy -> purchase. No price, session, query, brand or category code.
- rees46: header ``event_time,event_type,product_id,category_id,category_code,brand,price,user_id,
  user_session``; times like ``2019-10-01 00:00:00 UTC``; ``remove_from_cart`` keeps no canonical type
  (cleaning quarantines it as ``excluded_event_type``, see ``tasks.schema.EXCLUDED_RAW_EVENT_TYPES``).
- retailrocket: header ``timestamp,visitorid,event,itemid,transactionid``; Unix milliseconds (at most 13 digits);
  view, addtocart -> cart, transaction -> purchase. The events file carries no category (it lives in
  the separate, time-versioned item_properties files), so every event gets the constant category
  ``RETAILROCKET_CATEGORY`` ("unknown"): category features are uninformative for this source by design,
  rather than guessed from item ids.
"""

from __future__ import annotations

import bz2
import gzip
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from tasks.errors import DataError
from tasks.land import RAW_MANIFEST, skipped_by_spark
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

# Epochs with at most 10 digits of seconds (13 of milliseconds) end in 2286: a longer number is another unit
# (e.g. milliseconds in a seconds column) or garbage, and past 18 digits it would overflow Spark's timestamp
# (DATETIME_OVERFLOW fails the whole job), so it becomes a null time (unparseable_timestamp) instead.
_EPOCH_SECONDS = r"^-?[0-9]{1,10}$"
_EPOCH_MILLIS = r"^-?[0-9]{1,13}$"
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
        "event_time": F.when(ts.rlike(_EPOCH_SECONDS), F.timestamp_seconds(ts.cast("long"))),
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
        "event_time": F.when(ts.rlike(_EPOCH_MILLIS), F.timestamp_millis(ts.cast("long"))),
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


# Hadoop picks a codec by file extension (GzipCodec .gz, BZip2Codec .bz2, DeflateCodec .deflate, Lz4Codec .lz4,
# SnappyCodec .snappy, ZStandardCodec .zst). The driver can fully decompress (so check) only these two; a file
# with another codec's extension is refused rather than read unchecked.
_OPENERS: dict[str, Callable[[Path], IO[bytes]]] = {
    ".gz": lambda p: gzip.open(p, "rb"),
    ".bz2": lambda p: bz2.open(p, "rb"),
}
_UNCHECKED_CODECS = (".deflate", ".lz4", ".snappy", ".zst")
# Leading bytes of content Spark would silently misread as UTF-8 text when the extension does not say so.
_MAGIC = {
    b"\x1f\x8b": "gzip data not named .gz",
    b"BZh": "bzip2 data not named .bz2",
    b"PK\x03\x04": "a zip archive (Spark does not read zip)",
    b"\xfd7zXZ\x00": "xz data (Spark does not read xz)",
    b"\x28\xb5\x2f\xfd": "zstd data",
    b"\xff\xfe": "UTF-16 text (raw files must be UTF-8)",
    b"\xfe\xff": "UTF-16 text (raw files must be UTF-8)",
}


def _local_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        parsed = urlparse(p)
        if parsed.scheme not in ("", "file"):
            continue
        path = Path(parsed.path if parsed.scheme else p)
        if path.is_dir():
            nested = sorted(f.name for f in path.iterdir() if f.is_dir())
            if nested:
                # Landing writes only files; reading a folder's files must not quietly leave some behind.
                raise RawFormatError(f"raw folder {path} holds sub-folder(s) {nested}; expected only files")
            files = sorted(f for f in path.iterdir() if f.is_file() and f.name != RAW_MANIFEST)
        elif path.is_file():
            files = [path]
        else:
            raise FileNotFoundError(f"raw path {p} does not exist")
        for f in files:
            # Spark would read the rest of the day without it: refuse instead of losing it silently.
            if skipped_by_spark(f.name):
                raise RawFormatError(
                    f"raw file {f} would be skipped by Spark (names starting with '_' or '.' are ignored); "
                    "land it with tasks.land, which renames such files"
                )
        out.extend(files)
    return out


def _first_line(f: Path) -> bytes:
    """The file's first line after decompression; a compressed file is read to its end to prove it is whole."""
    suffix = f.suffix.lower()
    if suffix in _UNCHECKED_CODECS:
        raise RawFormatError(
            f"raw file {f}: {suffix} compression cannot be checked before reading; deliver plain, .gz or .bz2 CSV"
        )
    opener = _OPENERS.get(suffix)
    if opener is None:
        with f.open("rb") as fh:
            first = fh.readline()
        for magic, what in _MAGIC.items():
            if first.startswith(magic):
                raise RawFormatError(f"raw file {f} is {what}")
        return first
    try:
        with opener(f) as fh:
            first = fh.readline()
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as e:
        # Spark would fail mid-job with an EOFException, or (for a stream that ends early) lose the rest.
        raise RawFormatError(f"raw file {f} is not a complete {suffix} file: {e}") from e
    return first


def check_files(source: str, paths: list[str]) -> list[Path]:
    """The local data files of ``paths``, after failing naming the first file Spark would misread or skip.

    Checks: every file is one Spark reads (see ``tasks.land.skipped_by_spark``); a compressed file
    decompresses to its end; content is not compressed, archived or UTF-16 under a plain name; a headed
    format's first line is exactly its expected header (a UTF-8 BOM is allowed: Spark drops it). Only local
    files are checked (others are left to Spark); Spark itself would silently skip any first line.
    """
    columns, has_header = _format(source)
    expected = ",".join(columns)
    files = _local_files(paths)
    for f in files:
        first = _first_line(f).decode("utf-8", errors="replace").rstrip("\r\n")
        if has_header and first.lstrip("\ufeff") != expected:
            got = first[:200] if first.isprintable() else repr(first[:80])
            missing = [c for c in columns if c not in first.split(",")]
            detail = f"; missing column(s): {', '.join(missing)}" if missing else ""
            raise RawFormatError(f"raw file {f} is not a {source} CSV: header {got!r} != expected {expected!r}{detail}")
    return files


def read_raw(spark: SparkSession, source: str, paths: list[str]) -> DataFrame:
    """Raw files of ``source`` as canonical columns plus ``RAW_EXTRA_COLUMNS`` (no rows dropped)."""
    if not paths:
        raise ValueError(f"no raw paths given for source {source!r}")
    _, has_header = _format(source)
    # After this check Spark's folder listing skips nothing but RAW_MANIFEST. Paths stay as given: Spark
    # would treat brackets or braces in an explicit file name as a glob pattern.
    check_files(source, paths)
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
