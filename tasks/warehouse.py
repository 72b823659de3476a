"""The scores warehouse: one adapter over DuckDB and PostgreSQL, chosen by ``warehouse.url``.

The table ``warehouse.table`` holds one partition (all rows of one ``ds``) per nightly run.
``replace_partition`` validates the rows, stages them in a temporary table, then swaps the
partition in ONE transaction (delete the ds, insert the staged rows), so a rerun leaves one copy
and a writer killed mid-write leaves the previous partition intact.

The table ``warehouse.outcomes_table`` holds the realized outcomes of those scores (one row per
scored ds, model version and role); ``replace_outcomes`` swaps all rows of one ds the same way.
The view ``warehouse.health_view`` averages them over the last ``monitoring.health_windows_days``
closed days per model version and role.

Concurrent writers:
- PostgreSQL: the swap transaction first takes ``pg_advisory_xact_lock(hashtext(table), ds)``,
  so two writers of the same ds run one after the other (the second waits at most
  ``warehouse.lock_timeout_s``, then fails with ``WarehouseBusyError``). ``PRIMARY KEY (ds, user_id)``
  backs this up: a duplicate can never be committed.
- DuckDB: one process may open the file for writing at a time. Each operation opens the file,
  does its work and closes it; a process that finds the file locked retries for at most
  ``warehouse.lock_timeout_s`` and then fails with ``WarehouseBusyError`` naming the holder.
  Writers inside one process are serialised by a per-file lock.

``load_scores`` moves one ``scores/ds=<ds>/`` staging partition (Parquet written by
``spark_jobs.score``) into the warehouse with pyarrow only.
"""

from __future__ import annotations

import abc
import argparse
import contextlib
import datetime as dt
import io
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.layers import SCORING_ROLES, ScoringRole, check_role, scores_partition
from tasks.schema import OUTCOME_COLUMNS, OUTCOME_KEY, SCORE_COLUMNS

# Optional explanation columns (written by spark_jobs.score when the model supports them);
# rows without them load with NULLs there.
OPTIONAL_SCORE_COLUMNS = {
    "top_categories": "array<string>",  # most likely next categories, best first
    "reasons": "array<string>",  # tabular features pushing p_purchase up most, strongest first
}
WAREHOUSE_COLUMNS = {**SCORE_COLUMNS, **OPTIONAL_SCORE_COLUMNS}
PROBABILITY_COLUMNS = ("p_purchase", "p_cart", "p_fav")
NOT_NULL_COLUMNS = ("ds", "user_id", "p_purchase", "model_name", "model_version", "scored_at")

_ARROW_TYPES = {
    "date": pa.date32(),
    "string": pa.string(),
    "double": pa.float64(),
    "bigint": pa.int64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "array<string>": pa.list_(pa.string()),
    "array<double>": pa.list_(pa.float64()),
}
ARROW_SCHEMA = pa.schema([pa.field(c, _ARROW_TYPES[t]) for c, t in WAREHOUSE_COLUMNS.items()])
OUTCOME_ARROW_SCHEMA = pa.schema([pa.field(c, _ARROW_TYPES[t]) for c, t in OUTCOME_COLUMNS.items()])

_SQL_TYPES = {
    "duckdb": {
        "date": "DATE",
        "string": "VARCHAR",
        "double": "DOUBLE",
        "bigint": "BIGINT",
        "timestamp": "TIMESTAMPTZ",
        "array<string>": "VARCHAR[]",
        "array<double>": "DOUBLE[]",
    },
    "postgresql": {
        "date": "date",
        "string": "text",
        "double": "double precision",
        "bigint": "bigint",
        "timestamp": "timestamptz",
        "array<string>": "text[]",
        "array<double>": "double precision[]",
    },
}

OUTCOME_NOT_NULL_COLUMNS = (*OUTCOME_KEY, "horizon_days", "n_users", "evaluated_at")
OUTCOME_ROLES = SCORING_ROLES
# Shares, rates, ranking and calibration metrics (a mean of probabilities included): [0, 1] where not null.
OUTCOME_UNIT_COLUMNS = (
    "purchase_rate",
    "mean_p_purchase",
    "purchase_roc_auc",
    "purchase_pr_auc",
    "purchase_brier",
    "purchase_ece",
    "cart_roc_auc",
    "cart_pr_auc",
    "fav_roc_auc",
    "fav_pr_auc",
    "top_fraction",
    "precision_top",
    "recall_top",
    "reliability_predicted",
    "reliability_observed",
    "category_hit_rate",
    "category_ndcg",
)
OUTCOME_NONNEGATIVE_COLUMNS = ("purchase_log_loss", "lift_by_decile")
OUTCOME_COUNT_COLUMNS = tuple(c for c, t in OUTCOME_COLUMNS.items() if t == "bigint")
# Metrics the health view averages per window, as <metric>_<N>d.
HEALTH_METRICS = ("purchase_roc_auc", "purchase_pr_auc", "purchase_ece", "recall_top", "category_hit_rate")

