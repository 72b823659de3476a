"""purchase_intent_nightly: land yesterday's logs, clean and check them, build features and score every active user."""

from __future__ import annotations

import datetime as dt

from _wiring import (
    DAG_CALLBACKS,
    MODEL_DEGRADED_ASSET,
    USER_DEFINED_MACROS,
    PipelineSparkSubmitOperator,
    config,
    default_args,
    fail_fast_on_data_errors,
)
from airflow.sdk import DAG, Asset, task

SCORES_ASSET = Asset("warehouse://purchase_intent/intent_scores")

DOC = """
### Nightly purchase-intent scoring

The logical date is the **cutoff** `ds` (a midnight in the pipeline's time zone). The run lands and
cleans the latest full day (`ds - 1`), encodes its new texts (`embed_texts`), builds point-in-time
features at the cutoff `ds`, scores every
active user with `models:/purchase_intent@champion` and replaces the `ds` partition of the warehouse
table `intent_scores`. A Great Expectations gate follows every layer it writes (events, features, scores).

While a version holds `@challenger`, `score_challenger` scores the same users with it into the shadow
table `intent_scores_shadow`, which no view shows (`has_challenger` skips it otherwise).

After the load, `evaluate_outcomes` judges every earlier scored day whose label window has closed against
what users then did and writes the realized metrics (champion and shadow challenger) to
`intent_score_outcomes` (rolling means per model version in the view `intent_model_health`; README, "Is the
model still good?"). `judge_challenger` compares the challenger with the champion on those outcomes
(`gate.promote_on_live`), and `model_health` decides whether the champion has gone stale; only then does it
update the asset that starts `purchase_intent_training` (otherwise it is skipped).

`check_drift` compares the cutoff's features with the champion's training reference beside `score`
and must pass before the warehouse load: with `quality.drift_action: warn` it only reports, with
`fail` a drifted feature stops the run before anything reaches the warehouse.

Every task is idempotent: rerunning a date replaces exactly its partitions. A failed data-quality gate
stops the run before anything downstream is written and is not retried.

**Which logical date to choose.** The run for `ds` needs the delivery of day `ds - 1` in the drop zone
(`paths.incoming_dir/<source>/dt=<ds - 1>/`): trigger it with the day after the newest delivered day
(with `dt=2026-01-14` the newest, choose 2026-01-15), not the form's default "now". A date without a
delivery stops at once at `land_raw` with one line, e.g. `NO DATA: no incoming delivery for synthetic
2026-11-30: folder ... does not exist; newest delivered day is 2026-01-14`; missing raw data or events
stop `clean_events` / `build_features` the same way. None of these is retried; transient errors are.

**Unpausing** schedules a run at once for the latest midnight (`catchup=False`): today's date, which
needs yesterday's delivery and stops at `land_raw` without it.

A failed task ends its log with one line saying why (the job's own error, e.g. `DATA ERROR
(DataQualityError): data quality check ... failed ...`); `python -m tasks.run_summary` prints each DAG's
latest run with its failed tasks, their log and the Data Docs page of a failed check
(`var/runs/summary/<dag_id>/<ds>.json`).

Backfill a range of days (each logical date is one cutoff, run oldest first):

    airflow backfill create --dag-id purchase_intent_nightly \\
        --from-date 2026-01-09 --to-date 2026-01-10 --max-active-runs 1

then unpause the DAG: a paused DAG's backfill runs stay queued (see README, "Backfills").
"""


@task(
    doc_md="Copy the day's delivered files from the drop zone into the immutable raw layer; no delivery for "
    "the day fails at once (not retried)."
)
@fail_fast_on_data_errors
def land_raw(ds_local: str) -> dict:
    from tasks.land import land_day

    report = land_day(config(), dt.date.fromisoformat(ds_local))
    return {"files": len(report.files), "raw_dir": str(report.target), "already_landed": report.already_landed}


@task.short_circuit(
    ignore_downstream_trigger_rules=False,
    doc_md="Whether a version holds @challenger: without one `score_challenger` is skipped (and a shadow partition "
    "an earlier run of this night left is removed), so a night without a challenger starts no Spark job for it.",
)
def has_challenger(ds_local: str) -> bool:
    from tasks.monitoring import shadow_needed

    needed = shadow_needed(config(), dt.date.fromisoformat(ds_local))
    print(f"has_challenger: {'score @challenger in the shadow' if needed else 'no @challenger: nothing to shadow'}")
    return needed


