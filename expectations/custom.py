"""Expectations of ours where GX's own answer to the same question costs too much on Spark.

``ExpectCompoundKeyDuplicatesToBeAtMost``: at most a fraction of rows share their key with another row.
GX's ``ExpectCompoundColumnsToBeUnique`` with ``mostly`` counts them with a window over all rows,
partitioned by a struct of the key, once per metric it needs: a large share of a cold events gate over one
day, and most of the suite on a large frame (bench: events gate). Here the count is one narrow
shuffle of two 64-bit hashes of each row's key; the most repeated keys, which need the key values back,
are looked up only when a result asks for samples (the runner's second pass over failed expectations).
Registered with GX on import (metrics and expectation), so suites, results and Data Docs treat it like a
built-in.

That count is the longest Spark job of an events gate. ``duplicates_counted_ahead`` starts it on a background
thread before GX sets up and resolves its other metrics, and the expectation waits for it only when it
judges the batch, so GX's own driver and Python work runs while the count keeps the cores busy.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine, SparkDFExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider
from great_expectations.validator.metric_configuration import MetricConfiguration

DUPLICATES_METRIC = "compound_key.duplicate_rows"
EXAMPLES_METRIC = "compound_key.duplicate_examples"
# Seeds the second key hash differently from the first (xxhash64 chains its seed through the columns).
_SECOND_HASH_SALT = "compound_key.second_hash"
# Up to this many repeated key fingerprints, the examples lookup joins them back as a broadcast; more (a
# heavily duplicated batch) and it groups the whole batch by its key instead.
EXACT_LOOKUP_MAX_HASHES = 100_000


def key_hash(key: list[str]):
    """First 64-bit hash of the key columns (a Spark Column)."""
    from pyspark.sql import functions as F

    return F.xxhash64(*key)


def second_key_hash(key: list[str]):
    """An independent second 64-bit hash of the key columns."""
    from pyspark.sql import functions as F

    return F.xxhash64(F.lit(_SECOND_HASH_SALT), *key)


def _fingerprinted(df, key: list[str]):
    """The key columns of ``df``'s rows without a null key part, with their fingerprint: two independent 64-bit
    hashes of the key (``_h``, ``_h2``)."""
    return df.select(*key).dropna(how="any").select(*key, key_hash(key).alias("_h"), second_key_hash(key).alias("_h2"))


def _repeated_fingerprints(rows):
    """(_h, _h2, _n) of every fingerprint that ``_fingerprinted`` ``rows`` hold more than once."""
    from pyspark.sql import functions as F

    return (
        rows.select("_h", "_h2")
        # Shuffled on the hash first, so the aggregation runs once, after the shuffle, instead of also in a
        # map-side pass that cannot merge anything when keys are nearly unique.
        .repartition("_h")
        .groupBy("_h", "_h2")
        .agg(F.count(F.lit(1)).alias("_n"))
        .where(F.col("_n") > 1)
    )


def spark_duplicate_rows(df, key: list[str]) -> dict[str, int]:
    """{"rows", "keys"} of Spark DataFrame ``df``: rows whose key another row shares, and such keys.

    Rows are grouped by two independent 64-bit hashes of their key, shuffled on the first: a group of more
    than one row is one repeated key. Two distinct keys would have to collide in both hashes to be counted
    as one (the odds that any two of 10M distinct keys do are about 1e-25). Grouping by the key columns
    themselves took about twice as long on 10M events: the key's strings go through a map-side aggregation
    that, with nearly unique keys, merges nothing, and then the shuffle.
    """
    from pyspark.sql import functions as F

    out = (
        _repeated_fingerprints(_fingerprinted(df, key))
        .agg(F.sum("_n").alias("rows"), F.count(F.lit(1)).alias("keys"))
        .collect()[0]
    )
    return {"rows": int(out["rows"] or 0), "keys": int(out["keys"])}


def spark_duplicate_examples(df, key: list[str], count: int) -> list[dict[str, Any]]:
    """The ``count`` most repeated keys of ``df`` as [{"key": {column: value as text}, "rows": n}], most first.

    Only the rows whose fingerprint repeats are grouped by their real key (a broadcast semi-join), unless
    more than ``EXACT_LOOKUP_MAX_HASHES`` fingerprints repeat.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    rows = _fingerprinted(df, key)
    # Kept until the examples are collected: counted, then broadcast, without shuffling the batch again.
    repeated = _repeated_fingerprints(rows).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n_repeated = repeated.count()
        if n_repeated == 0:
            return []
        if n_repeated <= EXACT_LOOKUP_MAX_HASHES:
            rows = rows.join(F.broadcast(repeated.select("_h", "_h2")), ["_h", "_h2"], "left_semi")
        top = (
            rows.groupBy(*key)
            .agg(F.count(F.lit(1)).alias("_n"))
            .where(F.col("_n") > 1)
            .orderBy(F.col("_n").desc(), *key)
            .limit(count)
            .collect()
        )
    finally:
        repeated.unpersist()
    return [_example({k: r[k] for k in key}, r["_n"]) for r in top]


