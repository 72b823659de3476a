"""Every command and SQL example of the README runs, as printed, against the demo's outputs.

The examples (tests/helpers/readme.py finds them: fenced ``bash``/``sql``/``python`` blocks and inline commands)
are written for the repository root after ``make demo`` with the committed config. Here they run against the
session's demo (tests/e2e/conftest.py: a tiny log, its own var folder and config), rewritten explicitly and only
so (``tests.helpers.readme.rewrite``): every ``var/`` path points into the demo's var folder, every date moves by
the distance between the committed demo's ``ds`` (generator start + n_days) and this demo's, and
``PIPELINE_CONFIG=conf/pipeline.yaml`` names this demo's config; the session's environment (``PIPELINE_CONFIG``
among it) is passed to every command. Then:
- a shell command runs through bash from the repository root with ``.venv/bin`` first on ``PATH`` (its block's
  earlier ``export`` lines first) and must exit 0 and print something; an identical command runs once;
- DuckDB SQL runs read-only on the demo's warehouse and must return rows;
- PostgreSQL SQL runs on a PostgreSQL warehouse holding the same rows (a fresh database on 127.0.0.1:5432;
  skipped where no server answers, a failure when CI=true) and must return rows;
- a Python block runs with the virtualenv's python, must exit 0, print something and print no empty result.
Commands that cannot run in a test are in ``NOT_RUN``, each with its reason; they are reported as skipped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.config import DEFAULT_CONFIG, REPO_ROOT, load_config
from tasks.layers import data_docs_site
from tests.helpers.e2e import LAST_DS
from tests.helpers.postgres import fresh_database
from tests.helpers.readme import Example, extract, rewrite

pytestmark = pytest.mark.e2e

README = REPO_ROOT / "README.md"
VENV_BIN = REPO_ROOT / ".venv" / "bin"

_SCHEDULER = "needs the scheduler `make airflow` keeps running (a long-running server) to execute the runs"
# Commands the README prints that a test cannot run, keyed by the command as printed (a trailing comment dropped).
NOT_RUN = {
    "make demo": "the session's `demo` fixture runs it (python -m tasks.demo, on the e2e tier's tiny log)",
    "make test": "the whole test suite, this test among it",
    "make test-fast": "a tier of the test suite, which make test runs",
    "make lint": "make test (and CI) runs it before every tier",
    "make airflow": "a long-running server (Airflow standalone)",
    "make mlflow-ui": "a long-running server (the MLflow UI)",
    "make jvm-archive": "rebuilds the class archive, which the `demo` fixture's step 2 built with the same command",
    "make bench": "benchmarks on generated logs of millions of events, for many minutes (see bench/README.md)",
    "python -m bench.run --only nightly_scaling": (
        "one benchmark of make bench: four nightly runs through Airflow on 1M- and 10M-event logs (about 16 minutes)"
    ),
    "make clean": "deletes var/ of the working tree, which holds the developer's own state",
    ".venv/bin/python -m tasks.backtest --source taobao --input ../shared/data/taobao_userbehavior_sample.csv "
    "--train 2017-11-26:2017-11-29 --val 2017-11-30 --test 2017-12-01 --candidates lr,lightgbm,lstm,bert --seeds 3": (
        "12 trainings (minutes); tests/torchrun/test_backtest.py runs the same command on the same sample with two "
        "families, two seeds and one epoch"
    ),
    "python -m tasks.train --launch --search": "an Optuna search plus a full training under torchrun (many minutes)",
    "torchrun --nnodes N --node-rank R --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint host:29400 "
    "--rdzv-id ID -m tasks.train --training-set DIR --output result.json --config pipeline.yaml": (
        "a template for several machines (N, R, G, host, ID and the paths are placeholders); "
        "tests/torchrun/test_train.py runs it as two nodes of one process on 127.0.0.1"
    ),
    "cp .env.example .env && docker compose up -d": "docker compose: containers, not run by the test suite",
    "docker compose up -d --scale airflow-worker=M": (
        "docker compose: containers, not run by the test suite (M is a placeholder); the e2e tier runs the same "
        "Airflow settings (deploy/airflow.env) with one Celery worker"
    ),
    ".venv/bin/python -m tasks.airflow_env backfill create --dag-id purchase_intent_nightly --from-date 2026-01-14 "
    "--to-date 2026-01-15 --max-active-runs 1": _SCHEDULER,
    ".venv/bin/python -m tasks.airflow_env dags unpause purchase_intent_nightly": _SCHEDULER,
    ".venv/bin/python -m tasks.airflow_env dags test purchase_intent_nightly 2026-01-15": (
        "a whole nightly DAG run (minutes); the `demo` fixture runs the same DAG for this date"
    ),
}

_TRAILING_COMMENT = re.compile(r"\s+#[^'\"]*$")


def _key(example: Example) -> str:
    return _TRAILING_COMMENT.sub("", example.text) if example.kind in ("bash", "inline") else example.text


EXAMPLES = extract(README.read_text())
TIMES: dict[str, float] = {}


def _shift_days() -> int:
    committed = load_config(DEFAULT_CONFIG, use_env=False)
    readme_ds = committed.generator.start + dt.timedelta(days=committed.generator.n_days)
    return (LAST_DS - readme_ds).days


def _rewritten(example_text: str, env) -> str:
    environ, cfg = env
    return rewrite(example_text, str(cfg.paths.var), _shift_days(), environ["PIPELINE_CONFIG"])


def _environ(env) -> dict[str, str]:
    environ, _ = env
    return {**environ, "PATH": f"{VENV_BIN}{os.pathsep}{environ.get('PATH', '')}"}


def _run(args: list[str], env, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=REPO_ROOT, env=_environ(env), input=stdin, capture_output=True, text=True, timeout=900
    )


def _explain(example: Example, command: str, proc: subprocess.CompletedProcess) -> str:
    return (
        f"{example}\nran: {command}\nexit {proc.returncode}\n--- stdout (tail)\n{proc.stdout[-3000:]}"
        f"\n--- stderr (tail)\n{proc.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def shell_done() -> dict[str, subprocess.CompletedProcess]:
    return {}


def _shell(example: Example, env, done: dict[str, subprocess.CompletedProcess]) -> None:
    command = _rewritten("\n".join([*example.setup, _key(example)]), env)
    if command not in done:
        started = time.monotonic()
        done[command] = _run(["bash", "-c", f"set -e\n{command}"], env)
        TIMES[str(example)] = time.monotonic() - started
    proc = done[command]
    assert proc.returncode == 0, _explain(example, command, proc)
    assert proc.stdout.strip(), _explain(example, command, proc)


def _duckdb(example: Example, env) -> None:
    import duckdb

    _, cfg = env
    sql = _rewritten(example.text, env)
    con = duckdb.connect(str(cfg.warehouse.duckdb_path), read_only=True)
    try:
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    assert rows, f"{example}\nran: {sql}\nreturned no rows"


@pytest.fixture(scope="module")
def pg_warehouse(env, demo):
    """A PostgreSQL warehouse holding every row (scores and outcomes) of the demo's DuckDB warehouse, through the
    project's adapter."""
    import duckdb

    from tasks.warehouse import Warehouse

    _, cfg = env
    with fresh_database("pytest_readme") as url:
        pg_cfg = cfg.model_copy(update={"warehouse": cfg.warehouse.model_copy(update={"url": url})})
        pg = Warehouse.from_config(pg_cfg)
        pg.ensure_schema()
        con = duckdb.connect(str(cfg.warehouse.duckdb_path), read_only=True)
        try:
            days = [d for (d,) in con.execute(f"SELECT DISTINCT ds FROM {cfg.warehouse.table} ORDER BY ds").fetchall()]
            for ds in days:
                rows = con.sql(f"SELECT * FROM {cfg.warehouse.table} WHERE ds = DATE '{ds}'").to_arrow_table()
                pg.replace_partition(ds, rows)
            outcomes = cfg.warehouse.outcomes_table
            for (ds,) in con.execute(f"SELECT DISTINCT ds FROM {outcomes} ORDER BY ds").fetchall():
                pg.replace_outcomes(ds, con.sql(f"SELECT * FROM {outcomes} WHERE ds = DATE '{ds}'").to_arrow_table())
        finally:
            con.close()
        assert days, "the demo's warehouse holds no rows"
        yield url


