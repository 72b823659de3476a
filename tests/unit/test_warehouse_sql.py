"""`python -m tasks.warehouse sql`: read-only queries printed as an aligned table, one-line errors with exit 2."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.config import REPO_ROOT, PipelineConfig
from tasks.warehouse import Warehouse, format_table, main
from tests.unit.test_warehouse import backend, make_cfg, make_rows, pg_url, wh, wh_cfg  # noqa: F401  (fixtures)

D1 = dt.date(2026, 1, 10)


def _config_file(cfg: PipelineConfig) -> str:
    path = Path(cfg.paths.var) / "cfg.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    return str(path)


def test_sql_prints_an_aligned_table(wh, wh_cfg, capsys):  # noqa: F811
    wh.replace_partition(D1, make_rows(D1, 4))
    t = wh_cfg.warehouse.table
    sql = f"select user_id, p_purchase, model_version from {t} where ds = '{D1}' order by user_id"
    assert main(["--config", _config_file(wh_cfg), "sql", sql]) == 0
    lines = capsys.readouterr().out.rstrip("\n").splitlines()
    expected = wh._query(sql, [])
    assert lines[0].split() == ["user_id", "p_purchase", "model_version"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert [ln.split()[0] for ln in lines[2:-1]] == [r[0] for r in expected]
    assert [float(ln.split()[1]) for ln in lines[2:-1]] == pytest.approx([r[1] for r in expected], rel=1e-5)
    assert lines[-1] == "(4 rows)"
    # Aligned: every column starts at the same offset on every line.
    starts = {ln.index(ln.split()[2], len(ln.split()[0]) + 1) for ln in [lines[0], *lines[2:-1]]}
    assert len({len(ln.rstrip()) for ln in lines[2:-1]}) == 1 and len(starts) <= 2


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("selec 1", "syntax error"),
        ("select * from no_such_table", "no_such_table"),
        ("delete from {table}", "read"),  # read-only: a write is refused
    ],
)
def test_bad_query_gives_one_line_and_exit_2(wh, wh_cfg, capsys, sql, message):  # noqa: F811
    wh.replace_partition(D1, make_rows(D1, 3))
    code = main(["--config", _config_file(wh_cfg), "sql", sql.format(table=wh_cfg.warehouse.table)])
    captured = capsys.readouterr()
    assert code == 2
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sql error: ") and message in err[0].lower(), captured.err
    assert Warehouse.from_config(wh_cfg).row_count(D1) == 3


def test_missing_duckdb_file_is_named(tmp_path, capsys):
    from tests.helpers.config import isolated_config

    cfg = isolated_config(tmp_path / "var", warehouse={"url": f"duckdb:///{tmp_path}/none.duckdb"})
    assert main(["--config", _config_file(cfg), "sql", "select 1"]) == 2
    assert f"no DuckDB warehouse at {tmp_path}/none.duckdb" in capsys.readouterr().err


def test_sql_reads_while_another_process_reads(wh, wh_cfg, backend):  # noqa: F811
    """The CLI as a shell runs it; a reader holds no write lock, so two readers and a later write all work."""
    wh.replace_partition(D1, make_rows(D1, 5))
    cmd = [sys.executable, "-m", "tasks.warehouse", "--config", _config_file(wh_cfg), "sql"]
    sql = f"select count(*) as n from {wh_cfg.warehouse.table}"
    first = subprocess.Popen([*cmd, sql], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    second = subprocess.run([*cmd, sql], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert first.wait(timeout=120) == 0 and second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["n", "-", "5", "(1 row)"] == first.stdout.read().splitlines()
    wh.replace_partition(D1, make_rows(D1, 2))
    assert wh.row_count(D1) == 2


def test_format_table_cuts_long_cells_and_shows_nulls():
    out = format_table(["a", "b"], [("x" * 100, None), ("y", 2.5)]).splitlines()
    assert out[2].startswith("x" * 57 + "...") and out[2].rstrip().endswith("NULL")
    assert out[3].split() == ["y", "2.5"] and out[-1] == "(2 rows)"
