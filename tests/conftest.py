"""Shared fixtures (one session-scoped local SparkSession, an isolated pipeline config per test) and the test tiers.

A test's tier is its folder: ``unit/`` and ``dags/`` need no JVM and no torchrun (``make test-fast``), ``spark/``
starts Spark, ``torchrun/`` launches training under torchrun, ``e2e/`` runs the DAGs through Airflow. The folder
sets the pytest marker of the same name, so ``-m "not spark"`` and the like select tiers.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from tasks.config import DEFAULT_CONFIG, PipelineConfig, load_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


TIER_FOLDERS = {"spark": "spark", "torchrun": "torchrun", "e2e": "e2e"}
# Tiers whose tests must start neither a JVM nor torchrun.
FAST_FOLDERS = {"unit", "dags"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(str(item.path)).relative_to(Path(__file__).parent).parts[0]
        if folder in TIER_FOLDERS:
            item.add_marker(TIER_FOLDERS[folder])
        if "spark" in getattr(item, "fixturenames", ()):
            if folder in FAST_FOLDERS:
                raise pytest.UsageError(f"{item.nodeid} uses the spark fixture: it belongs in tests/spark/")
            item.add_marker("spark")


def pytest_configure(config):
    # Tests never touch the developer's var/ or a tracking server from the shell.
    for env in ("MLFLOW_TRACKING_URI", "PIPELINE_WAREHOUSE_URL", "SPARK_MASTER", "PIPELINE_CONFIG"):
        os.environ.pop(env, None)
    # Importing Airflow gives the root logger a handler on the stdout pytest captures. py4j logs "Closing down
    # clientserver connection" at INFO when its connections are collected at interpreter exit, after pytest
    # closed that stream: a "Logging error" trace after the summary. Its INFO lines carry nothing for tests.
    logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _isolated_mlflow_globals():
    """MLflow keeps its tracking/registry URIs in module globals and os.environ; no test may leak them."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {k: os.environ.get(k) for k in keys}
    yield
    if "mlflow" in sys.modules:
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from spark_jobs.session import build_session

    cfg = load_config(DEFAULT_CONFIG, overrides={"spark": {"master": "local[2]", "shuffle_partitions": 2}})
    session = build_session(cfg, "pytest")
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path) -> PipelineConfig:
    """The committed config with every runtime path moved into this test's temp dir."""
    from tests.helpers.config import isolated_config

    return isolated_config(tmp_path / "var")


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real sample {name} missing at {path}; CI must have shared/ beside the clone")
        pytest.skip(f"real sample {name} not found at {path} (the shared/ folder beside the checkout)")
    return path
