"""The benchmarks' harness: temporary work dirs, wall / CPU / JVM measurements, MLflow metric read-out,
result JSON, bench/results/SUMMARY.md and the machine description written into every result."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tasks.config import REPO_ROOT, PipelineConfig

RESULTS = REPO_ROOT / "bench" / "results"


@contextlib.contextmanager
def workdir(name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def tree_cpu_s(pid: int, root: bool = True) -> float:
    """CPU seconds (user + system) of process ``pid`` (unless not ``root``) and every process below it. A process
    that exited and was reaped counts through its parent's children times, so a difference of two readings misses
    no work (only a process whose parent has not reaped it yet is missed)."""
    import psutil

    top = psutil.Process(pid)
    total = 0.0
    for proc in [top, *top.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = proc.cpu_times()
            total += t.children_user + t.children_system + (t.user + t.system if root or proc is not top else 0.0)
    return total


def _jvm_pid(spark) -> int:
    return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())


def process_cpu_s(spark=None) -> float:
    """CPU seconds (user + system) of this process and, given a local session, of its Spark JVM and every
    process below it: the Python daemon and the workers that run mapInArrow and UDFs.

    On a shared machine wall time swings with other jobs' load; CPU time is the steadier
    measure of the work a step needs, so both are recorded.
    """
    total = time.process_time()
    if spark is not None:
        total += tree_cpu_s(_jvm_pid(spark))
    return total


def python_workers_cpu_s(spark) -> float:
    """CPU seconds of the processes below a local session's JVM: its Python daemon and workers."""
    return tree_cpu_s(_jvm_pid(spark), root=False)


def jvm_peak_rss_mb(spark) -> float:
    """Peak resident memory of the local Spark JVM so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{_jvm_pid(spark)}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def jvm_heap_limit_mb(spark) -> float:
    """The heap limit the local Spark JVM runs with (Runtime.maxMemory: the driver memory setting, less
    one survivor space under the parallel collector), in MiB. The heap cannot grow past it: a job that
    needed more would fail with OutOfMemoryError rather than finish."""
    return spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20


def cold_python(script: str, *argv: str) -> tuple[float, float]:
    """(wall s, CPU s) of ``script`` run by a fresh interpreter with ``argv``, as an Airflow task runs a step:
    start-up, imports and first-call compilation count. The script prints its CPU seconds as the last line
    (``{"cpu_s": ...}``, from ``process_cpu_s``)."""
    import subprocess
    import sys

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *argv], cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold step {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])["cpu_s"]


def cpu_timed(fn: Callable[[], Any], spark=None) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process and the Spark JVM)."""
    cpu0 = process_cpu_s(spark)
    out, wall = timed(fn)
    return out, wall, process_cpu_s(spark) - cpu0


def spark_session(cfg: PipelineConfig):
    """The process's one SparkSession (build_session's getOrCreate), tuned as the jobs get it."""
    from spark_jobs.session import build_session

    return build_session(cfg, "bench")


def local_cores(cfg: PipelineConfig) -> int:
    m = re.fullmatch(r"local\[(\d+|\*)\]", cfg.spark.master)
    if m and m.group(1) != "*":
        return int(m.group(1))
    return os.cpu_count() or 1


def r(x: float, nd: int = 2) -> float:
    return round(float(x), nd) if x is not None and math.isfinite(x) else float("nan")


def run_metrics(cfg: PipelineConfig, run_id: str) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(final metrics, per-epoch train/samples_per_s history) of an MLflow run."""
    from mlflow import MlflowClient

    from tasks.evaluate import TRAIN_SAMPLES_PER_S

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    hist = client.get_metric_history(run_id, TRAIN_SAMPLES_PER_S)
    return client.get_run(run_id).data.metrics, [m.value for m in sorted(hist, key=lambda m: m.step)]


@contextlib.contextmanager
def env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "measured_on": dt.date.today().isoformat(), "machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def markdown_table(rows: list[dict]) -> list[str]:
    cols = list(rows[0])
    return [
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(str(row[c]) for c in cols) + " |" for row in rows),
        "",
    ]


def write_summary() -> Path:
    lines = ["# Benchmark results", "", "Generated by `make bench`; one section per benchmark (latest run).", ""]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        lines += [f"## {data['benchmark']}", "", data.get("description", ""), ""]
        if data.get("table"):
            lines += markdown_table(data["table"])
        for extra in data.get("tables", []):
            lines += [extra["title"] + ":", "", *markdown_table(extra["rows"])]
        for note in data.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    out = RESULTS / "SUMMARY.md"
    out.write_text("\n".join(lines))
    return out
