"""bench scoring_throughput: spark_jobs.score + the warehouse load vs a bare pyfunc predict loop of the same
model on the same rows (issue 6)."""

from __future__ import annotations

import argparse
from functools import partial

from bench.data import grown_features
from bench.harness import local_cores, r, spark_session, timed, workdir
from tasks.config import PipelineConfig
from tasks.schema import user_category_columns
from tests.helpers.config import isolated_config


def bare_predict(cfg: PipelineConfig, uri: str, pdf, with_reasons: bool, checked=None) -> dict[str, float]:
    """Seconds of the bare loop in this process: ``load``, ``predict`` (the worker's own call,
    ``spark_jobs.score.model_predictor``: encode + forward + top categories [+ reasons], scoring.batch_size
    rows per call, torch threads = scoring.torch_threads, as one scoring worker) and, over the plain-list
    rows ``checked`` when given, ``checked`` (mlflow's PyFuncModel.predict with its per-row signature checks)."""
    import mlflow
    import torch

    from spark_jobs.score import model_predictor
    from tasks.registry import mlflow_store

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.scoring.torch_threads)
    params = {
        "reasons_top_k": cfg.scoring.reasons_top_k if with_reasons else 0,
        "top_k_categories": cfg.scoring.top_k_categories,
    }
    try:
        with mlflow_store(cfg):
            model, load_s = timed(lambda: mlflow.pyfunc.load_model(uri))
        predict, _ = model_predictor(model)
        bs = cfg.scoring.batch_size

        def loop(fn, rows):
            for s in range(0, len(rows), bs):
                fn(rows.iloc[s : s + bs].reset_index(drop=True), params)

        out = {"load": load_s, "predict": timed(lambda: loop(predict, pdf))[1]}
        if checked is not None:
            out["checked"] = timed(lambda: loop(lambda c, p: model.predict(c, params=p), checked))[1]
    finally:
        torch.set_num_threads(threads)
    return out


# Rows run through mlflow's checked PyFuncModel.predict, only to show what the job avoids (slow: per-row checks).
CHECKED_ROWS = 4096


