"""End to end: concept drift after the demo's log is caught by the nightly monitor and starts a retrain by itself.

The session's log is one simulation that goes on for DRIFT_DAYS past the demo's days, with the generator's concept
drift from the first of them (tests.helpers.e2e.generate_log_with_drift_ahead). Here those days are delivered and
the real nightly DAG runs for each next cutoff on the running Airflow (the `airflow` fixture); then its scheduler
schedules as a deployed one does, and the degraded-health asset starts `purchase_intent_training`. Last, where
Airflow runs as deployed: every task that the `airflow` fixture's scheduler ran, in this module and before it,
went through a Celery worker.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time

import pytest

from tasks.layers import health_report, incoming_dir, raw_partition, training_set_dir
from tests.helpers import postgres, redis
from tests.helpers.e2e import DRIFT_DAYS, LAST_DS, NIGHTLY_DAG, TRAINING_DAG, celery_tasks, nightly, run

pytestmark = pytest.mark.e2e

TRIGGERED_RUN_TIMEOUT_S = 180


def _wait_triggered_run(stack) -> dict:
    deadline = time.monotonic() + TRIGGERED_RUN_TIMEOUT_S
    while not (runs := stack.dag_runs(TRAINING_DAG, run_type="asset_triggered")):
        assert time.monotonic() < deadline, f"no asset-triggered {TRAINING_DAG} run within {TRIGGERED_RUN_TIMEOUT_S}s"
        time.sleep(2)
    assert len(runs) == 1, runs
    return runs[0]


def test_concept_drift_degrades_the_champion_and_starts_a_retrain(airflow, env, held_back):
    from mlflow import MlflowClient

    from tasks.warehouse import Warehouse

    environ, cfg = env
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    name = cfg.mlflow.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    drifted = [LAST_DS + dt.timedelta(days=i) for i in range(DRIFT_DAYS)]
    incoming = incoming_dir(cfg, "synthetic")
    for day in drifted:
        shutil.rmtree(incoming / f"dt={day}", ignore_errors=True)
        shutil.copytree(held_back / f"dt={day}", incoming / f"dt={day}")
        if raw_partition(cfg, "synthetic", day).exists():
            # test_pipeline_dags landed a broken export of this day: the corrected one is redelivered, as the
            # nightly's land_raw error says to.
            run(environ, "-m", "tasks.land", "--day", day.isoformat(), "--source", "synthetic", "--redeliver")

    # Unpaused, as deployed: Airflow queues an asset event only for the unpaused DAGs scheduled on the asset.
    airflow.unpause_for_block(TRAINING_DAG)
    # Each cutoff lands the day before it, scores its users and judges the day before's scores.
    cutoffs = [day + dt.timedelta(days=1) for day in drifted]
    runs = {}
    for ds in cutoffs:
        result = nightly(airflow, ds)
        assert result.state == "success", result.failed
        runs[ds] = result.run_id

    history = Warehouse.from_config(cfg).outcome_history(name, str(champion.version), "champion")
    realized = {r["ds"]: r["purchase_roc_auc"] for r in history}
    before = realized[LAST_DS - dt.timedelta(days=1)]  # the last day before the drift, judged by the demo
    reports = {ds: json.loads(health_report(cfg, ds).read_text()) for ds in [LAST_DS, *cutoffs]}
    floor = reports[cutoffs[-1]]["floor"]
    assert before >= floor, (realized, floor)
    for day in drifted:
        assert realized[day] < floor, (day, realized, floor)

    # Healthy until the drifted days fill monitoring.degraded_days: model_health skipped, the asset untouched.
    # Then degraded: the task succeeds and updates the asset, whose event waits for the training DAG.
    for ds, report in reports.items():
        assert report["degraded"] == (ds == cutoffs[-1]), reports
        state = airflow.task_states(NIGHTLY_DAG, runs.get(ds, f"demo__{ds}"))["model_health"]
        assert state == ("success" if report["degraded"] else "skipped"), (ds, state)
    last_report = reports[cutoffs[-1]]
    queued = airflow.queued_asset_events(TRAINING_DAG)
    assert len(queued) == 1, queued

    # A deployed scheduler creates runs itself: the queued asset event starts the training DAG.
    airflow.set_paused(NIGHTLY_DAG, True)  # its own schedule would start a run for today, which has no data
    airflow.enable_scheduling()
    triggered = _wait_triggered_run(airflow)
    assert triggered["logical_date"] is None
    result = airflow.wait_run(TRAINING_DAG, triggered["dag_run_id"], timeout_s=1800)
    assert result.state == "success", result.failed

    # It trained at the cutoff the event named, and the version it registered says why.
    assert (training_set_dir(cfg, f"{cutoffs[-1]}-h{cfg.features.horizon_days}") / "manifest.json").is_file()
    newest = max(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    assert int(newest.version) > int(champion.version)
    why = newest.tags["training_trigger"]
    assert why.startswith("model health degraded: ") and f"(ds={cutoffs[-1]})" in why, why
    assert last_report["reason"] in why, (why, last_report)


def test_every_task_after_the_demo_went_through_a_celery_worker(airflow, env):
    environ, _ = env
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in environ:
        pytest.skip(f"the CeleryExecutor needs PostgreSQL: {postgres.unavailable()}")
    if airflow.executor != "CeleryExecutor":
        pytest.skip(f"the CeleryExecutor needs a broker: {redis.unavailable()}")
    worker = airflow.procs["celery worker"]
    assert worker.poll() is None, f"the Celery worker exited with {worker.returncode}"
    ran = celery_tasks(environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], airflow.started_at)
    # The reruns, the bad day, the drifted night and the retrain: every task the stack's scheduler queued.
    dags = {task.split("/")[0] for task in ran}
    assert {NIGHTLY_DAG, TRAINING_DAG} <= dags and len(ran) > 30, sorted(ran)
    assert all(status == "SUCCESS" for _, status in ran.values()), ran
