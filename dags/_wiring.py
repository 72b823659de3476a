"""Wiring shared by the pipeline's DAG files: default task arguments, Spark submission and callbacks.

Parse-time cost stays small: only the Airflow SDK, the Spark provider's operator and the
pipeline's YAML config (no torch, pyspark, transformers, and no database call).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowException, AirflowFailException

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from spark_jobs.session import driver_java_options, executor_conf  # noqa: E402  (no Spark import: parse-time safe)
from tasks.config import PipelineConfig, load_config  # noqa: E402  (needs REPO_ROOT on sys.path)
from tasks.errors import (  # noqa: E402
    EXIT_CONFIG_ERROR,
    EXIT_DATA_ERROR,
    REASON_FILE_ENV,
    ConfigError,
    DataError,
    first_line,
    read_reason,
    reason_of,
)

log = logging.getLogger("purchase_intent")

# Airflow's task supervisor logs everything a task writes to stderr at ERROR level. MLflow would put its
# own handler on its loggers, writing every INFO and WARNING to stderr; without it they propagate to
# Airflow's handler at their real level. Its artifact progress bars (stderr too) say nothing a log needs.
# Task processes parse this file before they run a task, so this holds before a task imports mlflow.
TASK_PROCESS_ENV = {"MLFLOW_CONFIGURE_LOGGING": "false", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
for _key, _value in TASK_PROCESS_ENV.items():
    os.environ.setdefault(_key, _value)


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


def failure_reason(exc: BaseException | None) -> str:
    """The one line a failed task is reported with: the pipeline's own reason line (the message of the
    exceptions raised below), else the exception's type and first line."""
    if exc is None:
        return "unknown reason (the task ended without an exception; see its log)"
    if isinstance(exc, AirflowException):
        return first_line(exc)
    return reason_of(exc)[1]


def _run_day(context) -> str:
    """The run's logical date as a day in the pipeline's time zone (a run without one: its run_after)."""
    run = context.get("dag_run")
    when = context.get("logical_date") or getattr(run, "logical_date", None) or getattr(run, "run_after", None)
    return local_ds(when) if when is not None else "unknown-date"


def _task_log_file(ti) -> str | None:
    """The task try's log file under [logging] base_log_folder (Airflow's default file naming), if it exists."""
    from airflow.sdk.configuration import conf

    folder = Path(conf.get("logging", "base_log_folder")) / f"dag_id={ti.dag_id}" / f"run_id={ti.run_id}"
    folder = folder / f"task_id={ti.task_id}"
    if (getattr(ti, "map_index", -1) or -1) >= 0:
        folder = folder / f"map_index={ti.map_index}"
    path = folder / f"attempt={ti.try_number}.log"
    return str(path) if path.is_file() else None


def report_failure(context) -> None:
    """One clear line per failed task (DAG, task, logical date and the reason) and its entry in the run summary."""
    ti = context.get("task_instance") or context.get("ti")
    exc = context.get("exception")
    reason = failure_reason(exc)
    dag_id, task_id = getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?")
    when = context.get("logical_date")
    when = when.isoformat() if hasattr(when, "isoformat") else when
    log.error("PIPELINE FAILURE dag=%s task=%s logical_date=%s reason=%s", dag_id, task_id, when, reason)
    try:
        from tasks.run_summary import record_failure

        path = record_failure(
            config(),
            dag_id,
            _run_day(context),
            getattr(ti, "run_id", "?"),
            task_id,
            reason,
            try_number=getattr(ti, "try_number", None),
            log=_task_log_file(ti) if ti is not None else None,
            log_url=getattr(ti, "log_url", None),
            data_docs=getattr(exc, "data_docs", None),
            mlflow_run=getattr(exc, "mlflow_run", None),
        )
        log.info("run summary: %s (python -m tasks.run_summary --dag %s)", path, dag_id)
    except Exception as e:  # the summary is a convenience: it must never hide the failure being reported
        log.warning("could not write the run summary: %s: %s", type(e).__name__, e)


def _record_outcome(context, state: str) -> None:
    run = context.get("dag_run")
    try:
        from tasks.run_summary import record_outcome

        record_outcome(
            config(),
            getattr(run, "dag_id", None) or context["dag"].dag_id,
            _run_day(context),
            getattr(run, "run_id", "?"),
            state,
            reason=context.get("reason"),
        )
    except Exception as e:  # as in report_failure: never let the summary break the run's bookkeeping
        log.warning("could not write the run summary: %s: %s", type(e).__name__, e)


def record_run_success(context) -> None:
    _record_outcome(context, "success")


def record_run_failure(context) -> None:
    _record_outcome(context, "failed")


# DAG-level callbacks: the run summary's final state (tasks.run_summary).
DAG_CALLBACKS = {"on_success_callback": record_run_success, "on_failure_callback": record_run_failure}


def fail_fast_on_data_errors(fn):
    """In-process steps: bad data, missing data or a bad config fails the task at once with its one-line
    reason (the whole message is logged above it) instead of being retried."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DataError, ConfigError) as e:
            if len(str(e).strip().splitlines()) > 1:
                log.error("%s", e)  # the whole message (every failed check); the task fails with its first line
            raise AirflowFailException(reason_of(e)[1]) from None

    return wrapper


def local_ds(logical_date, days: int = 0) -> str:
    """The logical date as a calendar day in the pipeline's time zone, shifted by ``days``."""
    tz = config().pipeline.tz
    day = logical_date.astimezone(tz).date() + dt.timedelta(days=days)
    return day.isoformat()


