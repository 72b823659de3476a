"""The demo's terminal: one line per step, progress within the line budget, chatter in the log file."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time

import pytest

import tasks.demo as demo
from tasks.airflow_env import failure_reason
from tasks.config import REPO_ROOT
from tasks.demo import Console, DemoFailed, summary_commands
from tests.helpers.config import isolated_config


def test_step_is_one_line_with_its_duration(tmp_path):
    out = io.StringIO()
    console = Console(out, tmp_path / "demo.log", total_steps=2)
    with console.step("first") as r:
        r["done"] = "3 days"
    with console.step("second"):
        pass
    assert out.getvalue().splitlines() == ["[1/2] first: 3 days (0s)", "[2/2] second: done (0s)"]


def test_failed_step_says_so_and_raises(tmp_path):
    out = io.StringIO()
    console = Console(out, tmp_path / "demo.log", total_steps=1)
    with pytest.raises(DemoFailed), console.step("breaks"):
        raise DemoFailed("reason")
    assert out.getvalue().splitlines() == ["[1/1] breaks: FAILED after 0s"]


def test_long_step_reports_progress_when_not_a_tty(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "QUIET_PROGRESS_EVERY_S", 0.1)
    out = io.StringIO()
    console = Console(out, tmp_path / "demo.log", total_steps=1)
    with console.step("slow"):
        console.detail = "train"
        # Lines at 0.1, 0.2, 0.4, 0.6, 1.0 s: the gap doubles every second line.
        time.sleep(1.3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  still running: [1/1] slow: train (0s)"
    assert re.fullmatch(r"\[1/1\] slow: done \([01]s\)", lines[-1])
    assert 4 <= len(lines) - 1 <= 5, lines


def test_output_goes_to_the_log_and_only_console_lines_to_the_terminal(tmp_path):
    log = tmp_path / "demo.log"
    code = (
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        "from tasks.demo import output_to_log\n"
        f"with output_to_log(Path({str(log)!r})) as terminal:\n"
        "    print('library chatter')\n"
        "    print('a warning', file=sys.stderr)\n"
        "    subprocess.run(['echo', 'child output'])\n"
        "    terminal.write('the step line\\n')\n"
        "print('after')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "the step line\nafter\n" and proc.stderr == ""
    assert log.read_text().splitlines() == ["library chatter", "a warning", "child output"]


def test_failure_reason_prefers_the_pipeline_failure_line(tmp_path):
    log = tmp_path / "attempt=1.log"
    events = [
        {"event": "starting", "level": "info"},
        {"event": "Task failed with exception\nTraceback ...", "level": "error"},
        {"event": "PIPELINE FAILURE dag=d task=t logical_date=x reason=DATA ERROR: bad rows", "level": "error"},
        {"event": "later noise", "level": "error"},
    ]
    log.write_text("\n".join(json.dumps(e) for e in events) + "\nnot json\n")
    assert failure_reason(log) == events[2]["event"]
    log.write_text("\n".join(json.dumps(e) for e in events[:2]))
    assert failure_reason(log) == "Task failed with exception"
    assert failure_reason(None) == "no task log"


def test_summary_commands_carry_the_demo_config(tmp_path):
    import datetime as dt

    cfg = isolated_config(tmp_path / "var")
    plain = summary_commands(cfg, dt.date(2026, 1, 15))
    assert plain[0].startswith('.venv/bin/python -m tasks.warehouse sql "select ') and "ds = '2026-01-15'" in plain[0]
    assert any(c.startswith("make airflow") for c in plain) and any(c.startswith("make mlflow-ui") for c in plain)
    overlay = [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    assert all(
        c.startswith(f"PIPELINE_CONFIG={overlay[0]}:{overlay[1]} ")
        for c in summary_commands(cfg, dt.date(2026, 1, 15), overlay)
    )
