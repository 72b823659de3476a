"""The scores warehouse: one adapter over DuckDB and PostgreSQL, chosen by ``warehouse.url``.

The table ``warehouse.table`` holds one partition (all rows of one ``ds``) per nightly run.
``replace_partition`` validates the rows, stages them in a temporary table, then swaps the
partition in ONE transaction (delete the ds, insert the staged rows), so a rerun leaves one copy
and a writer killed mid-write leaves the previous partition intact.

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
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.layers import scores_partition
from tasks.schema import SCORE_COLUMNS

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
    "timestamp": pa.timestamp("us", tz="UTC"),
    "array<string>": pa.list_(pa.string()),
}
ARROW_SCHEMA = pa.schema([pa.field(c, _ARROW_TYPES[t]) for c, t in WAREHOUSE_COLUMNS.items()])

_SQL_TYPES = {
    "duckdb": {
        "date": "DATE",
        "string": "VARCHAR",
        "double": "DOUBLE",
        "timestamp": "TIMESTAMPTZ",
        "array<string>": "VARCHAR[]",
    },
    "postgresql": {
        "date": "date",
        "string": "text",
        "double": "double precision",
        "timestamp": "timestamptz",
        "array<string>": "text[]",
    },
}

# Rows per CSV slice streamed into PostgreSQL's COPY.
COPY_CHUNK_ROWS = 100_000

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class WarehouseError(RuntimeError):
    """The warehouse could not be reached or refused an operation."""


class WarehouseBusyError(WarehouseError):
    """Another writer held the warehouse (or the ds partition) longer than warehouse.lock_timeout_s."""


class ScoreValidationError(ValueError):
    """Rows handed to the warehouse break the intent_scores contract; nothing was written."""


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


def _type_ok(kind: str, t: pa.DataType) -> bool:
    if kind == "date":
        return pa.types.is_date(t)
    if kind == "string":
        return _is_string(t)
    if kind == "double":
        return pa.types.is_floating(t)
    if kind == "timestamp":
        return pa.types.is_timestamp(t)
    if kind == "array<string>":
        return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string(t.value_type)
    raise AssertionError(kind)


def validate_scores(ds: dt.date, rows: pa.Table) -> pa.Table:
    """Check ``rows`` against the intent_scores contract for partition ``ds``; return them in the
    canonical Arrow schema (optional columns added as nulls). Raises ScoreValidationError naming
    every problem found. Timestamps without a zone are taken as UTC (Spark's INT96 Parquet)."""
    if not isinstance(rows, pa.Table):
        raise ScoreValidationError(f"rows must be a pyarrow.Table, got {type(rows).__name__}")
    if not isinstance(ds, dt.date) or isinstance(ds, dt.datetime):
        raise ScoreValidationError(f"ds must be a datetime.date, got {ds!r}")
    # Types are checked only once every column is known; values only in the canonical schema.
    problems = _column_problems(rows) or _type_problems(rows)
    if problems:
        raise ScoreValidationError(f"scores for ds={ds}: " + "; ".join(problems))
    table = _canonical(rows)
    problems = _value_problems(ds, table)
    if problems:
        raise ScoreValidationError(f"scores for ds={ds}: " + "; ".join(problems))
    return table


def _column_problems(rows: pa.Table) -> list[str]:
    names = rows.column_names
    problems = []
    missing = [c for c in SCORE_COLUMNS if c not in names]
    unknown = [c for c in names if c not in WAREHOUSE_COLUMNS]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if missing:
        problems.append(f"missing columns {missing}")
    if unknown:
        problems.append(f"unknown columns {unknown} (allowed: {list(WAREHOUSE_COLUMNS)})")
    if dupes:
        problems.append(f"duplicated columns {dupes}")
    return problems


def _type_problems(rows: pa.Table) -> list[str]:
    return [
        f"column {c} has type {rows.schema.field(c).type}, expected {WAREHOUSE_COLUMNS[c]}"
        for c in rows.column_names
        if not _type_ok(WAREHOUSE_COLUMNS[c], rows.schema.field(c).type)
    ]


def _canonical(rows: pa.Table) -> pa.Table:
    """``rows`` in ARROW_SCHEMA: absent optional columns as nulls, zone-less ``scored_at`` as UTC."""
    cols: dict[str, pa.ChunkedArray] = {}
    for field in ARROW_SCHEMA:
        if field.name not in rows.column_names:
            cols[field.name] = pa.chunked_array([pa.nulls(rows.num_rows, field.type)])
            continue
        col = rows.column(field.name)
        if field.name == "scored_at" and col.type.tz is None:
            col = pc.assume_timezone(col.cast(pa.timestamp(col.type.unit)), "UTC")
        cols[field.name] = col.cast(field.type)
    return pa.table(cols, schema=ARROW_SCHEMA)


def _value_problems(ds: dt.date, table: pa.Table) -> list[str]:
    problems = []
    for c in NOT_NULL_COLUMNS:
        n = table.column(c).null_count
        if n:
            problems.append(f"{n} null value(s) in {c}")
    wrong_ds = pc.sum(pc.cast(pc.not_equal(table.column("ds"), pa.scalar(ds, pa.date32())), pa.int64())).as_py()
    if wrong_ds:
        seen = sorted({d for d in table.column("ds").to_pylist() if d is not None and d != ds})[:3]
        problems.append(f"{wrong_ds} row(s) have ds other than {ds} (e.g. {seen})")
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
        self.lock_timeout_s = w.lock_timeout_s

    @staticmethod
    def from_config(cfg: PipelineConfig) -> Warehouse:
        if cfg.warehouse.backend == "duckdb":
            return DuckDBWarehouse(cfg)
        return PostgresWarehouse(cfg)

    def _types(self) -> dict[str, str]:
        return _SQL_TYPES[self.backend]

    def _ddl_statements(self) -> list[str]:
        types = self._types()
        cols = ",\n  ".join(
            f"{c} {types[t]}{' NOT NULL' if c in NOT_NULL_COLUMNS else ''}" for c, t in WAREHOUSE_COLUMNS.items()
        )
        col_list = ", ".join(WAREHOUSE_COLUMNS)
        # Each ds is written by one run with one pinned model version; n_model_versions > 1 would flag a mix.
        return [
            f"CREATE TABLE IF NOT EXISTS {self.table} (\n  {cols},\n  PRIMARY KEY (ds, user_id)\n)",
            *(
                f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {c} {types[t]}"
                for c, t in OPTIONAL_SCORE_COLUMNS.items()
            ),
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
        ]

    @abc.abstractmethod
    def ensure_schema(self) -> None:
        """Create the table and both views if missing (idempotent, safe to call concurrently)."""

    @abc.abstractmethod
    def _swap(self, ds: dt.date, table: pa.Table) -> int: ...

    @abc.abstractmethod
    def _query(self, sql: str, params: list[Any]) -> list[tuple]: ...

    def _after_delete(self, ds: dt.date) -> None:  # noqa: B027  (a hook that does nothing unless overridden)
        """Runs inside the swap transaction between the delete and the insert (a crash-test seam)."""

    def replace_partition(self, ds: dt.date, rows: pa.Table) -> int:
        """Replace partition ``ds`` with ``rows`` (validated first); returns the rows now in it."""
        table = validate_scores(ds, rows)
        return self._swap(ds, table)

    def row_count(self, ds: dt.date) -> int:
        return int(self._query(f"SELECT count(*) FROM {self.table} WHERE ds = {self._p}", [ds])[0][0])

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

    def partitions(self) -> list[dt.date]:
        return [r[0] for r in self._query(f"SELECT DISTINCT ds FROM {self.table} ORDER BY ds", [])]


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

    def _swap(self, ds: dt.date, table: pa.Table) -> int:
        cols = ", ".join(WAREHOUSE_COLUMNS)
        with self._connect() as con:
            con.register("incoming_scores", table)
            con.execute(f"CREATE OR REPLACE TEMP TABLE staged_scores AS SELECT {cols} FROM incoming_scores")
            con.unregister("incoming_scores")
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {self.table} WHERE ds = ?", [ds])
                self._after_delete(ds)
                con.execute(f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM staged_scores")
                n = con.execute(f"SELECT count(*) FROM {self.table} WHERE ds = ?", [ds]).fetchone()[0]
                if n != table.num_rows:
                    raise WarehouseError(f"partition ds={ds} would hold {n} rows, staged {table.num_rows}")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                con.execute("DROP TABLE IF EXISTS staged_scores")
        return int(n)

    def _query(self, sql: str, params: list[Any]) -> list[tuple]:
        with self._connect() as con:
            return con.execute(sql, params).fetchall()


def _pg_text_array(col: pa.ChunkedArray) -> pa.Array:
    """list<string> -> PostgreSQL array literal text ({"a","b"}), vectorised; null lists stay null."""
    arr = col.combine_chunks()
    if len(arr) == 0:
        return pa.array([], pa.string())
    # offsets/values of a sliced array are relative to its parent's buffers: rebase them to 0.
    start, stop = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
    offsets = pc.subtract(arr.offsets, pa.scalar(start, pa.int32()))
    values = arr.values.slice(start, stop - start)
    escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    rebuilt = pa.ListArray.from_arrays(offsets, quoted, mask=arr.is_null())
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

    def _lock(self, con: Any, key: int) -> None:
        import psycopg

        con.execute(f"SET LOCAL lock_timeout = '{int(self.lock_timeout_s * 1000)}ms'")
        try:
            con.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [self.table_name, key])
        except psycopg.errors.LockNotAvailable as e:
            raise WarehouseBusyError(
                f"another writer held warehouse table {self.table_name} (lock key {key}) for more than "
                f"{self.lock_timeout_s}s (warehouse.lock_timeout_s)"
            ) from e

    def ensure_schema(self) -> None:
        with self._connect() as con, con.transaction():
            # Key 0 (1 January of year 1 has ordinal 1) serialises concurrent DDL; CREATE ... IF NOT
            # EXISTS alone races on the catalogue.
            self._lock(con, 0)
            for stmt in self._ddl_statements():
                con.execute(stmt)

    def _swap(self, ds: dt.date, table: pa.Table) -> int:
        cols = ", ".join(WAREHOUSE_COLUMNS)
        csv_table = table
        for c in OPTIONAL_SCORE_COLUMNS:
            csv_table = csv_table.set_column(
                csv_table.schema.get_field_index(c), c, _pg_text_array(csv_table.column(c))
            )
        with self._connect() as con:
            con.execute(
                f"CREATE TEMP TABLE staged_scores (LIKE {self.table} INCLUDING DEFAULTS) ON COMMIT PRESERVE ROWS"
            )
            with con.cursor().copy(f"COPY staged_scores ({cols}) FROM STDIN (FORMAT csv)") as copy:
                # Streamed in slices so a large partition never sits in memory as one CSV document.
                for batch in csv_table.to_batches(max_chunksize=COPY_CHUNK_ROWS):
                    buf = io.BytesIO()
                    pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                    copy.write(buf.getvalue())
            with con.transaction():
                self._lock(con, ds.toordinal())
                con.execute(f"DELETE FROM {self.table} WHERE ds = %s", [ds])
                self._after_delete(ds)
                con.execute(f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM staged_scores")
                n = con.execute(f"SELECT count(*) FROM {self.table} WHERE ds = %s", [ds]).fetchone()[0]
                if n != table.num_rows:
                    raise WarehouseError(f"partition ds={ds} would hold {n} rows, staged {table.num_rows}")
        return int(n)

    def _query(self, sql: str, params: list[Any]) -> list[tuple]:
        with self._connect() as con:
            return con.execute(sql, params).fetchall()


def read_scores_partition(cfg: PipelineConfig, ds: dt.date) -> tuple[pa.Table, int]:
    """Read scores/ds=<ds>/*.parquet; the ds column (a Hive partition key, absent from the files) is
    added from the folder. Returns the rows and the number of files."""
    folder = scores_partition(cfg, ds)
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


def load_scores(cfg: PipelineConfig, ds: dt.date) -> LoadReport:
    """Load the scores staging partition of ``ds`` into the warehouse, replacing that ds."""
    rows, n_files = read_scores_partition(cfg, ds)
    wh = Warehouse.from_config(cfg)
    wh.ensure_schema()
    n = wh.replace_partition(ds, rows)
    return LoadReport(
        ds=ds,
        backend=wh.backend,
        table=cfg.warehouse.table,
        rows=n,
        files=n_files,
        source=str(scores_partition(cfg, ds)),
    )


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
    sub.add_parser("init", help="create the table and views if missing")
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
