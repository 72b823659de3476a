"""Wiring shared by the pipeline's DAG files: default task arguments, Spark submission and callbacks.

Parse-time cost stays small: only the Airflow SDK, the Spark provider's operator and the
pipeline's YAML config (no torch, pyspark, transformers, and no database call).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from spark_jobs.session import driver_java_options  # noqa: E402  (no Spark import: parse-time safe)
from tasks.config import PipelineConfig, load_config  # noqa: E402  (needs REPO_ROOT on sys.path)
from tasks.errors import EXIT_CONFIG_ERROR, EXIT_DATA_ERROR, DataError  # noqa: E402

log = logging.getLogger("purchase_intent")


def config() -> PipelineConfig:
    """The pipeline config as the tasks will see it (PIPELINE_CONFIG, else conf/pipeline.yaml)."""
    return load_config()


def default_args(owner: str = "ml-platform") -> dict:
    return {
        "owner": owner,
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=10),
        "on_failure_callback": report_failure,
    }


def report_failure(context) -> None:
    """One clear line per failed task: DAG, task, logical date and the reason."""
    ti = context.get("task_instance") or context.get("ti")
    exc = context.get("exception")
    reason = str(exc).strip().splitlines()[0] if exc else "unknown reason"
    log.error(
        "PIPELINE FAILURE dag=%s task=%s logical_date=%s reason=%s",
        getattr(ti, "dag_id", "?"),
        getattr(ti, "task_id", "?"),
        context.get("logical_date"),
        reason,
    )


def fail_fast_on_data_errors(fn):
    """In-process steps: bad data fails the task at once instead of being retried."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as e:
            raise AirflowFailException(f"DATA ERROR ({type(e).__name__}): {e}") from e

    return wrapper


def local_ds(logical_date, days: int = 0) -> str:
    """The logical date as a calendar day in the pipeline's time zone, shifted by ``days``."""
    tz = config().pipeline.tz
    day = logical_date.astimezone(tz).date() + dt.timedelta(days=days)
    return day.isoformat()


USER_DEFINED_MACROS = {"local_ds": local_ds}


def step_env() -> dict[str, str]:
    """Environment for spark-submit: the project importable, the same Python and config as Airflow."""
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    for key in ("PIPELINE_CONFIG", "MLFLOW_TRACKING_URI", "PIPELINE_WAREHOUSE_URL", "JAVA_HOME"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


class PipelineSparkSubmitOperator(SparkSubmitOperator):
    """spark-submit of one of spark_jobs/*.py; a data-quality (65) or config (78) exit fails without retries."""

    def __init__(self, *, job: str, **kwargs):
        cfg = config()
        super().__init__(
            application=str(REPO_ROOT / "spark_jobs" / f"{job}.py"),
            name=f"purchase_intent.{job}",
            conn_id="spark_default",
            driver_memory=cfg.spark.driver_memory,
            conf={
                "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
                "spark.ui.enabled": "false",
            },
            env_vars=step_env(),
            **kwargs,
        )
        self.pipeline_job = job

    def execute(self, context):
        # Chosen when the task runs, not when the DAG is parsed: the class archive may appear later. A
        # gate's driver lives seconds: C1-only JIT (as build_session(short_lived=True) runs it).
        options = driver_java_options(config(), short_lived=self.pipeline_job == "validate")
        if options:
            self.conf = {**(self.conf or {}), "spark.driver.extraJavaOptions": options}
        try:
            return super().execute(context)
        except AirflowException as e:
            if f"Error code is: {EXIT_DATA_ERROR}" in str(e):
                raise AirflowFailException(
                    f"{self.task_id}: the data failed a check (DATA ERROR line above names it); not retried"
                ) from e
            if f"Error code is: {EXIT_CONFIG_ERROR}" in str(e):
                raise AirflowFailException(
                    f"{self.task_id}: the pipeline config is invalid (config error line above names it); not retried"
                ) from e
            raise
