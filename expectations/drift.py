"""Distribution shift between a current DataFrame and a reference, computed in Spark.

Numeric columns: the population stability index (PSI) over the reference's quantile bins, nulls being a
bin of their own (a jump in missing values is drift too). Categorical columns (a string column, or an
array of ids such as ``seq_category``): the total variation distance of category shares over the
reference's most frequent categories plus one "other" bucket. Only per-bin counts reach the driver.

These are quality computations on DataFrames handed in (no session, no I/O): the scores suite uses
``feature_drift`` for its day-over-day PSI, and the nightly drift job (``spark_jobs.drift``) for the
features of a cutoff against the champion's training reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tasks.errors import DataError

# Floor of a bin's share: an empty bin on one side gives a large but finite PSI instead of infinity.
EPS = 1e-4
NULL_BIN = -1
CATEGORICAL_COLUMNS = ("seq_category", "seq_event_type")


class DriftError(DataError):
    """The drift reference or the current partition cannot be read (missing, lacks columns)."""


def psi(expected: Sequence[float], actual: Sequence[float], eps: float = EPS) -> float:
    """PSI = sum_i (a_i - e_i) * ln(a_i / e_i) over bin shares (counts are normalised; shares floored at eps)."""
    if len(expected) != len(actual) or not expected:
        raise ValueError(
            f"psi needs two non-empty count vectors of equal length, got {len(expected)} and {len(actual)}"
        )
    te, ta = float(sum(expected)), float(sum(actual))
    if te <= 0 or ta <= 0:
        raise ValueError("psi needs at least one count on each side")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / te, eps), max(a / ta, eps)
        total += (pa - pe) * math.log(pa / pe)
    return total


def quantile_edges(
    reference, columns: Sequence[str], bins: int, relative_error: float = 0.001
) -> dict[str, list[float]]:
    """Distinct interior quantile edges (at i / bins, i = 1..bins-1) of each column of ``reference``."""
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    probs = [i / bins for i in range(1, bins)]
    cols = list(columns)
    # One approxQuantile pass for all columns; nulls are ignored, an all-null column gives [].
    quantiles = reference.approxQuantile(cols, probs, relative_error)
    return {c: sorted({float(q) for q in qs}) for c, qs in zip(cols, quantiles, strict=True)}


def _bin(column: str, edges: list[float]):
    from pyspark.sql import functions as F

    x = F.col(column).cast("double")
    # Bin k holds edges[k-1] <= x < edges[k]: the number of edges at or below x.
    index = sum((F.when(x >= F.lit(e), 1).otherwise(0) for e in edges), F.lit(0))
    return F.when(x.isNull(), F.lit(NULL_BIN)).otherwise(index)


def binned_counts(df, edges: dict[str, list[float]]) -> dict[str, list[int]]:
    """Per column, counts of [null bin, bin 0, ..., bin len(edges)] in one Spark aggregation."""
    from pyspark.sql import functions as F

    if not edges:
        return {}
    pairs = F.array(*[F.struct(F.lit(c).alias("c"), _bin(c, e).alias("b")) for c, e in edges.items()])
    rows = df.select(F.explode(pairs).alias("p")).groupBy("p.c", "p.b").count().collect()
    out = {c: [0] * (len(e) + 2) for c, e in edges.items()}
    for r in rows:
        out[r["c"]][r["b"] + 1] = int(r["count"])
    return out


def _require_columns(df, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DriftError(f"{what} lacks column(s) {missing}")


def feature_drift(
    current, reference, columns: Sequence[str], bins: int = 10, *, relative_error: float = 0.001
) -> dict[str, float]:
    """PSI of each numeric column of ``current`` against ``reference`` over the reference's quantile bins."""
    _require_columns(reference, columns, "drift reference")
    _require_columns(current, columns, "current data")
    edges = quantile_edges(reference, columns, bins, relative_error)
    ref, cur = binned_counts(reference, edges), binned_counts(current, edges)
    return {c: psi(ref[c], cur[c]) for c in columns}


def _category_counts(df, column: str):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    value = F.col(column)
    if isinstance(df.schema[column].dataType, T.ArrayType):
        value = F.explode(value)
    return df.select(value.alias("k")).select(F.col("k").cast("string").alias("k")).groupBy("k").count()


def category_drift(current, reference, column: str, top_k: int = 50) -> float:
    """Total variation distance 0.5 * sum |p - q| of category shares (top ``top_k`` reference categories + other).

    An array column (e.g. ``seq_category``) counts every element; nulls are a category of their own.
    """
    from pyspark.sql import functions as F

    _require_columns(reference, [column], "drift reference")
    _require_columns(current, [column], "current data")
    ref = _category_counts(reference, column)
    top = ref.orderBy(F.col("count").desc(), F.col("k").asc_nulls_first()).limit(top_k).collect()
    keys = [r["k"] for r in top]
    ref_total = ref.agg(F.sum("count")).first()[0] or 0
    cur_rows = _category_counts(current, column).collect()
    cur_total = sum(int(r["count"]) for r in cur_rows)
    if ref_total == 0 or cur_total == 0:
        raise DriftError(
            f"column {column!r} holds no values in the {'reference' if ref_total == 0 else 'current data'}"
        )
    cur = {r["k"]: int(r["count"]) for r in cur_rows}
    p = [int(r["count"]) / ref_total for r in top]
    q = [cur.get(k, 0) / cur_total for k in keys]
    p.append(1.0 - sum(p))
    q.append(1.0 - sum(q))
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))
