"""A spark-submit task fails with the job's own reason line, read from the job's reason file: a real spark-submit
of a job through the DAGs' operator, for a day that was never landed (not retried) and a bad argument."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tasks.config import DEFAULT_CONFIG


@pytest.fixture
def operator_cls(tmp_path, monkeypatch):
    overlay = tmp_path / "overlay.yaml"
    var = tmp_path / "var"
    overlay.write_text(yaml.safe_dump({"paths": {"var_dir": str(var), "incoming_dir": str(var / "incoming")}}))
    monkeypatch.setenv("PIPELINE_CONFIG", f"{DEFAULT_CONFIG}:{overlay}")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": "local[1]"}))
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    # A private temp dir: other tiers run DAGs at the same time and leave their own reason files in /tmp
    # for a moment, so only this test's directory can show whether the operator removed its file.
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    # One landed day, so the error can name the newest one.
    landed = var / "data" / "raw" / "source=synthetic" / "dt=2026-01-14"
    landed.mkdir(parents=True)
    (landed / "events.csv").write_text("x\n")
    from dags._wiring import PipelineSparkSubmitOperator

    return PipelineSparkSubmitOperator


def test_a_day_never_landed_fails_at_once_with_its_reason(operator_cls):
    from airflow.sdk.exceptions import AirflowFailException

    op = operator_cls(task_id="clean_events", job="clean_events", application_args=["--day", "2026-11-30"])
    with pytest.raises(AirflowFailException) as err:
        op.execute({})
    assert str(err.value).startswith("NO DATA: no raw data landed for synthetic 2026-11-30: raw partition ")
    assert str(err.value).endswith("(land the day first); newest landed day is 2026-01-14")
    assert "spark-submit" not in str(err.value)
    assert not list(Path(tempfile.gettempdir()).glob("clean_events-*.reason.json"))


def test_a_crash_stays_retryable_and_names_itself(operator_cls):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    # argparse rejects the date before run_cli's handler runs: the line comes from spark-submit's output.
    op = operator_cls(task_id="build_features", job="features", application_args=["--ds", "2026-13-01"])
    with pytest.raises(AirflowException) as err:
        op.execute({})
    assert not isinstance(err.value, AirflowFailException)
    assert "argument --ds" in str(err.value) and "spark-submit" not in str(err.value)