# Rows per CSV slice streamed into PostgreSQL's COPY.
COPY_CHUNK_ROWS = 100_000

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class WarehouseError(RuntimeError):
    """The warehouse could not be reached or refused an operation."""


class WarehouseBusyError(WarehouseError):
    """Another writer held the warehouse (or the ds partition) longer than warehouse.lock_timeout_s."""


class ScoreValidationError(ValueError):
    """Rows handed to the warehouse break the intent_scores contract; nothing was written."""


class OutcomeValidationError(ValueError):
    """Rows handed to the warehouse break the outcomes table contract; nothing was written."""


@dataclass(frozen=True)
class LoadReport:
    ds: dt.date
    backend: str
    table: str
    rows: int
    files: int
    source: str


def _ident(name: str, what: str) -> str:
    if not _IDENT.match(name):
        raise WarehouseError(f"warehouse {what} {name!r} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return '"' + name + '"'


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _type_ok(kind: str, t: pa.DataType) -> bool:
    if kind == "date":
        return pa.types.is_date(t)
    if kind == "string":
        return _is_string(t)
    if kind == "double":
        return pa.types.is_floating(t)
    if kind == "bigint":
        return pa.types.is_integer(t)
    if kind == "timestamp":
        return pa.types.is_timestamp(t)
    if kind == "array<string>":
        return _is_list(t) and _is_string(t.value_type)
    if kind == "array<double>":
        return _is_list(t) and pa.types.is_floating(t.value_type)
    raise AssertionError(kind)


def _outcome_type_ok(kind: str, t: pa.DataType) -> bool:
    """Outcome rows come from Python metrics: an all-NULL column arrives untyped, and a metric that happens to
    be whole (an empty list, a count used as a double) arrives as integers; both cast losslessly."""
    if pa.types.is_null(t) or _type_ok(kind, t):
        return True
    if kind == "double":
        return pa.types.is_integer(t)
    if kind == "array<double>":
        return _is_list(t) and (pa.types.is_integer(t.value_type) or pa.types.is_null(t.value_type))
    return False


def validate_scores(ds: dt.date, rows: pa.Table) -> pa.Table:
    """Check ``rows`` against the intent_scores contract for partition ``ds``; return them in the
    canonical Arrow schema (optional columns added as nulls). Raises ScoreValidationError naming
    every problem found. Timestamps without a zone are taken as UTC (Spark's INT96 Parquet)."""
    if not isinstance(rows, pa.Table):
        raise ScoreValidationError(f"rows must be a pyarrow.Table, got {type(rows).__name__}")
    if not isinstance(ds, dt.date) or isinstance(ds, dt.datetime):
        raise ScoreValidationError(f"ds must be a datetime.date, got {ds!r}")
    # Types are checked only once every column is known; values only in the canonical schema.
    problems = _column_problems(rows, tuple(SCORE_COLUMNS), WAREHOUSE_COLUMNS) or _type_problems(rows)
    if problems:
        raise ScoreValidationError(f"scores for ds={ds}: " + "; ".join(problems))
    table = _canonical(rows)
    problems = _value_problems(ds, table)
    if problems:
        raise ScoreValidationError(f"scores for ds={ds}: " + "; ".join(problems))
    return table


def _column_problems(rows: pa.Table, required: Sequence[str], allowed: dict[str, str]) -> list[str]:
    names = rows.column_names
    problems = []
    missing = [c for c in required if c not in names]
    unknown = [c for c in names if c not in allowed]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if missing:
        problems.append(f"missing columns {missing}")
    if unknown:
        problems.append(f"unknown columns {unknown} (allowed: {list(allowed)})")
    if dupes:
        problems.append(f"duplicated columns {dupes}")
    return problems


def _type_problems(rows: pa.Table) -> list[str]:
    return [
        f"column {c} has type {rows.schema.field(c).type}, expected {WAREHOUSE_COLUMNS[c]}"
        for c in rows.column_names
        if not _type_ok(WAREHOUSE_COLUMNS[c], rows.schema.field(c).type)
    ]


def _conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` in ``schema``: absent columns as nulls, zone-less timestamps as UTC (Spark's INT96 Parquet)."""
    cols: dict[str, pa.ChunkedArray] = {}
    for field in schema:
        if field.name not in rows.column_names:
            cols[field.name] = pa.chunked_array([pa.nulls(rows.num_rows, field.type)])
            continue
        col = rows.column(field.name)
        if pa.types.is_timestamp(col.type) and col.type.tz is None:
            col = pc.assume_timezone(col.cast(pa.timestamp(col.type.unit)), "UTC")
        cols[field.name] = col.cast(field.type)
    return pa.table(cols, schema=schema)


def _canonical(rows: pa.Table) -> pa.Table:
    """``rows`` in ARROW_SCHEMA: absent optional columns as nulls, zone-less ``scored_at`` as UTC."""
    return _conform(rows, ARROW_SCHEMA)


def _value_problems(ds: dt.date, table: pa.Table) -> list[str]:
    problems = []
    for c in NOT_NULL_COLUMNS:
        n = table.column(c).null_count
        if n:
            problems.append(f"{n} null value(s) in {c}")
    problems += _wrong_ds_problems(ds, table)
    for c in PROBABILITY_COLUMNS:
        col = table.column(c)
        bad = pc.sum(
            pc.cast(pc.invert(pc.and_(pc.greater_equal(col, 0.0), pc.less_equal(col, 1.0))), pa.int64())
        ).as_py()
        if bad:
            problems.append(f"{bad} value(s) of {c} are NaN or outside [0, 1]")
    for c in OPTIONAL_SCORE_COLUMNS:
        flat = pc.list_flatten(table.column(c))
        if flat.null_count:
            problems.append(f"{flat.null_count} null element(s) inside {c}")
    if table.num_rows:
        counts = table.group_by("user_id").aggregate([("user_id", "count")])
        dup = counts.filter(pc.greater(counts.column("user_id_count"), 1))
        if dup.num_rows:
            problems.append(f"{dup.num_rows} duplicated user_id(s) (e.g. {dup.column('user_id').to_pylist()[:3]})")
    return problems


def _wrong_ds_problems(ds: dt.date, table: pa.Table) -> list[str]:
    wrong_ds = _count(pc.not_equal(table.column("ds"), pa.scalar(ds, pa.date32())))
    if not wrong_ds:
        return []
    seen = sorted({d for d in table.column("ds").to_pylist() if d is not None and d != ds})[:3]
    return [f"{wrong_ds} row(s) have ds other than {ds} (e.g. {seen})"]


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    """True values of a boolean mask; nulls (a comparison with NULL) do not count."""
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def validate_outcomes(ds: dt.date, rows: pa.Table) -> pa.Table:
    """Check ``rows`` against the outcomes table contract for ``ds``; return them in OUTCOME_ARROW_SCHEMA.
    Raises OutcomeValidationError naming every problem found. An undefined metric must be NULL: NaN or
    infinity would turn every average over it in the health view into NaN."""
    if not isinstance(rows, pa.Table):
        raise OutcomeValidationError(f"rows must be a pyarrow.Table, got {type(rows).__name__}")
    if not isinstance(ds, dt.date) or isinstance(ds, dt.datetime):
        raise OutcomeValidationError(f"ds must be a datetime.date, got {ds!r}")
    problems = _column_problems(rows, tuple(OUTCOME_COLUMNS), OUTCOME_COLUMNS) or _outcome_type_problems(rows)
    if problems:
        raise OutcomeValidationError(f"outcomes for ds={ds}: " + "; ".join(problems))
    table = _conform(rows, OUTCOME_ARROW_SCHEMA)
    problems = _outcome_value_problems(ds, table)
    if problems:
        raise OutcomeValidationError(f"outcomes for ds={ds}: " + "; ".join(problems))
    return table


def _outcome_type_problems(rows: pa.Table) -> list[str]:
    problems = []
    for c in rows.column_names:
        kind, t = OUTCOME_COLUMNS[c], rows.schema.field(c).type
        if not _outcome_type_ok(kind, t):
            problems.append(f"column {c} has type {t}, expected {kind}")
            continue
        try:
            rows.column(c).cast(_ARROW_TYPES[kind])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            problems.append(f"column {c} of type {t} does not cast to {kind} without loss: {e}")
    return problems


def _numbers(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """The values of a double column, or the elements of an array<double> column."""
    return pc.list_flatten(col) if _is_list(col.type) else col


def _outcome_value_problems(ds: dt.date, table: pa.Table) -> list[str]:
    problems = []
    for c in OUTCOME_NOT_NULL_COLUMNS:
        n = table.column(c).null_count
        if n:
            problems.append(f"{n} null value(s) in {c}")
    problems += _wrong_ds_problems(ds, table)
    role = table.column("role")
    bad_role = pc.and_(pc.is_valid(role), pc.invert(pc.is_in(role, value_set=pa.array(OUTCOME_ROLES))))
    n_bad_role = _count(bad_role)
    if n_bad_role:
        seen = sorted(set(pc.filter(role, bad_role).to_pylist()))[:3]
        problems.append(f"{n_bad_role} row(s) have role other than {' or '.join(OUTCOME_ROLES)} (e.g. {seen})")
    for c, kind in OUTCOME_COLUMNS.items():
        if kind in ("double", "array<double>"):
            n = _count(pc.invert(pc.is_finite(_numbers(table.column(c)))))
            if n:
                problems.append(f"{n} NaN or infinite value(s) in {c} (write NULL for an undefined metric)")
    bounds: list[tuple[str, float, float | None]] = [(c, 0.0, 1.0) for c in OUTCOME_UNIT_COLUMNS]
    bounds += [(c, 0.0, None) for c in (*OUTCOME_NONNEGATIVE_COLUMNS, *OUTCOME_COUNT_COLUMNS)]
    for c, low, high in bounds:
        values = _numbers(table.column(c))
        outside = pc.less(values, low) if high is None else pc.or_(pc.less(values, low), pc.greater(values, high))
        bad = pc.and_(pc.is_finite(values), outside) if pa.types.is_floating(values.type) else outside
        n = _count(bad)
        if n:
            allowed = f">= {low:g}" if high is None else f"within [{low:g}, {high:g}]"
            seen = pc.filter(values, bad).to_pylist()[:3]
            problems.append(f"{n} value(s) of {c} not {allowed} (e.g. {seen})")
    if table.num_rows:
        key = list(OUTCOME_KEY)
        counts = table.group_by(key).aggregate([("ds", "count", pc.CountOptions(mode="all"))])
        dup = counts.filter(pc.greater(counts.column("ds_count"), 1))
        if dup.num_rows:
            seen = [tuple(str(v) for v in r.values()) for r in dup.select(key).to_pylist()[:3]]
            problems.append(f"{dup.num_rows} duplicated key(s) ({', '.join(key)}) (e.g. {seen})")
    return problems


class Warehouse(abc.ABC):
    """Scores warehouse; use ``Warehouse.from_config(cfg)``. Every method opens and closes its own
    connection, so an idle Warehouse object holds no lock."""

    backend: str
    _p: str  # the driver's query parameter placeholder

    def __init__(self, cfg: PipelineConfig):
        w = cfg.warehouse
        self.cfg = cfg
        self.url = w.url
        self.table_name = w.table
        self.table = _ident(w.table, "table")
        self.latest_view = _ident(w.latest_view, "latest_view")
        self.summary_view = _ident(w.summary_view, "summary_view")
        self.shadow_table_name = w.shadow_table
        self.shadow_table = _ident(w.shadow_table, "shadow_table")
        self.outcomes_table_name = w.outcomes_table
        self.outcomes_table = _ident(w.outcomes_table, "outcomes_table")
        self.health_view = _ident(w.health_view, "health_view")
        self.health_windows_days = list(cfg.monitoring.health_windows_days)
        self.lock_timeout_s = w.lock_timeout_s

    @staticmethod
    def from_config(cfg: PipelineConfig) -> Warehouse:
        if cfg.warehouse.backend == "duckdb":
            return DuckDBWarehouse(cfg)
        return PostgresWarehouse(cfg)

    def _types(self) -> dict[str, str]:
        return _SQL_TYPES[self.backend]

    def _column_ddl(self, columns: dict[str, str], not_null: tuple[str, ...]) -> str:
        types = self._types()
        return ",\n  ".join(f"{c} {types[t]}{' NOT NULL' if c in not_null else ''}" for c, t in columns.items())

    def _scores_table_ddl(self, table: str) -> list[str]:
        """A scores table (the readers' or the shadow one) and the optional columns older ones lack."""
        types = self._types()
        cols = self._column_ddl(WAREHOUSE_COLUMNS, NOT_NULL_COLUMNS)
        return [
            f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols},\n  PRIMARY KEY (ds, user_id)\n)",
            *(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {c} {types[t]}"
                for c, t in OPTIONAL_SCORE_COLUMNS.items()
            ),
        ]

    def _ddl_statements(self) -> list[str]:
        col_list = ", ".join(WAREHOUSE_COLUMNS)
        # Each ds is written by one run with one pinned model version; n_model_versions > 1 would flag a mix.
        return [
            *self._scores_table_ddl(self.table),
            f"DROP VIEW IF EXISTS {self.latest_view}",
            f"CREATE VIEW {self.latest_view} AS SELECT DISTINCT ON (user_id) {col_list} "
            f"FROM {self.table} ORDER BY user_id, ds DESC",
            f"DROP VIEW IF EXISTS {self.summary_view}",
            f"CREATE VIEW {self.summary_view} AS SELECT ds, count(*) AS n_users, "
            "avg(p_purchase) AS mean_p_purchase, avg(p_cart) AS mean_p_cart, avg(p_fav) AS mean_p_fav, "
            "min(model_name) AS model_name, min(model_version) AS model_version, "
            "count(DISTINCT model_version) AS n_model_versions, min(scored_at) AS scored_at, "
            "min(pipeline_run_id) AS pipeline_run_id "
            f"FROM {self.table} GROUP BY ds",
            *self._scores_table_ddl(self.shadow_table),
            *self._outcome_ddl_statements(),
        ]

    def _outcome_ddl_statements(self) -> list[str]:
        cols = self._column_ddl(OUTCOME_COLUMNS, OUTCOME_NOT_NULL_COLUMNS)
        key = ", ".join(OUTCOME_KEY)
        return [
            f"CREATE TABLE IF NOT EXISTS {self.outcomes_table} (\n  {cols},\n  PRIMARY KEY ({key})\n)",
            # Dropped and recreated, not replaced: a change of monitoring.health_windows_days changes the columns.
            f"DROP VIEW IF EXISTS {self.health_view}",
            f"CREATE VIEW {self.health_view} AS {self.health_view_sql()}",
        ]

    def health_view_sql(self) -> str:
        """The health view's query, the same text on DuckDB and PostgreSQL. Each role's windows end at the
        latest closed ds of that role across all versions (L), so a version that stopped being scored shows
        the few days it still has, not its own old last month; ``ds > L - N`` (date minus integer days is a
        date on both engines) keeps the last N days. Versions without a day in the longest window drop out."""
        longest = max(self.health_windows_days)
        per_window = []
        for n in self.health_windows_days:
            recent = f"FILTER (WHERE o.ds > a.anchor_ds - {int(n)})"
            per_window.append(f"count(*) {recent} AS days_{int(n)}d")
            per_window += [f"avg(o.{m}) {recent} AS {m}_{int(n)}d" for m in HEALTH_METRICS]
        columns = ",\n  ".join(per_window)
        return (
            "WITH anchors AS (\n"
            f"  SELECT role, max(ds) AS anchor_ds FROM {self.outcomes_table} GROUP BY role\n"
            ")\n"
            "SELECT o.model_name, o.model_version, o.role, max(o.ds) AS last_closed_ds,\n"
            f"  {columns}\n"
            f"FROM {self.outcomes_table} o JOIN anchors a ON o.role = a.role\n"
            f"WHERE o.ds > a.anchor_ds - {int(longest)}\n"
            "GROUP BY o.model_name, o.model_version, o.role"
        )

    @abc.abstractmethod
    def ensure_schema(self) -> None:
        """Create the tables if missing and (re)create the views (idempotent, safe to call concurrently)."""

    @abc.abstractmethod
    def _swap_rows(self, table_name: str, columns: Sequence[str], ds: dt.date, rows: pa.Table) -> int:
        """Replace every row of ``ds`` in ``table_name`` with ``rows`` (already validated, holding ``columns``)
        in one transaction; returns the rows of ``ds`` after the swap."""

    @abc.abstractmethod
    def _query(self, sql: str, params: list[Any]) -> list[tuple]: ...

    def _after_delete(self, ds: dt.date) -> None:  # noqa: B027  (a hook that does nothing unless overridden)
        """Runs inside every swap transaction between the delete and the insert (a crash-test seam)."""

    def scores_table(self, role: str) -> str:
        """The scores table of a scoring role: the champion's readers' table, or the challenger's shadow table."""
        return self.table_name if check_role(role) == "champion" else self.shadow_table_name

    def replace_partition(self, ds: dt.date, rows: pa.Table, role: str = "champion") -> int:
        """Replace partition ``ds`` of the role's scores table (the challenger's: the shadow table) with ``rows``
        (validated first); returns the rows now in it."""
        table = validate_scores(ds, rows)
        return self._swap_rows(self.scores_table(role), list(WAREHOUSE_COLUMNS), ds, table)

    def drop_partition(self, ds: dt.date, role: str = "champion") -> None:
        """Delete partition ``ds`` of the role's scores table (a night without a challenger leaves no shadow rows)."""
        self._swap_rows(self.scores_table(role), list(WAREHOUSE_COLUMNS), ds, ARROW_SCHEMA.empty_table())

    def replace_outcomes(self, ds: dt.date, rows: pa.Table) -> int:
        """Replace every outcome row of ``ds`` with ``rows`` (validated first); returns the rows now in that ds."""
        table = validate_outcomes(ds, rows)
        return self._swap_rows(self.outcomes_table_name, list(OUTCOME_COLUMNS), ds, table)

    def outcome_days(self) -> list[dt.date]:
        """The distinct ds of the outcomes table, ascending."""
        return [r[0] for r in self._query(f"SELECT DISTINCT ds FROM {self.outcomes_table} ORDER BY ds", [])]

    def outcomes(self, ds: dt.date) -> list[dict[str, Any]]:
        """The outcome rows of ``ds`` by model name, version and role; arrays as lists."""
        return self._outcome_rows("ds = " + self._p, [ds], "model_name, model_version, role")

    def outcome_history(self, model_name: str, model_version: str, role: str) -> list[dict[str, Any]]:
        """Every outcome row of one model version in one role, oldest ds first; arrays as lists."""
        where = f"model_name = {self._p} AND model_version = {self._p} AND role = {self._p}"
        return self._outcome_rows(where, [model_name, model_version, role], "ds")

    def _outcome_rows(self, where: str, params: list[Any], order: str) -> list[dict[str, Any]]:
        rows = self._query(
            f"SELECT {', '.join(OUTCOME_COLUMNS)} FROM {self.outcomes_table} WHERE {where} ORDER BY {order}", params
        )
        return [
            {
                c: list(v) if v is not None and OUTCOME_COLUMNS[c].startswith("array<") else v
                for c, v in zip(OUTCOME_COLUMNS, r, strict=True)
            }
            for r in rows
        ]

    def row_count(self, ds: dt.date, role: str = "champion") -> int:
        table = _ident(self.scores_table(role), "table")
        return int(self._query(f"SELECT count(*) FROM {table} WHERE ds = {self._p}", [ds])[0][0])

    def top_users(self, ds: dt.date, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` users most likely to purchase on ``ds``, best first (ties by user_id)."""
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        return [
            (str(u), float(p))
            for u, p in self._query(
                f"SELECT user_id, p_purchase FROM {self.table} WHERE ds = {self._p} "
                f"ORDER BY p_purchase DESC, user_id LIMIT {int(n)}",
                [ds],
            )
        ]

    def partitions(self, role: str = "champion") -> list[dt.date]:
        table = _ident(self.scores_table(role), "table")
        return [r[0] for r in self._query(f"SELECT DISTINCT ds FROM {table} ORDER BY ds", [])]


# One DuckDB database instance is shared by every connection of a process, so in-process writers
# would conflict inside DuckDB; this lock serialises them before the file lock serialises processes.
_DUCKDB_PROCESS_LOCKS: dict[Path, threading.Lock] = {}
_DUCKDB_LOCKS_GUARD = threading.Lock()


def _duckdb_process_lock(path: Path) -> threading.Lock:
    with _DUCKDB_LOCKS_GUARD:
        return _DUCKDB_PROCESS_LOCKS.setdefault(path.resolve(), threading.Lock())


class DuckDBWarehouse(Warehouse):
    backend = "duckdb"
    _p = "?"

    def __init__(self, cfg: PipelineConfig):
        super().__init__(cfg)
        self.path = cfg.warehouse.duckdb_path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        import duckdb

        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        with _duckdb_process_lock(self.path):
            while True:
                try:
                    con = duckdb.connect(str(self.path))
                    break
                except duckdb.IOException as e:
                    if "lock" not in str(e).lower():
                        raise WarehouseError(f"cannot open DuckDB warehouse {self.path}: {e}") from e
                    if time.monotonic() >= deadline:
                        raise WarehouseBusyError(
                            f"DuckDB warehouse {self.path} stayed locked by another process for "
                            f"{self.lock_timeout_s}s (warehouse.lock_timeout_s): {e}"
                        ) from e
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
            try:
                yield con
            finally:
                con.close()

    def ensure_schema(self) -> None:
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for stmt in self._ddl_statements():
                    con.execute(stmt)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _swap_rows(self, table_name: str, columns: Sequence[str], ds: dt.date, rows: pa.Table) -> int:
        target = _ident(table_name, "table")
        cols = ", ".join(columns)
        with self._connect() as con:
            con.register("incoming_rows", rows)
            con.execute(f"CREATE OR REPLACE TEMP TABLE staged_rows AS SELECT {cols} FROM incoming_rows")
            con.unregister("incoming_rows")
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {target} WHERE ds = ?", [ds])
                self._after_delete(ds)
                con.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM staged_rows")
                n = con.execute(f"SELECT count(*) FROM {target} WHERE ds = ?", [ds]).fetchone()[0]
                if n != rows.num_rows:
                    raise WarehouseError(f"{table_name} ds={ds} would hold {n} rows, staged {rows.num_rows}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                con.execute("DROP TABLE IF EXISTS staged_rows")
        return int(n)

    def _query(self, sql: str, params: list[Any]) -> list[tuple]:
        with self._connect() as con:
            return con.execute(sql, params).fetchall()


def _pg_array(col: pa.ChunkedArray) -> pa.Array:
    """list<string> or list<double> -> PostgreSQL array literal text ({"a","b"}, {0.5,1e-07}), vectorised; null
    lists stay null, null elements become NULL. Doubles are written in their shortest round-trip form, so
    they read back bit for bit."""
    arr = col.combine_chunks()
    if len(arr) == 0:
        return pa.array([], pa.string())
    # offsets/values of a sliced array are relative to its parent's buffers: rebase them to 0.
    start, stop = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
    offsets = pc.subtract(arr.offsets, pa.scalar(start, arr.offsets.type))
    values = arr.values.slice(start, stop - start)
    if _is_string(values.type):
        escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
        text = pc.binary_join_element_wise('"', escaped, '"', "")
    else:
        text = pc.cast(values, pa.string())
    elements = pc.fill_null(text, "NULL")
    rebuilt = type(arr).from_arrays(offsets, elements, mask=arr.is_null())
    joined = pc.binary_join(rebuilt, ",")
    return pc.binary_join_element_wise("{", joined, "}", "")


class PostgresWarehouse(Warehouse):
    backend = "postgresql"
    _p = "%s"

    def __init__(self, cfg: PipelineConfig):
        super().__init__(cfg)
        # SQLAlchemy-style URLs (postgresql+psycopg://) name a driver that libpq does not know.
        self.conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", self.url)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        import psycopg

        try:
            con = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as e:
            raise WarehouseError(f"cannot connect to PostgreSQL warehouse {self.url}: {e}") from e
        try:
            yield con
        finally:
            con.close()

    def _lock(self, con: Any, key: int, table_name: str | None = None) -> None:
        """Take the transaction's advisory lock ``(hashtext(table_name), key)``; the scores table by default."""
        import psycopg

        table_name = table_name or self.table_name
        con.execute(f"SET LOCAL lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'")
        try:
            con.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [table_name, key])
        except psycopg.errors.LockNotAvailable as e:
            raise WarehouseBusyError(
                f"another writer held warehouse table {table_name} (lock key {key}) for more than "
                f"{self.lock_timeout_s}s (warehouse.lock_timeout_s)"
            ) from e

    def ensure_schema(self) -> None:
        with self._connect() as con, con.transaction():
            # Key 0 (1 January of year 1 has ordinal 1) serialises concurrent DDL; CREATE ... IF NOT
            # EXISTS alone races on the catalogue.
            self._lock(con, 0)
            for stmt in self._ddl_statements():
                con.execute(stmt)

    def _swap_rows(self, table_name: str, columns: Sequence[str], ds: dt.date, rows: pa.Table) -> int:
        target = _ident(table_name, "table")
        cols = ", ".join(columns)
        csv_table = rows.select(list(columns))
        for i, field in enumerate(csv_table.schema):
            if _is_list(field.type):
                csv_table = csv_table.set_column(i, field.name, _pg_array(csv_table.column(i)))
        with self._connect() as con:
            con.execute(f"CREATE TEMP TABLE staged_rows (LIKE {target} INCLUDING DEFAULTS) ON COMMIT PRESERVE ROWS")
            with con.cursor().copy(f"COPY staged_rows ({cols}) FROM STDIN (FORMAT csv)") as copy:
                # Streamed in slices so a large partition never sits in memory as one CSV document.
                for batch in csv_table.to_batches(max_chunksize=COPY_CHUNK_ROWS):
                    buf = io.BytesIO()
                    pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                    copy.write(buf.getvalue())
            with con.transaction():
                self._lock(con, ds.toordinal(), table_name)
                con.execute(f"DELETE FROM {target} WHERE ds = %s", [ds])
                self._after_delete(ds)
                con.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM staged_rows")
                n = con.execute(f"SELECT count(*) FROM {target} WHERE ds = %s", [ds]).fetchone()[0]
                if n != rows.num_rows:
                    raise WarehouseError(f"{table_name} ds={ds} would hold {n} rows, staged {rows.num_rows}")
        return int(n)

    def _query(self, sql: str, params: list[Any]) -> list[tuple]:
        with self._connect() as con:
            return con.execute(sql, params).fetchall()


