"""purchase_intent_training: build a time-split training set, train every candidate family on it, select one on
validation, gate it against @champion."""

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
    int_range,
    record_mlflow_run,
    trigger_reason,
)
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, task

from tasks import layers
from tasks.models.families import family_names  # after _wiring, which puts the repo on sys.path; torch-free

_cfg = config()

DOC = """
### Weekly (and on-demand) training

Runs weekly, on demand, and whenever the nightly run finds the champion degraded (its `model_health` task
updates the asset `warehouse://purchase_intent/intent_model_health`); such a run trains for the cutoff the
event names, and its reason is printed by `check_new_data` and kept as the version tag `training_trigger`.

The logical date is the day after the newest cleaned events. The training set uses the latest cutoffs
whose label window has fully passed, split by cutoff into train / validation / test. Every family in the
`candidates` parameter trains on those splits, one `train` task each: `lstm` and `bert` under `torchrun`
(DDP; processes from the `nproc` parameter), `lr` and `lightgbm` in one process. Before them, `pretrain`
(the `pretrain` parameter) trains the behaviour encoder of `pretrain.model_type` on masked-event prediction
over the sequences of every user row at the set's train cutoffs and registers it as a version of
`purchase_intent_encoder`; the `train` task of that family starts from it. `select` picks one on the
validation split only (`training.selection`: purchase PR-AUC, category NDCG@5 among near-ties) and
registers it as a new version of `purchase_intent`, tagged with every candidate's metrics and why it won;
the other candidates stay MLflow runs. The gate compares the chosen version with the current `@champion`
on the same test set and moves `@champion` only when it is good enough (otherwise it becomes
`@challenger`). Scoring always loads `@champion`, so a run that is not promoted changes nothing downstream.

**Which logical date to choose.** The trigger form proposes "now"; pick the day after the newest
cleaned events day instead (`ls var/data/events/`: with `dt=2026-01-14` the newest, choose
2026-01-15). The last cutoff is `ds - horizon`, and its label window ends the day before `ds`, so every
events day up to `ds - 1` must exist. A later date stops at once at `check_new_data` with one line, e.g.
`NO DATA: no events landed for 2026-11-30: the label window of the last cutoff 2026-11-30 has not fully
landed ...; newest cleaned day is 2026-01-14; choose a logical date up to 2026-01-15`; nothing is retried.

**Unpausing** schedules a run at once for the latest Sunday midnight (`catchup=False`), which stops at
`check_new_data` unless the events layer reaches the day before it.

Parameters (defaults from `conf/pipeline.yaml`): `candidates` (families to train; one of them is a plain
single-family training), `epochs`, `nproc`, `pretrain` and `search` (an Optuna search, trials as nested
MLflow runs, before each sequence model's training; not for `lr`/`lightgbm`), `horizon` (label horizon in days: the
last cutoff is `ds - horizon`, and the set id carries it, e.g. `2026-01-10-h1`) and `force_retrain`.
Without `force_retrain`, `check_new_data` skips the whole run when the champion was trained on the same
cutoffs with the same horizon: there is nothing new to learn from. Values outside their range (epochs
1-200, nproc 1-64, horizon 1-30, candidates from the known families, at least one) are refused when the
run is triggered, with the reason shown in the form.

A failed task ends its log with one line saying why; `python -m tasks.run_summary` prints each DAG's
latest run with its failed tasks and where to look (`var/runs/summary/<dag_id>/<ds>.json`). The `train`
and `gate` logs end with the test metrics and the MLflow run's page (`mlflow.ui_url`).
"""


