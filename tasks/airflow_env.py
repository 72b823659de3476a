"""Run Airflow against this project: AIRFLOW_HOME under var/, the repo's dags/, SQLite metadata (or the database
that AIRFLOW__DATABASE__SQL_ALCHEMY_CONN names).

``python -m tasks.airflow_env standalone``         the local UI (make airflow)
``python -m tasks.airflow_env dags list-runs ID``  any other airflow command, same environment

``AirflowStack`` runs the components a real DAG run needs (api-server, scheduler, dag-processor) as background
processes for the length of a ``with`` block and triggers runs through the REST API (``make demo``, tests/e2e).
Task slots and worker processes follow ``services`` in conf/pipeline.yaml (the machine's cores by default).
With ``deployment=DEPLOYMENT_ENV`` it runs as docker-compose.yml deploys it (deploy/airflow.env: the CeleryExecutor,
plus an ``airflow celery worker``); the metadata database and the broker come from the environment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tasks.config import REPO_ROOT, PipelineConfig, load_config

FINISHED_STATES = ("success", "failed")
# How long a finished run's DAG-level callback may take to record its state in the run summary.
SUMMARY_WAIT_S = 120.0
# The distributed deployment's Airflow settings, shared with docker-compose.yml (its Airflow services' env_file).
DEPLOYMENT_ENV = REPO_ROOT / "deploy" / "airflow.env"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose env file (comments and blank lines skipped)."""
    settings = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        settings[key.strip()] = value.strip()
    return settings


