"""Per-run summaries of the pipeline's DAG runs, written where a morning check finds them.

One JSON file per DAG and logical date (``tasks.layers.run_summary``: ``runs/summary/<dag_id>/<ds>.json``;
a rerun of the date replaces it): the run's state, each failed task with its one-line reason and where to
look (the task log, the Data Docs page of a failed validation, the MLflow run), and links the run's tasks
left (e.g. the MLflow run of a training). The orchestrator's callbacks write it (``dags/_wiring.py``); this
module knows nothing of Airflow.

CLI: ``python -m tasks.run_summary [--dag ID] [--ds D]`` prints one status line per DAG (its most recently
updated run, or the run of ``--ds``), each failed task indented below it with its reason and where to look.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from tasks.config import PipelineConfig, add_common_args, config_from_args, parse_ds
from tasks.layers import run_summaries_root, run_summary

RUN_STATES = ("running", "success", "failed")
# Where-to-look fields of a failed task, in the order the CLI prints them.
LOOK_FIELDS = ("log", "log_url", "data_docs", "mlflow_run")


def mlflow_run_url(cfg: PipelineConfig, run_id: str, experiment_id: str | None = None) -> str:
    """The MLflow UI page of a run (``mlflow.ui_url``); the experiment id is looked up when not given."""
    if experiment_id is None:
        from mlflow import MlflowClient

        experiment_id = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri).get_run(run_id).info.experiment_id
    return f"{cfg.mlflow.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def metrics_text(metrics: dict[str, float]) -> str:
    """``purchase_roc_auc=0.7312 ...`` for a log line: the gate's metric first, then the rest by name."""
    from tasks.evaluate import GATE_METRIC

    order = sorted(metrics, key=lambda k: (k != GATE_METRIC, k))
    return " ".join(f"{k}={metrics[k]:.4f}" for k in order)


def _day(ds: dt.date | str) -> str:
    return ds.isoformat() if isinstance(ds, dt.date) else str(ds)


def load(path: Path) -> dict[str, Any] | None:
    """A summary file's content; None when it does not exist or is not a summary."""
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("dag_id") else None


def _write(path: Path, summary: dict[str, Any]) -> None:
    # When the record was written (not a logical date): "latest" is the run that changed last, so a manual
    # run for some far date does not hide last night's run.
    summary["updated_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    # Temporary file + rename: a reader never sees half a summary.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current(cfg: PipelineConfig, dag_id: str, ds: dt.date | str, run_id: str) -> tuple[Path, dict[str, Any]]:
    """The summary of run ``run_id``; another run's summary of the same date is replaced, not merged."""
    path = run_summary(cfg, dag_id, ds)
    old = load(path)
    if old is not None and old.get("run_id") == run_id:
        return path, old
    return path, {"dag_id": dag_id, "ds": _day(ds), "run_id": run_id, "state": "running", "failed": [], "links": {}}


def record_failure(
    cfg: PipelineConfig,
    dag_id: str,
    ds: dt.date | str,
    run_id: str,
    task_id: str,
    reason: str,
    **where: str | int | None,
) -> Path:
    """Add (or replace) the failed task ``task_id`` of the run with its reason and where to look
    (``log``, ``log_url``, ``data_docs``, ``mlflow_run``, ``try_number``; None values are left out)."""
    path, summary = _current(cfg, dag_id, ds, run_id)
    entry = {"task_id": task_id, "reason": reason, **{k: v for k, v in where.items() if v is not None}}
    summary["failed"] = [f for f in summary["failed"] if f["task_id"] != task_id] + [entry]
    summary["state"] = "failed"
    _write(path, summary)
    return path


def record_link(cfg: PipelineConfig, dag_id: str, ds: dt.date | str, run_id: str, name: str, value: str) -> Path:
    """Keep a pointer a task of the run produced (e.g. ``mlflow_run``: the training's MLflow run page)."""
    path, summary = _current(cfg, dag_id, ds, run_id)
    summary["links"] = {**summary.get("links", {}), name: value}
    _write(path, summary)
    return path


def record_outcome(
    cfg: PipelineConfig, dag_id: str, ds: dt.date | str, run_id: str, state: str, reason: str | None = None
) -> Path:
    """The run ended: ``success`` clears failures recorded by earlier tries (the run got past them), ``failed``
    keeps them and, when no task failure was recorded, keeps ``reason`` as the run's."""
    if state not in RUN_STATES:
        raise ValueError(f"run state must be one of {RUN_STATES}, got {state!r}")
    path, summary = _current(cfg, dag_id, ds, run_id)
    summary["state"] = state
    if state == "success":
        summary["failed"] = []
        summary.pop("reason", None)
    elif reason and not summary["failed"]:
        summary["reason"] = reason
    _write(path, summary)
    return path


def summaries(cfg: PipelineConfig, dag_id: str | None = None) -> list[dict[str, Any]]:
    """Every stored summary (of one DAG when given), oldest date first."""
    root = run_summaries_root(cfg)
    dags = [root / dag_id] if dag_id else sorted(p for p in root.glob("*") if p.is_dir())
    found = [s for d in dags for s in (load(p) for p in sorted(d.glob("*.json"))) if s is not None]
    return sorted(found, key=lambda s: (s["dag_id"], s["ds"]))


def latest(cfg: PipelineConfig, dag_id: str | None = None, ds: dt.date | str | None = None) -> list[dict[str, Any]]:
    """Per DAG, the summary of ``ds`` or else of its most recently updated run."""
    by_dag: dict[str, dict[str, Any]] = {}
    for s in sorted(summaries(cfg, dag_id), key=lambda s: s.get("updated_at", "")):
        if ds is None or s["ds"] == _day(ds):
            by_dag[s["dag_id"]] = s
    return [by_dag[d] for d in sorted(by_dag)]


def status_line(summary: dict[str, Any]) -> str:
    """``<dag> <ds> <STATE>[: <task>: <reason>[; +N more failed]]`` in one line."""
    head = f"{summary['dag_id']} {summary['ds']} {summary['state'].upper()}"
    failed = summary.get("failed") or []
    if failed:
        first = failed[0]
        more = f" (+{len(failed) - 1} more failed task(s))" if len(failed) > 1 else ""
        return f"{head}: {first['task_id']}: {first['reason']}{more}"
    if summary.get("reason"):
        return f"{head}: {summary['reason']}"
    return head


def detail_lines(summary: dict[str, Any]) -> list[str]:
    """Indented lines: each failed task's reason and where to look, then the run's links."""
    lines = []
    for f in summary.get("failed") or []:
        lines.append(f"  {f['task_id']}: {f['reason']}")
        lines += [f"    {k}: {f[k]}" for k in LOOK_FIELDS if f.get(k)]
    lines += [f"  {k}: {v}" for k, v in sorted((summary.get("links") or {}).items())]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(prog="python -m tasks.run_summary", description=__doc__))
    parser.add_argument("--dag", help="only this DAG id")
    parser.add_argument("--ds", type=parse_ds, help="the run of this logical date (default: each DAG's latest run)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    found = latest(cfg, args.dag, args.ds)
    if not found:
        where = run_summaries_root(cfg) / (args.dag or "")
        print(f"no run summaries{' for ' + str(args.ds) if args.ds else ''} under {where}")
        return 1
    for s in found:
        print(status_line(s))
        for line in detail_lines(s):
            print(line)
    # Exit 1 when any shown run failed, so a cron job or shell `if` can act on it.
    return 1 if any(s["state"] == "failed" for s in found) else 0


if __name__ == "__main__":
    sys.exit(main())