@task(
    doc_md="Load the day's scores from the staging layer into the warehouse in one transaction each: the champion's "
    "into `intent_scores`, the challenger's (if any) into the shadow table, which no view shows."
)
def load_warehouse(ds_local: str) -> dict:
    from tasks.warehouse import load_scores

    cfg, day = config(), dt.date.fromisoformat(ds_local)
    report = load_scores(cfg, day)
    shadow = load_scores(cfg, day, "challenger")
    print(f"loaded {report.rows} rows into {report.table}, {shadow.rows} into {shadow.table}")
    return {"rows": report.rows, "table": report.table, "backend": report.backend, "shadow_rows": shadow.rows}


@task(
    outlets=[SCORES_ASSET],
    doc_md="Publish: mark the scores asset updated and write the day's summary to the task log.",
)
def publish(ds_local: str, loaded: dict) -> dict:
    from tasks.warehouse import Warehouse

    wh = Warehouse.from_config(config())
    day = dt.date.fromisoformat(ds_local)
    summary = {"ds": ds_local, "rows": wh.row_count(day), "top_users": wh.top_users(day, 5)}
    print(f"intent_scores ds={ds_local}: {summary['rows']} rows; top users: {summary['top_users']}")
    return summary


@task(
    doc_md="Live comparison: once @challenger has been judged beside @champion on `gate.live_min_days` closed days, a "
    "paired bootstrap over the same users decides; `gate.promote_on_live: auto` moves @champion to a challenger "
    "that wins, `recommend` only tags it. The decision and its evidence are tags of the challenger's version."
)
def judge_challenger() -> dict:
    from tasks.registry import live_gate

    decision = live_gate(config())
    if decision is None:
        print("judge_challenger: no @challenger to judge (or gate.promote_on_live is off)")
        return {"action": None}
    print(f"judge_challenger: {decision.action}: {decision.reason}")
    return {"action": decision.action, "challenger_version": decision.challenger_version}


@task(
    outlets=[MODEL_DEGRADED_ASSET],
    doc_md="Model health at cutoff ds: the champion is degraded when its realized purchase ROC-AUC stayed below the "
    "floor on its last `monitoring.degraded_days` judged days (or, with `monitoring.degraded_on_drift`, a feature "
    "drifted). Degraded: the asset `warehouse://purchase_intent/intent_model_health` is updated with the reason, "
    "which starts `purchase_intent_training`; healthy: the task is skipped, so nothing starts. Report: "
    "`var/runs/health/<ds>.json`.",
)
def model_health(ds_local: str, *, outlet_events=None) -> dict:
    from airflow.sdk.exceptions import AirflowSkipException

    from tasks.monitoring import nightly_health

    health = nightly_health(config(), dt.date.fromisoformat(ds_local))
    print(health.describe())
    if not health.degraded:
        raise AirflowSkipException(health.describe())
    outlet_events[MODEL_DEGRADED_ASSET].extra = {
        "ds": ds_local,
        "reason": health.reason,
        "model_version": health.model_version,
    }
    return health.as_json()


