"""Expectations of ours where GX's own answer to the same question costs too much on Spark.

``ExpectCompoundKeyDuplicatesToBeAtMost``: at most a fraction of rows share their key with another row.
GX's ``ExpectCompoundColumnsToBeUnique`` with ``mostly`` counts them with a window over all rows,
partitioned by a struct of the key, once per metric it needs: about a quarter of a cold events gate (5 of
20 s on a 325K-event day). Here it is one hash aggregation over the key columns, in one Spark job that
also returns the most repeated key as the example. Registered with GX on import (metric and expectation),
so suites, results and Data Docs treat it like a built-in.
"""

from __future__ import annotations

from typing import Any

from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine, SparkDFExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider

DUPLICATES_METRIC = "compound_key.duplicate_rows"


class CompoundKeyDuplicateRows(TableMetricProvider):
    """{"rows": rows whose key another row shares, "keys": such keys, "example": the most repeated key and
    its count (None when there is none)}. Rows with a null in any key column are left out: the not-null
    expectations report those."""

    metric_name = DUPLICATES_METRIC
    value_keys = ("column_list",)

    @metric_value(engine=SparkDFExecutionEngine)
    def _spark(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
        from pyspark.sql import functions as F

        df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        key = _key(metric_value_kwargs, df.columns)
        counts = (
            df.select(*key)
            .dropna(how="any")
            .groupBy(*key)
            .agg(F.count(F.lit(1)).alias("_n"))
            .where(F.col("_n") > 1)
        )
        row = counts.agg(
            F.sum("_n").alias("rows"), F.count(F.lit(1)).alias("keys"), F.max_by(F.struct(*key, "_n"), "_n").alias("top")
        ).collect()[0]
        return _result(row["rows"], row["keys"], row["top"].asDict() if row["top"] is not None else None)

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
        df, _, _ = execution_engine.get_compute_domain(metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE)
        key = _key(metric_value_kwargs, list(df.columns))
        sizes = df[key].dropna(how="any").groupby(key).size()
        sizes = sizes[sizes > 1]
        top = None
        if len(sizes):
            top = dict(zip(key, sizes.idxmax() if len(key) > 1 else (sizes.idxmax(),), strict=True))
            top["_n"] = int(sizes.max())
        return _result(int(sizes.sum()), len(sizes), top)


def _key(metric_value_kwargs: dict, columns: list[str]) -> list[str]:
    key = list(metric_value_kwargs["column_list"])
    missing = [c for c in key if c not in columns]
    if missing:
        raise ValueError(f"key column(s) {missing} not in the batch (its columns: {columns})")
    return key


def _result(rows: int | None, keys: int, top: dict[str, Any] | None) -> dict[str, Any]:
    example = None
    if top is not None:
        n = top.pop("_n")
        example = {"key": {k: str(v) for k, v in top.items()}, "rows": int(n)}
    return {"rows": int(rows or 0), "keys": int(keys), "example": example}


class ExpectCompoundKeyDuplicatesToBeAtMost(BatchExpectation):
    """At most ``max_fraction`` of the rows may share their ``column_list`` key with another row (every row of
    a repeated key counts, as in GX's compound-columns uniqueness)."""

    column_list: list[str]
    max_fraction: float = 0.0

    metric_dependencies = ("table.row_count", DUPLICATES_METRIC)
    success_keys = ("column_list", "max_fraction")
    args_keys = ("column_list", "max_fraction")

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine=None):
        total = metrics["table.row_count"]
        dup = metrics[DUPLICATES_METRIC]
        fraction = dup["rows"] / total if total else 0.0
        return {
            "success": fraction <= self.max_fraction,
            "result": {
                "observed_value": {"duplicate_rows": dup["rows"], "duplicate_keys": dup["keys"],
                                   "most_repeated": dup["example"]},
                "element_count": total,
                "unexpected_count": dup["rows"],
                "unexpected_percent": 100 * fraction,
                "partial_unexpected_list": [dup["example"]] if dup["example"] else [],
            },
        }
