"""One torchrun job (``python -m tasks.train``, ``tasks.pretrain``) as a subprocess: output streamed, failures reported
by their root cause, the result file read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import yaml

from tasks.config import ENV_OVERRIDES, REPO_ROOT, PipelineConfig
from tasks.training.data import TrainingError

# A worker's final exception line, as torchrun relays it ("[rank0]: ValueError: ...").
_ERROR_LINE = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b[^:]*:\s")
_COLLATERAL = re.compile(r"gloo|Connection (reset|closed)|NCCL|ProcessGroup|timed out", re.I)


def error_lines(lines: list[str]) -> list[str]:
    """The workers' exception lines in ``lines``, root causes before the transport errors they set off
    (a rank that fails takes its peers down with those)."""
    causes = [line.strip() for line in lines if _ERROR_LINE.match(line) and "ChildFailedError" not in line]
    return [c for c in causes if not _COLLATERAL.search(c)] + [c for c in causes if _COLLATERAL.search(c)]


def run_torchrun(
    cfg: PipelineConfig,
    training_set_dir: Path,
    *,
    model_type: str | None = None,
    epochs: int | None = None,
    nproc: int,
    allow_unvalidated: bool = False,
    fault_after_epoch: int | None = None,
    parent_run_id: str | None = None,
    trial: bool = False,
    register: bool = True,
) -> dict[str, Any]:
    """One torchrun training (``trial``: scored on validation only, nothing registered); its result JSON."""
    args = ["--training-set", str(training_set_dir)]
    if model_type:
        args += ["--model-type", model_type]
    if epochs:
        args += ["--epochs", str(epochs)]
    if allow_unvalidated:
        args += ["--allow-unvalidated"]
    if fault_after_epoch:
        args += ["--fault-after-epoch", str(fault_after_epoch)]
    if parent_run_id:
        args += ["--parent-run-id", parent_run_id]
    if trial:
        args += ["--trial"]
    if not register:
        args += ["--no-register"]
    return run_module(cfg, "tasks.train", args, nproc=nproc, what="training")


def run_module(cfg: PipelineConfig, module: str, args: list[str], *, nproc: int, what: str) -> dict[str, Any]:
    """``python -m <module> <args> --output JSON --config YAML`` in ``nproc`` torchrun processes on this node,
    output streamed; the result JSON that rank 0 wrote (with "output": its path). ``what`` names the job in
    errors. The child gets exactly ``cfg``, dumped to a YAML file under ``paths.runs_dir``."""
    runs = cfg.paths.runs_dir
    runs.mkdir(parents=True, exist_ok=True)
    token = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    stem = module.rsplit(".", 1)[-1]
    cfg_file = runs / f"{stem}-{token}.config.yaml"
    output = runs / f"{stem}-{token}.json"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        str(cfg.training.max_restarts),
        "-m",
        module,
        *args,
        "--output",
        str(output),
        "--config",
        str(cfg_file),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES and k != "PIPELINE_CONFIG"}
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *inherited])
    env.setdefault("OMP_NUM_THREADS", "1")
    # The DAG's task process turns MLflow's own log handler off (dags/_wiring.py: its stderr would read as ERROR
    # there); the workers' output comes back on stdout, where MLflow's handler keeps alembic's INFO chatter out.
    env.pop("MLFLOW_CONFIGURE_LOGGING", None)
    tail: deque[str] = deque(maxlen=40)
    lines: list[str] = []
    try:
        with subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                tail.append(line)
                if _ERROR_LINE.match(line):
                    lines.append(line)
            rc = proc.wait()
    finally:
        cfg_file.unlink(missing_ok=True)
    if rc != 0:
        cause = (error_lines(lines) or ["see the output above"])[0]
        raise TrainingError(f"torchrun {what} exited with status {rc}: {cause}\nlast output:\n{''.join(tail)}")
    if not output.is_file():
        raise TrainingError(f"torchrun {what} succeeded but wrote no result file {output}")
    return {**json.loads(output.read_text()), "output": str(output)}
