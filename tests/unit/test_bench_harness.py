"""bench.harness.tree_cpu_s: the CPU seconds of a process tree, which the benchmarks' CPU ratios rest on (a Spark
job's Python workers are processes below the JVM)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.harness import tree_cpu_s

# Burns about 0.4 CPU seconds, then says so through the file named by argv[1] and sleeps until killed.
BURN = (
    "import sys, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.4:\n"
    "    pass\n"
    "open(sys.argv[1], 'w').close()\n"
    "time.sleep(60)\n"
)
# Burns about 0.2 CPU seconds itself (its start-up alone may be below one clock tick), runs BURN in a grandchild
# and waits for it (so its CPU is in this process's children times), then runs another BURN that stays alive below
# it.
PARENT = (
    "import subprocess, sys, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.2:\n"
    "    pass\n"
    "done = sys.argv[1]\n"
    "subprocess.run([sys.executable, '-c', sys.argv[2].replace('time.sleep(60)', ''), done + '.first'])\n"
    "subprocess.run([sys.executable, '-c', sys.argv[2], done])\n"
)


def _wait_for(path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_counts_live_and_reaped_descendants(tmp_path):
    done = tmp_path / "burned"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(done), BURN])
    try:
        _wait_for(done)
        # The reaped grandchild's 0.4 s and the live one's 0.4 s, each at least, and the parent's own 0.2 s.
        assert tree_cpu_s(parent.pid) >= 0.95
        # Below the parent only: the same burns, without the parent's own.
        below = tree_cpu_s(parent.pid, root=False)
        assert 0.75 <= below <= tree_cpu_s(parent.pid) - 0.15
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
