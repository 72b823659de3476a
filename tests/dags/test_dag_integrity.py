"""DAG integrity: both DAGs parse without errors, import nothing heavy, and are wired as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasks.config import REPO_ROOT
from tasks.models.families import family_names

HEAVY = ("torch", "pyspark", "transformers", "mlflow", "great_expectations", "duckdb", "lightgbm", "psycopg")

PROBE = r"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
# Parsed as the dag processor does: the DAG bundle (dags/) is on sys.path.
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1]), bundle_name="dags-folder")
out = {
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "heavy": sorted(m for m in sys.argv[2].split(",") if m in sys.modules),
    "dags": {},
}
def schedule_assets(dag):
    cond = getattr(dag.timetable, "asset_condition", None)
    if cond is None:
        return []
    return [cond.uri] if hasattr(cond, "uri") else sorted(a.uri for a in cond.objects)
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tags": sorted(dag.tags),
        "doc": bool(dag.doc_md),
        "schedule": str(dag.schedule),
        "timetable": type(dag.timetable).__name__,
        "schedule_assets": schedule_assets(dag),
        "max_active_runs": dag.max_active_runs,
        "params": {
            k: {"default": p.value, "schema": p.schema, "description": p.description}
            for k, p in ((k, dag.params.get_param(k)) for k in dag.params.keys())
        },
        "tasks": {
            t.task_id: {
                "down": sorted(t.downstream_task_ids),
                "retries": t.retries,
                "max_active_tis_per_dag": t.max_active_tis_per_dag,
                "owner": t.owner,
                "has_callback": bool(t.on_failure_callback),
                "type": type(t).__name__,
                "trigger_rule": str(getattr(t.trigger_rule, "value", t.trigger_rule)),
                "doc": bool(t.doc_md),
                "application": getattr(t, "application", None),
                "args": [str(a) for a in getattr(t, "application_args", None) or []],
                "outlets": sorted(getattr(o, "uri", str(o)) for o in t.outlets),
            }
            for t in dag.tasks
        },
    }
# The training DAG's templated arguments as a run started by the health asset renders them: Airflow gives such a
# run no logical date (its context has no `logical_date` key; dag_run.logical_date is None).
from types import SimpleNamespace
training_dag = bag.dags["purchase_intent_training"]
context = {
    "dag_run": SimpleNamespace(logical_date=None, run_type="asset_triggered", conf={}),
    "triggering_asset_events": {
        "warehouse://purchase_intent/intent_model_health": [SimpleNamespace(extra={"ds": "2026-01-11", "reason": "r"})]
    },
    "params": {k: training_dag.params[k] for k in training_dag.params.keys()},
    "run_id": "asset_triggered__x",
}
out["asset_triggered_args"] = {}
for t in training_dag.tasks:
    try:
        t.render_template_fields(context)
        out["asset_triggered_args"][t.task_id] = [
            str(a) for a in (getattr(t, "op_args", None) or getattr(t, "application_args", None) or [])
        ]
    except Exception as e:
        out["asset_triggered_args"][t.task_id] = f"{type(e).__name__}: {e}"
# What the trigger API runs on the form's values (SerializedDAG.create_dagrun): the params merged with the
# run conf, validated against each Param's JSON schema.
from airflow.serialization.serialized_objects import DagSerialization
training = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags["purchase_intent_training"]))
out["trigger"] = {}
for conf in json.loads(sys.argv[3]):
    try:
        training.params.deep_merge(conf).validate()
        out["trigger"][json.dumps(conf)] = "accepted"
    except Exception as e:
        out["trigger"][json.dumps(conf)] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
print("@@" + json.dumps(out))
"""

