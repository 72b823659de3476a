"""bench scoring_at_1m: the nightly's scoring step for 1,000,000 users for real, not extrapolated (issue 28.4):
spark_jobs.score in a fresh driver's first job (Python workers started and the model loaded, as every nightly
task pays) and the warehouse load, users per second of both."""

from __future__ import annotations

import argparse
from functools import partial

from bench.data import grown_features
from bench.harness import local_cores, r, spark_session, timed, workdir
from tests.helpers.config import isolated_config

USERS = 1_000_000
# The champion's family: a sequence model, whose scoring costs more per user than LR's or LightGBM's.
FAMILY = "lstm"


def run(args: argparse.Namespace) -> dict:
    from mlflow import MlflowClient

    from spark_jobs import score
    from tasks.training.launcher import launch
    from tasks.warehouse import load_scores

    n_users, n_days = (400, 10) if args.quick else (3000, 14)
    target = 20_000 if args.quick else int(USERS * args.scale)
    with workdir("scoring1m") as work:
        cfg = isolated_config(work / "var", training={"baselines": False})
        spark = spark_session(cfg)
        info, ds, feats, _, n_rows = grown_features(cfg, spark, n_users, n_days, target, 4 * local_cores(cfg))
        res = launch(cfg, info.path, model_type=FAMILY, epochs=1, allow_unvalidated=True)
        MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri).set_registered_model_alias(
            cfg.mlflow.model_name, cfg.mlflow.champion_alias, res.model_version
        )
        rep, score_s = timed(partial(score.run, cfg, ds, "bench-1m", spark=spark))
        load, load_s = timed(partial(load_scores, cfg, ds))
        if rep.rows != n_rows or load.rows != n_rows:
            raise RuntimeError(f"scored {rep.rows}, loaded {load.rows}, expected {n_rows}")
    total = score_s + load_s
    table = [
        {
            "model": FAMILY,
            "users": n_rows,
            "score s": r(score_s, 1),
            "load_scores s": r(load_s, 1),
            "total min": r(total / 60, 1),
            "users/s": int(n_rows / total),
            "users/s per worker": int(n_rows / total / rep.workers),
            "Python workers": rep.workers,
        }
    ]
    notes = [
        f"Features of cutoff {ds} from a synthetic log ({n_users} users x {n_days} days; {feats.n_users} real feature "
        f"rows) grown to {n_rows:,} users by copying rows under new user ids (bench.data.replicate_features), in "
        f"{4 * local_cores(cfg)} files; each user keeps its candidate categories.",
        f"spark_jobs.score.run (Spark {cfg.spark.master}, mapInArrow, batch {cfg.scoring.batch_size}, "
        f"{cfg.scoring.torch_threads} torch thread per worker, reasons_top_k {cfg.scoring.reasons_top_k}) in the "
        "process's first scoring job, as a nightly task runs it (workers start and load the model), then "
        "tasks.warehouse.load_scores into DuckDB.",
        f"Champion: {FAMILY} (version {res.model_version}) trained one epoch on the small log and set @champion "
        "directly: what scoring costs does not depend on how well it ranks.",
    ]
    return {
        "description": "Users scored per second for 1M users end to end (features -> spark_jobs.score -> "
        "warehouse), measured, not extrapolated (issue 28.4).",
        "table": table,
        "notes": notes,
    }
