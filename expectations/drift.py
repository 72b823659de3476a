"""Distribution shift between a current DataFrame and a reference, computed in Spark.

Numeric columns: the population stability index (PSI) over the reference's quantile bins, nulls being a
bin of their own (a jump in missing values is drift too). Categorical columns (a string column, or an
array of ids such as ``seq_category``): the total variation distance of category shares over the
reference's most frequent categories plus one "other" bucket. Only per-bin counts reach the driver.

A ``ReferenceProfile`` is everything these measures need of a reference (its bin edges and counts, its
top categories' counts), so a reference read once serves every later comparison with it.

These are quality computations on DataFrames handed in (no session, no I/O): the scores suite uses
``feature_drift`` for its day-over-day PSI, and the nightly drift job (``spark_jobs.drift``) the profile
of the champion's training reference, which it keeps between nights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


def category_counts(df, columns: Sequence[str]) -> dict[str, dict[str | None, int]]:
    """Per column, the count of each category (as a string; null is a category of its own), in one Spark job.

    An array column (e.g. ``seq_category``) counts every element."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    out: dict[str, dict[str | None, int]] = {c: {} for c in columns}
    if not columns:
        return out
    parts = []
    for c in columns:
        value = F.explode(F.col(c)) if isinstance(df.schema[c].dataType, T.ArrayType) else F.col(c)
        parts.append(df.select(F.lit(c).alias("c"), value.alias("k")).select("c", F.col("k").cast("string")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    for r in union.groupBy("c", "k").count().collect():
        out[r["c"]][r["k"]] = int(r["count"])
    return out


@dataclass(frozen=True)
class CategoryProfile:
    """A reference column's ``top_k`` most frequent categories (ties by name, null first) and its total count."""

    keys: list[str | None]
    counts: list[int]
    total: int

    @classmethod
    def of(cls, counts: Mapping[str | None, int], top_k: int) -> CategoryProfile:
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] is not None, kv[0] or ""))[:top_k]
        return cls([k for k, _ in top], [n for _, n in top], sum(counts.values()))


def share_distance(reference: CategoryProfile, current: Mapping[str | None, int], column: str) -> float:
    """Total variation distance 0.5 * sum |p - q| of category shares over the reference's top categories + other."""
    cur_total = sum(current.values())
    if reference.total == 0 or cur_total == 0:
        raise DriftError(
            f"column {column!r} holds no values in the {'reference' if reference.total == 0 else 'current data'}"
        )
    p = [n / reference.total for n in reference.counts]
    q = [current.get(k, 0) / cur_total for k in reference.keys]
    p.append(1.0 - sum(p))
    q.append(1.0 - sum(q))
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))


def category_drift(current, reference, column: str, top_k: int = 50) -> float:
    """Share distance (``share_distance``) of ``column`` in ``current`` against ``reference``.

    An array column (e.g. ``seq_category``) counts every element; nulls are a category of their own.
    """
    _require_columns(reference, [column], "drift reference")
    _require_columns(current, [column], "current data")
    ref = CategoryProfile.of(category_counts(reference, [column])[column], top_k)
    return share_distance(ref, category_counts(current, [column])[column], column)


@dataclass(frozen=True)
class ReferenceProfile:
    """What PSI and share distance need of a reference: per numeric column its quantile edges and its counts
    in those bins (``binned_counts``), per categorical column its ``CategoryProfile``."""

    edges: dict[str, list[float]]
    counts: dict[str, list[int]]
    categories: dict[str, CategoryProfile]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; column order travels as lists, since a JSON writer may sort keys."""
        return {
            "numeric": [[c, self.edges[c], self.counts[c]] for c in self.edges],
            "categorical": [[c, p.keys, p.counts, p.total] for c, p in self.categories.items()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        numeric, categorical = data["numeric"], data["categorical"]
        return cls(
            {c: [float(e) for e in edges] for c, edges, _ in numeric},
            {c: [int(n) for n in counts] for c, _, counts in numeric},
            {
                c: CategoryProfile(list(keys), [int(n) for n in counts], int(total))
                for c, keys, counts, total in categorical
            },
        )


def reference_profile(
    reference,
    columns: Sequence[str],
    categorical: Sequence[str],
    bins: int,
    relative_error: float = 0.001,
    top_k: int = 50,
) -> ReferenceProfile:
    """The profile of ``reference`` over numeric ``columns`` and ``categorical`` columns (three Spark jobs)."""
    _require_columns(reference, [*columns, *categorical], "drift reference")
    edges = quantile_edges(reference, columns, bins, relative_error)
    counts = category_counts(reference, categorical)
    return ReferenceProfile(
        edges, binned_counts(reference, edges), {c: CategoryProfile.of(counts[c], top_k) for c in categorical}
    )


def profile_drift(current, profile: ReferenceProfile) -> tuple[dict[str, float], dict[str, float]]:
    """(PSI per numeric column, share distance per categorical column) of ``current`` against a reference's
    profile, in two Spark jobs over ``current``."""
    _require_columns(current, [*profile.edges, *profile.categories], "current data")
    cur = binned_counts(current, profile.edges)
    cats = category_counts(current, list(profile.categories))
    return (
        {c: psi(profile.counts[c], cur[c]) for c in profile.edges},
        {c: share_distance(p, cats[c], c) for c, p in profile.categories.items()},
    )