# Run confs the trigger probe validates (test_trigger_refuses_out_of_range_params).
TRIGGER_CONFS = [
    {"epochs": -1},
    {"epochs": 1000},
    {"epochs": 7},
    {"nproc": 0},
    {"horizon": 31},
    {"epochs": 1.5},
    {"candidates": ["lr", "gru"]},
    {"candidates": []},
    {"candidates": ["lr"]},
]


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        PYTHONPATH=str(REPO_ROOT),
    )
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO_ROOT / "dags"), ",".join(HEAVY), json.dumps(TRIGGER_CONFS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((out for out in proc.stdout.splitlines() if out.startswith("@@")), None)
    assert line, f"DAG parse probe failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(line[2:])


def test_no_import_errors(parsed):
    assert parsed["errors"] == {}


def test_no_heavy_imports_at_parse_time(parsed):
    assert parsed["heavy"] == [], f"DAG files imported {parsed['heavy']} at parse time"


def test_both_dags_present_with_docs_and_tags(parsed):
    assert set(parsed["dags"]) == {"purchase_intent_nightly", "purchase_intent_training"}
    for dag in parsed["dags"].values():
        assert dag["doc"]
        assert "purchase_intent" in dag["tags"]


def _chain(tasks: dict, start: str, stop: str | None = None) -> list[str]:
    order, cur = [start], start
    while tasks[cur]["down"] and cur != stop:
        nxt = tasks[cur]["down"]
        assert len(nxt) == 1, f"{cur} fans out to {nxt}"
        cur = nxt[0]
        order.append(cur)
    return order


def test_nightly_order(parsed):
    tasks = parsed["dags"]["purchase_intent_nightly"]["tasks"]
    # Drift runs beside scoring and gates the load: both branches join at load_warehouse.
    assert tasks["validate_features"]["down"] == ["check_drift", "score"]
    assert _chain(tasks, "land_raw", stop="validate_events") == ["land_raw", "clean_events", "validate_events"]
    # The day's new texts are encoded beside the features, before scoring reads them.
    assert tasks["validate_events"]["down"] == ["build_features", "embed_texts"]
    assert tasks["build_features"]["down"] == ["validate_features"]
    assert tasks["embed_texts"]["down"] == ["score"]
    assert tasks["embed_texts"]["application"] == str(REPO_ROOT / "spark_jobs" / "text_embeddings.py")
    # The challenger scores in the shadow after the champion, and its rows are loaded with the champion's.
    assert tasks["score"]["down"] == ["has_challenger", "validate_scores"]
    assert tasks["has_challenger"]["down"] == ["score_challenger"]
    assert tasks["score_challenger"]["down"] == ["load_warehouse"]
    # A night without a challenger skips score_challenger; the load must still run (but not after a failure).
    assert tasks["load_warehouse"]["trigger_rule"] == "none_failed"
    assert tasks["score_challenger"]["args"][-2:] == ["--role", "challenger"]
    assert tasks["validate_scores"]["down"] == tasks["check_drift"]["down"] == ["load_warehouse"]
    assert _chain(tasks, "load_warehouse") == [
        "load_warehouse",
        "publish",
        "evaluate_outcomes",
        "judge_challenger",
        "model_health",
    ]
    assert set(tasks) == {
        "land_raw",
        "clean_events",
        "validate_events",
        "embed_texts",
        "build_features",
        "validate_features",
        "check_drift",
        "score",
        "validate_scores",
        "load_warehouse",
        "publish",
        "evaluate_outcomes",
        "judge_challenger",
        "model_health",
        "score_challenger",
        "has_challenger",
    }


def test_nightly_outcomes_task(parsed):
    outcomes = parsed["dags"]["purchase_intent_nightly"]["tasks"]["evaluate_outcomes"]
    assert outcomes["type"] == "PipelineSparkSubmitOperator"
    assert outcomes["application"] == str(REPO_ROOT / "spark_jobs" / "outcomes.py")
    assert outcomes["args"] == ["--ds", "{{ local_ds(logical_date) }}", "--run-id", "{{ run_id }}"]
    assert outcomes["doc"]


def test_a_degraded_model_schedules_training_through_an_asset(parsed):
    health = "warehouse://purchase_intent/intent_model_health"
    nightly = parsed["dags"]["purchase_intent_nightly"]["tasks"]
    # Only model_health updates the health asset (and only when it is not skipped, i.e. degraded).
    assert {t: v["outlets"] for t, v in nightly.items() if health in v["outlets"]} == {"model_health": [health]}
    training = parsed["dags"]["purchase_intent_training"]
    # Weekly or on that asset, whichever comes first.
    assert training["timetable"] == "AssetOrTimeSchedule"
    assert training["schedule_assets"] == [health]


def test_an_asset_triggered_training_renders_its_cutoff_from_the_event(parsed):
    args = parsed["asset_triggered_args"]
    horizon = parsed["dags"]["purchase_intent_training"]["params"]["horizon"]["default"]
    assert horizon == 1
    # The event's ds is the cutoff: the training set is named by it, and its last labelled cutoff is a horizon before.
    assert args["check_new_data"] == ["2026-01-11-h1", "2026-01-10"], args
    assert args["build_training_set"][:4] == ["--last-cutoff", "2026-01-10", "--id", "2026-01-11-h1"], args
    assert args["validate_training_set"] == ["training_set", "--training-set-id", "2026-01-11-h1"], args


def test_nightly_drift_task(parsed):
    drift = parsed["dags"]["purchase_intent_nightly"]["tasks"]["check_drift"]
    # spark-submit of the drift CLI: its data-error exit (65) becomes AirflowFailException, so only
    # transient failures use the retries.
    assert drift["type"] == "PipelineSparkSubmitOperator"
    assert drift["application"] == str(REPO_ROOT / "spark_jobs" / "drift.py")
    assert drift["args"] == ["--ds", "{{ local_ds(logical_date) }}"]
    assert drift["retries"] >= 1 and drift["doc"]


def test_training_order(parsed):
    dag = parsed["dags"]["purchase_intent_training"]
    assert _chain(dag["tasks"], "check_new_data", stop="pretrain") == [
        "check_new_data",
        "build_training_set",
        "validate_training_set",
        "pretrain",
    ]
    # Every train task reads the encoder version that pretrain registered.
    assert dag["tasks"]["pretrain"]["down"] == ["candidates", "train"]
    assert _chain(dag["tasks"], "candidates") == ["candidates", "train", "select", "gate"]
    # One train task per candidate family, mapped at run time over the `candidates` param.
    assert dag["tasks"]["train"]["type"] == "DecoratedMappedOperator"
    assert dag["tasks"]["check_new_data"]["type"] == "_ShortCircuitDecoratedOperator"
    build = dag["tasks"]["build_training_set"]
    assert build["args"] == [
        "--last-cutoff",
        "{{ local_ds(run_cutoff(dag_run.logical_date, triggering_asset_events), -params.horizon) }}",
        "--id",
        "{{ local_ds(run_cutoff(dag_run.logical_date, triggering_asset_events)) }}-h{{ params.horizon }}",
        "--horizon",
        "{{ params.horizon }}",
    ]


def test_a_triggered_training_does_not_queue_behind_the_scheduled_one(parsed):
    # "Unpause on trigger" schedules the latest interval beside the user's run: both may be active, but two
    # runs never build, train or gate at once.
    dag = parsed["dags"]["purchase_intent_training"]
    assert dag["max_active_runs"] == 2
    serial = ("build_training_set", "pretrain", "train", "select", "gate")
    limits = {task: dag["tasks"][task]["max_active_tis_per_dag"] for task in serial}
    assert limits == dict.fromkeys(serial, 1)


def test_training_params_defaults_from_config_and_schemas(parsed):
    from tasks.config import load_config

    cfg = load_config()
    params = parsed["dags"]["purchase_intent_training"]["params"]
    assert set(params) == {"candidates", "epochs", "nproc", "horizon", "force_retrain", "pretrain", "search"}
    assert {k: p["default"] for k, p in params.items()} == {
        "candidates": cfg.training.candidates,
        "epochs": cfg.training.epochs,
        "nproc": cfg.training.nproc_per_node,
        "horizon": cfg.features.horizon_days,
        "force_retrain": False,
        "pretrain": cfg.pretrain.enabled,
        "search": cfg.training.search.enabled,
    }
    assert {k: p["schema"] for k, p in params.items()} == {
        "candidates": {
            "type": "array",
            "items": {"type": "string", "enum": list(family_names())},
            "minItems": 1,
            "uniqueItems": True,
        },
        "epochs": {"type": "integer", "allOf": [{"minimum": 1, "maximum": 200}]},
        "nproc": {"type": "integer", "allOf": [{"minimum": 1, "maximum": 64}]},
        "horizon": {"type": "integer", "allOf": [{"minimum": 1, "maximum": 30}]},
        "force_retrain": {"type": "boolean"},
        "pretrain": {"type": "boolean"},
        "search": {"type": "boolean"},
    }
    assert all(p["description"] for p in params.values())


def test_params_schemas_refuse_out_of_range_values(parsed):
    import jsonschema

    params = parsed["dags"]["purchase_intent_training"]["params"]
    epochs = params["epochs"]["schema"]
    for bad, message in ((-1, "-1 is less than the minimum of 1"), (1000, "1000 is greater than the maximum of 200")):
        with pytest.raises(jsonschema.ValidationError, match=message):
            jsonschema.validate(bad, epochs)
    for good in (1, 7, 200):
        jsonschema.validate(good, epochs)
    # The trigger form's number field clamps to a top-level minimum/maximum when it loses focus (Airflow 3
    # UI): with the bounds one level down it keeps what was typed and the trigger request is refused.
    for name in ("epochs", "nproc", "horizon"):
        assert "minimum" not in params[name]["schema"] and "maximum" not in params[name]["schema"], name


def test_trigger_refuses_out_of_range_params(parsed):
    refused = "ParamValidationError: Invalid input for param "

    def key(conf: str) -> tuple:
        name, value = json.loads(conf).popitem()
        return name, tuple(value) if isinstance(value, list) else value

    outcome = {key(k): v.removeprefix(refused) for k, v in parsed["trigger"].items()}
    assert outcome == {
        ("epochs", -1): "epochs: -1 is less than the minimum of 1",
        ("epochs", 1000): "epochs: 1000 is greater than the maximum of 200",
        ("epochs", 7): "accepted",
        ("nproc", 0): "nproc: 0 is less than the minimum of 1",
        ("horizon", 31): "horizon: 31 is greater than the maximum of 30",
        ("epochs", 1.5): "epochs: 1.5 is not of type 'integer'",
        ("candidates", ("lr", "gru")): f"candidates: 'gru' is not one of {list(family_names())}",
        ("candidates", ()): "candidates: [] should be non-empty",
        ("candidates", ("lr",)): "accepted",
    }


def test_tags_and_task_docs(parsed):
    assert parsed["dags"]["purchase_intent_nightly"]["tags"] == ["nightly", "purchase_intent", "scoring"]
    assert parsed["dags"]["purchase_intent_training"]["tags"] == ["purchase_intent", "training"]
    for dag in parsed["dags"].values():
        for task_id, t in dag["tasks"].items():
            assert t["doc"], f"{task_id} has no doc_md"


def test_retries_and_callbacks(parsed):
    for dag in parsed["dags"].values():
        for task_id, t in dag["tasks"].items():
            assert t["has_callback"], task_id
            assert t["owner"] == "ml-platform"
            if task_id.startswith("validate"):
                assert t["retries"] == 0, f"{task_id}: data-quality failures are not retried"
            else:
                assert t["retries"] >= 1, f"{task_id}: transient failures should be retried"
