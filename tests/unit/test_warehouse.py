"""Warehouse adapter on real DuckDB files and a real PostgreSQL database: partition swap,
validation, crash safety (SIGKILLed writer), concurrent writers, and the outcomes table with its
health view."""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import REPO_ROOT, PipelineConfig
from tasks.layers import scores_partition
from tasks.schema import OUTCOME_COLUMNS
from tasks.warehouse import (
    HEALTH_METRICS,
    OUTCOME_ARROW_SCHEMA,
    OutcomeValidationError,
    ScoreValidationError,
    Warehouse,
    WarehouseBusyError,
    load_scores,
    main,
)
from tests.helpers.config import isolated_config
from tests.helpers.postgres import fresh_database

D1 = dt.date(2026, 1, 10)
D2 = dt.date(2026, 1, 11)


def make_rows(ds: dt.date, n: int, *, version: str = "1", seed: float = 0.0, explain: bool = False) -> pa.Table:
    users = [f"u{i:04d}" for i in range(n)]
    cols = {
        "ds": pa.array([ds] * n, pa.date32()),
        "user_id": pa.array(users),
        "p_purchase": pa.array([((i * 37 + seed * 11) % 100) / 100 for i in range(n)], pa.float64()),
        "p_cart": pa.array([((i * 13) % 100) / 100 for i in range(n)], pa.float64()),
        "p_fav": pa.array([0.5] * n, pa.float64()),
        "model_name": pa.array(["purchase_intent"] * n),
        "model_version": pa.array([version] * n),
        "model_run_id": pa.array([f"run{version}"] * n),
        "scored_at": pa.array([dt.datetime(ds.year, ds.month, ds.day)] * n, pa.timestamp("us", tz="UTC")),
        "pipeline_run_id": pa.array([f"scheduled__{ds}"] * n),
    }
    if explain:
        cols["top_categories"] = pa.array([["12", 'we"ird,{cat}\\', str(i)] for i in range(n)], pa.list_(pa.string()))
        cols["reasons"] = pa.array(
            [["f_cart_7d", "f_view_1d"] if i % 2 else None for i in range(n)], pa.list_(pa.string())
        )
    return pa.table(cols)


@pytest.fixture(scope="session")
def pg_url():
    with fresh_database("pytest_wh") as url:
        yield url


def _cfg(tmp_path: Path, url: str, monitoring: dict | None = None, **warehouse) -> PipelineConfig:
    suffix = uuid.uuid4().hex[:8]
    return isolated_config(
        tmp_path / "var",
        warehouse={
            "url": url,
            # A unique table per test keeps tests independent inside the one session database.
            "table": f"scores_{suffix}",
            "latest_view": f"scores_{suffix}_latest",
            "summary_view": f"scores_{suffix}_summary",
            "shadow_table": f"scores_{suffix}_shadow",
            "outcomes_table": f"outcomes_{suffix}",
            "health_view": f"outcomes_{suffix}_health",
            "lock_timeout_s": 60,
            **warehouse,
        },
        **({"monitoring": monitoring} if monitoring else {}),
    )


def _same_tables(cfg: PipelineConfig) -> dict[str, str]:
    """The warehouse object names of ``cfg``, to build a second config over the same tables."""
    names = ("table", "latest_view", "summary_view", "outcomes_table", "health_view")
    return {n: getattr(cfg.warehouse, n) for n in names}


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_cfg(request, backend, tmp_path):
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"duckdb:///{tmp_path}/var/wh.duckdb"

    def build(monitoring: dict | None = None, **warehouse) -> PipelineConfig:
        return _cfg(tmp_path, url, monitoring, **warehouse)

    return build


@pytest.fixture
def wh_cfg(make_cfg) -> PipelineConfig:
    return make_cfg()


@pytest.fixture
def wh(wh_cfg) -> Warehouse:
    w = Warehouse.from_config(wh_cfg)
    w.ensure_schema()
    return w


def _all_rows(wh: Warehouse, ds: dt.date) -> list[tuple]:
    return wh._query(
        f"SELECT user_id, p_purchase, model_version FROM {wh.table} WHERE ds = {wh._p} ORDER BY user_id", [ds]
    )


def test_backend_chosen_by_url(wh, backend):
    assert wh.backend == backend


