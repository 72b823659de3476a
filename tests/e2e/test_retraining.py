"""End to end: concept drift after the demo's log is caught by the nightly monitor and starts a retrain by itself,
whose LR candidate becomes champion and scores.

The session's log is one simulation that goes on for DRIFT_DAYS past the demo's days, with the generator's concept
drift from the first of them (tests.helpers.e2e.generate_log_with_drift_ahead). Here those days are delivered and
the real nightly DAG runs for each next cutoff on the running Airflow (the `airflow` fixture); then its scheduler
schedules as a deployed one does, and the degraded-health asset starts `purchase_intent_training`. The retrain's
candidates are BERT and LR, LR is best of them on validation, and the gate promotes it (the demo's
training promotes LightGBM). The last drifted night, rescored, carries its scores, reasons and top categories, and
a challenger's scores only in the shadow table. Last, where
Airflow runs as deployed: every task that the `airflow` fixture's scheduler ran, in this module and before it,
went through a Celery worker.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time

import pyarrow.parquet as pq
import pytest

from tasks.layers import features_partition, health_report, incoming_dir, raw_partition, training_set_dir
from tests.helpers import postgres, redis
from tests.helpers.e2e import (
    DRIFT_DAYS,
    LAST_DS,
    NIGHTLY_DAG,
    TRAINING_DAG,
    celery_tasks,
    nightly,
    run,
    warehouse_rows,
)

pytestmark = pytest.mark.e2e

TRIGGERED_RUN_TIMEOUT_S = 180
PARSE_TIMEOUT_S = 180
RETRAIN_CANDIDATES = ("bert", "lr")


def _wait_param(stack, dag_id: str, param: str, value) -> None:
    deadline = time.monotonic() + PARSE_TIMEOUT_S
    while (now := stack.dag_params(dag_id)[param]) != value:
        assert time.monotonic() < deadline, f"{dag_id}'s param {param} is {now}, not {value}, {PARSE_TIMEOUT_S}s on"
        time.sleep(2)


def _wait_triggered_run(stack) -> dict:
    deadline = time.monotonic() + TRIGGERED_RUN_TIMEOUT_S
    while not (runs := stack.dag_runs(TRAINING_DAG, run_type="asset_triggered")):
        assert time.monotonic() < deadline, f"no asset-triggered {TRAINING_DAG} run within {TRIGGERED_RUN_TIMEOUT_S}s"
        time.sleep(2)
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture
def retrain_candidates(airflow, env):
    """A deployment that trains BERT and LR (training.candidates) for the test: the config the
    stack's tasks load at once, and the training DAG's param default once the dag-processor parses it again."""
    _, cfg = env
    training = cfg.training.model_copy(update={"candidates": list(RETRAIN_CANDIDATES)})
    airflow.set_config(cfg.model_copy(update={"training": training}))
    yield RETRAIN_CANDIDATES
    airflow.set_config(cfg)


def test_concept_drift_degrades_the_champion_and_starts_a_retrain(airflow, env, held_back, retrain_candidates):
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

    _wait_param(airflow, TRAINING_DAG, "candidates", list(retrain_candidates))
    # A deployed scheduler creates runs itself: the queued asset event starts the training DAG.
    airflow.set_paused(NIGHTLY_DAG, True)  # its own schedule would start a run for today, which has no data
    airflow.set_scheduling(True)
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

    # Of this deployment's candidates LR is best on validation, by a wide margin (purchase PR-AUC 0.406 against
    # BERT's 0.355 when measured; LSTM's was 0.362), and beats the degraded champion on the drifted test day
    # (ROC-AUC 0.611 against 0.601): the gate promotes the LR candidate.
    table = json.loads(newest.tags["selection_candidates"])
    assert sorted(c["model_type"] for c in table) == sorted(retrain_candidates), table
    assert newest.tags["model_type"] == "lr", table
    assert newest.tags["gate_decision"] == "promoted", newest.tags["gate_reason"]
    assert client.get_model_version_by_alias(name, "champion").version == newest.version


def _register_a_challenger(cfg) -> str:
    """Register a candidate the selection did not choose and give it @challenger, as a rejected retrain would."""
    import mlflow

    from tasks.models.pyfunc import MODEL_ARTIFACT
    from tasks.registry import mlflow_store

    with mlflow_store(cfg) as client:
        champion = client.get_model_version_by_alias(cfg.mlflow.model_name, "champion")
        table = json.loads(champion.tags["selection_candidates"])
        other = next(c for c in table if c["run_id"] != champion.run_id)
        version = str(mlflow.register_model(f"runs:/{other['run_id']}/{MODEL_ARTIFACT}", cfg.mlflow.model_name).version)
        client.set_registered_model_alias(cfg.mlflow.model_name, "challenger", version)
    return version


def test_rescoring_a_night_scores_with_the_new_champion_and_a_challenger_only_in_the_shadow(airflow, env):
    """The last drifted night, cleared from `score` on (the UI's Clear on a task, downstream included): scored again
    by the LR champion the retrain promoted, one copy, and by a challenger into the shadow table only."""
    from mlflow import MlflowClient

    _, cfg = env
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    champion = client.get_model_version_by_alias(cfg.mlflow.model_name, "champion")
    assert champion.tags["model_type"] == "lr", champion.tags
    version = str(champion.version)
    challenger = _register_a_challenger(cfg)
    ds = LAST_DS + dt.timedelta(days=DRIFT_DAYS)
    earlier = ds - dt.timedelta(days=1)
    run_id = f"demo__{ds}"
    before = warehouse_rows(cfg, f"select count(*) from intent_scores where ds = '{ds}'")
    earlier_before = warehouse_rows(
        cfg, f"select user_id, p_purchase from intent_scores where ds = '{earlier}' order by user_id"
    )
    outcomes = "select ds, model_version, n_users, purchase_roc_auc from intent_score_outcomes order by all"
    outcomes_before = warehouse_rows(cfg, outcomes)
    tries_before = {t["task_id"]: t["try_number"] for t in airflow.task_instances(NIGHTLY_DAG, run_id)}

    airflow.set_scheduling(False)  # the nightly's own schedule, unpaused, would start a run for today
    airflow.set_paused(NIGHTLY_DAG, False)
    airflow.rerun_tasks(NIGHTLY_DAG, run_id, ["score"])
    result = airflow.wait_run(NIGHTLY_DAG, run_id, timeout_s=1200)
    assert result.state == "success", result.failed
    tries = {t["task_id"]: t["try_number"] for t in airflow.task_instances(NIGHTLY_DAG, run_id)}
    again = {"score", "load_warehouse", "evaluate_outcomes"}
    assert {t: tries[t] - tries_before[t] for t in [*again, "clean_events", "build_features"]} == {
        **dict.fromkeys(again, 1),
        "clean_events": 0,
        "build_features": 0,
    }, (tries_before, tries)

    # One copy of the day, every row the new champion's: LR's reasons (coefficient x standardised value) name
    # feature columns on every row, and its pair model ranks the candidate categories of most users.
    rows = warehouse_rows(
        cfg, f"select user_id, model_version, reasons, top_categories from intent_scores where ds = '{ds}'"
    )
    assert len(rows) == before[0][0] == len({r[0] for r in rows}) > 50
    assert {str(r[1]) for r in rows} == {version}, rows[:3]
    features = set(pq.read_schema(next(features_partition(cfg, "user", ds).glob("*.parquet"))).names)
    assert all(r[2] and set(r[2]) <= features for r in rows), rows[:3]
    assert sum(r[3] is not None for r in rows) > 0.5 * len(rows), rows[:3]
    # The other day's partition is untouched, and the day judged at this cutoff was judged again: one copy.
    assert (
        warehouse_rows(cfg, f"select user_id, p_purchase from intent_scores where ds = '{earlier}' order by user_id")
        == earlier_before
    )
    assert warehouse_rows(cfg, outcomes) == outcomes_before
    # The challenger scored the same users into the shadow table; no reader's table or view shows it.
    shadow = warehouse_rows(
        cfg, f"select model_version, count(*) from intent_scores_shadow where ds = '{ds}' group by 1"
    )
    assert shadow == [(challenger, len(rows))]
    for table in ("intent_scores", "intent_scores_latest"):
        versions = {str(v) for (v,) in warehouse_rows(cfg, f"select distinct model_version from {table}")}
        assert version in versions and challenger not in versions, (table, versions)
    # Judged on no closed day beside the champion yet: the live comparison waits, and says so on the version.
    tags = client.get_model_version(cfg.mlflow.model_name, challenger).tags
    assert (tags["live_decision"], tags["live_days"]) == ("wait", "0")
    client.delete_registered_model_alias(cfg.mlflow.model_name, "challenger")


def test_every_task_after_the_demo_went_through_a_celery_worker(airflow, env):
    environ, _ = env
    if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in environ:
        pytest.skip(f"the CeleryExecutor needs PostgreSQL: {postgres.unavailable()}")
    if airflow.executor != "CeleryExecutor":
        pytest.skip(f"the CeleryExecutor needs a broker: {redis.unavailable()}")
    worker = airflow.procs["celery worker"]
    assert worker.poll() is None, f"the Celery worker exited with {worker.returncode}"
    ran = celery_tasks(environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], airflow.started_at)
    # The bad day, the drifted night and its rescore, and the retrain: every task the stack's scheduler queued.
    runs = {"/".join(task.split("/")[:2]) for task in ran}
    assert f"{NIGHTLY_DAG}/demo__{LAST_DS + dt.timedelta(days=DRIFT_DAYS)}" in runs, sorted(runs)
    assert any(run.startswith(f"{TRAINING_DAG}/asset_triggered__") for run in runs), sorted(runs)
    assert len([t for t in ran if "/train[" in t]) == len(RETRAIN_CANDIDATES), sorted(ran)
    assert all(status == "SUCCESS" for _, status in ran.values()), ran
