"""Encode the texts of one cleaned day that the text-embedding layer does not hold yet.

Pure part: ``day_texts`` gives the distinct normalised texts (search queries, category codes, brands) of
events, keyed by a stable hash of the encoder's id and the text; ``new_texts`` keeps those that no other
day's partition holds. ``encode_batches`` is the ``mapInArrow`` function: each Python worker loads the
encoder once (``text.encoder_dir``, tasks.models.text_encoder) and encodes batches of ``text.batch_size``.

Driver: reads ``events/dt=<day>/`` and ``text_embeddings/encoder=<id>/`` (every day but this one), writes
``text_embeddings/encoder=<id>/dt=<day>/`` (a rerun replaces exactly that partition) and the encoder's
identity beside it (``_encoder.json``: name, SHA-256 of its weights, dimension). Each text is encoded once,
on the first day it appears, so a night's cost grows with its new texts only. Texts were scrubbed of
personal data by cleaning (``cleaning.pii_patterns``) before they reach this step.

    python -m spark_jobs.text_embeddings --day 2026-01-14
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, reduce
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.session import build_session
from tasks.availability import require_event_days
from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.errors import run_cli
from tasks.layers import (
    DAY_KEY,
    events_partition,
    text_embeddings_partition,
    text_embeddings_root,
    text_encoder_record,
)
from tasks.models.text_encoder import EncoderIdentity, TextEncoder, checkpoint, encoder_identity

log = logging.getLogger(__name__)

TEXT_COLUMNS = ("query", "category_code", "brand")
OUTPUT_SCHEMA = T.StructType(
    [
        T.StructField("text_key", T.StringType(), False),
        T.StructField("text", T.StringType(), False),
        T.StructField("vector", T.ArrayType(T.FloatType(), False), False),
    ]
)


@dataclass(frozen=True)
class EmbeddingReport:
    day: dt.date
    encoder: str
    n_texts: int
    n_new: int
    encode_s: float


def encoder_key(identity: EncoderIdentity) -> str:
    """The layer's partition value for an encoder: its name and the start of its weights' hash."""
    return f"{identity}".replace("@", "-")


def normalised(c: F.Column) -> F.Column:
    """Lower case, one space between words, no space at either end: the form that is keyed and encoded."""
    return F.trim(F.regexp_replace(F.lower(c), r"\s+", " "))


def keyed(texts: DataFrame, encoder: str) -> DataFrame:
    """(text_key, text) of a DataFrame of normalised ``text``; the key hashes encoder and text."""
    return texts.select(
        F.substring(F.sha2(F.concat_ws("\u0001", F.lit(encoder), "text"), 256), 1, 32).alias("text_key"), "text"
    )


def day_texts(events: DataFrame, encoder: str) -> DataFrame:
    """(text_key, text): the distinct non-empty normalised texts of ``events``."""
    present = [c for c in TEXT_COLUMNS if c in events.columns]
    texts = reduce(DataFrame.unionAll, [events.select(normalised(F.col(c)).alias("text")) for c in present])
    return keyed(texts.where(F.col("text").isNotNull() & (F.length("text") > 0)).distinct(), encoder)


def new_texts(texts: DataFrame, known: DataFrame | None) -> DataFrame:
    """The rows of ``texts`` whose key ``known`` (other days' partitions) does not hold."""
    return texts if known is None else texts.join(known.select("text_key"), "text_key", "left_anti")


@cache
def _worker_encoder(directory: str, name: str, max_length: int, batch_size: int, threads: int) -> TextEncoder:
    """One encoder per Python worker process: Spark reuses workers between tasks, and a module-level function
    travels to them by reference, so this cache is the worker's own."""
    import torch

    # Spark already runs one task per core.
    torch.set_num_threads(threads)
    return TextEncoder(Path(directory), name=name, max_length=max_length, batch_size=batch_size)


ArrowMap = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def encode_batches(settings: dict) -> ArrowMap:
    """The ``mapInArrow`` function for ``settings`` (``_worker_encoder``'s arguments)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        encoder = _worker_encoder(**settings)
        for batch in batches:
            vectors = encoder.encode(batch.column("text").to_pylist())  # [n, dim] float32
            offsets = pa.array(np.arange(0, vectors.size + 1, vectors.shape[1], dtype=np.int32))
            lists = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), type=pa.float32()))
            columns = [batch.column("text_key"), batch.column("text"), lists]
            yield pa.RecordBatch.from_arrays(columns, names=["text_key", "text", "vector"])

    return run


def _known(spark: SparkSession, cfg: PipelineConfig, encoder: str, day: dt.date | None) -> DataFrame | None:
    """The layer's vectors of ``encoder`` from every day but ``day``; None when there are none."""
    root = text_embeddings_root(cfg, encoder)
    skip = text_embeddings_partition(cfg, encoder, day).name if day is not None else None
    others = [p for p in sorted(root.glob(f"{DAY_KEY}=*")) if p.name != skip and any(p.glob("*.parquet"))]
    if not others:
        return None
    return spark.read.option("basePath", str(root)).parquet(*[str(p) for p in others])


def _encoded(spark: SparkSession, cfg: PipelineConfig, texts: DataFrame, n: int) -> DataFrame:
    """(text_key, text, vector) of the ``n`` rows of ``texts``, encoded on the Python workers."""
    directory, name = checkpoint(cfg.text)
    settings = {
        "directory": str(directory),
        "name": name,
        "max_length": cfg.text.max_length,
        "batch_size": cfg.text.batch_size,
        "threads": 1,
    }
    slices = max(1, min(spark.sparkContext.defaultParallelism, -(-n // cfg.text.batch_size)))
    return texts.repartition(slices).mapInArrow(encode_batches(settings), OUTPUT_SCHEMA)


def configured_encoder(cfg: PipelineConfig) -> tuple[EncoderIdentity, str]:
    """The identity of ``text``'s checkpoint and its partition value in the layer."""
    directory, name = checkpoint(cfg.text)
    identity = encoder_identity(directory, name, cfg.text.max_length)
    return identity, encoder_key(identity)


@dataclass(frozen=True)
class TextVectors:
    vectors: DataFrame  # text, vector
    n_texts: int
    n_from_layer: int  # the rest were encoded here


def vectors_for(spark: SparkSession, cfg: PipelineConfig, texts: DataFrame) -> TextVectors:
    """(text, vector) of each distinct normalised ``text`` of ``texts``: from the text-embedding layer where it
    holds the text, encoded here otherwise (a text of a day the nightly step has not encoded). Persisted."""
    _, encoder = configured_encoder(cfg)
    wanted = keyed(texts.select("text").where(F.col("text").isNotNull()).distinct(), encoder).persist()
    known = _known(spark, cfg, encoder, None)
    try:
        found = (
            wanted.join(known.select("text_key", "vector").dropDuplicates(["text_key"]), "text_key")
            if known is not None
            else None
        )
        n_found = found.count() if found is not None else 0
        missing = new_texts(wanted, found)
        n_missing = missing.count()
        encoded = _encoded(spark, cfg, missing, n_missing) if n_missing else None
        parts = [df for df in (found, encoded) if df is not None]
        vectors = reduce(DataFrame.unionByName, parts).select("text", "vector") if parts else None
        if vectors is None:
            vectors = spark.createDataFrame([], OUTPUT_SCHEMA).select("text", "vector")
        vectors = vectors.persist()
        vectors.count()
    finally:
        wanted.unpersist()
    return TextVectors(vectors=vectors, n_texts=n_found + n_missing, n_from_layer=n_found)


def embed_day(spark: SparkSession, cfg: PipelineConfig, day: dt.date) -> EmbeddingReport:
    """Encode the new texts of ``day`` into ``text_embeddings/encoder=<id>/dt=<day>/``."""
    identity, encoder = configured_encoder(cfg)
    directory, _ = checkpoint(cfg.text)
    require_event_days(cfg, [day], "encoding the day's texts")
    events = spark.read.parquet(str(events_partition(cfg, day)))
    texts = day_texts(events, encoder).persist()
    new = new_texts(texts, _known(spark, cfg, encoder, day)).persist()
    try:
        n_texts = texts.count()
        n_new = new.count()
        out = text_embeddings_partition(cfg, encoder, day)
        started = time.perf_counter()
        if n_new == 0:
            # Nothing to write; a stale partition of an earlier run must not survive the rerun.
            shutil.rmtree(out, ignore_errors=True)
        else:
            vectors = _encoded(spark, cfg, new, n_new)
            vectors.sortWithinPartitions("text_key").write.mode("overwrite").parquet(str(out))
        encode_s = time.perf_counter() - started
    finally:
        new.unpersist()
        texts.unpersist()
    record = text_encoder_record(cfg, encoder)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({**dataclasses.asdict(identity), "directory": str(directory)}, indent=2) + "\n")
    report = EmbeddingReport(day=day, encoder=encoder, n_texts=n_texts, n_new=n_new, encode_s=encode_s)
    log.info("text embeddings %s: %s", day, report)
    return report


def main(argv: list[str] | None = None) -> EmbeddingReport | None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--day", type=parse_ds, required=True, help="the cleaned events day whose texts to encode")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if not cfg.text.enabled:
        print(f"{args.day}: text.enabled is false; no text is encoded")
        return None
    require_event_days(cfg, [args.day], "encoding the day's texts")
    report = embed_day(build_session(cfg, f"text_embeddings {args.day}"), cfg, args.day)
    rate = f", {report.n_new / report.encode_s:.0f} texts/s" if report.n_new and report.encode_s > 0 else ""
    print(f"{report.day}: {report.n_texts} distinct texts, {report.n_new} new encoded with {report.encoder}{rate}")
    return report


if __name__ == "__main__":
    # Under spark-submit this file is __main__; go through the importable module so _worker_encoder pickles by
    # reference (to a module the workers can import) and keeps its cache there.
    from spark_jobs import text_embeddings as _module

    sys.exit(run_cli(_module.main))