def test_rerun_replaces_partition_and_keeps_others(wh):
    wh.ensure_schema()
    assert wh.replace_partition(D1, make_rows(D1, 50, version="1")) == 50
    assert wh.replace_partition(D2, make_rows(D2, 30, version="1")) == 30
    assert wh.replace_partition(D1, make_rows(D1, 40, version="2", seed=3)) == 40
    assert wh.row_count(D1) == 40
    assert wh.row_count(D2) == 30
    assert {r[2] for r in _all_rows(wh, D1)} == {"2"}
    assert wh.partitions() == [D1, D2]
    rows = make_rows(D1, 40, seed=3)
    pairs = zip(rows["user_id"].to_pylist(), rows["p_purchase"].to_pylist(), strict=True)
    expected = sorted(pairs, key=lambda t: (-t[1], t[0]))[:5]
    assert wh.top_users(D1, 5) == expected


def test_shadow_rows_stay_out_of_the_scores_table_and_its_views(wh):
    wh.ensure_schema()
    wh.replace_partition(D1, make_rows(D1, 50, version="1"))
    readers = (
        f"SELECT count(*), sum(p_purchase) FROM {wh.table}",
        f"SELECT count(*) FROM {wh.latest_view}",
        f"SELECT n_users, n_model_versions FROM {wh.summary_view}",
    )
    before = [wh._query(sql, []) for sql in readers]
    assert wh.replace_partition(D1, make_rows(D1, 60, version="2", seed=5), "challenger") == 60
    assert wh.replace_partition(D2, make_rows(D2, 10, version="2"), "challenger") == 10
    assert (wh.row_count(D1), wh.row_count(D1, "challenger")) == (50, 60)
    assert wh.partitions("challenger") == [D1, D2]
    assert [wh._query(sql, []) for sql in readers] == before
    # A night without a challenger removes its shadow rows of that day only.
    wh.drop_partition(D1, "challenger")
    assert (wh.row_count(D1, "challenger"), wh.row_count(D2, "challenger"), wh.row_count(D1)) == (0, 10, 50)
    with pytest.raises(ValueError, match="unknown scoring role 'shadow'"):
        wh.row_count(D1, "shadow")


def test_views(wh):
    wh.replace_partition(D1, make_rows(D1, 10, version="1"))
    wh.replace_partition(D2, make_rows(D2, 4, version="2"))
    latest = wh._query(f"SELECT user_id, ds, model_version FROM {wh.latest_view} ORDER BY user_id", [])
    assert len(latest) == 10
    assert all(r[1] == (D2 if int(r[0][1:]) < 4 else D1) for r in latest)
    summary = wh._query(
        f"SELECT ds, n_users, mean_p_purchase, model_version, n_model_versions FROM {wh.summary_view} ORDER BY ds", []
    )
    mean_d1 = sum(make_rows(D1, 10)["p_purchase"].to_pylist()) / 10
    assert [(r[0], r[1], r[3], r[4]) for r in summary] == [(D1, 10, "1", 1), (D2, 4, "2", 1)]
    assert summary[0][2] == pytest.approx(mean_d1)


def test_explanation_columns_round_trip(wh):
    rows = make_rows(D1, 6, explain=True)
    wh.replace_partition(D1, rows)
    got = wh._query(
        f"SELECT user_id, top_categories, reasons FROM {wh.table} WHERE ds = {wh._p} ORDER BY user_id", [D1]
    )
    assert [list(r[1]) for r in got] == rows["top_categories"].to_pylist()
    assert [None if r[2] is None else list(r[2]) for r in got] == rows["reasons"].to_pylist()


def _replace_column(t: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, arr)