def _postgresql(example: Example, env, url: str) -> None:
    import psycopg

    sql = _rewritten(example.text, env)
    with psycopg.connect(url) as con:
        rows = con.execute(sql).fetchall()
    assert rows, f"{example}\nran: {sql}\nreturned no rows"


def _python(example: Example, env) -> None:
    code = _rewritten(example.text, env)
    proc = _run([str(VENV_BIN / "python"), "-"], env, stdin=code)
    assert proc.returncode == 0, _explain(example, code, proc)
    printed = [line.strip() for line in proc.stdout.splitlines()]
    assert printed and "[]" not in printed, _explain(example, code, proc)


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"L{e.line}-{e.kind}" for e in EXAMPLES])
def test_readme_example_runs(example: Example, env, demo, shell_done, request):
    if _key(example) in NOT_RUN:
        pytest.skip(f"not run: {NOT_RUN[_key(example)]}")
    started = time.monotonic()
    if example.kind in ("bash", "inline"):
        _shell(example, env, shell_done)
    elif example.kind == "duckdb":
        _duckdb(example, env)
    elif example.kind == "postgresql":
        _postgresql(example, env, request.getfixturevalue("pg_warehouse"))
    elif example.kind == "python":
        _python(example, env)
    else:
        pytest.fail(f"{example}: no runner for kind {example.kind!r}")
    TIMES.setdefault(str(example), time.monotonic() - started)


def test_not_run_list_names_only_readme_commands():
    printed = {_key(e) for e in EXAMPLES}
    assert sorted(set(NOT_RUN) - printed) == []
    assert all(reason.strip() for reason in NOT_RUN.values())


def test_readme_data_docs_page_exists_and_loads_nothing_remote(env, demo):
    _, cfg = env
    page = data_docs_site(cfg.paths.gx_dir) / "index.html"
    named = "var/gx/gx/uncommitted/data_docs/local_site/index.html"
    assert f"`{named}`" in README.read_text()
    assert Path(_rewritten(named, env)) == page and page.is_file()
    html = page.read_text()
    assert not re.search(r"""<(?:script|img)\b[^>]*\bsrc=["']?(?:https?:)?//""", html)
    assert not re.search(r"""<link\b[^>]*\bhref=["']?(?:https?:)?//""", html)
    assert re.search(r'href="validations/[^"]+\.html"', html), "the index lists no validation result"


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    """After the module: how many examples ran, how many are in NOT_RUN, and the slowest, in the terminal summary."""
    yield
    run = [e for e in EXAMPLES if _key(e) not in NOT_RUN]
    lines = [
        f"README examples: {len(run)} run ({len({_key(e) for e in run})} distinct), "
        f"{len(EXAMPLES) - len(run)} not run (NOT_RUN), {sum(TIMES.values()):.0f} s of commands"
    ]
    lines += [f"  {seconds:6.1f} s  {name}" for name, seconds in sorted(TIMES.items(), key=lambda kv: -kv[1])[:6]]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line)
        else:
            sys.stdout.write(line + "\n")