# Updated by the nightly run only when the champion is degraded (tasks.outcomes.assess_health); the event's extra
# carries the cutoff ds and the reason, and the training DAG is scheduled on it as well as weekly.
MODEL_DEGRADED_ASSET = Asset("warehouse://purchase_intent/intent_model_health")


def run_cutoff(logical_date, triggering_asset_events=None):
    """The run's cutoff instant: its logical date or, for a run an asset event started (which has none), the
    midnight of the latest cutoff ``ds`` its events carry (the nightly run that found the model degraded)."""
    if logical_date is not None:
        return logical_date
    days = [
        (event.extra or {}).get("ds")
        for events in (triggering_asset_events or {}).values()
        for event in events
        if (event.extra or {}).get("ds")
    ]
    if not days:
        raise ValueError("the run has no logical date and no triggering asset event naming a cutoff ds")
    return dt.datetime.combine(dt.date.fromisoformat(max(days)), dt.time(), tzinfo=config().pipeline.tz)


def trigger_reason(dag_run, triggering_asset_events=None) -> str:
    """Why a run started, for its log and its model version's tags: the asset event's reason, or the run type."""
    reasons = [
        f"{(event.extra or {}).get('reason', 'asset event')} (ds={(event.extra or {}).get('ds', '?')})"
        for events in (triggering_asset_events or {}).values()
        for event in events
    ]
    if reasons:
        return "model health degraded: " + "; ".join(reasons)
    run_type = getattr(dag_run, "run_type", None) or "manual"
    return str(getattr(run_type, "value", run_type))


USER_DEFINED_MACROS = {"local_ds": local_ds, "run_cutoff": run_cutoff}


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
    """spark-submit of one of spark_jobs/*.py. The task fails with the job's own reason line (its run_cli
    writes it to ``$PIPELINE_REASON_FILE``); a data (65) or config (78) exit fails without retries."""

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
                **executor_conf(cfg),
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
        # The job's run_cli writes its one-line reason here; the task then fails with that line.
        fd, reason_file = tempfile.mkstemp(prefix=f"{self.task_id}-", suffix=".reason.json")
        os.close(fd)
        self.env_vars = {**(self.env_vars or {}), REASON_FILE_ENV: reason_file}
        try:
            return super().execute(context)
        except AirflowException as e:
            raise step_failure(self.pipeline_job, e, read_reason(Path(reason_file))) from None
        finally:
            Path(reason_file).unlink(missing_ok=True)


_EXIT_CODE = re.compile(r"Error code is: (\d+)")
_MARKER = re.compile(r"^(DATA ERROR \(|NO DATA: |config error: )")
# A Python exception's last traceback line ("ValueError: bad", "pyspark.errors...AnalysisException: ...") or an
# argparse refusal ("features.py: error: argument --ds: ...").
_EXCEPTION_LINE = re.compile(r"^([\w.]*(Error|Exception)\b[^:\s]*|[\w.-]+: error): \S")


def step_failure(job: str, submit_error: AirflowException, reported: dict | None) -> AirflowException:
    """The exception a failed spark-submit task ends with: the job's own reason line, not the command.

    A data or config failure (exit 65 / 78) is an ``AirflowFailException`` (not retried); anything else
    stays retryable. Without a reason file (the driver died before reporting, or ran on a cluster), the
    marker line the job printed or its last exception line is picked from spark-submit's output tail.
    """
    text = str(submit_error)
    code_match = _EXIT_CODE.search(text)
    code = int(code_match.group(1)) if code_match else None
    if reported:
        kind, reason = reported.get("kind"), str(reported["reason"])
    else:
        _, _, output = text.partition("Last spark-submit output:")
        tail = output.splitlines()
        marker = next((line.strip() for line in tail if _MARKER.match(line.strip())), None)
        exception = next((line.strip() for line in reversed(tail) if _EXCEPTION_LINE.match(line.strip())), None)
        kind = {EXIT_DATA_ERROR: "data", EXIT_CONFIG_ERROR: "config"}.get(code or 0, "error")
        reason = marker or exception or f"spark_jobs/{job}.py exited with code {code} without a reason (output above)"
    error: AirflowException = AirflowFailException(reason) if kind in ("data", "config") else AirflowException(reason)
    # Where to look, for the failure callback's run summary.
    error.data_docs = (reported or {}).get("data_docs")  # type: ignore[attr-defined]
    return error


def int_range(low: int, high: int) -> dict:
    """A Param schema for an integer in [low, high] that the trigger form does not clamp.

    The Airflow 3 trigger form reads a top-level ``minimum``/``maximum`` into its number field, which
    silently clamps a typed -1 or 1000 to the bound when the field loses focus. Nested in ``allOf`` the
    form leaves the value as typed, and the API validates the params when the run is triggered and
    refuses it with the message, e.g. "Invalid input for param epochs: 1000 is greater than the maximum
    of 200", shown in the form.
    """
    return {"type": "integer", "allOf": [{"minimum": low, "maximum": high}]}


def record_mlflow_run(run_id: str) -> None:
    """Keep the MLflow run a task of this DAG run logged to in the run summary, as its UI page."""
    from airflow.sdk import get_current_context

    from tasks.run_summary import mlflow_run_url, record_link

    context = get_current_context()
    ti = context["ti"]
    try:
        url = mlflow_run_url(config(), run_id)
        record_link(config(), ti.dag_id, _run_day(context), ti.run_id, "mlflow_run", url)
    except Exception as e:  # a link is a convenience: never fail a finished training over it
        log.warning("could not write the run summary: %s: %s", type(e).__name__, e)