BAD_INPUTS = {
    "missing column": (lambda t: t.drop_columns(["p_cart"]), "missing columns ['p_cart']"),
    "unknown column": (lambda t: t.append_column("extra", pa.array([1] * t.num_rows)), "unknown columns ['extra']"),
    "wrong type": (
        lambda t: _replace_column(t, "p_purchase", pa.array([str(x) for x in range(t.num_rows)])),
        "column p_purchase has type string",
    ),
    "other ds": (
        lambda t: _replace_column(t, "ds", pa.array([D1] * (t.num_rows - 1) + [D2], pa.date32())),
        "1 row(s) have ds other than 2026-01-10",
    ),
    "null user_id": (
        lambda t: _replace_column(t, "user_id", pa.array(["a", None] + [f"x{i}" for i in range(t.num_rows - 2)])),
        "1 null value(s) in user_id",
    ),
    "null p_purchase": (
        lambda t: _replace_column(t, "p_purchase", pa.array([None] * t.num_rows, pa.float64())),
        "null value(s) in p_purchase",
    ),
    "duplicate user_id": (
        lambda t: _replace_column(t, "user_id", pa.array(["dup", "dup"] + [f"x{i}" for i in range(t.num_rows - 2)])),
        "1 duplicated user_id(s) (e.g. ['dup'])",
    ),
    "probability out of range": (
        lambda t: _replace_column(t, "p_fav", pa.array([1.5] + [0.1] * (t.num_rows - 1), pa.float64())),
        "p_fav are NaN or outside [0, 1]",
    ),
    "NaN probability": (
        lambda t: _replace_column(t, "p_cart", pa.array([float("nan")] * t.num_rows, pa.float64())),
        "p_cart are NaN or outside [0, 1]",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_invalid_input_raises_and_keeps_previous_partition(wh, case):
    wh.replace_partition(D1, make_rows(D1, 20, version="1"))
    before = _all_rows(wh, D1)
    corrupt, message = BAD_INPUTS[case]
    with pytest.raises(ScoreValidationError) as err:
        wh.replace_partition(D1, corrupt(make_rows(D1, 20, version="2")))
    assert message in str(err.value)
    assert _all_rows(wh, D1) == before


CHILD = r"""
import datetime as dt, sys, time
import pyarrow.parquet as pq
from tasks.config import PipelineConfig
from tasks.warehouse import Warehouse

cfg = PipelineConfig.model_validate_json(open(sys.argv[1]).read())
ds, rows, marker, hold = dt.date.fromisoformat(sys.argv[2]), pq.read_table(sys.argv[3]), sys.argv[4], float(sys.argv[5])

class HeldAfterDelete(type(Warehouse.from_config(cfg))):
    def _after_delete(self, ds):
        open(marker, "w").close()
        time.sleep(hold)

n = HeldAfterDelete(cfg).replace_partition(ds, rows)
print(f"wrote {n}")
"""


def _spawn_writer(cfg: PipelineConfig, ds: dt.date, rows: pa.Table, workdir: Path, name: str, hold: float):
    cfg_file = workdir / f"{name}.json"
    cfg_file.write_text(cfg.model_dump_json())
    rows_file = workdir / f"{name}.parquet"
    pq.write_table(rows, rows_file)
    marker = workdir / f"{name}.deleted"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cfg_file), ds.isoformat(), str(rows_file), str(marker), str(hold)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, marker


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"writer exited early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("writer never reached the point after the delete")
        time.sleep(0.05)


def test_sigkilled_writer_leaves_previous_partition(wh, wh_cfg, tmp_path):
    wh.replace_partition(D1, make_rows(D1, 25, version="1"))
    before = _all_rows(wh, D1)
    proc, marker = _spawn_writer(wh_cfg, D1, make_rows(D1, 40, version="2"), tmp_path, "killed", hold=600)
    _wait_for(marker, proc)
    # The child has deleted the partition inside its open transaction and is now killed outright.
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _all_rows(wh, D1) == before
    assert wh.replace_partition(D1, make_rows(D1, 40, version="2")) == 40


def test_concurrent_writers_leave_exactly_one_copy(wh, wh_cfg, tmp_path):
    wh.replace_partition(D1, make_rows(D1, 10, version="0"))
    first, first_marker = _spawn_writer(wh_cfg, D1, make_rows(D1, 30, version="1"), tmp_path, "first", hold=2)
    _wait_for(first_marker, first)
    second, second_marker = _spawn_writer(wh_cfg, D1, make_rows(D1, 35, version="2"), tmp_path, "second", hold=0)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert out1.strip() == "wrote 30" and out2.strip() == "wrote 35"
    rows = _all_rows(wh, D1)
    # The second writer waited for the first (lock), so its rows are the ones left, once each.
    assert len(rows) == 35
    assert {r[2] for r in rows} == {"2"}
    assert len({r[0] for r in rows}) == 35


def test_threads_in_one_process_serialise(wh):
    errors: list[BaseException] = []

    def write(version: str, n: int) -> None:
        try:
            Warehouse.from_config(wh.cfg).replace_partition(D1, make_rows(D1, n, version=version))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(str(v), 10 + v)) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = _all_rows(wh, D1)
    assert len({r[2] for r in rows}) == 1
    assert len(rows) == 10 + int(rows[0][2])


