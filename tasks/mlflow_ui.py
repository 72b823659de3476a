"""`make mlflow-ui`: the MLflow UI on the project's tracking and registry store."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tasks.config import add_common_args, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    uri = cfg.mlflow.resolved_tracking_uri
    print(f"MLflow UI on http://{args.host}:{args.port} (store: {uri}); Ctrl-C stops it.", flush=True)
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        cfg.mlflow.artifact_location,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    os.execv(cmd[0], cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
