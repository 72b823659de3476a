"""What a failed task reports: the job's own reason line (not the spark-submit command), whether it is retried,
the PIPELINE FAILURE line and the run summary entry; and MLflow's log lines at their own level, not stderr."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from tasks.config import DEFAULT_CONFIG, REPO_ROOT

COMMAND = "Cannot execute: spark-submit --master local[2] --name purchase_intent.validate spark_jobs/validate.py events"


@pytest.fixture
def wiring(tmp_path, monkeypatch):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"paths": {"var_dir": str(tmp_path / "var")}}))
    monkeypatch.setenv("PIPELINE_CONFIG", f"{DEFAULT_CONFIG}:{overlay}")
    from dags import _wiring

    return _wiring


def test_reported_reason_replaces_the_command(wiring):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    submit = AirflowException(f"{COMMAND}. Error code is: 65.\nLast spark-submit output:\nlots of JVM lines")
    reported = {
        "kind": "data",
        "reason": "DATA ERROR (DataQualityError): data quality check 'events_2026-01-14': 1 of 12 expectations "
        "failed expect_column_values_to_be_in_set(column=event_type): 40 unexpected row(s), e.g. values ['zoom']",
        "data_docs": "/var/gx/index.html",
    }
    err = wiring.step_failure("validate", submit, reported)
    assert type(err) is AirflowFailException  # a data error: not retried
    assert str(err) == reported["reason"] and err.data_docs == "/var/gx/index.html"
    transient = wiring.step_failure(
        "features", submit, {"kind": "error", "reason": "Py4JError: An error occurred while calling o12.parquet"}
    )
    assert (
        type(transient) is AirflowException
        and str(transient) == "Py4JError: An error occurred while calling o12.parquet"
    )


def test_without_a_reason_file_the_output_tail_is_read(wiring):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    def failed(code: int, *tail: str) -> AirflowException:
        return AirflowException(f"{COMMAND}. Error code is: {code}.\nLast spark-submit output:\n" + "\n".join(tail))

    marker = failed(65, "INFO SparkContext: stopping", "NO DATA: no events landed for 2026-12-01", "INFO done")
    assert (type(e := wiring.step_failure("features", marker, None)), str(e)) == (
        AirflowFailException,
        "NO DATA: no events landed for 2026-12-01",
    )
    crash = failed(1, "Traceback (most recent call last):", '  File "x.py", line 3', "ValueError: bad cutoff", "")
    assert (type(e := wiring.step_failure("features", crash, None)), str(e)) == (
        AirflowException,
        "ValueError: bad cutoff",
    )
    silent = failed(137, "Killed")
    assert str(wiring.step_failure("score", silent, None)) == (
        "spark_jobs/score.py exited with code 137 without a reason (output above)"
    )


def test_in_process_data_errors_fail_with_their_first_line(wiring):
    from airflow.sdk.exceptions import AirflowFailException

    from tasks.errors import NoDataError

    @wiring.fail_fast_on_data_errors
    def land():
        raise NoDataError("no incoming delivery for synthetic 2026-11-30: folder x does not exist")

    with pytest.raises(AirflowFailException) as err:
        land()
    assert str(err.value) == "NO DATA: no incoming delivery for synthetic 2026-11-30: folder x does not exist"
    assert err.value.__cause__ is None and err.value.__suppress_context__  # the log ends with the reason


def test_failure_callback_line_and_run_summary(wiring, tmp_path, caplog):
    from airflow.sdk.exceptions import AirflowFailException

    ti = SimpleNamespace(
        dag_id="purchase_intent_nightly",
        task_id="land_raw",
        run_id="manual__2026-12-01T00:00:00+00:00",
        try_number=1,
        map_index=-1,
        log_url="http://localhost:8080/dags/purchase_intent_nightly/runs/manual/tasks/land_raw?try_number=1",
    )
    logical = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    reason = "NO DATA: no incoming delivery for synthetic 2026-11-30: folder x does not exist"
    with caplog.at_level("ERROR", logger="purchase_intent"):
        wiring.report_failure({"task_instance": ti, "exception": AirflowFailException(reason), "logical_date": logical})
    assert (
        f"PIPELINE FAILURE dag=purchase_intent_nightly task=land_raw logical_date={logical.isoformat()} reason={reason}"
        in (caplog.text)
    )
    summary = json.loads(
        (tmp_path / "var" / "runs" / "summary" / "purchase_intent_nightly" / "2026-12-01.json").read_text()
    )
    assert summary["state"] == "failed" and summary["run_id"] == ti.run_id
    assert summary["failed"] == [{"task_id": "land_raw", "reason": reason, "try_number": 1, "log_url": ti.log_url}]
    # A crash that is not the pipeline's own names its type.
    wiring.report_failure({"task_instance": ti, "exception": KeyError("rows"), "logical_date": logical})
    summary = json.loads(
        (tmp_path / "var" / "runs" / "summary" / "purchase_intent_nightly" / "2026-12-01.json").read_text()
    )
    assert summary["failed"][0]["reason"] == "KeyError: 'rows'"


MLFLOW_LOGS = r"""
import logging, sys
sys.path.insert(0, sys.argv[1] + "/dags")
if sys.argv[2] == "wired":
    import _wiring  # a task process parses its DAG file, which imports this, before the task runs
import airflow.sdk  # Airflow's logging: the root handler writes to stdout (the supervisor logs stderr at ERROR)
import mlflow
logging.getLogger("mlflow.pyfunc").warning("the model was saved with another Python version")
logging.getLogger("mlflow.tracking").info("Created version '3'")
"""


def _mlflow_logs(mode: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-c", MLFLOW_LOGS, str(REPO_ROOT), mode],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )


def test_mlflow_logs_reach_the_task_log_at_their_level():
    # MLflow's own handler writes its WARNING and INFO lines to stderr, which a task log shows as ERROR ...
    bare = _mlflow_logs("bare")
    assert "WARNING mlflow.pyfunc: the model was saved with another Python version" in bare.stderr
    # ... the DAGs' wiring lets them through Airflow's handler at their own level instead.
    wired = _mlflow_logs("wired")
    assert wired.returncode == 0, wired.stderr
    assert "[warning  ] the model was saved with another Python version [mlflow.pyfunc]" in wired.stdout
    assert "[info     ] Created version '3'" in wired.stdout
    assert "mlflow" not in wired.stderr