def read_scores_partition(cfg: PipelineConfig, ds: dt.date, role: ScoringRole = "champion") -> tuple[pa.Table, int]:
    """Read scores/ds=<ds>/*.parquet (the challenger's: scores_shadow/); the ds column (a Hive partition key,
    absent from the files) is added from the folder. Returns the rows and the number of files."""
    folder = scores_partition(cfg, ds, role)
    files = sorted(p for p in folder.glob("*.parquet") if p.is_file())
    if not files:
        raise FileNotFoundError(
            f"no scores for ds={ds}: {folder} holds no Parquet files (run spark_jobs.score for this ds first)"
        )
    tables = [pq.read_table(f) for f in files]
    try:
        rows = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as e:
        raise ScoreValidationError(f"scores files under {folder} disagree on their schema: {e}") from e
    if "ds" not in rows.column_names:
        rows = rows.append_column("ds", pa.array([ds] * rows.num_rows, pa.date32()))
    return rows, len(files)


def load_scores(cfg: PipelineConfig, ds: dt.date, role: ScoringRole = "champion") -> LoadReport:
    """Load the scores staging partition of ``ds`` into the warehouse, replacing that ds. The challenger's
    (``scores_shadow/``) go to the shadow table; without a shadow partition for ``ds`` (no challenger that
    night) the shadow table's rows of ``ds`` are removed, so a rerun leaves what that night scored."""
    wh = Warehouse.from_config(cfg)
    wh.ensure_schema()
    source = scores_partition(cfg, ds, role)
    if role == "challenger" and not any(source.glob("*.parquet")):
        wh.drop_partition(ds, role)
        return LoadReport(ds=ds, backend=wh.backend, table=wh.shadow_table_name, rows=0, files=0, source=str(source))
    rows, n_files = read_scores_partition(cfg, ds, role)
    n = wh.replace_partition(ds, rows, role)
    return LoadReport(ds=ds, backend=wh.backend, table=wh.scores_table(role), rows=n, files=n_files, source=str(source))


