"""The e2e tier's shared state: one tiny generated log and one `make demo` run (`tasks.demo`) per session.

The log is one simulation that goes on past the demo's days with concept drift; those later days are held back
(`held_back`) until test_retraining delivers them. Every e2e module reads the demo's outputs (`demo`, its stdout)
and may run more DAG runs against the same state (`env`: the environment and config the demo ran with; `airflow`:
Airflow's components running on the demo's metadata, which triggers real runs; it starts once the demo, which
runs its own, has stopped).
"""

from __future__ import annotations

import os
import sqlite3

import pytest
import yaml

from tasks.airflow_env import AirflowStack
from tasks.config import DEFAULT_CONFIG, REPO_ROOT, load_config
from tests.helpers.e2e import NIGHTLY_DAG, demo_airflow_db, generate_log_with_drift_ahead, overlay_sections, run


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    overlay = root / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(overlay_sections(root / "var")))
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "PIPELINE_WAREHOUSE_URL", "SPARK_MASTER")
    }
    environ.update(PIPELINE_CONFIG=f"{DEFAULT_CONFIG}:{overlay}", PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    cfg = load_config([DEFAULT_CONFIG, overlay], use_env=False)
    generate_log_with_drift_ahead(cfg, root / "held-back")
    return environ, cfg


@pytest.fixture(scope="session")
def held_back(env):
    """The drifted days simulated past the demo's log, not delivered yet (tests.helpers.e2e.DRIFT_DAYS)."""
    _, cfg = env
    return cfg.paths.var.parent / "held-back"


@pytest.fixture(scope="session")
def demo(env):
    environ, cfg = env
    proc = run(environ, "-m", "tasks.demo")
    # Later modules trigger and unpause DAGs (the browser test, as a user would): keep the state the demo left.
    # Through SQLite's backup API: Airflow runs the database in WAL mode, and the last commits of the stopped
    # scheduler (a run marked successful) may still sit in airflow.db-wal, which a file copy would leave behind.
    src = sqlite3.connect(cfg.paths.airflow_home / "airflow.db")
    dst = sqlite3.connect(demo_airflow_db(cfg))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return proc.stdout


@pytest.fixture(scope="session")
def airflow(env, demo):
    environ, cfg = env
    log = cfg.paths.airflow_home / "logs" / "e2e-services.log"
    with open(log, "w", buffering=1) as out, AirflowStack(cfg, out, environ) as stack:
        stack.wait_ready((NIGHTLY_DAG,))
        stack.unpause_for_block(NIGHTLY_DAG)
        yield stack
