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
    CALIBRATION_METRICS,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_SAMPLES_PER_S,
    UNCALIBRATED,
    VAL_KEPT,
    SplitEval,
    data_facts,
    evaluate_user_groups,
    finite,
    model_metrics,
)
from tasks.experiments import ensure_experiment as ensure_named_experiment
from tasks.models.calibration import CalibratedPredictor, Calibration
from tasks.registry import mlflow_store, tag_version
from tasks.schema import INTENTS, LABEL_COLUMNS, USER_CATEGORY_LABEL
from tasks.training.collectives import rank0_print
from tasks.training.data import CANDIDATE_KEY, read_candidates, read_files, training_set_dir_of
from tasks.training.state import EncodedData, Fitting, Progress, TrainingJob
from tasks.validation_results import partition_fingerprint

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import ActiveRun

    from tasks.models.base import Predictor
    from tasks.models.encoding import FeatureEncoder


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

    cfg = job.cfg
    if fit.resume is not None:
        store.enter_context(mlflow_store(cfg))
        # The resumed training continues the interrupted MLflow run: one run, complete per-epoch history.
        run = mlflow.start_run(run_id=fit.resume["run_id"])
        mlflow.set_tag("resumed_after_epoch", str(fit.resume["epoch"]))
        rank0_print(f"resumed from checkpoint {fit.ckpt_dir} after epoch {fit.resume['epoch']}, run {run.info.run_id}")
        return run
    run = begin_run(
        cfg,
        store,
        manifest=job.manifest,
        model_type=job.model_type,
        training_set_dir=job.training_set_dir,
        validation=job.validation,
        run_name=f"{'trial' if job.trial else job.model_type}-{job.manifest['id']}",
        parent_run_id=job.parent_run_id,
        params=dict(
            epochs_requested=job.epochs,
            world_size=job.world,
            device=job.device.type,
            n_train_rows=data.n_train,
            pos_weight=list(data.pos_weight),
            category_pos_weight=data.category_pos_weight,
            n_train_candidate_rows=data.n_train_candidates,
            category_vocab_size=len(data.encoder.category_index),
            n_parameters=sum(p.numel() for p in fit.model.parameters()),
            local_batch_size=fit.local_bs,
            steps_per_epoch=fit.steps,
            **fit.init,
        ),
    )
    rank0_print(
        f"{job.model_type} on {job.world} process(es), {job.device.type}; {data.n_train} train rows, "
        f"run {run.info.run_id}"
    )
    return run


def begin_run(
    cfg: PipelineConfig,
    store: contextlib.ExitStack,
    *,
    manifest: dict[str, Any],
    model_type: str,
    training_set_dir: Path,
    validation: dict[str, Any] | None,
    params: dict[str, Any],
    run_name: str | None = None,
    parent_run_id: str | None = None,
) -> ActiveRun:
    """A new MLflow run of any family's training: the config and ``params``, tags and training-set lineage.
    ``store`` keeps the tracking store open until training ends."""
    import mlflow

    exp_id = ensure_experiment(cfg, store.enter_context(mlflow_store(cfg)))
    run = mlflow.start_run(
        experiment_id=exp_id, run_name=run_name or f"{model_type}-{manifest['id']}", parent_run_id=parent_run_id
    )
    logged = {f"training.{k}": v for k, v in cfg.training.model_dump().items()}
    logged.update({f"models.{name}.{k}": v for name, section in cfg.models.items() for k, v in section.items()})
    logged.update(
        model_type=model_type, training_set_id=manifest["id"], training_set_dir=str(training_set_dir), **params
    )
    logged["training.model_type"] = model_type
    mlflow.log_params(logged)
    tags = {"training_set_id": str(manifest["id"]), "model_type": model_type}
    if commit := git_commit():
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    mlflow.set_tags(tags)
    mlflow.log_dict(manifest, "training_set/manifest.json")
    from tasks.lineage import log_training_set_lineage

    log_training_set_lineage(manifest, training_set_dir, partition_fingerprint(training_set_dir), validation)
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
    calibration: Calibration,
    val: SplitEval,
    uncalibrated: SplitEval,
    test: SplitEval,
) -> dict[str, Any]:
    """A DDP training's end: the validation facts and kept epoch, then ``register_trained``."""
    import mlflow

    from tasks.models.base import TorchPredictor

    last_val = {k.removeprefix("val_"): v for k, v in progress.history[-1].items() if k.startswith("val_")}
    mlflow.log_metrics({**data_facts("val", last_val), BEST_EPOCH: float(progress.best_epoch)})
    local = data.local
    return register_trained(
        job.cfg,
        files=job.files,
        manifest=job.manifest,
        predictor=TorchPredictor(fit.model.to("cpu").eval(), data.encoder, job.model_type),
        encoder=data.encoder,
        calibration=calibration,
        val=val,
        uncalibrated=uncalibrated,
        test=test,
        example=local["test"] if not local["test"].empty else local["train"],
        run_id=fit.run_id,
        output=Path(job.output),
        history=progress.history,
        best_epoch=progress.best_epoch,
        register=job.register,
    )


