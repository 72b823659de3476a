"""Local service sizes (conf/pipeline.yaml `services`): null follows the machine's cores, set values win."""

from __future__ import annotations

import pytest

import tasks.config as tasks_config
from tasks.airflow_env import airflow_env
from tasks.config import ConfigError
from tasks.mlflow_ui import command
from tests.helpers.config import isolated_config


@pytest.mark.parametrize(
    ("cores", "parallelism", "workers", "parsing"),
    [(1, 1, 1, 1), (2, 2, 1, 1), (4, 4, 2, 2), (16, 16, 4, 2)],
)
def test_null_sizes_follow_the_cores(tmp_path, monkeypatch, cores, parallelism, workers, parsing):
    monkeypatch.setattr(tasks_config, "usable_cores", lambda: cores)
    cfg = isolated_config(tmp_path / "var")
    env = airflow_env(cfg, base={})
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(parallelism)
    assert env["AIRFLOW__API__WORKERS"] == str(workers)
    assert env["AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"] == str(parsing)
    cmd, mlflow_env = command(cfg, "127.0.0.1", 5000)
    assert cmd[cmd.index("--workers") + 1] == str(workers)
    assert mlflow_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_set_sizes_win(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks_config, "usable_cores", lambda: 2)
    cfg = isolated_config(
        tmp_path / "var",
        services={
            "airflow_parallelism": 8,
            "airflow_api_workers": 3,
            "airflow_parsing_processes": 2,
            "mlflow_ui_workers": 5,
        },
    )
    env = airflow_env(cfg, base={})
    assert (env["AIRFLOW__CORE__PARALLELISM"], env["AIRFLOW__API__WORKERS"]) == ("8", "3")
    assert env["AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"] == "2"
    cmd, _ = command(cfg, "127.0.0.1", 5000)
    assert cmd[cmd.index("--workers") + 1] == "5"


def test_zero_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"services\.airflow_parallelism"):
        isolated_config(tmp_path / "var", services={"airflow_parallelism": 0})


def test_usable_cores_is_this_process_share():
    import os

    assert tasks_config.usable_cores() == len(os.sched_getaffinity(0))


def test_another_api_port_moves_the_execution_api_with_it(tmp_path):
    cfg = isolated_config(tmp_path / "var")
    assert "AIRFLOW__API__BASE_URL" not in airflow_env(cfg, base={})
    moved = airflow_env(cfg, base={"AIRFLOW__API__PORT": "8093"})
    assert moved["AIRFLOW__API__BASE_URL"] == "http://localhost:8093"
    kept = airflow_env(cfg, base={"AIRFLOW__API__PORT": "8093", "AIRFLOW__API__BASE_URL": "https://af.example"})
    assert kept["AIRFLOW__API__BASE_URL"] == "https://af.example"
