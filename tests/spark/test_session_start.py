"""Starting the driver JVM on a background thread while a gate imports Great Expectations."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spark_jobs import session as session_module
from spark_jobs.session import start_session
from tasks.config import REPO_ROOT


def test_started_session_is_the_running_one(spark, cfg):
    started = start_session(cfg, "start check", short_lived=True)()
    assert started.sparkContext is spark.sparkContext
    assert started.range(4).count() == 4


def test_a_failed_start_raises_where_the_session_is_asked_for(cfg, monkeypatch):
    def no_jvm(*args, **kwargs):
        raise RuntimeError("Java gateway process exited before sending its port number")

    monkeypatch.setattr(session_module, "build_session", no_jvm)
    session = start_session(cfg, "doomed")
    with pytest.raises(RuntimeError, match="Java gateway process exited"):
        session()


def test_the_validate_cli_imports_great_expectations_only_after_starting_spark():
    # The overlap needs this: a module-level GX import would run before the JVM start, as it used to.
    probe = "import sys, spark_jobs.validate; print('great_expectations' in sys.modules, 'pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
