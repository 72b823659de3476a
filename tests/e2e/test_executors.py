"""End to end: Airflow runs as docker-compose.yml deploys it where the machine has the services (CI has them):
the metadata on PostgreSQL, the demo's runs on the LocalExecutor and the later runs on Celery workers with Redis as
broker (tests/e2e/conftest.py). The Celery side is checked last, on every run made after the demo
(test_retraining.py: the `airflow` fixture starts when a module first asks for it, and no module before may)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import postgres
from tests.helpers.e2e import demo_runs_file

pytestmark = pytest.mark.e2e


def test_the_demo_ran_on_postgresql_with_the_local_executor(demo, env):
    _, cfg = env
    left = json.loads(demo_runs_file(cfg).read_text())
    if left["database"] == "sqlite":
        pytest.skip(f"Airflow ran on SQLite: {postgres.unavailable()}")
    assert left["database"] == "postgresql+psycopg"
    # The demo's three runs (test_pipeline_dags checks them and their warehouse rows) are in this database,
    # executed by the LocalExecutor: no task went through Celery.
    assert [run[3] for run in left["runs"]] == ["success"] * 3
    assert left["celery_tasks"] == 0