def test_held_lock_gives_busy_error_after_timeout(wh, wh_cfg, make_cfg, tmp_path, backend):
    wh.replace_partition(D1, make_rows(D1, 5))
    holder, marker = _spawn_writer(wh_cfg, D1, make_rows(D1, 8, version="9"), tmp_path, "holder", hold=600)
    try:
        _wait_for(marker, holder)
        impatient = Warehouse.from_config(make_cfg(**_same_tables(wh_cfg), lock_timeout_s=0.5))
        with pytest.raises(WarehouseBusyError, match=r"warehouse\.lock_timeout_s"):
            impatient.replace_partition(D1, make_rows(D1, 3, version="3"))
        if backend == "postgresql":
            # The lock is per ds: another day's partition is not held up.
            assert impatient.replace_partition(D2, make_rows(D2, 3, version="3")) == 3
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert [r[2] for r in _all_rows(wh, D1)] == ["1"] * 5


def _write_staging(cfg: PipelineConfig, ds: dt.date, rows: pa.Table, parts: int = 2) -> Path:
    folder = scores_partition(cfg, ds)
    folder.mkdir(parents=True, exist_ok=True)
    # As Spark writes it: ds is the folder's partition key, scored_at a zone-less timestamp in UTC.
    body = rows.drop_columns(["ds"])
    body = body.set_column(
        body.schema.get_field_index("scored_at"), "scored_at", body["scored_at"].cast(pa.timestamp("ns"))
    )
    step = (body.num_rows + parts - 1) // parts
    for i in range(parts):
        pq.write_table(body.slice(i * step, step), folder / f"part-{i:05d}-x.snappy.parquet")
    (folder / "_SUCCESS").write_text("")
    return folder


