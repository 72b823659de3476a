"""MLflow tracking of a training: the experiment, run parameters and tags, lineage, per-epoch and test
metrics (named by ``tasks.evaluate``'s metric groups), plots, the packaged model and its registered version.
Rank 0 calls everything here."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.config import REPO_ROOT, PipelineConfig
from tasks.evaluate import (
    BEST_EPOCH,
    BEST_VAL_SCORE,
    EARLY_STOPPING_METRIC,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_SAMPLES_PER_S,
    data_facts,
    evaluate_user_groups,
    finite,
    model_metrics,
)
from tasks.experiments import ensure_experiment as ensure_named_experiment
from tasks.registry import mlflow_store
from tasks.schema import INTENTS, LABEL_COLUMNS, USER_CATEGORY_LABEL
from tasks.training.collectives import rank0_print
from tasks.training.data import CANDIDATE_KEY, read_candidates, read_files, training_set_dir_of
from tasks.training.state import EncodedData, Fitting, Progress, TrainingJob
from tasks.validation_results import partition_fingerprint

if TYPE_CHECKING:
    from mlflow import ActiveRun


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def ensure_experiment(cfg: PipelineConfig, client) -> str:
    """Id of ``mlflow.experiment``: a custom-model experiment in ``mlflow.artifact_location`` (tasks.experiments)."""
    return ensure_named_experiment(client, cfg.mlflow.experiment, cfg.mlflow.artifact_location)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def start_run(job: TrainingJob, data: EncodedData, fit: Fitting, store: contextlib.ExitStack) -> ActiveRun:
    """The MLflow run of this training: the interrupted one when resuming, else a new one with its params,
    tags and training-set lineage. ``store`` keeps the tracking store open until training ends."""
    import mlflow

    cfg, t = job.cfg, job.cfg.training
    if fit.resume is not None:
        store.enter_context(mlflow_store(cfg))
        # The resumed training continues the interrupted MLflow run: one run, complete per-epoch history.
        run = mlflow.start_run(run_id=fit.resume["run_id"])
        mlflow.set_tag("resumed_after_epoch", str(fit.resume["epoch"]))
        rank0_print(f"resumed from checkpoint {fit.ckpt_dir} after epoch {fit.resume['epoch']}, run {run.info.run_id}")
        return run
    manifest, model_type = job.manifest, job.model_type
    exp_id = ensure_experiment(cfg, store.enter_context(mlflow_store(cfg)))
    run = mlflow.start_run(
        experiment_id=exp_id,
        run_name=f"{'trial' if job.trial else model_type}-{manifest['id']}",
        parent_run_id=job.parent_run_id,
    )
    params = {f"training.{k}": v for k, v in t.model_dump().items()}
    params.update({f"models.{name}.{k}": v for name, section in cfg.models.items() for k, v in section.items()})
    params.update(
        model_type=model_type,
        epochs_requested=job.epochs,
        world_size=job.world,
        device=job.device.type,
        training_set_id=manifest["id"],
        training_set_dir=str(job.training_set_dir),
        n_train_rows=data.n_train,
        pos_weight=list(data.pos_weight),
        category_pos_weight=data.category_pos_weight,
        n_train_candidate_rows=data.n_train_candidates,
        category_vocab_size=len(data.encoder.category_index),
        n_parameters=sum(p.numel() for p in fit.model.parameters()),
        local_batch_size=fit.local_bs,
        steps_per_epoch=fit.steps,
    )
    params["training.model_type"] = model_type
    mlflow.log_params(params)
    tags = {"training_set_id": str(manifest["id"]), "model_type": model_type}
    if commit := git_commit():
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    mlflow.set_tags(tags)
    mlflow.log_dict(manifest, "training_set/manifest.json")
    from tasks.lineage import log_training_set_lineage

    log_training_set_lineage(
        manifest, job.training_set_dir, partition_fingerprint(job.training_set_dir), job.validation
    )
    rank0_print(
        f"{model_type} on {job.world} process(es), {job.device.type}; {data.n_train} train rows, run {run.info.run_id}"
    )
    return run


def log_epoch(train_loss: float, samples_per_s: float, lr: float, val_metrics: dict[str, float], epoch: int) -> None:
    import mlflow

    mlflow.log_metrics(
        {
            TRAIN_LOSS: train_loss,
            TRAIN_SAMPLES_PER_S: samples_per_s,
            TRAIN_LR: lr,
            **model_metrics("val", val_metrics),
        },
        step=epoch,
    )


def finish_trial(job: TrainingJob, fit: Fitting, progress: Progress) -> dict[str, Any]:
    """A search trial's result: its best validation score, logged and written to ``job.output``."""
    import mlflow

    best_score, best_epoch = progress.best_score, progress.best_epoch
    payload = {"run_id": fit.run_id, "best_val_score": best_score, "best_epoch": best_epoch}
    mlflow.log_metrics({BEST_VAL_SCORE: best_score, BEST_EPOCH: float(best_epoch)})
    mlflow.end_run()
    write_json_atomic(Path(job.output), payload)
    return payload


