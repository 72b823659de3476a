"""`make mlflow-ui`: the MLflow UI on the project's tracking and registry store.

Its worker processes follow ``services.mlflow_ui_workers`` (the machine's cores by default), and the server's
job runner (GenAI jobs such as scorers and prompt optimisation, which this project never submits; seven
resident consumer processes) is off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tasks.config import PipelineConfig, add_common_args, config_from_args


def command(cfg: PipelineConfig, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow ui`` command line and its environment."""
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        cfg.mlflow.resolved_tracking_uri,
        "--default-artifact-root",
        cfg.mlflow.artifact_location,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(cfg.services.mlflow_workers),
    ]
    return cmd, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def runs_link(cfg: PipelineConfig, ui_url: str) -> str | None:
    """The link that opens the training experiment on its runs. MLflow 3.17's UI opens every experiment on
    its GenAI view, whatever the experiment's kind tag, unless the link carries the workflow type."""
    from mlflow import MlflowClient

    from tasks.experiments import experiment_runs_url

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    return experiment_runs_url(client, cfg.mlflow.experiment, ui_url)


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_UI_PORT", "5000")))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    print(
        f"MLflow UI on http://{args.host}:{args.port} (store: {cfg.mlflow.resolved_tracking_uri}); Ctrl-C stops it.",
        flush=True,
    )
    link = runs_link(cfg, f"http://{args.host}:{args.port}")
    if link:
        print(f"training runs of experiment {cfg.mlflow.experiment}: {link}", flush=True)
    cmd, env = command(cfg, args.host, args.port)
    os.execve(cmd[0], cmd, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
