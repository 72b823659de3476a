"""Run the Airflow CLI against this project: AIRFLOW_HOME under var/, the repo's dags/, SQLite metadata.

``python -m tasks.airflow_env standalone``      the local UI (make airflow)
``python -m tasks.airflow_env dags test ID DATE`` any other airflow command, same environment
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tasks.config import REPO_ROOT, PipelineConfig, load_config


def airflow_env(cfg: PipelineConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an Airflow process serving this project's DAGs."""
    env = dict(os.environ if base is None else base)
    home = cfg.paths.airflow_home
    home.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
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
    return env


def airflow(cfg: PipelineConfig, *args: str, env: dict[str, str] | None = None, check: bool = True) -> int:
    """Run one ``airflow`` CLI command with the project's environment; its output streams through."""
    full_env = airflow_env(cfg, env)
    cmd = [str(Path(sys.executable).parent / "airflow"), *args]
    proc = subprocess.run(cmd, env=full_env, cwd=REPO_ROOT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`airflow {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc.returncode


def ensure_db(cfg: PipelineConfig, env: dict[str, str] | None = None) -> None:
    """Create or upgrade the SQLite metadata database (idempotent)."""
    airflow(cfg, "db", "migrate", env=env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = load_config()
    if not argv:
        print(__doc__)
        return 2
    if argv == ["standalone"]:
        ensure_db(cfg)
        print(
            "Airflow UI: http://localhost:8080 — log in as 'admin' with the password printed below "
            f"(also saved in {cfg.paths.airflow_home}/simple_auth_manager_passwords.json.generated)."
        )
        return airflow(cfg, "standalone", check=False)
    return airflow(cfg, *argv, check=False)


if __name__ == "__main__":
    sys.exit(main())
