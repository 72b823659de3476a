"""One place that builds the SparkSession for every job, tuned for small local data.

Under ``spark-submit`` the master and resources given on the command line win
(``getOrCreate`` reuses the submitted context); run directly, the config's
``spark.master`` (env SPARK_MASTER) is used.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from tasks.config import REPO_ROOT, PipelineConfig
from tasks.layers import class_archive_path

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _ensure_worker_imports() -> None:
    # Python workers are forked by the JVM and inherit its environment, not sys.path:
    # put the repo root on PYTHONPATH before the JVM starts so UDF workers can import tasks/.
    root = str(REPO_ROOT)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *parts])
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


def executor_conf(cfg: PipelineConfig) -> dict[str, str]:
    """Spark conf that carries what the executors' Python workers need to the cluster's nodes: a worker started
    by a cluster's Worker daemon inherits that daemon's environment, not the driver's (local mode's workers are
    the driver's children, so they found the code without it)."""
    return {"spark.executorEnv.PYTHONPATH": cfg.spark.executor_pythonpath or str(REPO_ROOT)}


# A short-lived driver (a validation gate over one partition) spends much of its CPU in the JIT's
# optimising tier compiling code it then barely runs; C1 alone starts faster on few cores.
SHORT_LIVED_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"
# JVM warnings (an archive built for another Java or class path) go to stderr: a job's stdout may be parsed.
_JVM_LOG_TO_STDERR = "-Xlog:disable -Xlog:all=warning:stderr"


def java_option(option: str) -> str:
    """``option`` as one item of spark.driver.extraJavaOptions: Spark splits that string on blanks unless quoted."""
    return f'"{option}"' if " " in option else option


def driver_java_options(cfg: PipelineConfig, short_lived: bool = False) -> str:
    """Options this project adds to a driver JVM it starts (spark.driver.extraJavaOptions), decided when the
    JVM starts: the C1-only JIT for a short-lived one, the configured garbage collector, and the class archive
    only once it exists (pointing a JVM at a missing one would switch off even the JDK's own class sharing)."""
    options = [SHORT_LIVED_JAVA_OPTIONS] if short_lived else []
    if cfg.spark.driver_gc:
        options.append(f"-XX:+Use{cfg.spark.driver_gc}")
    archive = class_archive_path(cfg)
    if archive is not None and archive.is_file():
        options += [java_option(f"-XX:SharedArchiveFile={archive}"), _JVM_LOG_TO_STDERR]
    return " ".join(options)


def build_session(cfg: PipelineConfig, app_name: str, short_lived: bool = False, java_options: str | None = None):
    """The job's SparkSession; ``short_lived`` tunes a JVM this call starts for a job of a few seconds;
    ``java_options`` replaces the driver JVM options ``driver_java_options`` would choose."""
    from pyspark.sql import SparkSession

    _ensure_worker_imports()
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(cfg.spark.shuffle_partitions))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.parquet.filterPushdown", "true")
        # Timestamps as Parquet INT64 microseconds, not Spark's legacy INT96 default: Spark reads them faster
        # (bench: the cold events suite) and DuckDB, Arrow and pandas read them as UTC timestamps without
        # the INT96 conventions.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.ansi.enabled", "false")
    )
    # Launched by spark-submit, the JVM gateway already exists with the submitted master and memory.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(cfg.spark.master).config("spark.driver.memory", cfg.spark.driver_memory)
        for key, value in executor_conf(cfg).items():
            builder = builder.config(key, value)
        options = driver_java_options(cfg, short_lived) if java_options is None else java_options
        if options:
            builder = builder.config("spark.driver.extraJavaOptions", options)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def start_session(cfg: PipelineConfig, app_name: str, short_lived: bool = False) -> Callable[[], SparkSession]:
    """Start ``build_session`` on a background thread; the function returned waits for it and gives the
    session (or raises the start's error). It is the process's default session, not the calling thread's
    active one: ``SparkSession.active()`` finds it, ``getActiveSession()`` does not.

    For a caller with slow work of its own before its first Spark call: a validation gate imports Great
    Expectations while its driver JVM starts instead of before it (both take seconds on one core). A context
    created off the main thread installs no Ctrl-C handler that cancels running jobs (PySpark's choice);
    the task's process ends on SIGTERM as before.
    """
    started: Future = Future()

    def run() -> None:
        started.set_running_or_notify_cancel()
        try:
            started.set_result(build_session(cfg, app_name, short_lived))
        except BaseException as e:  # raised again by the function returned
            started.set_exception(e)

    threading.Thread(target=run, name="spark-session-start").start()
    return started.result
