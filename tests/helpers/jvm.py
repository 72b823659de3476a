"""A Spark driver in a fresh interpreter, started with the JVM options the pipeline chooses for a given class
archive (spark_jobs.class_archive), plus any extra: what the JVM says about its class sharing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tasks.config import REPO_ROOT

# argv: var dir, archive path ("" for the config's default under var), extra JVM options.
_DRIVER = """
import sys
from pathlib import Path
from spark_jobs.session import build_session, driver_java_options
from tests.helpers.config import isolated_config
spark_section = {"master": "local[1]", "driver_memory": "1g"}
if sys.argv[2]:
    spark_section["class_archive"] = sys.argv[2]
cfg = isolated_config(Path(sys.argv[1]), spark=spark_section)
spark = build_session(cfg, "archive check", java_options=(driver_java_options(cfg) + " " + sys.argv[3]).strip())
print("rows", spark.range(3).count())
print("vm", spark.sparkContext._jvm.java.lang.System.getProperty("java.vm.info"))
"""


def start_driver(var: Path, archive: Path | None = None, extra: str = "") -> subprocess.CompletedProcess:
    """Run a one-job driver with ``var`` as its var dir and ``archive`` (default: the config's) as its class
    archive; its stdout prints ``rows 3`` and the JVM's info string ("sharing" when it mapped an archive)."""
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, str(var), str(archive or ""), extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
