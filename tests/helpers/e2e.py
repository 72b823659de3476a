"""The e2e tier's tiny generated log and how its tests run a pipeline command (fixtures: tests/e2e/conftest.py)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.config import REPO_ROOT

START = dt.date(2026, 1, 1)
N_DAYS = 9
LAST_DS = START + dt.timedelta(days=N_DAYS)  # the day after the last generated one
# Days simulated past the demo's log, with generator.concept_drift from the first of them on: held back from the
# drop zone until tests/e2e/test_retraining.py delivers them, one nightly run each. One judged day below the floor
# makes the champion degraded (monitoring.degraded_days below); the rule over several days is unit-tested.
DRIFT_DAYS = 1


def overlay_sections(var) -> dict:
    return {
        "paths": {"var_dir": str(var), "incoming_dir": str(var / "incoming")},
        "generator": {
            "n_users": 400,
            "n_days": N_DAYS,
            "start_date": START.isoformat(),
            "n_items": 2000,
            "n_categories": 30,
            "chunk_users": 200,
        },
        "features": {"sequence_length": 20},
        "training_set": {"n_train_cutoffs": 4, "n_val_cutoffs": 1, "n_test_cutoffs": 1},
        "training": {"epochs": 2, "nproc_per_node": 2, "batch_size": 128, "embedding_dim": 8, "hidden_dim": 16},
        "gate": {"min_auc": 0.5},
        "monitoring": {"degraded_days": DRIFT_DAYS},
        "spark": {"shuffle_partitions": 2, "driver_memory": "1g"},
        "mlflow": {"tracking_uri": f"sqlite:///{var}/mlflow.db", "artifact_root": str(var / "mlartifacts")},
        "warehouse": {"url": f"duckdb:///{var}/warehouse.duckdb"},
    }


def generate_log_with_drift_ahead(cfg, held_back: Path) -> None:
    """The demo's log (``cfg.generator``: N_DAYS days) as the first days of one simulation that goes on for
    DRIFT_DAYS more with concept drift from the first of them; those days go to ``held_back``, not the drop zone.

    One simulation, so a held-back day continues its users' histories as a real next day would (the generator's
    draws depend on its length: a separately generated later log would not). The drop zone is stamped with the
    demo's generator config, so `make demo` takes these days as its log. Some of its search queries carry personal
    data (``paste_personal_data``), which must reach no layer past raw, artifact or table.
    """
    from tasks.demo import GENERATOR_STAMP, generator_stamp
    from tasks.layers import incoming_dir
    from tasks.sources.synthetic import generate

    gen = cfg.generator.model_copy(
        update={
            "n_days": N_DAYS + DRIFT_DAYS,
            "concept_drift": cfg.generator.concept_drift.model_copy(update={"start_date": LAST_DS.isoformat()}),
        }
    )
    out = incoming_dir(cfg, "synthetic")
    generate(gen, out, cfg.pipeline.timezone)
    held_back.mkdir(parents=True)
    for i in range(DRIFT_DAYS):
        name = f"dt={LAST_DS + dt.timedelta(days=i)}"
        shutil.move(out / name, held_back / name)
    paste_personal_data(out)
    (out / GENERATOR_STAMP).write_text(generator_stamp(cfg))


def paste_personal_data(folder: Path, every: int = 5) -> int:
    """Put one of tests.helpers.events.PASTED_QUERIES in place of every ``every``-th search query of each day under
    ``folder`` (the drop zone's dt=<day>/events.csv), as users who paste contact or card details into a search
    box; returns how many queries now carry personal data."""
    import pandas as pd

    from tests.helpers.events import PASTED_QUERIES

    pasted = 0
    for path in sorted(folder.glob("dt=*/events.csv")):
        events = pd.read_csv(path, dtype=str, keep_default_na=False)
        rows = events.index[events["query"] != ""][::every]
        events.loc[rows, "query"] = [PASTED_QUERIES[(pasted + i) % len(PASTED_QUERIES)][0] for i in range(len(rows))]
        events.to_csv(path, index=False, lineterminator="\n")
        pasted += len(rows)
    return pasted


def run(environ, *args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args], env=environ, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1500
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {proc.returncode}\n--- stdout (tail)\n{proc.stdout[-6000:]}"
            f"\n--- stderr (tail)\n{proc.stderr[-6000:]}"
        )
    return proc


NIGHTLY_DAG = "purchase_intent_nightly"
TRAINING_DAG = "purchase_intent_training"


def nightly(stack, ds: dt.date, timeout_s: float = 1200):
    """A real manual nightly run for ``ds`` on the running ``airflow`` fixture, waited for (a RunResult)."""
    run_id = stack.start_run(NIGHTLY_DAG, ds)
    return stack.wait_run(NIGHTLY_DAG, run_id, timeout_s=timeout_s)


def task_log(cfg, dag_id: str, ds: dt.date, task_id: str, attempt: int = 1) -> str:
    """The text of one task's log in the run the demo or ``nightly`` made for ``ds``."""
    path = cfg.paths.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id=demo__{ds}" / f"task_id={task_id}"
    return (path / f"attempt={attempt}.log").read_text()


def warehouse_rows(cfg, sql: str) -> list[tuple]:
    """The rows of one read-only query on the session's warehouse."""
    from tasks.warehouse import query_readonly

    return query_readonly(cfg, sql)[1]


def demo_runs_file(cfg):
    """What the demo left in Airflow's metadata (its runs, paused states, how many tasks went through Celery), as
    JSON (the `demo` fixture writes it before later modules run more)."""
    return cfg.paths.airflow_home / "after-demo.json"


def metadata_rows(url: str, sql: str) -> list[list]:
    """Rows of a query on Airflow's metadata database (SQLite or PostgreSQL); timestamps as ISO strings."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            rows = con.execute(sqlalchemy.text(sql)).all()
    finally:
        engine.dispose()
    return [[v.isoformat() if isinstance(v, dt.datetime) else v for v in row] for row in rows]


def celery_tasks(url: str, since: dt.datetime) -> dict[str, tuple[str | None, str | None]]:
    """Per task instance that ran, queued by a scheduler started at ``since`` or later ("dag/run/task[index]"):
    its Celery task id and that task's result state (the database result backend, in Airflow's metadata
    database). No id: the task did not go through Celery."""
    rows = metadata_rows(
        url,
        "select ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.external_executor_id, m.status "
        "from task_instance ti join job j on j.id = ti.queued_by_job_id "
        "left join celery_taskmeta m on m.task_id = ti.external_executor_id "
        f"where j.job_type = 'SchedulerJob' and j.start_date >= '{since.isoformat()}' "
        "and ti.state in ('success', 'failed')",
    )
    return {
        f"{dag}/{run}/{task}" + (f"[{index}]" if index >= 0 else ""): (celery_id, status)
        for dag, run, task, index, celery_id, status in rows
    }
