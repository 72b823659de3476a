"""End to end: runs for a date past the data stop at their first task with one clear line, are not retried,
and leave a run summary that `python -m tasks.run_summary` prints (the real DAGs through `airflow dags test`)."""

from __future__ import annotations

import json
import re

import pytest

from tasks.layers import run_summary
from tests.helpers.e2e import run

pytestmark = pytest.mark.e2e

FUTURE = "2026-12-01"  # what the trigger form proposes ("now"), months past the tiny log


@pytest.fixture(scope="module")
def airflow_db(env, demo):
    # After the demo, whose copy of Airflow's database holds only its own runs (test_pipeline_dags checks it),
    # whichever module pytest happens to start first.
    environ, _ = env
    run(environ, "-m", "tasks.airflow_env", "db", "migrate")
    return environ


def _failure_lines(output: str) -> list[str]:
    """The PIPELINE FAILURE lines without Airflow's log prefix and its "[logger] loc=..." suffix."""
    return [
        re.sub(r"\s+\[purchase_intent\] loc=\S+$", "", line[line.index("PIPELINE FAILURE") :])
        for line in output.splitlines()
        if "PIPELINE FAILURE" in line
    ]


def test_training_past_the_data_stops_at_check_new_data(airflow_db, env):
    _, cfg = env
    proc = run(airflow_db, "-m", "tasks.airflow_env", "dags", "test", "purchase_intent_training", FUTURE, check=False)
    out = proc.stdout + proc.stderr
    lines = _failure_lines(out)
    assert len(lines) == 1, out[-4000:]  # one try, no retry, nothing downstream ran
    assert re.fullmatch(
        r"PIPELINE FAILURE dag=purchase_intent_training task=check_new_data logical_date=2026-12-01T00:00:00\+00:00 "
        r"reason=NO DATA: no events landed for 2026-11-30: the label window of the last cutoff 2026-11-30 has not "
        r"fully landed \(events partitions missing for 2026-11-30\); newest cleaned day is \d{4}-\d\d-\d\d; choose a "
        r"logical date up to \d{4}-\d\d-\d\d",
        lines[0],
    ), lines[0]
    assert "Spark-Submit cmd" not in out and "torch.distributed.run" not in out
    summary = json.loads(run_summary(cfg, "purchase_intent_training", FUTURE).read_text())
    assert summary["state"] == "failed" and [f["task_id"] for f in summary["failed"]] == ["check_new_data"]
    assert summary["failed"][0]["reason"] == lines[0].split(" reason=", 1)[1]


def test_nightly_without_delivery_stops_at_land_raw(airflow_db, env):
    _, cfg = env
    proc = run(airflow_db, "-m", "tasks.airflow_env", "dags", "test", "purchase_intent_nightly", FUTURE, check=False)
    out = proc.stdout + proc.stderr
    lines = _failure_lines(out)
    assert len(lines) == 1, out[-4000:]
    assert lines[0].startswith(
        "PIPELINE FAILURE dag=purchase_intent_nightly task=land_raw logical_date=2026-12-01T00:00:00+00:00 "
        "reason=NO DATA: no incoming delivery for synthetic 2026-11-30: folder "
    ), lines[0]
    assert "Spark-Submit cmd" not in out
    shown = run(airflow_db, "-m", "tasks.run_summary", "--ds", FUTURE, check=False)
    assert shown.returncode == 1
    assert shown.stdout.splitlines()[0].startswith(
        "purchase_intent_nightly 2026-12-01 FAILED: land_raw: NO DATA: no incoming delivery for synthetic 2026-11-30"
    ), shown.stdout
    summary = json.loads(run_summary(cfg, "purchase_intent_nightly", FUTURE).read_text())
    assert summary["failed"][0]["log_url"].endswith("/tasks/land_raw?try_number=1")