def log_user_group_metrics(
    cfg: PipelineConfig, test_y: np.ndarray, test_p: np.ndarray, new_mask: np.ndarray | None
) -> None:
    import mlflow

    if new_mask is None:
        mlflow.set_tag("user_group_breakdown", "unavailable: no f_<type>_<N>d counts for training.new_user_days")
        return
    groups = evaluate_user_groups(
        test_y, test_p, new_mask, threshold=cfg.training.threshold, top_k_fraction=cfg.training.top_k_fraction
    )
    mlflow.log_metrics({**model_metrics("test", groups), **data_facts("test", groups)})


def log_results(
    job: TrainingJob,
    data: EncodedData,
    fit: Fitting,
    progress: Progress,
    test_metrics: dict[str, float],
    test_y: np.ndarray,
    test_p: np.ndarray,
) -> dict[str, Any]:
    """Test metrics, yardsticks, plots and the packaged model; registers a version and writes ``job.output``."""
    import mlflow
    from mlflow import MlflowClient

    from tasks.models.pyfunc import log_intent_model

    cfg, manifest, files, model_type, encoder = job.cfg, job.manifest, job.files, job.model_type, data.encoder
    model = fit.model.to("cpu").eval()
    last_val = {k.removeprefix("val_"): v for k, v in progress.history[-1].items() if k.startswith("val_")}
    mlflow.log_metrics(
        {
            **model_metrics("test", test_metrics),
            **data_facts("test", test_metrics),
            **data_facts("val", last_val),
            BEST_EPOCH: float(progress.best_epoch),
        }
    )
    if cfg.training.baselines:
        from tasks.models.baselines import evaluate_baselines, evaluate_category_baseline

        train_cols = [*encoder.feature_columns, *LABEL_COLUMNS, "weight"]
        for name, m in evaluate_baselines(
            cfg, encoder, read_files(files["train"], train_cols), read_files(files["test"], train_cols)
        ).items():
            # Their data facts are the candidate's: the same test rows and user groups.
            mlflow.log_metrics(model_metrics("test", m, yardstick=name))
        # The pair yardstick sees the candidates of exactly the users the model is evaluated on.
        cand_cols = [*encoder.pair_feature_columns, USER_CATEGORY_LABEL]
        set_dir = training_set_dir_of(files)
        m = evaluate_category_baseline(
            cfg,
            read_candidates(set_dir, "train", read_files(files["train"], list(CANDIDATE_KEY)), cand_cols),
            read_candidates(set_dir, "test", read_files(files["test"], list(CANDIDATE_KEY)), cand_cols),
            encoder.pair_feature_columns,
        )
        mlflow.log_metrics(model_metrics("test", m, yardstick="lgbm"))
    log_plots(progress.history, progress.best_epoch, test_y, test_p)
    local = data.local
    example = local["test"] if not local["test"].empty else local["train"]
    info = log_intent_model(
        model,
        encoder,
        model_type,
        example,
        registered_model_name=cfg.mlflow.model_name,
        metadata={"training_set_id": str(manifest["id"]), "model_type": model_type},
    )
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    for key, value in {
        "training_set_id": str(manifest["id"]),
        "model_type": model_type,
        "test_purchase_roc_auc": f"{test_metrics['purchase_roc_auc']:.6f}",
    }.items():
        client.set_model_version_tag(cfg.mlflow.model_name, version, key, value)
    payload = {
        "run_id": fit.run_id,
        "model_name": cfg.mlflow.model_name,
        "model_version": version,
        "model_uri": f"models:/{cfg.mlflow.model_name}/{version}",
        "test_metrics": finite(test_metrics),
    }
    mlflow.end_run()
    write_json_atomic(Path(job.output), payload)
    print(f"[train] registered {payload['model_uri']} (run {payload['run_id']})", flush=True)
    return payload