def run(args: argparse.Namespace) -> dict:
    from mlflow import MlflowClient

    from spark_jobs import score
    from spark_jobs.score import arrow_to_pandas, attach_candidates, model_input_columns
    from tasks.training.launcher import launch
    from tasks.warehouse import load_scores

    n_users = 400 if args.quick else 3000
    n_days = 10 if args.quick else 14
    target = 3000 if args.quick else max(1000, int(40_000 * args.scale))
    results = []
    with workdir("scoring") as work:
        cfg = isolated_config(work / "var", training={"baselines": False})
        spark = spark_session(cfg)
        info, ds, feats, real_files, n_rows = grown_features(cfg, spark, n_users, n_days, target, 4 * local_cores(cfg))
        # The bare loop gets what the job's workers get: user rows with their candidate arrays, list
        # columns Arrow-backed (spark_jobs.score.arrow_to_pandas); mlflow's checked predict needs plain lists.
        joined = attach_candidates(
            spark.read.parquet(str(feats.path)),
            spark.read.parquet(str(feats.user_category_path)),
            user_category_columns(cfg.features),
        )
        table = joined.select(*model_input_columns(joined.columns)).toArrow()
        pdf = arrow_to_pandas(table)
        plain = arrow_to_pandas(table.slice(0, CHECKED_ROWS), arrow_lists=False)
        client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
        no_reasons = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"reasons_top_k": 0})})
        for model_type in ("lstm", "bert"):
            res = launch(cfg, info.path, model_type=model_type, epochs=1, allow_unvalidated=True)
            client.set_registered_model_alias(cfg.mlflow.model_name, cfg.mlflow.champion_alias, res.model_version)
            row = {"model": model_type, "version": res.model_version, "users": n_rows}
            # The first job of a model also starts Python workers and loads the model in each (a nightly
            # spark-submit always pays that); the repeat shows the steady per-user cost.
            for label, c in (("job_cold", cfg), ("job", cfg), ("job_no_reasons", no_reasons)):
                rep, score_s = timed(partial(score.run, c, ds, f"bench-{model_type}-{label}", spark=spark))
                load, load_s = timed(partial(load_scores, c, ds))
                if rep.rows != n_rows or load.rows != n_rows:
                    raise RuntimeError(f"{label}: scored {rep.rows}, loaded {load.rows}, expected {n_rows}")
                row[f"{label}_score_s"], row[f"{label}_load_s"] = score_s, load_s
                row[f"{label}_s"] = score_s + load_s
                row[f"{label}_workers"] = rep.workers
            bare = bare_predict(cfg, res.model_uri, pdf, with_reasons=False, checked=plain)
            bare_r = bare_predict(cfg, res.model_uri, pdf, with_reasons=True)
            row.update(
                bare_load_s=bare["load"],
                bare_predict_s=bare["predict"],
                bare_predict_reasons_s=bare_r["predict"],
                checked_predict_rows=min(CHECKED_ROWS, len(pdf)),
                checked_predict_s=bare["checked"],
            )
            results.append(row)
    table = []
    for x in results:
        ups = x["users"] / x["job_s"]
        table.append(
            {
                "model": x["model"],
                "users": x["users"],
                "job s (score + load)": r(x["job_s"]),
                "first job s": r(x["job_cold_s"]),
                "of which load_scores s": r(x["job_load_s"]),
                "users/s job": int(ups),
                "users/s bare predict": int(x["users"] / x["bare_predict_s"]),
                "job / bare (both with reasons)": r(x["job_s"] / x["bare_predict_reasons_s"]),
                "job / bare (both without reasons)": r(x["job_no_reasons_s"] / x["bare_predict_s"]),
                "job with reasons / bare without": r(x["job_s"] / x["bare_predict_s"]),
                "users/s mlflow checked predict": int(x["checked_predict_rows"] / x["checked_predict_s"]),
                "1M users (extrapolated) min": r(1e6 / ups / 60, 1),
            }
        )
    notes = [
        f"Features of cutoff {ds} from a synthetic log ({n_users} users x {n_days} days; {feats.n_users} real "
        f"feature rows, the Spark job wrote {real_files} file(s)), grown to {n_rows} rows by copying rows under "
        f"new user ids, in {4 * local_cores(cfg)} files; models trained 1 epoch (throughput does not depend on "
        "their quality) and set @champion directly.",
        f"job = spark_jobs.score.run (Spark {cfg.spark.master}, mapInArrow, batch {cfg.scoring.batch_size}, "
        f"{cfg.scoring.torch_threads} torch thread per worker, reasons_top_k {cfg.scoring.reasons_top_k}) + "
        "tasks.warehouse.load_scores into DuckDB; 'no reasons' reruns it with scoring.reasons_top_k 0.",
        "bare predict = the call each scoring worker makes (spark_jobs.score.model_predictor: the packaged "
        "IntentPyfunc's encode + forward + top categories, '+reasons' with the gradient reasons in the same pass) "
        "over the same rows as the workers get them (each user with its candidate categories, list columns "
        "Arrow-backed) in one process and one torch thread, "
        "batch_size rows per call, model load excluded. Ratios and users/s use the repeated job (workers warm, "
        "model cached); 'first job' is the first run of the model in this process (worker start and model load "
        "included).",
        f"mlflow checked predict = PyFuncModel.predict over the first {CHECKED_ROWS} rows: mlflow re-checks every "
        "array element of every row against the signature. The job checks the Spark schema against the "
        "signature once on the driver (spark_jobs.score.check_input_types) and calls the model directly.",
        "Target: whole job within 1.5x of the bare forward pass. The job uses "
        f"{local_cores(cfg)} Python workers in parallel, the bare loop one.",
    ]
    for x in results:
        same = x["job_s"] / x["bare_predict_reasons_s"]
        strict = x["job_s"] / x["bare_predict_s"]
        notes.append(
            f"{x['model']}: job / bare {same:.2f}x with reasons in both -> {'met' if same <= 1.5 else 'NOT met'}; "
            f"job with reasons / bare forward without them {strict:.2f}x -> {'met' if strict <= 1.5 else 'NOT met'}."
        )
    for x in results:
        notes.append(
            f"{x['model']}: workers {x['job_workers']}; first job {r(x['job_cold_s'])} s; job {r(x['job_s'])} s = "
            f"score {r(x['job_score_s'])} s + "
            f"load {r(x['job_load_s'])} s; no reasons {r(x['job_no_reasons_s'])} s; bare predict "
            f"{r(x['bare_predict_s'])} s (+reasons {r(x['bare_predict_reasons_s'])} s, load {r(x['bare_load_s'])} s)."
        )
    return {
        "description": "Users scored per second end to end (features -> spark_jobs.score -> warehouse) vs a bare "
        "predict loop of the same pyfunc model (issue 6).",
        "table": table,
        "notes": notes,
        "runs": results,
    }