class QueryError(WarehouseError):
    """A read-only query the warehouse refused (bad SQL, a write, an unknown table)."""


def query_readonly(cfg: PipelineConfig, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one query read-only: DuckDB opened ``read_only`` (no writer is blocked for longer than the query;
    a write fails), PostgreSQL in a read-only transaction. Returns the column names and the rows."""
    if cfg.warehouse.backend == "duckdb":
        import duckdb

        path = cfg.warehouse.duckdb_path
        if not path.is_file():
            raise WarehouseError(f"no DuckDB warehouse at {path} (make demo or a nightly run creates it)")
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as e:
            raise WarehouseError(f"cannot open DuckDB warehouse {path} read-only: {e}") from e
        try:
            cur = con.execute(sql)
            return [d[0] for d in cur.description or []], cur.fetchall() if cur.description else []
        except duckdb.Error as e:
            raise QueryError(str(e)) from e
        finally:
            con.close()
    import psycopg

    try:
        pg = psycopg.connect(PostgresWarehouse(cfg).conninfo, connect_timeout=10)
    except psycopg.OperationalError as e:
        raise WarehouseError(f"cannot connect to PostgreSQL warehouse {cfg.warehouse.url}: {e}") from e
    try:
        pg.read_only = True
        with pg.cursor() as pcur:
            pcur.execute(sql)
            return [d.name for d in pcur.description or []], pcur.fetchall() if pcur.description else []
    except psycopg.Error as e:
        raise QueryError(str(e)) from e
    finally:
        pg.rollback()
        pg.close()


def _cell(value: Any, width: int = 60) -> str:
    text = "NULL" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """An aligned text table: numbers right-aligned, long cells cut, and the row count last."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float | Decimal | None) for r in rows) for i in range(len(columns))
    ]

    def fit(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    lines = [fit(columns), "  ".join("-" * w for w in widths), *(fit(r) for r in cells)]
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(
        argparse.ArgumentParser(prog="python -m tasks.warehouse", description=__doc__.splitlines()[0])
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_load = sub.add_parser("load", help="load scores/ds=<ds>/ into the warehouse (replaces that ds)")
    p_load.add_argument("--ds", type=parse_ds, required=True)
    p_top = sub.add_parser("top", help="print the users most likely to purchase on ds")
    p_top.add_argument("--ds", type=parse_ds, required=True)
    p_top.add_argument("-n", type=int, default=5)
    sub.add_parser("init", help="create the tables if missing and (re)create the views")
    p_sql = sub.add_parser("sql", help="run one read-only SQL query and print the result as a table")
    p_sql.add_argument("query", help='SQL, e.g. "select ds, count(*) from intent_scores group by ds order by ds"')
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.command == "sql":
        try:
            columns, rows = query_readonly(cfg, args.query)
        except WarehouseError as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"sql error: {reason}", file=sys.stderr)
            return 2
        print(format_table(columns, rows) if columns else "(no result rows)")
    elif args.command == "load":
        report = load_scores(cfg, args.ds)
        print(f"loaded {report.rows} rows for ds={report.ds} into {report.backend}:{report.table} from {report.source}")
    elif args.command == "top":
        for user_id, p in Warehouse.from_config(cfg).top_users(args.ds, args.n):
            print(f"{user_id}\t{p:.6f}")
    else:
        Warehouse.from_config(cfg).ensure_schema()
        print(f"schema ready in {cfg.warehouse.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