def airflow_env(cfg: PipelineConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an Airflow process serving this project's DAGs."""
    env = dict(os.environ if base is None else base)
    home = cfg.paths.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    sizes = cfg.services
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # An endpoint: a deployment's database (PostgreSQL) comes from the environment.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get(
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}"
            ),
            "AIRFLOW__CORE__EXECUTOR": env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Sized by conf/pipeline.yaml `services` (the machine's cores by default), not Airflow's server defaults.
            "AIRFLOW__CORE__PARALLELISM": str(sizes.parallelism),
            "AIRFLOW__API__WORKERS": str(sizes.api_workers),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": str(sizes.parsing_processes),
            # spark_default: the Spark master the Spark steps are submitted to (a cluster URL in compose).
            "AIRFLOW_CONN_SPARK_DEFAULT": env.get(
                "AIRFLOW_CONN_SPARK_DEFAULT", json.dumps({"conn_type": "spark", "host": cfg.spark.master})
            ),
            # spark-submit, torchrun and airflow itself come from this virtualenv.
            "PATH": os.pathsep.join([venv_bin, env.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
            "PYTHONUNBUFFERED": "1",
            "MLFLOW_TRACKING_URI": env.get("MLFLOW_TRACKING_URI", cfg.mlflow.resolved_tracking_uri),
        }
    )
    conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if conn.startswith("postgresql+psycopg://") and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in env:
        # psycopg 3 also drives Airflow's async engine, which otherwise wants asyncpg (not installed).
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = conn
    if "AIRFLOW__API__PORT" in env and "AIRFLOW__API__BASE_URL" not in env:
        # Tasks reach the execution API through the base URL, which otherwise stays on port 8080.
        env["AIRFLOW__API__BASE_URL"] = f"http://localhost:{env['AIRFLOW__API__PORT']}"
    return env


def airflow(
    cfg: PipelineConfig,
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    stdout: IO[str] | int | None = None,
) -> int:
    """Run one ``airflow`` CLI command with the project's environment; its output streams to ``stdout``
    (default: this process's)."""
    full_env = airflow_env(cfg, env)
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    proc = subprocess.run(cmd, env=full_env, cwd=REPO_ROOT, stdout=stdout, stderr=subprocess.STDOUT if stdout else None)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`airflow {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc.returncode


def ensure_db(cfg: PipelineConfig, env: dict[str, str] | None = None, stdout: IO[str] | int | None = None) -> None:
    """Create or upgrade the metadata database (idempotent)."""
    airflow(cfg, "db", "migrate", env=env, stdout=stdout)


class AirflowError(RuntimeError):
    """Airflow did not come up, refused a request or a run did not finish."""


@dataclass(frozen=True)
class RunResult:
    dag_id: str
    run_id: str
    state: str
    duration_s: float
    # (task_id, log file) of each failed task, first failure first.
    failed: list[tuple[str, Path | None]]


def _die_with_parent() -> None:
    """In a component's process before it runs: SIGTERM when the thread that started it ends, also when the
    demo is SIGKILLed (Linux PR_SET_PDEATHSIG), so no Airflow process outlives the one that started it."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _midnight(day: dt.date, cfg: PipelineConfig) -> dt.datetime:
    """A cutoff day as the logical date the DAGs map back to it (local_ds): midnight in the pipeline's zone."""
    return dt.datetime.combine(day, dt.time(), tzinfo=cfg.pipeline.tz)


class AirflowStack:
    """api-server, scheduler and dag-processor (and a Celery worker under the CeleryExecutor) in the background
    for a ``with`` block.

    Each component starts in its own process group and is stopped by its PID's group (SIGTERM, then SIGKILL)
    when the block ends, also on an exception or Ctrl-C, so no worker or task process outlives it. The
    api-server listens on a free local port, so a running ``make airflow`` is not disturbed. The scheduler
    creates no scheduled runs (``use_job_schedule`` off): only the runs triggered here run, also while a DAG
    is unpaused for them. Output goes to ``log``. ``deployment``: an env file of Airflow settings applied over
    the local ones (``DEPLOYMENT_ENV``: as docker-compose.yml runs it; the metadata database and the Celery broker
    must then be in ``env``).
    """

    def __init__(
        self,
        cfg: PipelineConfig,
        log: IO[str],
        env: dict[str, str] | None = None,
        start_timeout_s: float = 300,
        deployment: Path | None = None,
    ):
        self.cfg = cfg
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.start_timeout_s = start_timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="airflow-stack-")
        self._config_file = Path(self._tmp.name) / "pipeline.json"
        self.set_config(cfg)
        self.env = airflow_env(cfg, env)
        self.env.update(
            {
                "PIPELINE_CONFIG": str(self._config_file),
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__BASE_URL": self.base,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            }
        )
        if deployment is not None:
            self.env.update(read_env_file(deployment))
        self.executor = self.env["AIRFLOW__CORE__EXECUTOR"]
        self.components: tuple[str, ...] = ("api-server", "scheduler", "dag-processor")
        if self.executor == "CeleryExecutor":
            missing = [
                key
                for key in ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
                if key not in (env or os.environ)
            ]
            problem = None
            if missing:
                problem = f"the CeleryExecutor needs {missing[0]} in the environment (an endpoint)"
            elif self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
                problem = "the CeleryExecutor needs a server database (PostgreSQL), not SQLite"
            if problem:
                self._tmp.cleanup()
                raise AirflowError(problem)
            self.components += ("celery worker",)
        self.procs: dict[str, subprocess.Popen] = {}
        # Wall-clock start (UTC): Airflow's records of this stack's components (its jobs) begin after it.
        self.started_at = dt.datetime.now(dt.UTC)
        self._starter: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._stopping = False
        self._stop_requested = threading.Event()
        self._token: str | None = None
        self._paused: dict[str, bool] = {}
        self._active: set[tuple[str, str]] = set()

    def __enter__(self) -> AirflowStack:
        # Migrating and spawning happen beside the caller's next work; wait_ready() joins them.
        self._starter = threading.Thread(target=self._start, name="airflow-stack-start", daemon=True)
        self._starter.start()
        return self

    def _start(self) -> None:
        try:
            ensure_db(self.cfg, env=self.env, stdout=self.log)
            for name in self.components:
                if self._stopping:
                    return
                self._spawn(name)
        except BaseException as e:  # noqa: BLE001  (handed to wait_ready in the caller's thread)
            self._start_error = e
        # The components' parent-death signal follows this thread (the one that started them): it lives until stop().
        self._stop_requested.wait()

    def _spawn(self, name: str) -> None:
        self.procs[name] = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), *name.split()],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    def set_config(self, cfg: PipelineConfig) -> None:
        """The pipeline config that the stack's DAGs and tasks load, replaced whole (JSON is YAML; overrides and
        endpoint env vars already applied). Tasks started from now on read it; the DAGs' param defaults follow
        at the dag-processor's next parse of their files (``dag_params``)."""
        staged = self._config_file.with_suffix(".staged")
        staged.write_text(json.dumps(cfg.model_dump(mode="json")))
        staged.replace(self._config_file)  # a task starting meanwhile reads the old file or the new, never half
        self.cfg = cfg

    def dag_params(self, dag_id: str) -> dict[str, Any]:
        """Each param's default as the dag-processor's latest parse of ``dag_id`` serialised it."""
        details = self._request("GET", f"/api/v2/dags/{dag_id}/details")
        return {name: param.get("value") for name, param in (details.get("params") or {}).items()}

    def set_scheduling(self, on: bool) -> None:
        """Restart the scheduler so that it creates runs itself (``on``), as a deployed one does: the schedules of
        unpaused DAGs and the runs that asset events start; or again not (the stack starts so: only the runs
        triggered through it run). Call it between runs: the task processes of the old scheduler's executor stop
        with it."""
        self.wait_ready()
        proc = self.procs.pop("scheduler")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = str(on)
        self._spawn("scheduler")
        self._wait_healthy()

    def wait_ready(self, dag_ids: tuple[str, ...] = ()) -> None:
        """Wait until every component is healthy and ``dag_ids`` are parsed."""
        while self._starter is not None and len(self.procs) < len(self.components) and self._start_error is None:
            if not self._starter.is_alive():
                break
            time.sleep(0.2)
        if self._start_error is not None:
            raise AirflowError(f"starting Airflow failed: {self._start_error}") from self._start_error
        self._wait_healthy()
        for dag_id in dag_ids:
            self.wait_for_dag(dag_id)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Mark runs still in flight failed (nothing would execute them after the stop), give each DAG unpaused
        here its paused state back, then stop (idempotent)."""
        try:
            for dag_id, run_id in sorted(self._active):
                with contextlib.suppress(AirflowError, OSError):
                    self._request("PATCH", self._run_path(dag_id, run_id), {"state": "failed"})
            self._active.clear()
            for dag_id, paused in self._paused.items():
                with contextlib.suppress(AirflowError, OSError):
                    self.set_paused(dag_id, paused)
            self._paused.clear()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop every started component with all its children (its process group), SIGKILL after 30 s."""
        self._stopping = True
        self._stop_requested.set()
        if self._starter is not None:
            # At most one `airflow db migrate` away; a component spawned meanwhile is stopped below.
            self._starter.join()
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Children (executor workers, task processes) may outlive a leader that already exited.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs.clear()
        self._tmp.cleanup()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AirflowError(f"airflow {name} exited with code {proc.returncode} (its output is in the log)")

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            self._check_alive()
            with contextlib.suppress(OSError, AirflowError, ValueError):
                health = self._request("GET", "/api/v2/monitor/health", auth=False)
                if all(
                    (health.get(c) or {}).get("status") == "healthy"
                    for c in ("metadatabase", "scheduler", "dag_processor")
                ):
                    return
            if time.monotonic() > deadline:
                raise AirflowError(f"Airflow was not healthy after {self.start_timeout_s:.0f}s")
            time.sleep(1)

    def _login(self) -> str:
        # The simple auth manager writes each user's generated password here when the api-server starts.
        passwords = json.loads(
            (self.cfg.paths.airflow_home / "simple_auth_manager_passwords.json.generated").read_text()
        )
        user = "admin" if "admin" in passwords else next(iter(passwords))
        token = self._request("POST", "/auth/token", {"username": user, "password": passwords[user]}, auth=False)
        return str(token["access_token"])

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            if self._token is None:
                self._token = self._login()
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise AirflowError(f"{method} {path}: HTTP {e.code} {detail}") from e
        return json.loads(raw) if raw else None

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180) -> None:
        """Wait until this stack's dag-processor has parsed ``dag_id``; an import error of its file fails at once.

        A DAG serialised by an earlier stack on the same database does not count: its tasks carry that stack's
        settings (e.g. the Celery queue), and a run created from it would wait for a worker that never comes.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            try:
                parsed = self._request("GET", f"/api/v2/dags/{dag_id}").get("last_parsed_time")
                if parsed and dt.datetime.fromisoformat(parsed) >= self.started_at:
                    return
            except AirflowError as e:
                if "HTTP 404" not in str(e):
                    raise
            errors = self._request("GET", "/api/v2/importErrors").get("import_errors", [])
            if errors:
                first = errors[0]
                reason = str(first.get("stack_trace", "")).strip().splitlines()[-1:] or ["?"]
                raise AirflowError(f"DAG file {first.get('filename')} does not import: {reason[0]}")
            if time.monotonic() > deadline:
                raise AirflowError(f"DAG {dag_id} was not parsed by this stack within {timeout_s:.0f}s")
            time.sleep(1)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def unpause_for_block(self, dag_id: str) -> None:
        """Unpause ``dag_id`` until the block ends (a paused DAG's runs stay queued); its state is restored then."""
        info = self._request("GET", f"/api/v2/dags/{dag_id}")
        self._paused.setdefault(dag_id, bool(info["is_paused"]))
        if info["is_paused"]:
            self.set_paused(dag_id, False)

    @staticmethod
    def _run_path(dag_id: str, run_id: str) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def start_run(self, dag_id: str, day: dt.date, conf: dict | None = None) -> str:
        """A manual run of ``dag_id`` for cutoff ``day``; the date's existing run (one per logical date) is
        cleared and rerun instead. Returns the run id."""
        logical = _midnight(day, self.cfg).isoformat()
        query = urllib.parse.urlencode({"logical_date_gte": logical, "logical_date_lte": logical})
        existing = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}")["dag_runs"]
        if existing:
            run_id = str(existing[0]["dag_run_id"])
            path = self._run_path(dag_id, run_id)
            if existing[0]["state"] not in FINISHED_STATES:
                # Left running by a stopped process: nothing executes it any more.
                self._request("PATCH", path, {"state": "failed"})
            self._request("POST", f"{path}/clear", {"dry_run": False, "run_on_latest_version": True})
        else:
            body = {"dag_run_id": f"demo__{day.isoformat()}", "logical_date": logical, "conf": conf or {}}
            run_id = str(self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"])
        self._active.add((dag_id, run_id))
        return run_id

    def rerun_tasks(self, dag_id: str, run_id: str, task_ids: list[str]) -> None:
        """Clear ``task_ids`` and everything downstream of them in a finished run, as the UI's Clear on a task
        does, so that the run goes on from there (e.g. rescoring a day without cleaning it again)."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "include_downstream": True,
            "only_failed": False,
            "reset_dag_runs": True,
        }
        self._request("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", body)
        self._active.add((dag_id, run_id))

    def dag_runs(self, dag_id: str, **filters: str) -> list[dict[str, Any]]:
        """The runs of ``dag_id`` (the REST API's records), oldest first; ``filters`` are its query parameters
        (e.g. ``run_type="asset_triggered"``)."""
        query = urllib.parse.urlencode({**filters, "order_by": "run_after"})
        return list(self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}")["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's task instances as the REST API describes them (state, start_date, end_date, duration ...)."""
        return list(self._request("GET", f"{self._run_path(dag_id, run_id)}/taskInstances")["task_instances"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Each task's state in the run (None: not scheduled yet)."""
        return {str(t["task_id"]): t["state"] for t in self.task_instances(dag_id, run_id)}

    def running_tasks(self, dag_id: str, run_id: str) -> list[str]:
        """The running task instances, a mapped one as ``<task_id>[<map index>]``."""
        return [
            str(t["task_id"]) + (f"[{t['map_index']}]" if t.get("map_index", -1) >= 0 else "")
            for t in self.task_instances(dag_id, run_id)
            if t["state"] == "running"
        ]

    def queued_asset_events(self, dag_id: str) -> list[dict[str, Any]]:
        """Asset events that count towards ``dag_id``'s next asset-triggered run and have not started one yet."""
        return list(self._request("GET", f"/api/v2/dags/{dag_id}/assets/queuedEvents")["queued_events"])

    def wait_run(
        self,
        dag_id: str,
        run_id: str,
        timeout_s: float,
        on_poll: Callable[[list[str]], None] | None = None,
        poll_s: float = 3,
    ) -> RunResult:
        """Wait for the run to finish; ``on_poll`` gets the running task ids at each poll."""
        path = self._run_path(dag_id, run_id)
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            run = self._request("GET", path)
            if run["state"] in FINISHED_STATES:
                self._active.discard((dag_id, run_id))
                break
            if time.monotonic() > deadline:
                self._request("PATCH", path, {"state": "failed"})
                raise AirflowError(f"{dag_id} run {run_id} did not finish within {timeout_s:.0f}s (marked failed)")
            if on_poll is not None:
                on_poll(self.running_tasks(dag_id, run_id))
            time.sleep(poll_s)
        self._wait_summary(dag_id, run_id, str(run["state"]))
        tis = self.task_instances(dag_id, run_id)
        failed = sorted(
            (t for t in tis if t["state"] in ("failed", "upstream_failed") and t.get("end_date")),
            key=lambda t: (t["state"] != "failed", t["end_date"]),
        )
        start, end = run.get("start_date"), run.get("end_date")
        duration = (
            (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
            if start and end
            else 0.0
        )
        return RunResult(
            dag_id=dag_id,
            run_id=run_id,
            state=str(run["state"]),
            duration_s=duration,
            failed=[(str(t["task_id"]), self.task_log(dag_id, run_id, t["task_id"], t["try_number"])) for t in failed],
        )

    def _wait_summary(self, dag_id: str, run_id: str, state: str, timeout_s: float = SUMMARY_WAIT_S) -> bool:
        """Wait until the run summary holds the run's final state. The DAG-level callback that writes it runs in
        the dag-processor some seconds after the run ends; a caller that stops Airflow right after the run (the
        demo after its last run) would otherwise lose it, and `tasks.run_summary --ds` would find no run."""
        from tasks.run_summary import summaries

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if any(s.get("run_id") == run_id and s.get("state") == state for s in summaries(self.cfg, dag_id)):
                return True
            time.sleep(1)
        print(f"{dag_id} run {run_id}: no run summary with state {state} after {timeout_s:.0f}s", file=self.log)
        return False

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> Path | None:
        path = (
            self.cfg.paths.airflow_home
            / "logs"
            / f"dag_id={dag_id}"
            / f"run_id={run_id}"
            / f"task_id={task_id}"
            / f"attempt={try_number}.log"
        )
        return path if path.is_file() else None


def failure_reason(log_file: Path | None) -> str:
    """The one line that says why a task failed: the pipeline's failure line, else the last error logged."""
    if log_file is None:
        return "no task log"
    last_error = ""
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        text = str(event.get("event", "")).strip()
        if "PIPELINE FAILURE" in text:
            return text.splitlines()[0]
        if str(event.get("level", "")).lower() in ("error", "critical") and text:
            last_error = text.splitlines()[0]
    return last_error or "see the task log"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = load_config()
    if not argv:
        print(__doc__)
        return 2
    if argv == ["standalone"]:
        ensure_db(cfg)
        port = os.environ.get("AIRFLOW__API__PORT", "8080")
        print(
            f"Airflow UI: http://localhost:{port} — log in as 'admin' with the password printed below "
            f"(also saved in {cfg.paths.airflow_home}/simple_auth_manager_passwords.json.generated)."
        )
        return airflow(cfg, "standalone", check=False)
    return airflow(cfg, *argv, check=False)


if __name__ == "__main__":
    sys.exit(main())
