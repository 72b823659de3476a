"""docker-compose.yml cannot run here (no Docker engine): check it structurally against the repo and the config."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml

from tasks.airflow_env import DEPLOYMENT_ENV, AirflowError, AirflowStack, read_env_file
from tasks.config import ENV_OVERRIDES, REPO_ROOT, load_config

COMPOSE = REPO_ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_expected_services(compose):
    expected = {
        "postgres",
        "mlflow",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "spark-master",
        "spark-worker",
    }
    assert expected <= set(compose["services"])


def test_every_service_has_image_or_build(compose):
    for name, svc in compose["services"].items():
        assert svc.get("image") or svc.get("build"), name
        if svc.get("build"):
            assert (REPO_ROOT / svc["build"] / "Dockerfile").is_file(), name


def test_bind_mounts_point_at_real_paths(compose):
    named = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (REPO_ROOT / src).exists(), f"{name}: {src} does not exist"
            else:
                assert src in named, f"{name}: named volume {src} not declared"


def test_ports_are_well_formed(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert re.fullmatch(r"(\$\{[A-Z_]+(:-\d+)?\}|\d+):\d+", str(port)), f"{name}: {port}"


def test_every_variable_is_in_env_example(compose):
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = (REPO_ROOT / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z_]+)=", example, flags=re.M))
    assert used <= defined, f"variables missing from .env.example: {used - defined}"
    # Credentials appear only as ${VARIABLES}, never as literals.
    for user_pass in re.findall(r"://([^@/\s]+)@", text):
        assert re.fullmatch(r"\$\{[A-Z_]+\}:\$\{[A-Z_]+\}", user_pass), user_pass
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD}"


def test_pipeline_env_keys_are_read_by_the_config(compose):
    env = compose["x-pipeline-env"]
    for key in env:
        assert key in ENV_OVERRIDES or key == "PIPELINE_CONFIG", f"{key} is not read by tasks.config"
    # The config files named in PIPELINE_CONFIG exist in the repo and load together.
    paths = [REPO_ROOT / p.replace("/opt/purchase-intent/", "") for p in env["PIPELINE_CONFIG"].split(":")]
    cfg = load_config(paths, use_env=False)
    assert cfg.mlflow.tracking_uri == "http://mlflow:5000"


def test_airflow_points_at_the_repo_dags_and_spark_master(compose):
    api = compose["services"]["airflow-scheduler"]["environment"]
    assert api["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/purchase-intent/dags"
    assert "spark-master" in api["AIRFLOW_CONN_SPARK_DEFAULT"]


def test_airflow_runs_celery_workers_with_the_settings_the_e2e_tier_runs(compose):
    # One place for the deployment's Airflow settings: the env file every Airflow service reads, which
    # AirflowStack(deployment=DEPLOYMENT_ENV) applies in the e2e tier.
    airflow_services = {n: s for n, s in compose["services"].items() if n.startswith("airflow-")}
    assert airflow_services
    for name, svc in airflow_services.items():
        assert REPO_ROOT / svc["env_file"] == DEPLOYMENT_ENV, name
        assert not any(k in read_env_file(DEPLOYMENT_ENV) for k in svc["environment"]), name
        env = svc["environment"]
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    assert read_env_file(DEPLOYMENT_ENV)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # airflow-init (which every other Airflow service waits for) waits for the broker.
    assert "redis" in compose["services"]["airflow-init"]["depends_on"]
    assert compose["services"]["airflow-worker"]["command"] == "airflow celery worker"
    assert "redis" in compose["services"]


def test_env_file_lines_must_be_key_value(tmp_path):
    path = tmp_path / "airflow.env"
    path.write_text("# comment\n\nA=1\nB = two words\n")
    assert read_env_file(path) == {"A": "1", "B": "two words"}
    path.write_text("A=1\nnot a setting\n")
    with pytest.raises(ValueError, match=r"airflow.env:2: expected KEY=VALUE"):
        read_env_file(path)


def test_the_celery_executor_needs_its_endpoints(tmp_path):
    cfg = load_config(use_env=False)
    sqlite = {"PATH": "/usr/bin"}
    with pytest.raises(AirflowError, match="AIRFLOW__CELERY__BROKER_URL"):
        AirflowStack(cfg, io.StringIO(), sqlite, deployment=DEPLOYMENT_ENV)
    broker = {**sqlite, "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/0"}
    with pytest.raises(AirflowError, match="AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        AirflowStack(cfg, io.StringIO(), broker, deployment=DEPLOYMENT_ENV)
    with pytest.raises(AirflowError, match="not SQLite"):
        AirflowStack(
            cfg,
            io.StringIO(),
            {**broker, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////tmp/x.db"},
            deployment=DEPLOYMENT_ENV,
        )
    stack = AirflowStack(
        cfg,
        io.StringIO(),
        {**broker, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg://postgres@127.0.0.1:5432/airflow"},
        deployment=DEPLOYMENT_ENV,
    )
    try:
        assert stack.components == ("api-server", "scheduler", "dag-processor", "celery worker")
        assert (
            stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        )
    finally:
        stack.stop()


def test_module_commands_exist(compose):
    # A `python -m <module>` in a service command must name a module of this repo (or the image's packages).
    for name, svc in compose["services"].items():
        for module in re.findall(r"python -m ([\w.]+)", str(svc.get("command", ""))):
            top = module.split(".")[0]
            if (REPO_ROOT / top).is_dir():
                assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{name}: {module}"


def test_the_stack_hands_its_components_a_replaced_config_whole():
    cfg = load_config(use_env=False)
    stack = AirflowStack(cfg, io.StringIO(), {"PATH": "/usr/bin"})
    try:
        path = Path(stack.env["PIPELINE_CONFIG"])
        assert load_config([path], use_env=False) == cfg
        changed = cfg.model_copy(update={"training": cfg.training.model_copy(update={"candidates": ["lr"]})})
        stack.set_config(changed)
        # The path the components were started with now holds the new config, and nothing staged is left.
        assert load_config([path], use_env=False).training.candidates == ["lr"]
        assert stack.cfg == changed and list(path.parent.iterdir()) == [path]
    finally:
        stack.stop()


def test_the_running_tasks_name_each_running_instance_of_a_mapped_task(monkeypatch):
    stack = AirflowStack(load_config(use_env=False), io.StringIO(), {"PATH": "/usr/bin"})
    instances = [
        {"task_id": "pretrain", "map_index": -1, "state": "success"},
        {"task_id": "train", "map_index": 0, "state": "running"},
        {"task_id": "train", "map_index": 1, "state": "scheduled"},
        {"task_id": "check_drift", "map_index": -1, "state": "running"},
    ]
    monkeypatch.setattr(stack, "task_instances", lambda dag_id, run_id: instances)
    try:
        # A mapped task's later instances (scheduled) do not hide the one that runs.
        assert stack.running_tasks("purchase_intent_training", "r") == ["train[0]", "check_drift"]
    finally:
        stack.stop()


def test_a_dag_counts_as_parsed_only_once_this_stacks_dag_processor_parsed_it(monkeypatch):
    import datetime as dt

    stack = AirflowStack(load_config(use_env=False), io.StringIO(), {"PATH": "/usr/bin"})
    earlier = (stack.started_at - dt.timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    later = (stack.started_at + dt.timedelta(seconds=2)).isoformat().replace("+00:00", "Z")
    answers = iter([{"last_parsed_time": earlier}, {"last_parsed_time": earlier}, {"last_parsed_time": later}])
    asked = []

    def request(method, path, body=None):
        asked.append(path)
        return {"import_errors": []} if path.endswith("importErrors") else next(answers)

    monkeypatch.setattr(stack, "_request", request)
    monkeypatch.setattr(stack, "_check_alive", lambda: None)
    monkeypatch.setattr("tasks.airflow_env.time.sleep", lambda s: None)
    try:
        # A DAG an earlier stack serialised (with its own Celery queue, say) is waited past.
        stack.wait_for_dag("purchase_intent_nightly")
        assert asked.count("/api/v2/dags/purchase_intent_nightly") == 3
    finally:
        stack.stop()