def register_trained(
    cfg: PipelineConfig,
    *,
    files: dict[str, list[Path]],
    manifest: dict[str, Any],
    predictor: Predictor,
    encoder: FeatureEncoder,
    calibration: Calibration,
    val: SplitEval,
    uncalibrated: SplitEval,
    test: SplitEval,
    example: pd.DataFrame,
    run_id: str,
    output: Path,
    history: list[dict[str, float]],
    best_epoch: int,
    register: bool = True,
) -> dict[str, Any]:
    """Any family's end of training in its active MLflow run: the kept model's validation metrics, test
    metrics (``val`` and ``test`` with ``calibration`` applied; ``uncalibrated`` is the test split before
    it), yardsticks, plots and the packaged model (``predictor`` behind the calibration); registers a
    version (unless ``register`` is off: a candidate that ``tasks.registry.select`` may register later),
    ends the run and writes the result to ``output``: run_id, model_type, model_uri, model_version (None
    when not registered), val and test metrics."""
    import mlflow

    from tasks.models.pyfunc import MODEL_ARTIFACT, log_intent_model

    model_type = predictor.model_type
    val_metrics, test_metrics = val.metrics, test.metrics
    before = {k: v for k, v in uncalibrated.metrics.items() if k.endswith(CALIBRATION_METRICS)}
    mlflow.log_metrics(
        {
            **model_metrics(VAL_KEPT, val_metrics),
            **model_metrics("test", test_metrics),
            **model_metrics(UNCALIBRATED, before),
            **data_facts("test", test_metrics),
        }
    )
    notes = [f"{name}: {c.note}" for name, c in calibration.named() if c.note]
    mlflow.set_tag("calibration", cfg.training.calibration)
    if notes:
        mlflow.set_tag("calibration_notes", "; ".join(notes))
    if cfg.training.baselines:
        log_yardsticks(cfg, files, encoder)
    log_plots(history, best_epoch, test.y, test.p, uncalibrated.p)
    info = log_intent_model(
        CalibratedPredictor(predictor, calibration),
        example,
        registered_model_name=cfg.mlflow.model_name if register else None,
        metadata={"training_set_id": str(manifest["id"]), "model_type": model_type},
    )
    payload = {
        "run_id": run_id,
        "model_name": cfg.mlflow.model_name,
        "model_type": model_type,
        "model_version": None,
        "model_uri": f"runs:/{run_id}/{MODEL_ARTIFACT}",
        "val_metrics": finite(val_metrics),
        "test_metrics": finite(test_metrics),
    }
    if register:
        version = str(info.registered_model_version)
        tag_version(cfg, version, str(manifest["id"]), model_type, test_metrics)
        payload.update(model_version=version, model_uri=f"models:/{cfg.mlflow.model_name}/{version}")
    mlflow.end_run()
    write_json_atomic(output, payload)
    print(f"[train] {'registered' if register else 'logged'} {payload['model_uri']} (run {run_id})", flush=True)
    return payload


def log_yardsticks(cfg: PipelineConfig, files: dict[str, list[Path]], encoder: FeatureEncoder) -> None:
    """Test metrics of the LR and LightGBM yardsticks fitted on the same train split, beside the candidate's."""
    import mlflow

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
    pair = evaluate_category_baseline(
        cfg,
        read_candidates(set_dir, "train", read_files(files["train"], list(CANDIDATE_KEY)), cand_cols),
        read_candidates(set_dir, "test", read_files(files["test"], list(CANDIDATE_KEY)), cand_cols),
        encoder.pair_feature_columns,
    )
    for name, m in pair.items():
        mlflow.log_metrics(model_metrics("test", m, yardstick=name))


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
        "val_score": "early-stopping score (training.early_stopping)",
        "val_purchase_pr_auc": "purchase_pr_auc",
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


def log_plots(
    history: list[dict[str, float]], best_epoch: int, y: np.ndarray, p: np.ndarray, uncalibrated: np.ndarray
) -> None:
    """ROC, PR and calibration curves per head (of ``p``; the calibration panel also shows ``uncalibrated``,
    dashed) and the learning curves, as PNG artifacts of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    if history:  # families fitted without epochs have no learning curves
        fig = loss_figure(history, best_epoch)
        mlflow.log_figure(fig, "plots/loss.png")
        plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for j, intent in enumerate(INTENTS):
        if len(np.unique(y[:, j])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[:, j], p[:, j])
        prec, rec, _ = precision_recall_curve(y[:, j], p[:, j])
        axes[0].plot(fpr, tpr, label=intent)
        (line,) = axes[1].plot(rec, prec, label=intent)
        frac_pos, mean_pred = calibration_curve(y[:, j], p[:, j], n_bins=10, strategy="quantile")
        axes[2].plot(mean_pred, frac_pos, marker="o", c=line.get_color(), label=f"{intent} (calibrated)")
        frac_pos, mean_pred = calibration_curve(y[:, j], uncalibrated[:, j], n_bins=10, strategy="quantile")
        axes[2].plot(mean_pred, frac_pos, ls=":", marker=".", c=line.get_color(), label=f"{intent} (before)")
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
