"""Warehouse adapter on real DuckDB files and a real PostgreSQL database: partition swap,
validation, crash safety (SIGKILLed writer) and concurrent writers."""

from __future__ import annotations

import datetime as dt
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
from tasks.warehouse import (
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


def _cfg(tmp_path: Path, url: str, **warehouse) -> PipelineConfig:
    suffix = uuid.uuid4().hex[:8]
    return isolated_config(
        tmp_path / "var",
        warehouse={
            "url": url,
            # A unique table per test keeps tests independent inside the one session database.
            "table": f"scores_{suffix}",
            "latest_view": f"scores_{suffix}_latest",
            "summary_view": f"scores_{suffix}_summary",
            "lock_timeout_s": 60,
            **warehouse,
        },
    )


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_cfg(request, backend, tmp_path):
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"duckdb:///{tmp_path}/var/wh.duckdb"

    def build(**warehouse) -> PipelineConfig:
        return _cfg(tmp_path, url, **warehouse)

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
        impatient = Warehouse.from_config(
            make_cfg(
                table=wh_cfg.warehouse.table,
                latest_view=wh_cfg.warehouse.latest_view,
                summary_view=wh_cfg.warehouse.summary_view,
                lock_timeout_s=0.5,
            )
        )
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