def test_load_scores_and_cli(wh_cfg, capsys):
    rows = make_rows(D1, 12, version="4")
    _write_staging(wh_cfg, D1, rows)
    report = load_scores(wh_cfg, D1)
    assert (report.ds, report.rows, report.files, report.table) == (D1, 12, 2, wh_cfg.warehouse.table)
    wh = Warehouse.from_config(wh_cfg)
    assert wh.row_count(D1) == 12
    scored_at = wh._query(f"SELECT DISTINCT scored_at FROM {wh.table}", [])
    assert [r[0].astimezone(dt.UTC) for r in scored_at] == [dt.datetime(2026, 1, 10, tzinfo=dt.UTC)]
    assert load_scores(wh_cfg, D1).rows == 12
    assert wh.row_count(D1) == 12

    cfg_file = Path(wh_cfg.paths.var) / "cfg.yaml"
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    cfg_file.write_text(yaml.safe_dump(wh_cfg.model_dump()))
    capsys.readouterr()
    assert main(["--config", str(cfg_file), "top", "--ds", "2026-01-10", "-n", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [u for u, _ in wh.top_users(D1, 3)]
    assert main(["--config", str(cfg_file), "load", "--ds", "2026-01-10"]) == 0
    assert "loaded 12 rows for ds=2026-01-10" in capsys.readouterr().out


def test_load_scores_missing_partition(wh_cfg):
    with pytest.raises(FileNotFoundError, match="no scores for ds=2026-01-11"):
        load_scores(wh_cfg, D2)


def test_bad_table_name_is_rejected(tmp_path):
    cfg = _cfg(tmp_path, f"duckdb:///{tmp_path}/w.duckdb", table="scores; DROP TABLE x")
    with pytest.raises(Exception, match="not a plain SQL identifier"):
        Warehouse.from_config(cfg)


@pytest.mark.parametrize("name", ["outcomes_table", "health_view"])
def test_bad_outcome_object_name_is_rejected(tmp_path, name):
    cfg = _cfg(tmp_path, f"duckdb:///{tmp_path}/w.duckdb", **{name: "x; DROP TABLE y"})
    with pytest.raises(Exception, match=f"warehouse {name} .* is not a plain SQL identifier"):
        Warehouse.from_config(cfg)


EVALUATED_AT = dt.datetime(2026, 2, 1, 3, 0, tzinfo=dt.UTC)


def outcome_row(ds: dt.date, version: str = "1", role: str = "champion", **values) -> dict:
    """One realized-outcome row with plausible metrics; ``values`` override columns."""
    row = {
        "ds": ds,
        "model_name": "purchase_intent",
        "model_version": version,
        "role": role,
        "horizon_days": 7,
        "n_users": 1000,
        "n_buyers": 120,
        "n_buyers_unscored": 4,
        "purchase_rate": 0.12,
        "mean_p_purchase": 0.11,
        "purchase_roc_auc": 0.74,
        "purchase_pr_auc": 0.31,
        "purchase_log_loss": 0.33,
        "purchase_brier": 0.09,
        "purchase_ece": 0.02,
        "cart_roc_auc": 0.69,
        "cart_pr_auc": 0.22,
        "fav_roc_auc": 0.61,
        "fav_pr_auc": 0.08,
        "top_fraction": 0.1,
        "precision_top": 0.42,
        "recall_top": 0.35,
        "lift_by_decile": [3.5, 2.0, 1.25, 1.0, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0],
        "reliability_predicted": [0.01, 0.05, 0.2, 0.6],
        "reliability_observed": [0.0, 0.06, 0.18, 0.65],
        "category_k": 3,
        "category_users": 80,
        "category_hit_rate": 0.55,
        "category_ndcg": 0.41,
        "evaluated_at": EVALUATED_AT,
        "pipeline_run_id": f"scheduled__{ds}",
    }
    assert list(row) == list(OUTCOME_COLUMNS) and set(values) <= set(row), set(values) - set(row)
    return {**row, **values}


def outcome_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=OUTCOME_ARROW_SCHEMA)


def _comparable(row: dict) -> dict:
    """A read-back row with its instant in UTC (DuckDB returns TIMESTAMPTZ in the session's zone)."""
    return {**row, "evaluated_at": row["evaluated_at"].astimezone(dt.UTC)}


def test_outcomes_rerun_replaces_day_and_keeps_others(wh):
    wh.ensure_schema()
    first = [outcome_row(D1, "1"), outcome_row(D1, "2", "challenger")]
    other = [outcome_row(D2, "1", purchase_roc_auc=0.7)]
    assert wh.replace_outcomes(D1, outcome_table(first)) == 2
    assert wh.replace_outcomes(D2, outcome_table(other)) == 1
    rerun = [
        outcome_row(D1, "1", purchase_roc_auc=0.75, pipeline_run_id="manual__1"),
        outcome_row(D1, "2", "challenger", purchase_roc_auc=0.76, pipeline_run_id="manual__1"),
    ]
    assert wh.replace_outcomes(D1, outcome_table(rerun)) == 2
    assert [_comparable(r) for r in wh.outcomes(D1)] == rerun
    assert [_comparable(r) for r in wh.outcomes(D2)] == other
    assert wh.outcome_days() == [D1, D2]
    # A rerun that evaluates fewer versions leaves only those.
    assert wh.replace_outcomes(D1, outcome_table(rerun[:1])) == 1
    assert [_comparable(r) for r in wh.outcomes(D1)] == rerun[:1]
    assert [_comparable(r) for r in wh.outcomes(D2)] == other
    # Outcomes live apart from the scores partitions.
    assert wh.partitions() == []


def test_outcome_arrays_and_null_metrics_round_trip(wh):
    awkward = [1 / 3, 0.1, 5e-324, 1.7976931348623157e308, 2.0**-60, 0.0, 123456789.123456789]
    rows = [
        outcome_row(D1, "1", lift_by_decile=awkward, reliability_predicted=[1 / 7, 2 / 7], purchase_brier=1 / 3),
        # A single-class day: ranking metrics undefined (NULL), curves absent or empty.
        outcome_row(
            D1,
            "2",
            "challenger",
            n_buyers=0,
            purchase_rate=0.0,
            purchase_roc_auc=None,
            purchase_pr_auc=None,
            precision_top=None,
            recall_top=None,
            lift_by_decile=None,
            reliability_predicted=[],
            reliability_observed=[],
            category_users=0,
            category_hit_rate=None,
            category_ndcg=None,
            pipeline_run_id=None,
        ),
    ]
    table = outcome_table(rows)
    # A metric NULL on every row arrives untyped from pyarrow; it loads as NULLs of the column's type.
    table = table.set_column(table.schema.get_field_index("fav_pr_auc"), "fav_pr_auc", pa.nulls(2))
    assert wh.replace_outcomes(D1, table) == 2
    got = [_comparable(r) for r in wh.outcomes(D1)]
    assert got == [{**r, "fav_pr_auc": None} for r in rows]
    assert got[0]["lift_by_decile"] == awkward  # exact, bit for bit
    assert all(type(v) is int for v in (got[0]["n_users"], got[0]["category_k"]))


def _bad_ds(rows: list[dict]) -> pa.Table:
    return outcome_table([rows[0], {**rows[1], "ds": D2}])


def _wrong_type(rows: list[dict]) -> pa.Table:
    t = outcome_table(rows)
    return t.set_column(t.schema.get_field_index("n_users"), "n_users", pa.array(["many"] * t.num_rows))


BAD_OUTCOMES = {
    "other ds": (_bad_ds, "1 row(s) have ds other than 2026-01-10 (e.g. [datetime.date(2026, 1, 11)])"),
    "duplicate key": (
        lambda rows: outcome_table([rows[0], {**rows[1], "role": "champion", "model_version": "1"}]),
        "1 duplicated key(s) (ds, model_name, model_version, role) (e.g. [('2026-01-10', 'purchase_intent', '1', "
        "'champion')])",
    ),
    "NaN metric": (
        lambda rows: outcome_table([{**rows[0], "purchase_roc_auc": math.nan}, rows[1]]),
        "1 NaN or infinite value(s) in purchase_roc_auc (write NULL for an undefined metric)",
    ),
    "infinite lift": (
        lambda rows: outcome_table([{**rows[0], "lift_by_decile": [math.inf, 1.0]}, rows[1]]),
        "1 NaN or infinite value(s) in lift_by_decile",
    ),
    "AUC out of range": (
        lambda rows: outcome_table([rows[0], {**rows[1], "cart_roc_auc": 1.2}]),
        "1 value(s) of cart_roc_auc not within [0, 1] (e.g. [1.2])",
    ),
    "negative count": (
        lambda rows: outcome_table([{**rows[0], "n_buyers": -1}, rows[1]]),
        "1 value(s) of n_buyers not >= 0 (e.g. [-1])",
    ),
    "missing column": (lambda rows: outcome_table(rows).drop_columns(["n_buyers"]), "missing columns ['n_buyers']"),
    "bad role": (
        lambda rows: outcome_table([rows[0], {**rows[1], "role": "shadow"}]),
        "1 row(s) have role other than champion or challenger (e.g. ['shadow'])",
    ),
    "null key": (
        lambda rows: outcome_table([{**rows[0], "model_version": None}, rows[1]]),
        "1 null value(s) in model_version",
    ),
    "null evaluated_at": (
        lambda rows: outcome_table([{**rows[0], "evaluated_at": None}, rows[1]]),
        "1 null value(s) in evaluated_at",
    ),
    "wrong type": (_wrong_type, "column n_users has type string, expected bigint"),
}


@pytest.mark.parametrize("case", list(BAD_OUTCOMES))
def test_invalid_outcomes_raise_and_keep_previous_rows(wh, case):
    wh.replace_outcomes(D1, outcome_table([outcome_row(D1, "1")]))
    before = wh.outcomes(D1)
    corrupt, message = BAD_OUTCOMES[case]
    rows = [outcome_row(D1, "1", purchase_roc_auc=0.9), outcome_row(D1, "2", "challenger")]
    with pytest.raises(OutcomeValidationError) as err:
        wh.replace_outcomes(D1, corrupt(rows))
    assert str(err.value).startswith("outcomes for ds=2026-01-10: ")
    assert message in str(err.value)
    assert wh.outcomes(D1) == before
    assert wh.outcome_days() == [D1]


def _write_outcomes(wh: Warehouse, rows: list[dict]) -> None:
    """Write hand-built rows one ds at a time (each write replaces the whole ds)."""
    for ds in sorted({r["ds"] for r in rows}):
        day = [r for r in rows if r["ds"] == ds]
        assert wh.replace_outcomes(ds, outcome_table(day)) == len(day)


def _health(wh: Warehouse, windows: list[int]) -> dict[tuple[str, str, str], dict]:
    cols = ["last_closed_ds"]
    for n in windows:
        cols += [f"days_{n}d", *(f"{m}_{n}d" for m in HEALTH_METRICS)]
    got = wh._query(
        f"SELECT model_name, model_version, role, {', '.join(cols)} FROM {wh.health_view} "
        "ORDER BY model_name, model_version, role",
        [],
    )
    return {tuple(r[:3]): dict(zip(cols, r[3:], strict=True)) for r in got}


def _approx(health: dict[tuple[str, str, str], dict]) -> dict[tuple[str, str, str], dict]:
    """Health rows compared with float tolerance (an engine may sum a window's rows in any order)."""
    return {
        k: {c: pytest.approx(v) if isinstance(v, float) else v for c, v in row.items()} for k, row in health.items()
    }


def _expected_health(rows: list[dict], windows: list[int]) -> dict[tuple[str, str, str], dict]:
    """The health view computed in Python from its definition."""
    anchors: dict[str, dt.date] = {}
    for r in rows:
        anchors[r["role"]] = max(anchors.get(r["role"], r["ds"]), r["ds"])
    out = {}
    for key in sorted({(r["model_name"], r["model_version"], r["role"]) for r in rows}):
        mine = [r for r in rows if (r["model_name"], r["model_version"], r["role"]) == key]
        anchor = anchors[key[2]]

        def recent(n: int, mine=mine, anchor=anchor) -> list[dict]:
            return [r for r in mine if r["ds"] > anchor - dt.timedelta(days=n)]

        if not recent(max(windows)):
            continue
        expected: dict = {"last_closed_ds": max(r["ds"] for r in mine)}
        for n in windows:
            expected[f"days_{n}d"] = len(recent(n))
            for m in HEALTH_METRICS:
                values = [r[m] for r in recent(n) if r[m] is not None]
                expected[f"{m}_{n}d"] = sum(values) / len(values) if values else None
        out[key] = expected
    return out


START = dt.date(2026, 3, 1)


def _day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def _health_rows() -> list[dict]:
    """Champion outcomes over 30 consecutive days (index 0..29, so L = day 29):
    v1 every day, with recall_top NULL every third day and category_hit_rate never defined;
    v2 the last 5 days; v3 days 5..15 (inside 28 days of L, none in the last 7);
    v0 days 0..1 only (older than L - 28: not in the view)."""
    rows = []
    for i in range(30):
        rows.append(
            outcome_row(
                _day(i),
                "1",
                purchase_roc_auc=0.5 + i / 100,
                purchase_pr_auc=0.2 + i / 200,
                purchase_ece=(i % 5) / 100,
                recall_top=None if i % 3 == 0 else 0.3 + i / 1000,
                category_hit_rate=None,
            )
        )
    for i in range(25, 30):
        rows.append(outcome_row(_day(i), "2", purchase_roc_auc=0.8, purchase_pr_auc=0.4 + i / 1000, recall_top=0.5))
    for i in range(5, 16):
        rows.append(outcome_row(_day(i), "3", purchase_roc_auc=0.6 + i / 1000))
    for i in range(2):
        rows.append(outcome_row(_day(i), "0", purchase_roc_auc=0.55))
    return rows


def test_health_view_windows(wh):
    assert wh.health_windows_days == [7, 28]
    rows = _health_rows()
    _write_outcomes(wh, rows)
    health = _health(wh, [7, 28])
    assert health.keys() == {("purchase_intent", v, "champion") for v in ("1", "2", "3")}
    v1, v2, v3 = (health[("purchase_intent", v, "champion")] for v in ("1", "2", "3"))
    # Hand-computed: the 7-day window is days 23..29, the 28-day window days 2..29.
    assert (v1["last_closed_ds"], v1["days_7d"], v1["days_28d"]) == (_day(29), 7, 28)
    assert v1["purchase_roc_auc_7d"] == pytest.approx(0.5 + 26 / 100)
    assert v1["purchase_roc_auc_28d"] == pytest.approx(0.5 + 15.5 / 100)
    assert v1["purchase_ece_7d"] == pytest.approx((3 + 4 + 0 + 1 + 2 + 3 + 4) / 7 / 100)
    # Days 24 and 27 have no recall_top: the mean is over the other five.
    assert v1["recall_top_7d"] == pytest.approx(0.3 + (23 + 25 + 26 + 28 + 29) / 5 / 1000)
    assert v1["category_hit_rate_7d"] is None and v1["category_hit_rate_28d"] is None
    assert (v2["last_closed_ds"], v2["days_7d"], v2["days_28d"]) == (_day(29), 5, 5)
    assert v2["purchase_roc_auc_7d"] == pytest.approx(0.8)
    assert (v3["last_closed_ds"], v3["days_7d"], v3["days_28d"]) == (_day(15), 0, 11)
    assert all(v3[f"{m}_7d"] is None for m in HEALTH_METRICS)
    assert v3["purchase_roc_auc_28d"] == pytest.approx(0.6 + 10 / 1000)
    assert health == _approx(_expected_health(rows, [7, 28]))


def test_challenger_days_do_not_move_champion_window(wh):
    champion = [outcome_row(_day(i), "1", purchase_roc_auc=0.6 + i / 100) for i in range(10)]
    _write_outcomes(wh, champion)
    before = _health(wh, [7, 28])
    assert before[("purchase_intent", "1", "champion")]["days_7d"] == 7
    # The challenger runs five days past the champion's last closed day (L = day 9 for the champion).
    challenger = [outcome_row(_day(i), "2", "challenger", purchase_roc_auc=0.9) for i in range(5, 15)]
    _write_outcomes(wh, champion + challenger)
    after = _health(wh, [7, 28])
    assert after[("purchase_intent", "1", "champion")] == _approx(before)[("purchase_intent", "1", "champion")]
    assert after[("purchase_intent", "1", "champion")]["purchase_roc_auc_7d"] == pytest.approx(0.6 + 6 / 100)
    ch = after[("purchase_intent", "2", "challenger")]
    assert (ch["last_closed_ds"], ch["days_7d"], ch["days_28d"]) == (_day(14), 7, 10)
    assert after == _approx(_expected_health(champion + challenger, [7, 28]))


def test_health_view_follows_configured_windows(wh, make_cfg):
    _write_outcomes(wh, [outcome_row(_day(i), "1", purchase_roc_auc=0.5 + i / 100) for i in range(6)])
    narrower = Warehouse.from_config(make_cfg(monitoring={"health_windows_days": [3, 1]}, **_same_tables(wh.cfg)))
    narrower.ensure_schema()
    narrower.ensure_schema()
    assert narrower.health_windows_days == [1, 3]
    cols = [
        r[0]
        for r in wh._query(
            f"SELECT column_name FROM information_schema.columns WHERE table_name = {wh._p} ORDER BY ordinal_position",
            [wh.cfg.warehouse.health_view],
        )
    ]
    assert cols[:6] == ["model_name", "model_version", "role", "last_closed_ds", "days_1d", "purchase_roc_auc_1d"]
    assert "days_3d" in cols and "days_7d" not in cols and "purchase_roc_auc_28d" not in cols
    got = _health(narrower, [1, 3])[("purchase_intent", "1", "champion")]
    assert (got["days_1d"], got["days_3d"]) == (1, 3)
    assert got["purchase_roc_auc_3d"] == pytest.approx(0.54)
    # The outcome rows themselves survive the view's recreation.
    assert wh.outcome_days() == [_day(i) for i in range(6)]


def test_health_view_sql_is_shared_by_both_backends(tmp_path):
    duck = Warehouse.from_config(_cfg(tmp_path, f"duckdb:///{tmp_path}/w.duckdb", outcomes_table="o", health_view="h"))
    pg = Warehouse.from_config(
        _cfg(tmp_path, "postgresql://postgres@127.0.0.1:5432/x", outcomes_table="o", health_view="h")
    )
    assert duck.health_view_sql() == pg.health_view_sql()
    assert "o.ds > a.anchor_ds - 28" in duck.health_view_sql()


@pytest.mark.postgres
def test_outcome_writes_take_their_own_table_lock(pg_url, tmp_path):
    cfg = _cfg(tmp_path, pg_url)
    wh = Warehouse.from_config(cfg)
    wh.ensure_schema()
    wh.replace_partition(D1, make_rows(D1, 5))
    holder, marker = _spawn_writer(cfg, D1, make_rows(D1, 8, version="9"), tmp_path, "holder", hold=600)
    try:
        _wait_for(marker, holder)
        impatient = Warehouse.from_config(_cfg(tmp_path, pg_url, **_same_tables(cfg), lock_timeout_s=0.5))
        # The scores writer holds (scores table, D1); the outcomes of D1 lock (outcomes table, D1).
        assert impatient.replace_outcomes(D1, outcome_table([outcome_row(D1)])) == 1
        with pytest.raises(WarehouseBusyError, match=cfg.warehouse.table):
            impatient.replace_partition(D1, make_rows(D1, 3, version="3"))
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert wh.outcome_days() == [D1]
    assert [r[2] for r in _all_rows(wh, D1)] == ["1"] * 5
