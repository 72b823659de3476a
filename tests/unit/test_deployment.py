"""docker-compose.yml cannot run here (no Docker engine): check it structurally against the repo and the config."""

from __future__ import annotations

import re

import pytest
import yaml

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
    assert api["AIRFLOW__CORE__EXECUTOR"] in {"LocalExecutor", "CeleryExecutor"}


def test_module_commands_exist(compose):
    # A `python -m <module>` in a service command must name a module of this repo (or the image's packages).
    for name, svc in compose["services"].items():
        for module in re.findall(r"python -m ([\w.]+)", str(svc.get("command", ""))):
            top = module.split(".")[0]
            if (REPO_ROOT / top).is_dir():
                assert (REPO_ROOT / (module.replace(".", "/") + ".py")).is_file(), f"{name}: {module}"
