"""The DAGs' spark-submit tasks choose driver JVM options when they run, not when the DAG is parsed."""

from __future__ import annotations

import pytest
import yaml

from tasks.config import DEFAULT_CONFIG


@pytest.fixture
def operator_cls(tmp_path, monkeypatch):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"paths": {"var_dir": str(tmp_path / "var")}}))
    monkeypatch.setenv("PIPELINE_CONFIG", f"{DEFAULT_CONFIG}:{overlay}")
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from dags._wiring import PipelineSparkSubmitOperator

    submitted = []
    # Stands in for the spark-submit process only: what matters here is the conf it would be given.
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: submitted.append(dict(self.conf)))
    return PipelineSparkSubmitOperator, submitted, tmp_path / "var" / "jvm" / "spark-classes.jsa"


def test_options_follow_the_archive_at_run_time(operator_cls):
    cls, submitted, archive = operator_cls
    gate, features = cls(task_id="gate", job="validate"), cls(task_id="features", job="features")
    gate.execute({})
    features.execute({})
    assert submitted[0]["spark.driver.extraJavaOptions"] == "-XX:TieredStopAtLevel=1 -XX:+UseParallelGC"
    assert submitted[1]["spark.driver.extraJavaOptions"] == "-XX:+UseParallelGC"
    # Built after the DAG was parsed: the same operators pick it up on their next run.
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"x")
    gate.execute({})
    features.execute({})
    assert submitted[2]["spark.driver.extraJavaOptions"].startswith(
        f"-XX:TieredStopAtLevel=1 -XX:+UseParallelGC -XX:SharedArchiveFile={archive}"
    )
    assert submitted[3]["spark.driver.extraJavaOptions"].startswith(
        f"-XX:+UseParallelGC -XX:SharedArchiveFile={archive}"
    )
    assert submitted[3]["spark.sql.shuffle.partitions"] == "8"


def test_the_executors_python_path_travels_with_each_submission(operator_cls, tmp_path, monkeypatch):
    # A cluster's executors start from their Worker daemon's environment, not the driver's: the project's code
    # must reach their Python workers through the submission (tests/spark/test_standalone_cluster.py runs it).
    from tasks.config import REPO_ROOT

    cls, submitted, _ = operator_cls
    cls(task_id="features", job="features").execute({})
    assert submitted[0]["spark.executorEnv.PYTHONPATH"] == str(REPO_ROOT)
    overlay = tmp_path / "nodes.yaml"
    overlay.write_text(yaml.safe_dump({"spark": {"executor_pythonpath": "/opt/purchase-intent"}}))
    monkeypatch.setenv("PIPELINE_CONFIG", f"{DEFAULT_CONFIG}:{tmp_path / 'overlay.yaml'}:{overlay}")
    cls(task_id="features", job="features").execute({})
    assert submitted[1]["spark.executorEnv.PYTHONPATH"] == "/opt/purchase-intent"
