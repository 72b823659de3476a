"""Expectation suite of one user-features partition (features/user/ds=<cutoff>/), checked before training sets
and scoring read it.

Schema and types; one row per user; value ranges that follow from the definitions in
``spark_jobs.features`` (counts and smoothed conversion ratios >= 0, recencies within [0, lookback + 1],
shares in [0, 1], window counts growing with the window); per-column null rates; sequence arrays of equal length
between 1 and ``sequence_length`` with in-range codes; candidate arrays of equal length; labels all null (window
not landed) or all 0/1 with the label_purchase positive rate inside the configured band; and configured columns
that must not be constant. Facts needed to shape the suite (row count, whether labels are present) come from the
Parquet footers, so building it costs no Spark job.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe

from tasks.config import PipelineConfig
from tasks.layers import features_partition
from tasks.partitions import parquet_rows
from tasks.schema import (
    CANDIDATE_ARRAY_CATEGORY,
    CANDIDATE_ARRAY_PREFIX,
    CANDIDATE_ARRAY_TEXT,
    EVENT_TYPE_INDEX,
    EVENT_TYPES,
    LABEL_COLUMNS,
    SEQUENCE_COLUMNS,
    SEQUENCE_TEXT_COLUMN,
    tabular_columns,
    user_category_columns,
)

# True shares of the user's events: within [0, 1]. The smoothed conversion ratios (f_*_per_*) are not
# bounded by 1 (a purchase without a cart is real), only positive.
SHARE = re.compile(r"^f_(hour_share_\w+|weekend_share|price_known_share)$")
RECENCY = re.compile(r"^f_recency_\w+$")
# Spark SQL typeof() names of the sequence columns.
SEQUENCE_SQL_TYPES = {c: "array<string>" if c == "seq_category" else "array<int>" for c in SEQUENCE_COLUMNS}


def partition(cfg: PipelineConfig, day: dt.date) -> Path:
    return features_partition(cfg, "user", day)


def candidate_array_types(cfg: PipelineConfig) -> dict[str, str]:
    """Spark SQL typeof() names of the candidate arrays a user row carries, in column order."""
    pairs = {CANDIDATE_ARRAY_PREFIX + c: "array<double>" for c in user_category_columns(cfg.features)}
    texts = {CANDIDATE_ARRAY_TEXT: "array<string>"} if cfg.text.enabled else {}
    return {CANDIDATE_ARRAY_CATEGORY: "array<string>", **pairs, **texts}


def sequence_types(cfg: PipelineConfig) -> dict[str, str]:
    """Spark SQL typeof() names of the sequence arrays (seq_text with text.enabled), in column order."""
    return {**SEQUENCE_SQL_TYPES, **({SEQUENCE_TEXT_COLUMN: "array<string>"} if cfg.text.enabled else {})}


def expected_columns(cfg: PipelineConfig) -> list[str]:
    """Column order of a features partition read on its own (the ds partition column is in the path)."""
    return [
        "user_id",
        *tabular_columns(cfg.features),
        *sequence_types(cfg),
        *candidate_array_types(cfg),
        *LABEL_COLUMNS,
    ]


def labels_present(folder: Path, column: str = "label_purchase") -> bool | None:
    """Whether ``column`` holds any non-null value, from the Parquet footers (None: no files or no such column)."""
    import pyarrow.parquet as pq

    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    for f in files:
        meta = pq.ParquetFile(f).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        if column not in names:
            return None
        idx = names.index(column)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            stats = group.column(idx).statistics
            if stats is None or not stats.has_null_count:
                # No statistics written: read the one small column instead.
                return pq.read_table(f, columns=[column]).column(0).null_count < pq.read_metadata(f).num_rows
            if stats.null_count < group.num_rows:
                return True
    return False


def _range(column: str, lookback: int) -> tuple[float, float | None]:
    if RECENCY.match(column):
        return 0.0, float(lookback + 1)
    if SHARE.match(column):
        return 0.0, 1.0
    if column == "f_active_days":
        return 1.0, float(lookback)
    return 0.0, None


def _per_column(pairs: list[str]) -> str:
    """FROM clause exploding one (name, value, lo, hi) struct per listed column, one scan for all of them."""
    return f"(SELECT user_id, explode(array({', '.join(pairs)})) AS v FROM {{batch}})"


def _type_query(cfg: PipelineConfig) -> gxe.Expectation:
    expected = {
        "user_id": "string",
        **{c: "double" for c in tabular_columns(cfg.features)},
        **sequence_types(cfg),
        **candidate_array_types(cfg),
        **{c: "int" for c in LABEL_COLUMNS},
    }
    structs = [f"named_struct('column', '{c}', 'type', typeof({c}), 'expected', '{t}')" for c, t in expected.items()]
    return gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=(
            "/* column types differ from the features contract */ "
            f"SELECT t.column, t.type, t.expected FROM (SELECT explode(array({', '.join(structs)})) AS t "
            "FROM (SELECT * FROM {batch} LIMIT 1)) WHERE t.type <> t.expected"
        )
    )


def _range_query(cfg: PipelineConfig) -> gxe.Expectation:
    lookback = cfg.features.lookback_days
    pairs = []
    for c in tabular_columns(cfg.features):
        lo, hi = _range(c, lookback)
        upper = "CAST(NULL AS DOUBLE)" if hi is None else f"{hi}D"
        pairs.append(f"named_struct('column', '{c}', 'value', {c}, 'lo', {lo}D, 'hi', {upper})")
    return gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=(
            "/* feature values outside their range */ "
            "SELECT v.column, count(*) AS rows, min(v.value) AS min, max(v.value) AS max, first(v.lo) AS lo, "
            f"first(v.hi) AS hi, min(user_id) AS example_user FROM {_per_column(pairs)} "
            "WHERE v.value < v.lo OR v.value > v.hi OR isnan(v.value) GROUP BY v.column"
        )
    )


def _null_query(cfg: PipelineConfig) -> gxe.Expectation:
    bound = cfg.quality.max_feature_null_fraction
    columns = [*tabular_columns(cfg.features), *SEQUENCE_COLUMNS]
    pairs = [f"named_struct('column', '{c}', 'is_null', {c} IS NULL)" for c in columns]
    return gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=(
            f"/* null fraction above quality.max_feature_null_fraction={bound} */ "
            "SELECT v.column, avg(CASE WHEN v.is_null THEN 1.0 ELSE 0.0 END) AS null_fraction, "
            f"min(CASE WHEN v.is_null THEN user_id END) AS example_user FROM {_per_column(pairs)} "
            f"GROUP BY v.column HAVING avg(CASE WHEN v.is_null THEN 1.0 ELSE 0.0 END) > {bound}"
        )
    )


def _candidate_query(cfg: PipelineConfig) -> gxe.Expectation:
    # One element per candidate category in every array (size of a null array is -1 on both sides).
    first, *others = candidate_array_types(cfg)
    unequal = " OR ".join(f"size({c}) <> size({first})" for c in others)
    return gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=(
            f"/* candidate arrays of unequal length */ SELECT user_id, size({first}) AS candidates "
            f"FROM {{batch}} WHERE {unequal}"
        )
    )


def _sequence_queries(cfg: PipelineConfig) -> list[gxe.Expectation]:
    f = cfg.features
    first, *others = sequence_types(cfg)
    equal = " AND ".join(f"size({c}) = size({first})" for c in others)
    lengths = ", ".join(f"size({c}) AS n_{c.removeprefix('seq_')}" for c in sequence_types(cfg))
    bounds = {
        "seq_event_type": (min(EVENT_TYPE_INDEX.values()), max(EVENT_TYPE_INDEX.values())),
        "seq_item_bucket": (1, f.item_buckets),
        "seq_gap_cutoff_bucket": (1, f.gap_bucket_cap),
        "seq_gap_prev_bucket": (0, f.gap_bucket_cap),
        "seq_hour": (0, 23),
    }
    out_of_range = " OR ".join(f"exists({c}, x -> x IS NULL OR x < {lo} OR x > {hi})" for c, (lo, hi) in bounds.items())
    strings = ["seq_category", *([SEQUENCE_TEXT_COLUMN] if cfg.text.enabled else [])]
    null_strings = " OR ".join(f"exists({c}, x -> x IS NULL)" for c in strings)
    return [
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                f"/* sequence arrays of unequal length or outside [1, {f.sequence_length}] */ "
                f"SELECT user_id, {lengths} FROM {{batch}} "
                f"WHERE NOT ({equal} AND size({first}) BETWEEN 1 AND {f.sequence_length})"
            )
        ),
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                "/* sequence codes out of range or null */ "
                f"SELECT user_id FROM {{batch}} WHERE {out_of_range} OR {null_strings}"
            )
        ),
        *(
            [pii_query(cfg, f"concat({SEQUENCE_TEXT_COLUMN}, coalesce({CANDIDATE_ARRAY_TEXT}, array()))")]
            if cfg.text.enabled
            else []
        ),
    ]


def _sql_pattern(pattern: str) -> str:
    """A Java regex as a Spark SQL string literal inside a GX query (backslashes and quotes escaped for the SQL
    parser, braces doubled for the str.format that substitutes {batch})."""
    literal = pattern.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + literal.replace("{", "{{").replace("}", "}}") + "'"


def pii_query(cfg: PipelineConfig, texts: str) -> gxe.Expectation:
    """Rows whose texts (``texts``: a SQL array<string> expression) match a ``cleaning.pii_patterns`` pattern.

    Cleaning scrubs these patterns from every text before it leaves the raw layer; a match here means a text
    reached a layer past it (and would reach the models and their artifacts) unscrubbed."""
    patterns = {k: v for k, v in cfg.cleaning.pii_patterns.items() if v is not None}
    checks = ", ".join(
        f"IF(exists({texts}, x -> x RLIKE {_sql_pattern(p)}), '{name}', NULL)" for name, p in patterns.items()
    )
    return gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=(
            "/* texts that match a cleaning.pii_patterns pattern (personal data past cleaning) */ "
            f"SELECT user_id, pattern FROM (SELECT user_id, explode(filter(array({checks}), p -> p IS NOT NULL)) "
            "AS pattern FROM {batch})"
        )
    )


def _window_query(cfg: PipelineConfig) -> gxe.Expectation:
    windows = cfg.features.windows_days
    pairs = [(f"f_{t}_{a}d", f"f_{t}_{b}d") for t in EVENT_TYPES for a, b in itertools.pairwise(windows)]
    broken = " OR ".join(f"{short} > {long}" for short, long in pairs) or "false"
    return gxe.UnexpectedRowsExpectation(
        unexpected_rows_query=(
            f"/* a shorter window counts more events than a longer one */ SELECT * FROM {{batch}} WHERE {broken}"
        )
    )


def _label_expectations(cfg: PipelineConfig, present: bool) -> list[gxe.Expectation]:
    q = cfg.quality
    labels = ", ".join(LABEL_COLUMNS)
    if not present:
        broken = " OR ".join(f"{c} IS NOT NULL" for c in LABEL_COLUMNS)
        return [
            gxe.UnexpectedRowsExpectation(
                unexpected_rows_query=(
                    "/* labels present although the partition has no label window */ "
                    f"SELECT user_id, {labels} FROM {{batch}} WHERE {broken}"
                )
            )
        ]
    # A partition built after its label window landed has a 0/1 label of every intent on every row.
    broken = " OR ".join(f"{c} IS NULL OR {c} NOT IN (0, 1)" for c in LABEL_COLUMNS)
    return [
        gxe.UnexpectedRowsExpectation(
            unexpected_rows_query=(
                f"/* labels null or not 0/1 */ SELECT user_id, {labels} FROM {{batch}} WHERE {broken}"
            )
        ),
        gxe.ExpectColumnMeanToBeBetween(
            column="label_purchase", min_value=q.min_label_rate, max_value=q.max_label_rate
        ),
    ]


def build_suite(cfg: PipelineConfig, day: dt.date) -> gx.ExpectationSuite:
    q = cfg.quality
    folder = partition(cfg, day)
    # Per-column checks are grouped into one SQL query per property (one scan, one row per failing
    # column): a GX expectation per column would cost a Spark job and a Data Docs block each.
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=expected_columns(cfg)),
        _type_query(cfg),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToBeUnique(column="user_id"),
        _range_query(cfg),
        _null_query(cfg),
        _window_query(cfg),
        *_sequence_queries(cfg),
        _candidate_query(cfg),
        *_label_expectations(cfg, bool(labels_present(folder))),
    ]
    rows = parquet_rows(folder)
    if rows is not None and rows >= q.constant_check_min_rows:
        expectations += [
            gxe.ExpectColumnUniqueValueCountToBeBetween(column=c, min_value=2) for c in q.non_constant_features
        ]
    return gx.ExpectationSuite(name=f"features_{day.isoformat()}", expectations=expectations)
