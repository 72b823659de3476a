"""Optional Optuna hyperparameter search in front of the registered training.

A parent MLflow run ``search-<training set id>`` holds the study; every trial is one torchrun training
(``tasks.train --trial``, ``training.search.trial_epochs`` epochs) whose MLflow run is nested under the
parent and whose score is its best validation score (the early-stopping metric). Trials never see the
test split and register nothing. The best trial's settings, merged into ``training``, are returned
for the one training that is evaluated on test and registered (nested under the same parent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.config import PipelineConfig, with_overrides
from tasks.evaluate import BEST_VAL_SCORE
from tasks.registry import mlflow_store
from tasks.training.torchrun import run_torchrun
from tasks.training.tracking import ensure_experiment


def suggest(trial, space) -> dict[str, Any]:
    """One point of ``training.search``'s space as ``training`` overrides."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        "dropout": trial.suggest_float("dropout", *space.dropout),
        "hidden_dim": trial.suggest_categorical("hidden_dim", list(space.hidden_dim)),
        "embedding_dim": trial.suggest_categorical("embedding_dim", list(space.embedding_dim)),
    }


def run_search(
    cfg: PipelineConfig,
    training_set_dir: Path,
    manifest: dict[str, Any],
    *,
    model_type: str | None,
    nproc: int,
    allow_unvalidated: bool = False,
) -> tuple[PipelineConfig, str]:
    """Run the study; returns the config of the best trial and the parent run id for the final training."""
    import optuna

    space = cfg.training.search
    with mlflow_store(cfg) as client:
        exp_id = ensure_experiment(cfg, client)
        parent = client.create_run(
            exp_id,
            run_name=f"search-{manifest['id']}",
            tags={"training_set_id": str(manifest["id"]), "search": "optuna"},
        )
    parent_id = parent.info.run_id

    def objective(trial) -> float:
        overrides = suggest(trial, space)
        result = run_torchrun(
            with_overrides(cfg, {"training": overrides}),
            training_set_dir,
            model_type=model_type,
            epochs=space.trial_epochs,
            nproc=nproc,
            allow_unvalidated=allow_unvalidated,
            parent_run_id=parent_id,
            trial=True,
        )
        trial.set_user_attr("run_id", result["run_id"])
        return float(result["best_val_score"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=space.seed))
    try:
        study.optimize(objective, n_trials=space.n_trials)
    except BaseException:
        with mlflow_store(cfg) as client:
            client.set_terminated(parent_id, status="FAILED")
        raise
    best = study.best_trial
    print(f"[search] best trial {best.number}: val score {best.value:.4f} with {best.params}", flush=True)
    with mlflow_store(cfg) as client:
        for key, value in best.params.items():
            client.log_param(parent_id, f"best.{key}", value)
        client.log_metric(parent_id, BEST_VAL_SCORE, float(best.value))
        client.set_tag(parent_id, "best_trial_run_id", best.user_attrs["run_id"])
        client.set_terminated(parent_id)
    return with_overrides(cfg, {"training": best.params}), parent_id