# Counts started by duplicates_counted_ahead and not yet taken by the metric, by (the batch's plan, key).
_AHEAD: dict[tuple[int, tuple[str, ...]], Future] = {}
_AHEAD_LOCK = threading.Lock()


def _count_in_background(df, key: list[str], tag: str) -> Future:
    """``spark_duplicate_rows(df, key)`` running on its own thread, its Spark jobs tagged ``tag``."""
    from pyspark import InheritableThread

    counted: Future = Future()

    def run() -> None:
        counted.set_running_or_notify_cancel()
        try:
            df.sparkSession.sparkContext.addJobTag(tag)
            counted.set_result(spark_duplicate_rows(df, key))
        except BaseException as e:  # raised again where the count is judged
            counted.set_exception(e)

    # InheritableThread: the caller's Spark local properties (scheduler pool, job group) carry over.
    InheritableThread(run, name="compound-key-duplicates", daemon=True).start()
    return counted


@contextmanager
def duplicates_counted_ahead(df, suite) -> Iterator[None]:
    """Inside, the duplicate-key counts that ``suite``'s ``ExpectCompoundKeyDuplicatesToBeAtMost`` need from
    Spark DataFrame ``df`` are already running, one background thread each; validating ``df`` with ``suite``
    takes them instead of counting again. Counts still running on exit (a validation that raised) are
    cancelled.

    Both the full events suite and the nightly one-day gate finish sooner (figures in bench results). A key
    naming a column ``df`` lacks is not started: the metric reports it as before.
    """
    columns = set(df.columns) if hasattr(df, "sparkSession") else set()  # only Spark batches are counted ahead
    keys = {
        tuple(e.column_list)
        for e in suite.expectations
        if isinstance(e, ExpectCompoundKeyDuplicatesToBeAtMost) and set(e.column_list) <= columns
    }
    if not keys:
        yield
        return
    tag = f"compound-key-duplicates-{uuid.uuid4().hex}"
    plan = df.semanticHash()
    started = {(plan, k): _count_in_background(df, list(k), tag) for k in keys}
    with _AHEAD_LOCK:
        _AHEAD.update(started)
    try:
        yield
    finally:
        with _AHEAD_LOCK:
            for k in started:
                _AHEAD.pop(k, None)
        if not all(f.done() for f in started.values()):
            df.sparkSession.sparkContext.cancelJobsWithTag(tag)


def _counted_ahead(df, key: list[str]) -> Future | None:
    """The count ``duplicates_counted_ahead`` started for this batch and key, taken (None if there is none)."""
    with _AHEAD_LOCK:
        if not _AHEAD:
            return None
    ahead_key = (df.semanticHash(), tuple(key))
    with _AHEAD_LOCK:
        return _AHEAD.pop(ahead_key, None)


