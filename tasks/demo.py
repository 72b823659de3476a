"""`make demo`: generate a synthetic log, run the real DAGs through Airflow, and print where everything landed.

Steps: generate the log into the drop zone -> build the JVM class archive every Spark driver maps to start
faster (spark_jobs.class_archive; once) -> land and clean every generated day (the events history the
features need; the Spark steps run as their CLIs in their own processes, as the DAGs run them) -> start
Airflow's api-server, scheduler and dag-processor in the background (tasks.airflow_env.AirflowStack) -> if no
``@champion`` exists, a manual run of ``purchase_intent_training`` -> a manual run of
``purchase_intent_nightly`` for the day after the latest generated day -> stop Airflow -> a summary.

The runs are real DAG runs (LocalExecutor, the metadata under var/airflow), as `make airflow` shows them later;
a logical date holds one run per DAG, so a rerun of the demo clears and reruns that date's run, and every step
replaces its own partition: the day's rows exist exactly once. The terminal gets one line per step; the
libraries' output goes to the log file the demo names (var/demo.log).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tasks.config import REPO_ROOT, PipelineConfig, add_common_args, config_from_args
from tasks.layers import class_archive_path, incoming_dir
from tasks.mlflow_ui import runs_link
from tasks.process import run_step

TRAINING_DAG = "purchase_intent_training"
NIGHTLY_DAG = "purchase_intent_nightly"
# A non-TTY terminal (CI, a pipe) gets a "still running" line after this long, and the gap doubles every second
# line (1, 2, 4, 6, 10, 14 ... minutes), so even a step slowed down many times on a busy machine stays a few lines.
QUIET_PROGRESS_EVERY_S = 60.0


class DemoFailed(Exception):
    """A step failed: ``reason`` is its one line, ``log`` the file that says more."""

    def __init__(self, reason: str, log: Path | None = None):
        super().__init__(reason)
        self.reason = reason
        self.log = log


def fmt_duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Console:
    """The demo's terminal: one line per step (redrawn in place on a TTY), everything else in the log file."""

    def __init__(self, out: IO[str], log_path: Path, total_steps: int):
        self.out = out
        self.tty = out.isatty()
        self.log_path = log_path
        self.total = total_steps
        self.n = 0
        self.detail = ""
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            self.out.write(("\r\033[K" if self.tty else "") + text + "\n")
            self.out.flush()

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[dict[str, str]]:
        """One step: ``result['done']`` set by the body becomes the step's closing words."""
        self.n += 1
        label = f"[{self.n}/{self.total}] {title}"
        started = time.monotonic()
        self.detail = ""
        stop = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(label, started, stop), daemon=True)
        ticker.start()
        print(f"\n===== {label}", flush=True)
        result: dict[str, str] = {}
        try:
            yield result
        except BaseException:
            stop.set()
            ticker.join()
            self.line(f"{label}: FAILED after {fmt_duration(time.monotonic() - started)}")
            raise
        stop.set()
        ticker.join()
        done = result.get("done", "done")
        self.line(f"{label}: {done} ({fmt_duration(time.monotonic() - started)})")

    def _tick(self, label: str, started: float, stop: threading.Event) -> None:
        shown = 0
        while not stop.wait(1.0 if self.tty else QUIET_PROGRESS_EVERY_S * 2 ** (shown // 2)):
            shown += 1
            elapsed = fmt_duration(time.monotonic() - started)
            detail = f": {self.detail}" if self.detail else ""
            with self._lock:
                if self.tty:
                    self.out.write(f"\r\033[K{label}{detail} ... {elapsed}")
                else:
                    self.out.write(f"  still running: {label}{detail} ({elapsed})\n")
                self.out.flush()


@contextlib.contextmanager
def output_to_log(log_path: Path) -> Iterator[IO[str]]:
    """Send this process's stdout and stderr (and every child's, which inherit them) to ``log_path``;
    yields the terminal's stdout for the demo's own lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved_out), "w", buffering=1)
    with open(log_path, "w", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            terminal.close()


# In the drop zone beside a generated log: the generator config it was generated with (generator_stamp).
GENERATOR_STAMP = ".generator-config"


def generator_stamp(cfg: PipelineConfig) -> str:
    """What the drop zone's ``.generator-config`` holds when its log is the one ``cfg.generator`` describes."""
    return hashlib.sha1(json.dumps(cfg.generator.model_dump(), sort_keys=True).encode()).hexdigest()


def generate_if_needed(cfg: PipelineConfig) -> str:
    from tasks.sources.synthetic import generate

    out = incoming_dir(cfg, "synthetic")
    stamp = out / GENERATOR_STAMP
    if stamp.exists() and stamp.read_text() == generator_stamp(cfg):
        print(f"synthetic log already generated in {out} (same generator config)")
        return "already generated"
    report = generate(cfg.generator, out, cfg.pipeline.timezone)
    stamp.write_text(generator_stamp(cfg))
    print(report)
    return f"{report.n_events:,} events of {report.n_active_users:,} active users"


def backfill_events(cfg: PipelineConfig, first: dt.date, last: dt.date) -> None:
    """Land and clean every generated day, so the nightly run finds its lookback history."""
    from tasks.land import land_day

    day = first
    while day <= last:
        land_day(cfg, day, "synthetic")
        day += dt.timedelta(days=1)
    # One Spark driver for the whole range (spark_jobs.clean_events --from/--to); it ends with its process,
    # so no JVM is left holding memory when training and the Airflow runs start theirs.
    done = run_step(
        cfg, "spark_jobs.clean_events", "--from", first.isoformat(), "--to", last.isoformat(), "--source", "synthetic"
    )
    print(done.stdout, flush=True)
    if done.returncode != 0:
        raise DemoFailed(f"spark_jobs.clean_events exited with code {done.returncode}")


def class_archive_if_needed(cfg: PipelineConfig) -> str:
    path = class_archive_path(cfg)
    if path is None:
        return "spark.class_archive is null: Spark drivers start without one"
    if path.is_file():
        return "exists (make jvm-archive rebuilds it after a Java or pyspark upgrade)"
    done = run_step(cfg, "spark_jobs.class_archive")
    print(done.stdout, flush=True)
    if done.returncode == 0:
        return "built (once; Spark drivers start faster)"
    # Only start-up time depends on it: the demo goes on without.
    return f"not built (spark_jobs.class_archive exit code {done.returncode}); Spark drivers start slower"


def run_dag(console: Console, stack, dag_id: str, ds: dt.date, timeout_s: float) -> str:
    """A real manual run of ``dag_id`` for cutoff ``ds``, waited for; returns the run id."""
    from tasks.airflow_env import failure_reason

    run_id = stack.start_run(dag_id, ds)

    def show(running: list[str]) -> None:
        console.detail = ", ".join(running) if running else "queued"

    result = stack.wait_run(dag_id, run_id, timeout_s=timeout_s, on_poll=show)
    if result.state != "success":
        task, log = result.failed[0] if result.failed else ("?", None)
        raise DemoFailed(f"{dag_id} run {run_id}: task {task} failed: {failure_reason(log)}", log)
    return run_id


def _shell_prefix(config_args: list[Path] | None) -> str:
    """How the printed commands see the config the demo ran with."""
    if not config_args:
        return ""
    return f"PIPELINE_CONFIG={shlex.quote(os.pathsep.join(str(p) for p in config_args))} "


def summary_commands(cfg: PipelineConfig, ds: dt.date, config_args: list[Path] | None = None) -> list[str]:
    """The commands the summary offers, each runnable as printed from the repository root."""
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    python = ".venv/bin/python" if venv_python.exists() else shlex.quote(sys.executable)
    env = _shell_prefix(config_args)
    w = cfg.warehouse
    top = f"select user_id, round(p_purchase, 4) as p_purchase, reasons from {w.table} where ds = '{ds}'"
    daily = f"select * from {w.summary_view} order by ds"
    health = f"select * from {w.health_view}"
    # In double quotes, so the SQL reads as typed; these queries hold no character a shell expands there.
    return [
        f'{env}{python} -m tasks.warehouse sql "{top} order by 2 desc limit 10"',
        f'{env}{python} -m tasks.warehouse sql "{daily}"',
        f'{env}{python} -m tasks.warehouse sql "{health}"',
        f"{env}make airflow     # Airflow UI, http://localhost:8080 (user admin, password printed at start)",
        f"{env}make mlflow-ui   # MLflow UI, http://localhost:5000",
    ]


def outcome_line(cfg: PipelineConfig, wh) -> str:
    """The latest realized metrics of the champion's scores, or why there are none yet."""
    days = wh.outcome_days()
    if not days:
        return f"none yet: a scored day is judged once its {cfg.features.horizon_days}-day label window has closed"
    row = next(r for r in wh.outcomes(days[-1]) if r["role"] == "champion")

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    return (
        f"ds={row['ds']} v{row['model_version']}: {row['n_buyers']} of {row['n_users']} scored users bought; "
        f"purchase ROC-AUC {fmt(row['purchase_roc_auc'])}, PR-AUC {fmt(row['purchase_pr_auc'])}, "
        f"ECE {fmt(row['purchase_ece'])}, recall in top {row['top_fraction']:.0%} {fmt(row['recall_top'])} "
        f"(table {cfg.warehouse.outcomes_table}, view {cfg.warehouse.health_view})"
    )


def run(cfg: PipelineConfig, console: Console, config_args: list[Path] | None = None) -> None:
    from tasks.airflow_env import AirflowStack
    from tasks.registry import champion
    from tasks.warehouse import Warehouse

    if cfg.pipeline.source != "synthetic":
        raise DemoFailed(f"make demo generates a synthetic log; pipeline.source is {cfg.pipeline.source!r}")
    started = time.monotonic()
    first = cfg.generator.start
    last = first + dt.timedelta(days=cfg.generator.n_days - 1)
    ds = last + dt.timedelta(days=1)
    runs: list[str] = []

    with console.step(f"synthetic log: {cfg.generator.n_users} users, {cfg.generator.n_days} days from {first}") as r:
        r["done"] = generate_if_needed(cfg)
    with console.step("JVM class archive for faster Spark start-up") as r:
        r["done"] = class_archive_if_needed(cfg)

    stack_log = cfg.paths.airflow_home / "logs" / "demo-services.log"
    stack_log.parent.mkdir(parents=True, exist_ok=True)
    with open(stack_log, "w", buffering=1) as services_log, AirflowStack(cfg, services_log) as stack:
        # Airflow migrates its database and starts while the history is cleaned.
        with console.step(f"land and clean the events history {first} .. {last}") as r:
            backfill_events(cfg, first, last)
            r["done"] = f"{cfg.generator.n_days} days"
        with console.step("start Airflow: api-server, scheduler, dag-processor") as r:
            print(f"Airflow components' output: {stack_log}", flush=True)
            stack.wait_ready((TRAINING_DAG, NIGHTLY_DAG))
            stack.unpause_for_block(TRAINING_DAG)
            stack.unpause_for_block(NIGHTLY_DAG)
            r["done"] = f"ready on port {stack.port}"
        current = champion(cfg)
        if current is None:
            with console.step(f"{TRAINING_DAG} for {ds} (no @{cfg.mlflow.champion_alias} yet)") as r:
                run_id = run_dag(console, stack, TRAINING_DAG, ds, timeout_s=3600)
                runs.append(f"{TRAINING_DAG}/{run_id}")
                current = champion(cfg)
                if current is None:
                    raise DemoFailed(
                        "training finished but no model is @champion: the candidate did not pass the gate "
                        f"(gate.min_auc={cfg.gate.min_auc}); see the gate task's log and the version tags in MLflow"
                    )
                family = (current.tags or {}).get("model_type", "?")
                r["done"] = (
                    f"success, version {current.version} ({family}, chosen on validation of "
                    f"{', '.join(cfg.training.candidates)}) is @{cfg.mlflow.champion_alias}"
                )
        else:
            with console.step(f"{TRAINING_DAG} skipped") as r:
                r["done"] = f"version {current.version} is already @{cfg.mlflow.champion_alias}"
        with console.step(f"{NIGHTLY_DAG} for ds={last} (scores the last generated day)") as r:
            run_id = run_dag(console, stack, NIGHTLY_DAG, last, timeout_s=3600)
            runs.append(f"{NIGHTLY_DAG}/{run_id}")
            r["done"] = "success"
        with console.step(f"{NIGHTLY_DAG} for ds={ds} (scores the day after {last}, judges ds={last})") as r:
            run_id = run_dag(console, stack, NIGHTLY_DAG, ds, timeout_s=3600)
            runs.append(f"{NIGHTLY_DAG}/{run_id}")
            r["done"] = "success"
        with console.step("stop Airflow") as r:
            stack.close()
            r["done"] = "every process it started is stopped; the DAGs' paused state is restored"

    wh = Warehouse.from_config(cfg)
    rows = wh.row_count(ds)
    top = ", ".join(f"{u} {p:.3f}" for u, p in wh.top_users(ds, 3))
    where = cfg.warehouse.duckdb_path if cfg.warehouse.backend == "duckdb" else cfg.warehouse.url
    console.line()
    console.line(f"demo finished in {fmt_duration(time.monotonic() - started)}; full log: {console.log_path}")
    console.line(f"  scores:  {rows} rows for ds={ds} in {where}, table {cfg.warehouse.table}; top: {top}")
    console.line(f"  outcome: {outcome_line(cfg, wh)}")
    console.line(
        f"  model:   models:/{cfg.mlflow.model_name}@{cfg.mlflow.champion_alias} = version {current.version}"
        f" ({(current.tags or {}).get('model_type', '?')}; MLflow run {current.run_id})"
    )
    console.line(f"  Airflow: runs {', '.join(runs)}; Clear a run in the UI to run its date again")
    console.line(f"  MLflow:  training runs at {runs_link(cfg, cfg.mlflow.ui_url)} (with make mlflow-ui running)")
    console.line("next:")
    for command in summary_commands(cfg, ds, config_args):
        console.line(f"  $ {command}")


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    log_path = cfg.paths.var / "demo.log"
    # SIGTERM ends the demo like Ctrl-C, so the Airflow processes it started are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with output_to_log(log_path) as terminal:
        console = Console(terminal, log_path, total_steps=8)
        console.line(f"purchase-intent demo (10 to 20 minutes on 2 cores); full log: {log_path}")
        try:
            run(cfg, console, args.config)
        except DemoFailed as e:
            print(f"DEMO FAILED: {e.reason}", flush=True)
            console.line(f"demo failed: {e.reason}")
            if e.log is not None:
                console.line(f"  task log: {e.log}")
            console.line(f"  full log: {log_path}")
            return 1
        except KeyboardInterrupt:
            console.line(f"demo interrupted; every process it started is stopped. Full log: {log_path}")
            return 130
        except Exception as e:
            import traceback

            traceback.print_exc()
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            console.line(f"demo failed: {type(e).__name__}: {reason}")
            console.line(f"  full log (traceback at its end): {log_path}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
