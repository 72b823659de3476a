"""A pipeline step's process: how an orchestrating command runs one (``run_step``), and its garbage-collector
policy (it imports large libraries once, runs one step, exits).

CPython's cyclic collector rescans every tracked object on each full collection, and the interpreter runs one
more as it exits. A validation gate imports Great Expectations: about 500K tracked objects, nearly all alive
until the process ends. Collections during that import took a large share of its time, and the one at exit
a noticeable pause, while finding almost nothing to free; with the import run by ``long_lived_imports`` the exit
collection all but disappears.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.config import PipelineConfig


def run_step(
    cfg: PipelineConfig, module: str, *args: str, stderr: IO[str] | int | None = None
) -> subprocess.CompletedProcess:
    """Run one step's CLI (``python -m <module> ...``) in its own process with exactly ``cfg``, the way the
    DAGs run a Spark job: the caller orchestrates and imports no Spark job. Its stdout is returned; its
    stderr (the step's log) goes to ``stderr`` (default: this process's)."""
    from tasks.config import REPO_ROOT

    with tempfile.TemporaryDirectory(prefix="step-config-") as tmp:
        config_file = Path(tmp) / "pipeline.json"
        # JSON is YAML: the step loads this as its --config, so it sees the caller's config, overrides included.
        config_file.write_text(json.dumps(cfg.model_dump(mode="json")))
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return subprocess.run(
            [sys.executable, "-m", module, *args, "--config", str(config_file)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": pythonpath},
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
        )


@contextmanager
def long_lived_imports() -> Iterator[None]:
    """Imports of modules that stay loaded until the process ends, run with the cyclic collector paused; the
    objects then alive are frozen (``gc.freeze``: later collections, the one at exit included, skip them).

    Freezes only when the block loaded a new module, so a long-lived process (a test session) that enters it
    again with everything imported freezes nothing more.
    """
    loaded = len(sys.modules)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > loaded:
            gc.freeze()
        if was_enabled:
            gc.enable()
