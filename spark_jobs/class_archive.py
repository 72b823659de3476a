"""Build the JVM class-data-sharing (AppCDS) archive that lets every later Spark driver start seconds faster.

A driver JVM spends much of a short task loading, verifying and linking Spark's, Parquet's and Janino's
classes (a cold validation gate spends seconds in JVM start before its first job). Java 17 can dump the classes a
run loaded into an archive that later JVMs map in one go. ``python -m spark_jobs.class_archive``
(``make jvm-archive``; ``make demo`` builds it when missing) runs a small representative workload (a tiny
synthetic log landed, cleaned, gated, turned into features with labels and gated again, in a throw-away
var dir) in a child process whose JVM writes the archive at exit (-XX:ArchiveClassesAtExit), then moves
it atomically to ``spark.class_archive``: concurrent drivers see either the old archive or the new one.

spark_jobs.session.driver_java_options maps it into every driver JVM the pipeline starts once the file
exists. The JVM checks it against its own build and class path; after a Java or pyspark upgrade it warns
"Unable to use shared archive" and runs as before: rebuild it then.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spark_jobs.session import build_session, java_option
from tasks.config import REPO_ROOT, PipelineConfig, add_common_args, config_from_args, with_overrides
from tasks.errors import run_cli
from tasks.layers import class_archive_path, incoming_dir

log = logging.getLogger(__name__)

# Quiet the dump: it warns about every class it cannot archive (signed jars, generated accessors).
_DUMP_LOGGING = "-Xlog:disable -Xlog:all=error:stderr"


def workload(cfg: PipelineConfig, work: Path, dump_to: Path) -> None:
    """Run the representative steps in this process; its JVM dumps the loaded classes to ``dump_to`` at exit."""
    from spark_jobs import clean_events, features
    from spark_jobs.validate import validate_events, validate_features
    from tasks.land import land_day
    from tasks.sources.synthetic import generate

    wcfg = with_overrides(
        cfg,
        {
            "paths": {"var_dir": str(work / "var"), "incoming_dir": str(work / "incoming")},
            "pipeline": {"source": "synthetic"},
            "generator": {"n_users": 60, "n_days": 4},
            # The driver's classes are what the archive holds; a cluster master need not be reachable here.
            "spark": {"master": "local[2]", "class_archive": None},
        },
    )
    # The first session starts the JVM: every later step reuses it.
    dump_option = java_option(f"-XX:ArchiveClassesAtExit={dump_to}")
    build_session(wcfg, "class archive", java_options=f"{dump_option} {_DUMP_LOGGING}")
    report = generate(wcfg.generator, incoming_dir(wcfg, "synthetic"), wcfg.pipeline.timezone)
    for day in report.days:
        land_day(wcfg, day, "synthetic")
    first, last = report.days[0], report.days[-1]
    clean_events.run_range(wcfg, first, last, "synthetic")
    validate_events(wcfg, last, raise_on_failure=False)
    features.run(wcfg, last)
    validate_features(wcfg, last, raise_on_failure=False)


def build(cfg: PipelineConfig, out: Path | None = None) -> Path:
    """Build the archive at ``out`` (default ``spark.class_archive``), replacing any earlier one; returns it."""
    out = Path(out) if out is not None else class_archive_path(cfg)
    if out is None:
        raise ValueError("spark.class_archive is null (switched off) and no output path was given")
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="class-archive-") as work:
        work = Path(work)
        # Beside the target, so the final rename stays on one file system.
        dump = out.parent / f".{out.name}.{os.getpid()}.tmp"
        (work / "config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "spark_jobs.class_archive", "--workload", str(work), str(dump)],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0 or not dump.is_file() or dump.stat().st_size == 0:
                raise RuntimeError(
                    f"building the JVM class archive failed (exit {done.returncode}; "
                    f"{'no' if not dump.is_file() else 'an empty'} archive):\n{done.stderr[-3000:]}"
                )
            os.replace(dump, out)
        finally:
            dump.unlink(missing_ok=True)
    log.info("JVM class archive %s: %.0f MB in %.0f s", out, out.stat().st_size / 2**20, time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> Path | None:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--out", type=Path, help="archive path (default: spark.class_archive of the config)")
    # Internal: the child process build() starts (work dir holding config.json, dump path).
    parser.add_argument("--workload", nargs=2, metavar=("WORK_DIR", "DUMP_TO"), type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        work, dump_to = args.workload
        cfg = PipelineConfig.model_validate_json((work / "config.json").read_text())
        workload(cfg, work, dump_to)
        return None
    path = build(config_from_args(args), args.out)
    print(path)
    return path


if __name__ == "__main__":
    sys.exit(run_cli(main))