def loss_figure(history: list[dict[str, float]], best_epoch: int):
    """The learning curves, one panel per kind of quantity so none squashes another: the training loss
    (weighted BCE of the heads plus the category term, the optimised objective), the validation log loss
    per head, and the validation ranking metrics in [0, 1]. Epochs are whole numbers on every x axis;
    the epoch whose weights were kept is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [int(h["epoch"]) for h in history]
    fig, (train_ax, loss_ax, rank_ax) = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    train_ax.plot(epochs, [h["train_loss"] for h in history], marker="o")
    train_ax.set(title="training loss", ylabel="objective (weighted BCE)")
    for intent in INTENTS:
        loss_ax.plot(epochs, [h.get(f"val_{intent}_log_loss", np.nan) for h in history], marker="o", label=intent)
    loss_ax.set(title="validation log loss per head", ylabel="log loss")
    ranking = {
        f"val_{EARLY_STOPPING_METRIC}": f"{EARLY_STOPPING_METRIC} (early stopping)",
        "val_purchase_roc_auc": "purchase_roc_auc",
    }
    ranking.update({k: k.removeprefix("val_") for k in history[-1] if k.startswith("val_category_ndcg_at_")})
    for key, label in ranking.items():
        rank_ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=label)
    rank_ax.set(title="validation ranking metrics", ylabel="score (higher is better)")
    for ax in (train_ax, loss_ax, rank_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch:
            ax.axvline(best_epoch, ls="--", c="grey", label=f"kept: epoch {best_epoch}")
        ax.legend()
    fig.suptitle("learning curves")
    return fig


def log_plots(history: list[dict[str, float]], best_epoch: int, y: np.ndarray, p: np.ndarray) -> None:
    """ROC, PR and calibration curves per head and the learning curves, as PNG artifacts of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig = loss_figure(history, best_epoch)
    mlflow.log_figure(fig, "plots/loss.png")
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for j, intent in enumerate(INTENTS):
        if len(np.unique(y[:, j])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[:, j], p[:, j])
        prec, rec, _ = precision_recall_curve(y[:, j], p[:, j])
        frac_pos, mean_pred = calibration_curve(y[:, j], p[:, j], n_bins=10, strategy="quantile")
        axes[0].plot(fpr, tpr, label=intent)
        axes[1].plot(rec, prec, label=intent)
        axes[2].plot(mean_pred, frac_pos, marker="o", label=intent)
    for ax, (title, xl, yl) in zip(
        axes,
        [
            ("ROC (test)", "false positive rate", "true positive rate"),
            ("precision-recall (test)", "recall", "precision"),
            ("calibration (test)", "mean predicted", "observed rate"),
        ],
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend()
    axes[2].plot([0, 1], [0, 1], ls="--", c="grey")
    mlflow.log_figure(fig, "plots/test_curves.png")
    plt.close(fig)
