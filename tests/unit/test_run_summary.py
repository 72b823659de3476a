"""Run summaries: one file per DAG and date, failures with where to look, a rerun replaces, the CLI's lines."""

from __future__ import annotations

import json

import pytest
import yaml

from tasks.config import DEFAULT_CONFIG
from tasks.layers import run_summary
from tasks.run_summary import latest, main, metrics_text, mlflow_run_url, record_failure, record_link, record_outcome

NIGHTLY, TRAINING = "purchase_intent_nightly", "purchase_intent_training"
FAILED_CHECK = "DATA ERROR (DataQualityError): data quality check 'events_2026-01-14': 1 of 12 expectations failed"


def test_failures_and_outcome_of_one_run(cfg):
    path = record_failure(
        cfg,
        NIGHTLY,
        "2026-01-15",
        "manual__1",
        "validate_events",
        FAILED_CHECK,
        try_number=1,
        log="/airflow/logs/attempt=1.log",
        data_docs="/var/gx/index.html",
        mlflow_run=None,
    )
    assert (
        path == cfg.paths.runs_dir / "summary" / NIGHTLY / "2026-01-15.json" == run_summary(cfg, NIGHTLY, "2026-01-15")
    )
    record_outcome(cfg, NIGHTLY, "2026-01-15", "manual__1", "failed", reason="task_failure")
    data = json.loads(path.read_text())
    assert data["state"] == "failed" and "reason" not in data  # the task's reason says more than "task_failure"
    assert data["failed"] == [
        {
            "task_id": "validate_events",
            "reason": FAILED_CHECK,
            "try_number": 1,
            "log": "/airflow/logs/attempt=1.log",
            "data_docs": "/var/gx/index.html",
        }
    ]
    # The same run cleared and finished: its earlier failure no longer describes it.
    record_outcome(cfg, NIGHTLY, "2026-01-15", "manual__1", "success")
    assert json.loads(path.read_text())["failed"] == []


def test_a_rerun_replaces_the_summary(cfg):
    record_failure(cfg, NIGHTLY, "2026-01-15", "manual__1", "land_raw", "NO DATA: no incoming delivery")
    record_link(cfg, NIGHTLY, "2026-01-15", "manual__2", "mlflow_run", "http://localhost:5000/#/experiments/1/runs/r")
    data = json.loads(run_summary(cfg, NIGHTLY, "2026-01-15").read_text())
    assert data["run_id"] == "manual__2" and data["failed"] == [] and data["state"] == "running"
    assert data["links"] == {"mlflow_run": "http://localhost:5000/#/experiments/1/runs/r"}
    with pytest.raises(ValueError, match="run state"):
        record_outcome(cfg, NIGHTLY, "2026-01-15", "manual__2", "skipped")
    with pytest.raises(ValueError, match="not a DAG id"):
        run_summary(cfg, "../x", "2026-01-15")


def test_cli_prints_the_latest_run_per_dag(cfg, tmp_path, capsys):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"paths": {"var_dir": str(cfg.paths.var)}}))
    args = ["--config", str(DEFAULT_CONFIG), "--config", str(overlay)]
    assert main(args) == 1
    assert capsys.readouterr().out.startswith("no run summaries under ")
    record_outcome(cfg, NIGHTLY, "2026-01-14", "scheduled__1", "success")
    record_failure(cfg, NIGHTLY, "2026-01-15", "scheduled__2", "land_raw", "NO DATA: no incoming delivery", log="/l")
    record_failure(cfg, NIGHTLY, "2026-01-15", "scheduled__2", "clean_events", "NO DATA: no raw data landed")
    record_outcome(cfg, TRAINING, "2026-01-15", "manual__3", "success")
    assert [s["ds"] for s in latest(cfg)] == ["2026-01-15", "2026-01-15"]
    # The run updated last is the latest, whatever its date: a stray far-date run does not hide it.
    record_outcome(cfg, TRAINING, "2026-12-01", "manual__4", "failed", reason="task_failure")
    record_outcome(cfg, TRAINING, "2026-01-16", "scheduled__5", "success")
    assert main(args) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{NIGHTLY} 2026-01-15 FAILED: land_raw: NO DATA: no incoming delivery (+1 more failed task(s))",
        "  land_raw: NO DATA: no incoming delivery",
        "    log: /l",
        "  clean_events: NO DATA: no raw data landed",
        f"{TRAINING} 2026-01-16 SUCCESS",
    ]
    assert main([*args, "--dag", NIGHTLY, "--ds", "2026-01-14"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{NIGHTLY} 2026-01-14 SUCCESS"]


def test_links_and_metrics_text(cfg):
    assert mlflow_run_url(cfg, "abc", "7") == "http://localhost:5000/#/experiments/7/runs/abc"
    assert metrics_text({"cart_roc_auc": 0.61, "purchase_roc_auc": 0.7312, "fav_f1": 0.2}) == (
        "purchase_roc_auc=0.7312 cart_roc_auc=0.6100 fav_f1=0.2000"
    )
