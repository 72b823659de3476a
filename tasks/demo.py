"""`make demo`: generate a synthetic log, run the real DAGs through Airflow, and print where everything landed.

Steps: generate the log into the drop zone -> build the JVM class archive every Spark driver maps to start
faster (spark_jobs.class_archive; once) -> land and clean every generated day (the events history the
features need; the Spark steps run as their CLIs in their own processes, as the DAGs run them) -> if no
``@champion`` exists, ``airflow dags test purchase_intent_training`` -> ``airflow dags test
purchase_intent_nightly`` for the day after the latest generated day -> a summary.
Rerunning is safe: every step replaces its own partition, so the day's rows exist exactly once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tasks.config import REPO_ROOT, PipelineConfig, add_common_args, config_from_args
from tasks.layers import class_archive_path, incoming_dir
from tasks.registry import champion


def _step(msg: str) -> None:
    print(f"\n=== {msg}", flush=True)


def _generator_stamp(cfg: PipelineConfig) -> str:
    return hashlib.sha1(json.dumps(cfg.generator.model_dump(), sort_keys=True).encode()).hexdigest()


def generate_if_needed(cfg: PipelineConfig) -> None:
    from tasks.sources.synthetic import generate

    out = incoming_dir(cfg, "synthetic")
    stamp = out / ".generator-config"
    if stamp.exists() and stamp.read_text() == _generator_stamp(cfg):
        print(f"synthetic log already generated in {out} (same generator config)")
        return
    report = generate(cfg.generator, out, cfg.pipeline.timezone)
    stamp.write_text(_generator_stamp(cfg))
    print(report)


def run_step(cfg: PipelineConfig, module: str, *args: str) -> subprocess.CompletedProcess:
    """Run one step's CLI (``python -m <module> ...``) in its own process with exactly ``cfg``, the way the
    DAGs run a Spark job: the demo orchestrates and imports no Spark job. Its stdout is returned, its
    stderr (the step's log) streams through."""
    with tempfile.TemporaryDirectory(prefix="demo-config-") as tmp:
        config_file = Path(tmp) / "pipeline.json"
        # JSON is YAML: the step loads this as its --config, so it sees the demo's config, overrides included.
        config_file.write_text(json.dumps(cfg.model_dump(mode="json")))
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return subprocess.run(
            [sys.executable, "-m", module, *args, "--config", str(config_file)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": pythonpath},
            stdout=subprocess.PIPE,
            text=True,
        )


def backfill_events(cfg: PipelineConfig, first: dt.date, last: dt.date) -> None:
    """Land and clean every generated day, so the nightly run finds its lookback history."""
    from tasks.land import land_day

    day = first
    while day <= last:
        land_day(cfg, day, "synthetic")
        day += dt.timedelta(days=1)
    # One Spark driver for the whole range (spark_jobs.clean_events --from/--to); it ends with its process,
    # so no JVM is left holding memory when training and the Airflow runs start theirs.
    done = run_step(
        cfg, "spark_jobs.clean_events", "--from", first.isoformat(), "--to", last.isoformat(), "--source", "synthetic"
    )
    for line in done.stdout.splitlines():
        print(f"  {line}", flush=True)
    if done.returncode != 0:
        raise SystemExit(f"cleaning the events history failed (spark_jobs.clean_events exit code {done.returncode})")


def class_archive_if_needed(cfg: PipelineConfig) -> None:
    path = class_archive_path(cfg)
    if path is None:
        print("spark.class_archive is null: Spark drivers start without a class archive")
    elif path.is_file():
        print(f"JVM class archive {path} exists (rebuild it after a Java or pyspark upgrade: make jvm-archive)")
    else:
        done = run_step(cfg, "spark_jobs.class_archive")
        if done.returncode == 0:
            print(f"built {done.stdout.strip()}")
        else:
            # Only start-up time depends on it: the demo goes on without (the reason is in the log above).
            print(
                f"WARNING: no JVM class archive, Spark drivers start slower (spark_jobs.class_archive exit "
                f"code {done.returncode})"
            )


def run(cfg: PipelineConfig) -> int:
    from tasks.airflow_env import airflow, ensure_db
    from tasks.warehouse import Warehouse

    if cfg.pipeline.source != "synthetic":
        raise SystemExit(f"make demo generates a synthetic log; pipeline.source is {cfg.pipeline.source!r}")
    started = time.time()
    first = cfg.generator.start
    last = first + dt.timedelta(days=cfg.generator.n_days - 1)
    ds = last + dt.timedelta(days=1)

    _step(f"1/6 generating the synthetic log ({cfg.generator.n_users} users, {cfg.generator.n_days} days from {first})")
    generate_if_needed(cfg)

    _step("2/6 JVM class archive for faster Spark driver start-up")
    class_archive_if_needed(cfg)

    _step(f"3/6 landing and cleaning the events history {first} .. {last}")
    backfill_events(cfg, first, last)

    _step("4/6 preparing Airflow (SQLite metadata under var/airflow)")
    ensure_db(cfg)

    if champion(cfg) is None:
        _step(f"5/6 no @{cfg.mlflow.champion_alias} model yet: running purchase_intent_training for {ds}")
        airflow(cfg, "dags", "test", "purchase_intent_training", ds.isoformat())
    else:
        _step(f"5/6 @{cfg.mlflow.champion_alias} exists: skipping training")
    current = champion(cfg)
    if current is None:
        raise SystemExit(
            "training finished but no model is @champion: the candidate did not pass the gate "
            f"(gate.min_auc={cfg.gate.min_auc}); see the gate's log line above and the version tags in MLflow"
        )

    _step(f"6/6 running purchase_intent_nightly for ds={ds} (scores the day after {last})")
    airflow(cfg, "dags", "test", "purchase_intent_nightly", ds.isoformat())

    wh = Warehouse.from_config(cfg)
    rows = wh.row_count(ds)
    top = wh.top_users(ds, 5)
    where = cfg.warehouse.duckdb_path if cfg.warehouse.backend == "duckdb" else cfg.warehouse.url
    print("\n" + "=" * 72)
    print(f"purchase-intent demo finished in {time.time() - started:.0f}s")
    print(f"warehouse:        {where} (table {cfg.warehouse.table})")
    print(f"rows for ds={ds}: {rows}")
    print("top 5 users by p_purchase:")
    for user_id, p in top:
        print(f"  {user_id:>12}  {p:.4f}")
    print(f"model:            models:/{cfg.mlflow.model_name}@{cfg.mlflow.champion_alias} = version {current.version}")
    print(f"MLflow run id:    {current.run_id}")
    print("look at it:       make airflow    (Airflow UI on http://localhost:8080)")
    print("                  make mlflow-ui  (MLflow UI on http://localhost:5000)")
    if cfg.warehouse.backend == "duckdb":
        query = f"select * from {cfg.warehouse.table} where ds = '{ds}' order by p_purchase desc limit 10"
        print(f'                  duckdb {where} "{query}"')
    print("=" * 72)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    return run(config_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