@task.short_circuit(
    doc_md="Fail at once (no retry) when an events day the training set needs has not landed; skip the run "
    "(build, train, gate) when @champion was trained on the same cutoffs and horizon, unless force_retrain is set."
)
@fail_fast_on_data_errors
def check_new_data(
    training_set_id: str, last_cutoff: str, params: dict | None = None, dag_run=None, triggering_asset_events=None
) -> bool:
    from tasks.availability import require_training_events
    from tasks.config import with_overrides
    from tasks.registry import training_decision

    params = params or {}
    cfg = with_overrides(config(), {"features": {"horizon_days": int(params["horizon"])}})
    require_training_events(cfg, dt.date.fromisoformat(last_cutoff))
    decision = training_decision(
        cfg, training_set_id, dt.date.fromisoformat(last_cutoff), force=bool(params.get("force_retrain"))
    )
    print(f"check_new_data: run started by: {trigger_reason(dag_run, triggering_asset_events)}")
    print(f"check_new_data: {'train' if decision.train else 'skip'} ({decision.reason})")
    return decision.train


@task(doc_md="The families to train: the `candidates` param.")
def candidates(params: dict | None = None) -> list[str]:
    return list((params or {})["candidates"])


@task(
    doc_md="Self-supervised masked-event pretraining of the behaviour encoder (`pretrain` section) on the sequences "
    "of every user row at the set's train cutoffs (labels not read), under torchrun; registers a version of "
    "`purchase_intent_encoder` and returns its URI, which the `train` tasks of its family start from. Off (the "
    "`pretrain` param): returns None and every family starts from `training.init_from` or fresh weights."
)
@fail_fast_on_data_errors
def pretrain(training_set: str, params: dict | None = None) -> str | None:
    params = params or {}
    if not params.get("pretrain"):
        print("pretrain: off (the pretrain param); the train tasks start from training.init_from or fresh weights")
        return None
    from pathlib import Path

    from tasks.pretrain import launch_pretrain

    result = launch_pretrain(config(), Path(training_set), nproc=params.get("nproc"))
    record_mlflow_run(result.run_id)
    return result.model_uri


@task(
    doc_md="Train one candidate family (map index = position in `candidates`): lstm/bert under torchrun (DDP, "
    "gloo on CPU / NCCL on GPU), lr/lightgbm in this process; its model is logged to its MLflow run, not "
    "registered. A retry resumes from the last complete epoch's checkpoint; an unvalidated training set fails "
    "at once."
)
@fail_fast_on_data_errors
def train(training_set: str, model_type: str, init_from: str | None = None, params: dict | None = None) -> dict:
    from pathlib import Path

    from tasks.training.launcher import launch

    params = params or {}
    result = launch(
        config(),
        Path(training_set),
        model_type=model_type,
        epochs=params.get("epochs"),
        nproc=params.get("nproc"),
        search=params.get("search"),
        register=False,
        init_from=init_from,
    )
    record_mlflow_run(result.run_id)
    return {"run_id": result.run_id, "model_type": result.model_type, "model_uri": result.model_uri}


@task(
    doc_md="Choose one candidate on the validation split (training.selection) and register it; returns the exact "
    "version. Every candidate's metrics and the reason are tags of that version."
)
def select(trained: list[dict], *, dag_run=None, triggering_asset_events=None) -> dict:
    from tasks.registry import select as run_select
    from tasks.registry import set_version_tags

    cfg = config()
    chosen = run_select(cfg, [t["run_id"] for t in trained])
    why = trigger_reason(dag_run, triggering_asset_events)
    set_version_tags(cfg, chosen.version, {"training_trigger": why})
    print(f"select: {chosen.model_type} -> version {chosen.version}: {chosen.reason}; trained because: {why}")
    return {"model_version": chosen.version, "model_type": chosen.model_type, "run_id": chosen.run_id}


@task(doc_md="Champion/challenger gate on the same test set; moves aliases and tags the version with the decision.")
def gate(training_set: str, trained: dict) -> dict:
    from pathlib import Path

    from tasks.registry import gate as run_gate

    decision = run_gate(config(), trained["model_version"], Path(training_set))
    return {"version": decision.version, "alias": decision.alias, "promoted": decision.promoted}


