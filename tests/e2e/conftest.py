"""The e2e tier's shared state: one tiny generated log and one `make demo` run (`tasks.demo`) per session.

The log is one simulation that goes on past the demo's days with concept drift; those later days are held back
(`held_back`) until test_retraining delivers them. Every e2e module reads the demo's outputs (`demo`, its stdout)
and may run more DAG runs against the same state (`env`: the environment and config the demo ran with; `airflow`:
Airflow's components running on the demo's metadata, which triggers real runs; it starts once the demo, which
runs its own, has stopped).

Airflow runs as deployed where the machine has the services (CI has them): its metadata in a fresh PostgreSQL
database, the demo's runs on the LocalExecutor, and the later runs (`airflow`) on the CeleryExecutor with Redis as
broker and one `airflow celery worker`, with the settings docker-compose.yml uses (deploy/airflow.env). Elsewhere
on SQLite and the LocalExecutor (tests/e2e/test_executors.py says why it skips).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
import yaml

from tasks.airflow_env import DEPLOYMENT_ENV, AirflowStack, free_port
from tasks.config import DEFAULT_CONFIG, REPO_ROOT, load_config
from tests.helpers import postgres, redis
from tests.helpers.e2e import (
    NIGHTLY_DAG,
    demo_runs_file,
    generate_log_with_drift_ahead,
    metadata_rows,
    overlay_sections,
    run,
)

DB_KEY = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"


@pytest.fixture(scope="session")
def airflow_database():
    """Airflow's metadata database: a fresh PostgreSQL database as deployed (None: SQLite, no server answers)."""
    if postgres.unavailable() is not None:
        yield None
        return
    with postgres.fresh_database("e2e_airflow") as url:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def env(tmp_path_factory, airflow_database):
    root = tmp_path_factory.mktemp("e2e")
    overlay = root / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(overlay_sections(root / "var")))
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "PIPELINE_WAREHOUSE_URL", "SPARK_MASTER", DB_KEY)
        and not k.startswith("AIRFLOW__CELERY__")
    }
    environ.update(PIPELINE_CONFIG=f"{DEFAULT_CONFIG}:{overlay}", PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    if airflow_database is not None:
        environ[DB_KEY] = airflow_database
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
    # Later modules trigger and unpause DAGs (the browser test, as a user would): keep what the demo left.
    url = environ.get(DB_KEY, f"sqlite:///{cfg.paths.airflow_home / 'airflow.db'}")
    columns = "dag_id, run_id, run_type, state, logical_date, start_date, end_date"
    left = {
        "database": url.split(":", 1)[0],
        "runs": metadata_rows(url, f"select {columns} from dag_run order by dag_id, logical_date"),
        "paused": dict(metadata_rows(url, "select dag_id, is_paused from dag where dag_id like 'purchase_intent_%'")),
        # The Celery task ids of the demo's task instances: none, it ran on the LocalExecutor.
        "celery_tasks": metadata_rows(url, "select count(external_executor_id) from task_instance")[0][0],
    }
    demo_runs_file(cfg).write_text(json.dumps(left))
    return proc.stdout


@pytest.fixture(scope="session")
def airflow(env, demo):
    environ, cfg = env
    log = cfg.paths.airflow_home / "logs" / "e2e-services.log"
    deployment = None
    if DB_KEY in environ and redis.unavailable() is None:
        # As docker-compose.yml deploys it: the CeleryExecutor. A queue of its own, so that no other worker on
        # this Redis takes its tasks, and a log-server port of its own.
        environ = {
            **environ,
            "AIRFLOW__CELERY__BROKER_URL": redis.URL,
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"e2e-{uuid.uuid4().hex[:8]}",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }
        deployment = DEPLOYMENT_ENV
    with open(log, "w", buffering=1) as out, AirflowStack(cfg, out, environ, deployment=deployment) as stack:
        stack.wait_ready((NIGHTLY_DAG,))
        stack.unpause_for_block(NIGHTLY_DAG)
        yield stack
