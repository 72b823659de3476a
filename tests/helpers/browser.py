"""The browser test's pieces: Debian's chromium, the UIs started the way `make airflow` and `make mlflow-ui` start
them, and screenshots of each step (tests/e2e/test_browser.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tasks.config import REPO_ROOT

CHROMIUM_MISSING = (
    "chromium not found on PATH: the browser test drives Debian's chromium headless "
    "(`apt-get install chromium`; .ci/run installs it in CI)"
)


def chromium_path() -> str:
    """Debian's chromium; a skip without it, a failure in CI (CI=true), where .ci/run installs it."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM_MISSING}; CI must have it")
        pytest.skip(CHROMIUM_MISSING)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no output)"


def _get(url: str) -> bytes | None:
    """The body at ``url``; None while nothing answers there. An HTTP error status is an answer (empty body)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.read()
    except urllib.error.HTTPError:
        return b""
    except OSError:
        return None


def wait_until(what: str, check: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``check()`` until it holds; fail early, with the server's log, when the server exits."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            pytest.fail(f"{what}: the server exited {proc.returncode} first\n--- its output (tail)\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s\n--- server output (tail)\n{_log_tail(log)}")
        time.sleep(0.5)


def _signal(pgid: int, procs: list[psutil.Process], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    for child in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(sig)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started by `serve` and everything it started: its process group, and the descendants
    that left it (Airflow runs each task in a process group of its own); SIGKILL what outlives a grace period."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    _signal(proc.pid, descendants, signal.SIGTERM)
    _, alive = psutil.wait_procs(descendants, timeout=15)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    if alive or proc.poll() is None:
        _signal(proc.pid, alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=15)
    proc.wait()


@contextmanager
def serve(environ: dict[str, str], args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """``python <args>`` from the repo root in a session of its own, output into ``log``; always stopped."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=environ,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc)


def airflow_ready(base_url: str) -> Callable[[], bool]:
    """The check for `wait_until`: the API answers and its health check sees a scheduler, a DAG processor and
    a triggerer heartbeating (a run triggered before would wait for them, and its time limit with it)."""

    def check() -> bool:
        body = _get(f"{base_url}/api/v2/monitor/health")
        try:
            health = json.loads(body or b"{}")
        except ValueError:
            return False
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return all((health.get(part) or {}).get("status") == "healthy" for part in parts)

    return check


def answers(url: str) -> Callable[[], bool]:
    """The check for `wait_until`: anything answers HTTP at ``url``."""
    return lambda: _get(url) is not None


class Steps:
    """Names each step of a browser session and screenshots the page after it, into ``out``: the pictures to
    look at when the test fails (the failure message names the last step and the page's address)."""

    def __init__(self, page, out: Path):
        self.page = page
        self.out = out
        self.done: list[str] = []
        out.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.done.append(name)
        self.page.screenshot(path=str(self.out / f"{len(self.done):02d}-{name}.png"), full_page=True)

    def context(self) -> str:
        last = self.done[-1] if self.done else "(none)"
        return f"last step done: {last}; page: {self.page.url}; screenshots: {self.out}"

    @contextmanager
    def recording(self, *notes: str) -> Iterator[None]:
        """Screenshot the page as a failure left it, name the step it failed after, and add ``notes``."""
        try:
            yield
        except Exception as err:
            try:
                self.page.screenshot(path=str(self.out / "failure.png"), full_page=True)
            except Exception as shot_err:  # the page itself may be what broke
                err.add_note(f"(no failure screenshot: {shot_err})")
            for note in (self.context(), *notes):
                err.add_note(note)
            raise