class CompoundKeyDuplicateRows(TableMetricProvider):
    """{"rows": rows whose key another row shares, "keys": such keys}. Rows with a null in any key column are
    left out: the not-null expectations report those. On Spark, a count started by ``duplicates_counted_ahead``
    is returned unfinished (a Future), so GX goes on with its other metrics; the expectation waits for it."""

    metric_name = DUPLICATES_METRIC
    value_keys = ("column_list",)

    @metric_value(engine=SparkDFExecutionEngine)
    def _spark(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
        df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        key = _key(metric_value_kwargs, df.columns)
        return _counted_ahead(df, key) or spark_duplicate_rows(df, key)

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
        df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        sizes = _pandas_sizes(df, _key(metric_value_kwargs, list(df.columns)))
        return {"rows": int(sizes.sum()), "keys": len(sizes)}


class CompoundKeyDuplicateExamples(TableMetricProvider):
    """The ``count`` most repeated keys (see ``spark_duplicate_examples``); rows with a null key part left out."""

    metric_name = EXAMPLES_METRIC
    value_keys = ("column_list", "count")

    @metric_value(engine=SparkDFExecutionEngine)
    def _spark(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
        df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        return spark_duplicate_examples(df, _key(metric_value_kwargs, df.columns), metric_value_kwargs["count"])

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
        df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        key = _key(metric_value_kwargs, list(df.columns))
        sizes = _pandas_sizes(df, key).reset_index(name="_n")
        top = sizes.sort_values(["_n", *key], ascending=[False] + [True] * len(key)).head(metric_value_kwargs["count"])
        return [_example({k: r[k] for k in key}, r["_n"]) for r in top.to_dict("records")]


def _pandas_sizes(df, key: list[str]):
    sizes = df[key].dropna(how="any").groupby(key).size()
    return sizes[sizes > 1]


def _key(metric_value_kwargs: dict, columns: list[str]) -> list[str]:
    key = list(metric_value_kwargs["column_list"])
    missing = [c for c in key if c not in columns]
    if missing:
        raise ValueError(f"key column(s) {missing} not in the batch (its columns: {columns})")
    return key


def _example(key: dict[str, Any], rows: int) -> dict[str, Any]:
    return {"key": {k: str(v) for k, v in key.items()}, "rows": int(rows)}


class ExpectCompoundKeyDuplicatesToBeAtMost(BatchExpectation):
    """At most ``max_fraction`` of the rows may share their ``column_list`` key with another row (every row of
    a repeated key counts, as in GX's compound-columns uniqueness)."""

    column_list: list[str]
    max_fraction: float = 0.0

    metric_dependencies = ("table.row_count", DUPLICATES_METRIC)
    success_keys = ("column_list", "max_fraction")
    args_keys = ("column_list", "max_fraction")

    def get_validation_dependencies(self, execution_engine=None, runtime_configuration: dict | None = None):
        dependencies = super().get_validation_dependencies(execution_engine, runtime_configuration)
        result_format = dependencies.result_format
        count = result_format.get("partial_unexpected_count") or 0
        # The most repeated keys cost a second pass over the batch: computed only when samples are asked for,
        # as GX does for its own unexpected values.
        if result_format.get("result_format") != "BOOLEAN_ONLY" and count > 0:
            domain = dependencies.get_metric_configuration(DUPLICATES_METRIC).metric_domain_kwargs
            dependencies.set_metric_configuration(
                EXAMPLES_METRIC,
                MetricConfiguration(
                    metric_name=EXAMPLES_METRIC,
                    metric_domain_kwargs=domain,
                    metric_value_kwargs={"column_list": list(self.column_list), "count": count},
                ),
            )
        return dependencies

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine=None):
        total = metrics["table.row_count"]
        dup = metrics[DUPLICATES_METRIC]
        if isinstance(dup, Future):  # counted ahead; its error, if any, is raised here and reported by GX
            dup = dup.result()
        examples = metrics.get(EXAMPLES_METRIC)
        fraction = dup["rows"] / total if total else 0.0
        observed: dict[str, Any] = {"duplicate_rows": dup["rows"], "duplicate_keys": dup["keys"]}
        if examples is not None:
            observed["most_repeated"] = examples[0] if examples else None
        return {
            "success": fraction <= self.max_fraction,
            "result": {
                "observed_value": observed,
                "element_count": total,
                "unexpected_count": dup["rows"],
                "unexpected_percent": 100 * fraction,
                "partial_unexpected_list": examples or [],
            },
        }
