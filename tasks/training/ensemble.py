"""Training of a seed ensemble (``training.ensemble_seeds`` = K > 1), and loading a logged model as scoring
loads it (shared with ``tasks.backtest``).

The K members are ordinary trainings of the family (seeds ``training.seed`` .. ``training.seed + K - 1``), each
logged, calibrated and nested under the ensemble's MLflow run, one after another: a torchrun training already
runs ``training.nproc_per_node`` processes. The ensemble (``tasks.models.ensemble.SeedEnsemble``) is then
evaluated like any trained model: validation and test predictions through the packaged members, a
calibration of the mean probabilities fitted on validation, and the same run layout and registration as the
trainers'. Its run also records every member's run id and metrics and their spread over seeds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import PipelineConfig, with_overrides

# Metrics whose spread over the members the ensemble run records.
SPREAD_METRICS = ("purchase_roc_auc", "purchase_pr_auc")


def load_run_predictor(cfg: PipelineConfig, run_id: str) -> Any:
    """The packaged model logged by training run ``run_id``, as scoring loads it (calibration included)."""
    import mlflow

    from tasks.models.pyfunc import MODEL_ARTIFACT
    from tasks.registry import mlflow_store

    with mlflow_store(cfg):
        return mlflow.pyfunc.load_model(f"runs:/{run_id}/{MODEL_ARTIFACT}").unwrap_python_model().predictor


def train_ensemble(
    cfg: PipelineConfig,
    training_set_dir: Path,
    *,
    model_type: str,
    allow_unvalidated: bool,
    register: bool,
    parent_run_id: str | None,
    train_member: Callable[[PipelineConfig, str], Any],
) -> dict[str, Any]:
    """Train ``training.ensemble_seeds`` members of ``model_type`` and log (and register) their ensemble; the
    result payload of the trainers (run_id, model_uri, model_version, val and test metrics, output).
    ``train_member(cfg, parent_run_id)`` trains one member with ``cfg`` (its seed) nested under the ensemble's
    run, without registering it, and returns its ``TrainResult`` (the launcher passes its own ``launch``)."""
    import contextlib

    import mlflow

    from tasks.models.ensemble import SeedEnsemble
    from tasks.training import tracking
    from tasks.training.data import read_manifest, require_validation, split_files
    from tasks.training.steps import calibrate
    from tasks.training.tabular import evaluate_tabular, read_split

    k, seed = cfg.training.ensemble_seeds, cfg.training.seed
    manifest = read_manifest(training_set_dir)
    validation = None
    if cfg.training.require_validation and not allow_unvalidated:
        validation = require_validation(cfg, training_set_dir, manifest)
    seeds = [seed + i for i in range(k)]
    with contextlib.ExitStack() as store:
        run = tracking.begin_run(
            cfg,
            store,
            manifest=manifest,
            model_type=model_type,
            training_set_dir=training_set_dir,
            validation=validation,
            run_name=f"{model_type}-ensemble-{manifest['id']}",
            parent_run_id=parent_run_id,
            params={"ensemble_seeds": k, "ensemble_member_seeds": seeds, "world_size": 1},
        )
        ens_id = run.info.run_id
        # The members are runs nested under this one, started while it is not the active run; it resumes below.
        mlflow.end_run()
        try:
            members = []
            for s in seeds:
                member_cfg = with_overrides(cfg, {"training": {"seed": s, "ensemble_seeds": 1}})
                members.append(train_member(member_cfg, ens_id))
            predictors = [load_run_predictor(cfg, m.run_id) for m in members]
            ensemble = SeedEnsemble(predictors)
            val_split, test_split = (read_split(cfg, training_set_dir, s, manifest) for s in ("val", "test"))
            val, test = evaluate_tabular(cfg, ensemble, val_split), evaluate_tabular(cfg, ensemble, test_split)
            calibration, val_cal, test_cal = calibrate(cfg, val, test)
            mlflow.start_run(run_id=ens_id)
            member_metrics = {
                f"ensemble/seed_{s}/{split}/{name}": getattr(m, f"{split}_metrics")[name]
                for s, m in zip(seeds, members, strict=True)
                for split in ("val", "test")
                for name in SPREAD_METRICS
                if name in getattr(m, f"{split}_metrics")
            }
            for name in SPREAD_METRICS:
                v = np.array([m.test_metrics.get(name, np.nan) for m in members], dtype=np.float64)
                if np.isfinite(v).all() and len(v) > 1:
                    member_metrics[f"ensemble/members_test_{name}_sd"] = float(np.std(v, ddof=1))
                    member_metrics[f"ensemble/members_test_{name}_range"] = float(v.max() - v.min())
            mlflow.log_metrics(member_metrics)
            mlflow.set_tag("ensemble_member_run_ids", ",".join(m.run_id for m in members))
            files = {s: split_files(training_set_dir, s) for s in ("train", "val", "test")}
            output = cfg.paths.runs_dir / f"train-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.json"
            payload = tracking.register_trained(
                cfg,
                files=files,
                manifest=manifest,
                predictor=ensemble,
                encoder=getattr(predictors[0], "inner", predictors[0]).encoder,
                calibration=calibration,
                val=val_cal,
                uncalibrated=test,
                test=test_cal,
                example=test_split.users,
                run_id=ens_id,
                output=output,
                history=[],
                best_epoch=0,
                register=register,
            )
        except BaseException:
            from tasks.registry import mlflow_store

            with mlflow_store(cfg) as client:
                client.set_terminated(ens_id, status="FAILED")
            raise
    return {**payload, "output": str(output)}
