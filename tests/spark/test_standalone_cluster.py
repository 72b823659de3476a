"""The nightly's Spark steps on a Spark standalone cluster (a master and two one-core workers started from the
installed pyspark on loopback), submitted by the DAG's own operator exactly as a task does, give the same
partitions as local mode: the same rows and every non-float value equal; floats equal to 1e-12 relative, since a
mean over a user's events is summed in the order the shuffle delivers them, which differs between layouts.

The workers start with a bare environment (no PYTHONPATH, no pipeline config): what the jobs' Python code needs
on an executor must travel with the submission. Data layers and MLflow are on one filesystem that every node
sees, as in docker-compose.yml's shared volume.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tasks.airflow_env import free_port
from tasks.config import DEFAULT_CONFIG, load_config
from tasks.layers import events_partition, features_partition, incoming_dir, scores_partition

START = dt.date(2026, 1, 1)
N_DAYS = 9
DS = START + dt.timedelta(days=N_DAYS)  # the nightly's cutoff: cleans the last generated day, scores the users
DAY = DS - dt.timedelta(days=1)
RUN_ID = "cluster-test"
STEPS = [
    ("clean_events", "clean_events", ["--day", DAY.isoformat()]),
    ("validate_events", "validate", ["events", "--day", DAY.isoformat()]),
    ("build_features", "features", ["--ds", DS.isoformat()]),
    ("score", "score", ["--ds", DS.isoformat(), "--run-id", RUN_ID]),
]
VENV_BIN = Path(sys.executable).parent


def _wait(condition, what: str, procs: list[subprocess.Popen], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"{proc.args} exited with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f}s"
        time.sleep(1)


def _alive_workers(ui_port: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as resp:
            return int(json.loads(resp.read())["aliveworkers"])
    return 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """spark://127.0.0.1:<port> with two workers of one core and 1 GiB each; every daemon stopped at the end."""
    root = tmp_path_factory.mktemp("spark-cluster")
    port, ui_port = free_port(), free_port()
    # A bare environment: whatever a job needs on the executors must come with its submission.
    env = {
        "PATH": os.pathsep.join([str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(root),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(root / "logs"),
        **{k: os.environ[k] for k in ("JAVA_HOME", "LANG") if k in os.environ},
    }
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = open(root / f"{name}.log", "w")  # noqa: SIM115  (the daemon writes it until the fixture ends)
        procs.append(
            subprocess.Popen(
                [str(VENV_BIN / "spark-class"), *args],
                env=env,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        )
        log.close()

    master = f"spark://127.0.0.1:{port}"
    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(ui_port))  # fmt: skip
        for i in (1, 2):
            work = root / f"worker-{i}"
            work.mkdir()
            start(
                f"worker-{i}", "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1",
                "--cores", "1", "--memory", "1g", "--work-dir", str(work), "--webui-port", str(free_port()),
            )  # fmt: skip
        _wait(lambda: _alive_workers(ui_port) == 2, "two workers registered with the master", procs)
        yield master, root
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def local_night(spark, tmp_path_factory):
    """A generated log landed and cleaned in local mode, an LR champion trained on it, and the nightly's writing
    steps for DS run in local mode (this process's session): (config, its overlay file, what they wrote)."""
    from spark_jobs import clean_events, features, score, training_set
    from tasks.land import land_day
    from tasks.registry import gate, select
    from tasks.sources.synthetic import generate
    from tasks.training.launcher import launch
    from tests.helpers.config import isolated_overrides

    root = tmp_path_factory.mktemp("cluster-data")
    overlay = root / "overlay.yaml"
    sections = {
        "generator": {"n_users": 200, "n_days": N_DAYS, "start_date": START.isoformat(), "n_items": 1000,
                      "n_categories": 20, "chunk_users": 200},
        "features": {"sequence_length": 20},
        "training_set": {"n_train_cutoffs": 3, "n_val_cutoffs": 1, "n_test_cutoffs": 1},
        "training": {"candidates": ["lr"]},
        "gate": {"min_auc": 0.5},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
    }  # fmt: skip
    overlay.write_text(yaml.safe_dump(isolated_overrides(root / "var", **sections)))
    cfg = load_config([DEFAULT_CONFIG, overlay], use_env=False)
    generate(cfg.generator, incoming_dir(cfg, "synthetic"), cfg.pipeline.timezone)
    for i in range(N_DAYS):
        land_day(cfg, START + dt.timedelta(days=i), "synthetic")
    clean_events.run_range(cfg, START, DAY)
    ts = training_set.build(cfg, DAY - dt.timedelta(days=1), "cluster-ts", spark=spark).path
    trained = launch(cfg, ts, model_type="lr", register=False, allow_unvalidated=True)
    assert gate(cfg, select(cfg, [trained.run_id]).version, ts).promoted
    features.run(cfg, DS, spark=spark)
    score.run(cfg, DS, RUN_ID, spark=spark)
    return cfg, overlay, _outputs(cfg)


def _submit_night(monkeypatch, overlay: Path, master: str) -> None:
    """The nightly's steps for DS as its tasks run them: the DAG's operator, spark-submit to ``master``."""
    from dags._wiring import PipelineSparkSubmitOperator

    monkeypatch.setenv("PIPELINE_CONFIG", f"{DEFAULT_CONFIG}:{overlay}")
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": master}))
    monkeypatch.setenv("PATH", os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]))
    for task_id, job, args in STEPS:
        PipelineSparkSubmitOperator(task_id=task_id, job=job, application_args=args).execute({})


def _outputs(cfg) -> dict[str, pd.DataFrame]:
    frames = {
        "events": pd.read_parquet(events_partition(cfg, DAY)),
        "features_user": pd.read_parquet(features_partition(cfg, "user", DS)),
        "features_user_category": pd.read_parquet(features_partition(cfg, "user_category", DS)),
        "scores": pd.read_parquet(scores_partition(cfg, DS)),
    }
    # Row order within a partition is the executors' business; the rows themselves must match.
    return {name: df.sort_values(_scalar_columns(df)).reset_index(drop=True) for name, df in frames.items()}


def _scalar_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not isinstance(df[c].iloc[0], (list, dict, np.ndarray))]


def test_a_night_on_a_standalone_cluster_writes_what_local_mode_writes(cluster, local_night, monkeypatch):
    master, root = cluster
    cfg, overlay, local = local_night
    # Each step replaces the partition local mode wrote.
    _submit_night(monkeypatch, overlay, master)
    on_cluster = _outputs(cfg)
    # The executors ran on the workers: each worker launched an executor for the jobs' applications.
    for i in (1, 2):
        assert list((root / f"worker-{i}").glob("app-*/*/stderr")), f"worker {i} ran no executor"
    assert len(on_cluster["scores"]) == len(on_cluster["features_user"]) > 0
    for name, frame in on_cluster.items():
        pd.testing.assert_frame_equal(frame, local[name], check_exact=False, rtol=1e-12, atol=0, obj=name)