with DAG(
    dag_id="purchase_intent_nightly",
    description="Nightly purchase-intent scoring into the warehouse",
    doc_md=DOC,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    user_defined_macros=USER_DEFINED_MACROS,
    **DAG_CALLBACKS,
    tags=["purchase_intent", "nightly", "scoring"],
) as dag:
    ds = "{{ local_ds(logical_date) }}"
    day = "{{ local_ds(logical_date, -1) }}"

    landed = land_raw.override(task_id="land_raw")(day)
    clean = PipelineSparkSubmitOperator(
        task_id="clean_events",
        job="clean_events",
        application_args=["--day", day],
        doc_md="Raw -> canonical events for day ds-1; bad rows to quarantine with a reason.",
    )
    validate_events = PipelineSparkSubmitOperator(
        task_id="validate_events",
        job="validate",
        application_args=["events", "--day", day],
        retries=0,
        doc_md="Great Expectations events suite on the day's partition; failure stops the run.",
    )
    texts = PipelineSparkSubmitOperator(
        task_id="embed_texts",
        job="text_embeddings",
        application_args=["--day", day],
        doc_md="Encode the day's search queries, category codes and brands that no earlier day held into the "
        "text-embedding layer (the pretrained text encoder, loaded once per Spark Python worker); training sets "
        "take their text vectors from it, and scoring the vectors of texts first seen after the model's training. "
        "Nothing to do with `text.enabled: false`.",
    )
    features = PipelineSparkSubmitOperator(
        task_id="build_features",
        job="features",
        application_args=["--ds", ds],
        doc_md="Point-in-time user features and sequences at cutoff ds.",
    )
    validate_features = PipelineSparkSubmitOperator(
        task_id="validate_features",
        job="validate",
        application_args=["features", "--day", ds],
        retries=0,
        doc_md="Great Expectations features suite (ranges, null rates, sequence lengths, one row per user).",
    )
    drift = PipelineSparkSubmitOperator(
        task_id="check_drift",
        job="drift",
        application_args=["--ds", ds],
        doc_md=(
            "Feature drift of cutoff ds against @champion's training reference (PSI per numeric feature, share "
            "distance per categorical). Runs beside `score`; logged to MLflow (experiment "
            "`mlflow.monitoring_experiment`, one run per ds) and to `var/runs/drift/<ds>.json`. With "
            "`quality.drift_action: warn` it only reports; with `fail` a drifted column stops the load (exit 65, "
            "not retried). Skipped with a log line while there is no champion."
        ),
    )
    score = PipelineSparkSubmitOperator(
        task_id="score",
        job="score",
        application_args=["--ds", ds, "--run-id", "{{ run_id }}"],
        doc_md="Score every active user with models:/purchase_intent@champion into the scores layer.",
    )
    score_challenger = PipelineSparkSubmitOperator(
        task_id="score_challenger",
        job="score",
        application_args=["--ds", ds, "--run-id", "{{ run_id }}", "--role", "challenger"],
        doc_md="Shadow scoring: the version holding models:/purchase_intent@challenger scores the same users into "
        "scores_shadow/ (and the warehouse's shadow table), where only its realized outcomes are read. Skipped "
        "by has_challenger when no version holds the alias.",
    )
    validate_scores = PipelineSparkSubmitOperator(
        task_id="validate_scores",
        job="validate",
        application_args=["scores", "--day", ds],
        retries=0,
        doc_md="Scores suite (probabilities in [0,1], one row per active user, model version) "
        "and the PSI shift vs the previous day.",
    )
    # none_failed: a skipped score_challenger (no challenger tonight) must not skip the load.
    loaded = load_warehouse.override(task_id="load_warehouse", trigger_rule="none_failed")(ds)
    shadow = has_challenger.override(task_id="has_challenger")(ds)
    published = publish.override(task_id="publish")(ds, loaded)
    outcomes = PipelineSparkSubmitOperator(
        task_id="evaluate_outcomes",
        job="outcomes",
        application_args=["--ds", ds, "--run-id", "{{ run_id }}"],
        doc_md=(
            "Realized outcomes: the scores of every day whose label window [d, d + horizon) has closed by the "
            "cutoff ds, judged against the events that have since landed (ROC-AUC, PR-AUC, log loss, Brier, "
            "calibration, top-k% precision/recall, lift, category HitRate/NDCG), one row per day and model version "
            "in `warehouse.outcomes_table` (a rerun replaces them) and one MLflow run each in "
            "`mlflow.monitoring_experiment`. Nothing to judge yet (the first nights) is a success."
        ),
    )

    landed >> clean >> validate_events >> [features, texts]
    features >> validate_features >> [drift, score]
    score >> [validate_scores, shadow]
    shadow >> score_challenger
    # Scoring hands a text model the vectors of the texts it has none of, this day's among them.
    texts >> score
    [validate_scores, drift, score_challenger] >> loaded
    judged = judge_challenger.override(task_id="judge_challenger")()
    health = model_health.override(task_id="model_health")(ds)
    published >> outcomes >> judged >> health
