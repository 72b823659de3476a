"""bench nightly_at_scale: the whole nightly DAG through Airflow at the project's scale (issue 28.4): ~100k users
and a 30-day lookback, every task's wall time and the run's; and the share of evaluate_outcomes in it (issue 27)."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil

from bench.data import build_synthetic_training_set, events_rows, synthetic_events
from bench.harness import r, spark_session, workdir
from tasks.layers import DAY_KEY, events_root, incoming_dir, partition_dir
from tests.helpers.config import isolated_config

NIGHTLY_DAG = "purchase_intent_nightly"
# The champion's family: a sequence model, whose scoring costs more per user than LR's or LightGBM's.
FAMILY = "lstm"
TARGET_S = 15 * 60  # issue 28: the whole nightly run within 15 minutes on this 2-core machine
OUTCOMES_TARGET = 0.10  # issue 27: evaluate_outcomes at most 10% of the nightly run
RUN_TIMEOUT_S = 3600


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def _busy_s(tasks: list[dict]) -> float:
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


def _champion(cfg, n_users: int, n_days: int) -> str:
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


def run(args: argparse.Namespace) -> dict:
    from tasks.airflow_env import AirflowStack, failure_reason

    n_users = 300 if args.quick else max(100, round(100_000 * args.scale))
    with workdir("nightly") as work:
        cfg = isolated_config(work / "var", training={"baselines": False})
        small = (400, 10) if args.quick else (3000, 14)
        version = _champion(cfg, *small)
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
        lookback_rows = events_rows(events_root(cfg), [cutoffs[-1] - dt.timedelta(days=d + 1) for d in range(lookback)])

    night = nights[-1]
    total = night["run_s"]
    first = min(t["start_date"] for t in night["tasks"] if t["start_date"])
    table = []
    for t in sorted(night["tasks"], key=lambda t: t["start_date"] or "~"):
        wall = _seconds(t["start_date"], t["end_date"])
        table.append(
            {
                "task": t["task_id"],
                "state": t["state"],
                "starts at s": r(_seconds(first, t["start_date"]) or 0.0, 1) if t["start_date"] else None,
                "wall s": r(wall, 1) if wall is not None else None,
                "share of the run": f"{100 * wall / total:.1f}%" if wall is not None else "",
            }
        )
    table.append(
        {"task": "whole run", "state": "success", "starts at s": 0.0, "wall s": r(total, 1), "share of the run": "100%"}
    )
    outcomes_s = next(
        _seconds(t["start_date"], t["end_date"]) for t in night["tasks"] if t["task_id"] == "evaluate_outcomes"
    )
    share = (outcomes_s or 0.0) / total
    gaps = total - _busy_s(night["tasks"])
    task_sum = sum(_seconds(t["start_date"], t["end_date"]) or 0.0 for t in night["tasks"])
    notes = [
        f"One nightly run of {NIGHTLY_DAG} for cutoff {night['ds']} through Airflow (api-server, scheduler and "
        "dag-processor of tasks.airflow_env.AirflowStack, LocalExecutor, SQLite metadata; every Spark step a "
        "spark-submit in local mode, as the DAG runs it) on a synthetic log of "
        f"{n_users} users: {lookback_rows} events in the {lookback}-day lookback, {scored} users scored.",
        f"The night before (cutoff {nights[0]['ds']}, {nights[0]['run_s']:.0f} s) ran first, so this night also "
        f"judges real scores: evaluate_outcomes judged ds={cutoffs[0]} ({judged['n_users']} users, "
        f"{judged['n_buyers']} buyers).",
        f"Champion: {FAMILY} (version {version}), trained for one epoch on a {small[0]:,}-user log of the same "
        "generator and set @champion directly: what a night costs does not depend on how well it ranks.",
        f"Whole run {total:.0f} s (target <= {TARGET_S // 60} min: {'met' if total <= TARGET_S else 'NOT met'}); "
        f"the tasks' own wall times sum to {task_sum:.0f} s (check_drift runs beside score, on the other core); "
        f"the gaps in which no task ran, Airflow's scheduling, add {gaps:.0f} s.",
        f"evaluate_outcomes {outcomes_s:.0f} s = {100 * share:.1f}% of the run (issue 27's target <= "
        f"{OUTCOMES_TARGET:.0%}: {'met' if share <= OUTCOMES_TARGET else 'NOT met'}).",
    ]
    return {
        "description": "The whole nightly DAG for one day through Airflow at ~100k users and a 30-day lookback: "
        "each task's wall time and the total (issue 28), evaluate_outcomes' share (issue 27).",
        "table": table,
        "notes": notes,
        "nights": [
            {
                "ds": n["ds"],
                "run_s": n["run_s"],
                "tasks": {
                    t["task_id"]: {"state": t["state"], "wall_s": _seconds(t["start_date"], t["end_date"])}
                    for t in n["tasks"]
                },
            }
            for n in nights
        ],
        "users": n_users,
        "scored_users": scored,
        "lookback_rows": lookback_rows,
        "outcomes_share": share,
    }