with DAG(
    dag_id="purchase_intent_training",
    description="Train, evaluate and gate the purchase-intent model",
    doc_md=DOC,
    # Weekly, and whenever the nightly run finds the champion degraded (an asset-triggered run has no logical
    # date: run_cutoff takes the cutoff from the event).
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("@weekly", timezone="UTC"), assets=MODEL_DEGRADED_ASSET
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    # Two runs at once: "Unpause on trigger" (the trigger form's default) schedules the latest weekly interval
    # beside the user's run; with one active run the user's run would queue behind it. Two trainings still
    # never build, train or gate at the same time (max_active_tis_per_dag=1 on those tasks).
    max_active_runs=2,
    default_args=default_args(),
    user_defined_macros=USER_DEFINED_MACROS,
    **DAG_CALLBACKS,
    params={
        "candidates": Param(
            list(_cfg.training.candidates),
            type="array",
            items={"type": "string", "enum": list(family_names())},
            minItems=1,
            uniqueItems=True,
            description="Model families to train on the same splits; the best on validation is registered and gated",
        ),
        "epochs": Param(_cfg.training.epochs, **int_range(1, 200), description="Passes over the training set (1-200)"),
        "nproc": Param(
            _cfg.training.nproc_per_node, **int_range(1, 64), description="torchrun processes on this node (1-64)"
        ),
        "horizon": Param(
            _cfg.features.horizon_days,
            **int_range(1, 30),
            description="Label horizon in days (1-30): a user is positive when they act in [cutoff, cutoff + horizon)",
        ),
        "force_retrain": Param(
            False, type="boolean", description="Train even when @champion was trained on the same cutoffs and horizon"
        ),
        "pretrain": Param(
            _cfg.pretrain.enabled,
            type="boolean",
            description="Pretrain the behaviour encoder on the train rows' sequences first; its family starts from it",
        ),
        "search": Param(
            _cfg.training.search.enabled,
            type="boolean",
            description="Run the Optuna hyperparameter search (training.search) before each lstm/bert training",
        ),
    },
    tags=["purchase_intent", "training"],
) as dag:
    # The id carries the horizon, so a run with another horizon never replaces the champion's set. An
    # asset-triggered run's template context has no `logical_date` at all: its dag_run's is None.
    cutoff = "run_cutoff(dag_run.logical_date, triggering_asset_events)"
    training_set_id = f"{{{{ local_ds({cutoff}) }}}}-h{{{{ params.horizon }}}}"
    training_set_dir = str(layers.training_set_dir(_cfg, training_set_id))
    last_cutoff = f"{{{{ local_ds({cutoff}, -params.horizon) }}}}"

    new_data = check_new_data.override(task_id="check_new_data")(training_set_id, last_cutoff)
    build = PipelineSparkSubmitOperator(
        task_id="build_training_set",
        job="training_set",
        application_args=["--last-cutoff", last_cutoff, "--id", training_set_id, "--horizon", "{{ params.horizon }}"],
        max_active_tis_per_dag=1,
        doc_md="Features and labels for a window of daily cutoffs, split by cutoff into train/val/test.",
    )
    validate_training_set = PipelineSparkSubmitOperator(
        task_id="validate_training_set",
        job="validate",
        application_args=["training_set", "--training-set-id", training_set_id],
        retries=0,
        doc_md="Training-set suite: disjoint, ordered split cutoffs; every split non-empty with both classes.",
    )
    # One retry: a crashed training resumes from its last epoch checkpoint (training.checkpoints) instead of
    # starting over; bad data fails without retry (fail_fast_on_data_errors).
    families = candidates.override(task_id="candidates")()
    encoder = pretrain.override(task_id="pretrain", max_active_tis_per_dag=1)(training_set_dir)
    trained = (
        train.override(task_id="train", retries=1, max_active_tis_per_dag=1)
        .partial(training_set=training_set_dir, init_from=encoder)
        .expand(model_type=families)
    )
    chosen = select.override(task_id="select", max_active_tis_per_dag=1)(trained)
    gated = gate.override(task_id="gate", max_active_tis_per_dag=1)(training_set_dir, chosen)
    new_data >> build >> validate_training_set >> encoder >> families
