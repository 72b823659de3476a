"""The nightly DAG through Airflow on a generated log, measured per task (bench nightly_at_scale and
nightly_scaling): a champion, a 30-day lookback layer, two delivered days and two consecutive nights."""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass

from bench.data import build_synthetic_training_set, events_rows, synthetic_events
from bench.harness import spark_session, workdir
from tasks.layers import DAY_KEY, events_root, incoming_dir, partition_dir
from tests.helpers.config import isolated_config

NIGHTLY_DAG = "purchase_intent_nightly"
# The champion's family: a sequence model, whose scoring costs more per user than LR's or LightGBM's.
FAMILY = "lstm"
RUN_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Nights:
    """Two consecutive nightly runs; ``nights[i]``: ds, run_s and the REST API's task instances."""

    n_users: int
    nights: list[dict]
    version: str
    small: tuple[int, int]
    lookback: int
    lookback_rows: int
    # Bytes of the lookback's events Parquet, as the pipeline writes it.
    lookback_bytes: int
    scored: int
    judged: dict
    cutoffs: list[dt.date]


def seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def busy_s(tasks: list[dict]) -> float:
    """Wall seconds during which at least one task ran (the union of their intervals)."""
    spans = sorted(
        (dt.datetime.fromisoformat(t["start_date"]), dt.datetime.fromisoformat(t["end_date"]))
        for t in tasks
        if t["start_date"] and t["end_date"]
    )
    busy, end = 0.0, None
    for start, stop in spans:
        if end is None or start > end:
            busy += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            busy += (stop - end).total_seconds()
            end = stop
    return busy


def champion(cfg, n_users: int, n_days: int) -> str:
    """A @champion trained for one epoch on a small log of the same generator (what a night costs does not
    depend on how well it ranks); the small log's events layer is unlinked afterwards."""
    from mlflow import MlflowClient

    from tasks.training.launcher import launch

    spark = spark_session(cfg)
    info, _ = build_synthetic_training_set(cfg, spark, n_users, n_days)
    spark.stop()  # its JVM would hold memory through the nightly runs
    res = launch(cfg, info.path, model_type=FAMILY, epochs=1, allow_unvalidated=True)
    MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri).set_registered_model_alias(
        cfg.mlflow.model_name, cfg.mlflow.champion_alias, res.model_version
    )
    events_root(cfg).unlink()
    return str(res.model_version)


def measure_nights(n_users: int, quick: bool = False) -> Nights:
    """Two nightly runs through Airflow (tasks.airflow_env.AirflowStack, LocalExecutor) on ``n_users`` users:
    the first night lands, cleans and scores the second-to-last delivered day; the second also judges it."""
    from tasks.airflow_env import AirflowStack, failure_reason

    with workdir("nightly") as work:
        cfg = isolated_config(work / "var", training={"baselines": False})
        small = (400, 10) if quick else (3000, 14)
        version = champion(cfg, *small)
        lookback = cfg.features.lookback_days
        # The lookback of the first night plus two delivered days: the night of cutoff days[-2] + 1 lands and
        # cleans days[-2] and scores its users; the next one lands days[-1], scores, and judges the first's scores.
        n_days = lookback + 2
        layer, _ = synthetic_events(cfg, n_users, n_days, raw_last=2)
        days = [cfg.generator.start + dt.timedelta(days=i) for i in range(n_days)]
        # A copy, not a link: the nightly runs write their days into the events layer.
        shutil.copytree(layer, events_root(cfg))
        for day in days[-2:]:
            shutil.copytree(
                partition_dir(layer.parent / "raw", DAY_KEY, day),
                partition_dir(incoming_dir(cfg, "synthetic"), DAY_KEY, day),
            )
        cutoffs = [days[-2] + dt.timedelta(days=1), days[-1] + dt.timedelta(days=1)]
        services_log = cfg.paths.airflow_home / "logs" / "bench-services.log"
        services_log.parent.mkdir(parents=True, exist_ok=True)
        nights = []
        with open(services_log, "w", buffering=1) as out, AirflowStack(cfg, out) as stack:
            stack.wait_ready((NIGHTLY_DAG,))
            stack.unpause_for_block(NIGHTLY_DAG)
            for ds in cutoffs:
                run_id = stack.start_run(NIGHTLY_DAG, ds)
                result = stack.wait_run(NIGHTLY_DAG, run_id, timeout_s=RUN_TIMEOUT_S)
                if result.state != "success":
                    task, log = result.failed[0] if result.failed else ("?", None)
                    raise RuntimeError(f"nightly run for {ds}: task {task} failed: {failure_reason(log)}")
                tis = stack.task_instances(NIGHTLY_DAG, run_id)
                nights.append({"ds": ds.isoformat(), "run_s": result.duration_s, "tasks": tis})
        from tasks.warehouse import Warehouse

        wh = Warehouse.from_config(cfg)
        scored = wh.row_count(cutoffs[-1])
        (judged,) = wh.outcomes(cutoffs[0])
        lookback_days = [cutoffs[-1] - dt.timedelta(days=d + 1) for d in range(lookback)]
        lookback_rows = events_rows(events_root(cfg), lookback_days)
        lookback_bytes = sum(
            f.stat().st_size for day in lookback_days for f in partition_dir(events_root(cfg), DAY_KEY, day).rglob("*")
        )

    return Nights(n_users, nights, version, small, lookback, lookback_rows, lookback_bytes, scored, judged, cutoffs)
