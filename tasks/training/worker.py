"""The body of every torchrun process: encode this rank's rows, build the model, run the epoch loop with
per-epoch checkpoints, evaluate on test, and (rank 0) log and register through ``tasks.training.tracking``.

The ranks merge their encoder statistics and DDP averages gradients; every rank computes the same
gathered validation metrics, so all stop at the same epoch.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tasks import checkpoint as ckpt_io
from tasks.config import PipelineConfig
from tasks.evaluate import new_user_mask
from tasks.models.base import IntentModel, build_model
from tasks.models.encoding import EncoderStats, FeatureEncoder, encode_targets
from tasks.schema import USER_CATEGORY_LABEL
from tasks.training import tracking
from tasks.training.build import build_model_config, encoder_settings, lr_lambda, positive_weights
from tasks.training.collectives import (
    all_max,
    all_mean,
    broadcast_object,
    gather_objects,
    process_group,
    rank0_print,
    seed_everything,
    world,
)
from tasks.training.data import (
    SPLITS,
    TrainingError,
    candidate_columns,
    candidate_rows,
    read_candidates,
    read_files,
    read_manifest,
    read_texts,
    require_validation,
    split_files,
)
from tasks.training.state import EncodedData, Fitting, Progress, TrainingJob
from tasks.training.steps import calibrate, evaluate_split, score, take, to_device, train_step

# Settings that change how a training is run or checked, not what it computes: a relaunch may alter them and resume.
NOT_IN_CHECKPOINT_KEY = {"nproc_per_node", "checkpoints", "max_restarts", "require_validation", "search"}


def train_distributed(
    cfg: PipelineConfig,
    training_set_dir: Path,
    output: Path,
    *,
    model_type: str | None = None,
    epochs: int | None = None,
    allow_unvalidated: bool = False,
    fault_after_epoch: int | None = None,
    parent_run_id: str | None = None,
    trial: bool = False,
    register: bool = True,
) -> dict[str, Any] | None:
    """Body of every torchrun process; returns the output payload on rank 0, None elsewhere.

    ``trial`` (a search trial): the MLflow run is nested under ``parent_run_id``, the result is the best
    validation score, and neither test metrics nor a model are logged. ``register`` off: the model is logged
    to the run but not registered (a candidate of ``tasks.registry.select``).

    ``fault_after_epoch``: crash drill; rank 0 kills its own process (SIGKILL) right after writing the
    checkpoint of that epoch, as a machine loss would. Only a process that trained that epoch itself
    does so, so a relaunch (or a torchrun restart) resumes past it.
    """
    model_type = model_type or cfg.training.model_type
    epochs = epochs or cfg.training.epochs
    training_set_dir = Path(training_set_dir).resolve()
    manifest = read_manifest(training_set_dir)
    files = {s: split_files(training_set_dir, s) for s in SPLITS}
    validation = None
    if cfg.training.require_validation and not allow_unvalidated:
        validation = require_validation(cfg, training_set_dir, manifest)

    with process_group() as device:
        rank, size = world()
        job = TrainingJob(
            cfg=cfg,
            training_set_dir=training_set_dir,
            output=output,
            manifest=manifest,
            files=files,
            model_type=model_type,
            epochs=epochs,
            rank=rank,
            world=size,
            device=device,
            validation=validation,
            fault_after_epoch=fault_after_epoch,
            parent_run_id=parent_run_id,
            trial=trial,
            register=register,
        )
        return _train(job)


def _train(job: TrainingJob) -> dict[str, Any] | None:
    t = job.cfg.training
    if len(job.files["train"]) < job.world:
        raise TrainingError(
            f"train split has {len(job.files['train'])} file(s), fewer than the {job.world} processes; "
            "each process needs at least one file"
        )
    if t.batch_size < job.world:
        raise TrainingError(f"batch_size {t.batch_size} is smaller than the {job.world} processes")
    seed_everything(t.seed)
    data = _encode(job)
    fit = _build(job, data)
    store = contextlib.ExitStack()
    if job.rank == 0:
        fit.run = tracking.start_run(job, data, fit, store)
    try:
        return _fit_and_log(job, data, fit)
    except BaseException:
        if fit.run is not None:
            import mlflow

            mlflow.end_run(status="FAILED")
        raise
    finally:
        store.close()


def _encode(job: TrainingJob) -> EncodedData:
    """This rank's rows of every split, encoded with statistics merged over all ranks."""
    manifest, rank, size = job.manifest, job.rank, job.world
    feats = list(manifest["feature_columns"])
    # Each rank reads only its own files of each split, and the candidates of its own users.
    local = {s: read_files(job.files[s][rank::size]) for s in SPLITS}
    if local["train"].empty:
        raise TrainingError(f"rank {rank}: its train files {job.files['train'][rank::size]} hold no rows")
    pair_feats = [str(c) for c in manifest["user_category"]["feature_columns"]]
    texts = read_texts(job.cfg, job.training_set_dir, manifest)
    cand_cols = candidate_columns(job.cfg, manifest)
    local_cand = {s: read_candidates(job.training_set_dir, s, local[s], cand_cols) for s in SPLITS}

    stats = EncoderStats(feature_columns=feats)
    for part in gather_objects(FeatureEncoder.partial_stats(local["train"], feats)):
        stats = stats.merge(part)
    encoder = FeatureEncoder.from_stats(
        stats,
        **encoder_settings(job.cfg, manifest),
    )
    pair_stats = EncoderStats(feature_columns=pair_feats)
    for part in gather_objects(FeatureEncoder.partial_tabular_stats(local_cand["train"], pair_feats)):
        pair_stats = pair_stats.merge(part)
    encoder = encoder.with_pair_stats(pair_stats)
    if texts is not None:
        encoder = encoder.with_texts(texts.texts, texts.vectors.shape[1], texts.encoder, texts.through)
    train_y, train_w = encode_targets(local["train"])
    positives = sum(p for p in gather_objects(train_y.sum(dim=0).numpy()))
    pos_weight = positive_weights(job.cfg, positives, stats.n_rows)
    cand_pos = sum(gather_objects(float(local_cand["train"][USER_CATEGORY_LABEL].sum())))
    (category_pos_weight,) = positive_weights(job.cfg, np.array([cand_pos]), pair_stats.n_rows, heads=1)

    def encode_split(s: str) -> dict[str, torch.Tensor]:
        rows = candidate_rows(local[s], local_cand[s])
        return {**encoder.encode(local[s]), **encoder.encode_candidates(rows, local_cand[s], with_labels=True)}

    train_x = encode_split("train")
    evals: dict[str, tuple[dict[str, torch.Tensor] | None, np.ndarray | None]] = {}
    for s in ("val", "test"):
        if local[s].empty:
            evals[s] = (None, None)
        else:
            y, _ = encode_targets(local[s])
            evals[s] = (encode_split(s), y.numpy())
    return EncodedData(
        encoder=encoder,
        local=local,
        train_x=train_x,
        train_y=train_y,
        train_w=train_w,
        evals=evals,
        n_train=stats.n_rows,
        n_train_candidates=pair_stats.n_rows,
        pos_weight=pos_weight,
        category_pos_weight=category_pos_weight,
        text_vectors=texts.vectors if texts is not None else None,
    )


def _build(job: TrainingJob, data: EncodedData) -> Fitting:
    """Model, DDP wrapper, optimiser and schedule; restored from this training's checkpoint if there is one."""
    t, device = job.cfg.training, job.device
    mcfg = build_model_config(job.cfg, job.model_type, data.encoder, data.pos_weight, data.category_pos_weight)
    torch.manual_seed(t.seed)
    model = build_model(job.model_type, mcfg)
    if data.text_vectors is not None:
        model.embed.set_text_vectors(torch.from_numpy(data.text_vectors))
    model = model.to(device)
    ckpt_dir = _checkpoint_dir(job)
    resume = broadcast_object(ckpt_io.load(ckpt_dir) if job.rank == 0 else None) if t.checkpoints else None
    init = {"init_from": "none", "init_tensors": 0}
    if resume is not None:
        # Before the DDP wrap, which broadcasts rank 0's parameters to the others.
        model.load_state_dict(resume["model"])
    elif t.init_from and job.rank == 0:
        init = _init_from_pretrained(job, model, data.encoder)
    if job.world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        ddp_model = model

    local_bs = t.batch_size // job.world
    # Ranks may hold different row counts; all run the longest rank's step count (shorter shards wrap)
    # so every step is a collective all ranks join, and every rank's share of a batch has equal size.
    steps = all_max(math.ceil(len(data.train_y) / local_bs), device)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=t.learning_rate, weight_decay=t.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(job.cfg, steps * job.epochs))
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
    return Fitting(
        model=model,
        ddp_model=ddp_model,
        optimizer=optimizer,
        scheduler=scheduler,
        steps=steps,
        local_bs=local_bs,
        ckpt_dir=ckpt_dir if t.checkpoints else None,
        resume=resume,
        init=init,
    )


def _init_from_pretrained(job: TrainingJob, model: IntentModel, encoder: FeatureEncoder) -> dict[str, Any]:
    """Rank 0 copies ``training.init_from`` into ``model`` when it is of this family (the DDP wrap then broadcasts
    it): a pretrained encoder's sequence encoder, or the whole of a trained intent model (the champion, heads
    included); a family of another type starts from fresh weights."""
    from tasks.models.pyfunc import load_start
    from tasks.registry import mlflow_store

    uri = job.cfg.training.init_from
    assert uri is not None
    with mlflow_store(job.cfg):
        pretrained, whole = load_start(uri)
    if pretrained.model_type != job.model_type:
        what = "model" if whole else "encoder"
        rank0_print(f"{job.model_type} starts from fresh weights: {uri} is a {pretrained.model_type} {what}")
        return {"init_from": "none", "init_tensors": 0}
    state = pretrained.model.state_dict() if whole else pretrained.model.sequence_encoder_state()
    copied = model.init_sequence_encoder(state, pretrained.encoder.category_index, encoder.category_index)
    shared = len(set(pretrained.encoder.category_index) & set(encoder.category_index))
    rank0_print(
        f"{job.model_type} starts from {uri}: {len(copied)} tensors of its "
        f"{'whole model' if whole else 'sequence encoder'}, {shared} of {len(encoder.category_index)} category rows"
    )
    return {"init_from": uri, "init_tensors": len(copied)}


def _checkpoint_dir(job: TrainingJob) -> Path:
    """Checkpoint folder of this training's identity: everything that changes what it computes."""
    training = job.cfg.training.model_dump(mode="json", exclude=NOT_IN_CHECKPOINT_KEY)
    # The family's own settings change the computation like the training section does.
    training["models"] = {job.model_type: job.cfg.models.get(job.model_type, {})}
    key = ckpt_io.training_key(job.manifest, job.model_type, job.epochs, training, job.world)
    return ckpt_io.checkpoint_dir(job.cfg.paths.runs_dir, str(job.manifest["id"]), job.model_type, key)


def _fit_and_log(job: TrainingJob, data: EncodedData, fit: Fitting) -> dict[str, Any] | None:
    """The epoch loop, then the trial result or the test evaluation and registration."""
    t = job.cfg.training
    progress = Progress()
    if fit.resume is not None:
        progress = Progress.from_checkpoint(fit.resume)
        # Dropout masks continue from where the interrupted run stood, so the resumed epochs are identical.
        ckpt_io.set_rng_state(fit.resume["rng"][job.rank])
    for epoch in range(progress.epoch, job.epochs):
        if progress.stopped:
            break
        _run_epoch(job, data, fit, progress, epoch)
        if fit.ckpt_dir is not None:
            _save_checkpoint(job, fit, progress, fit.ckpt_dir)
        if job.fault_after_epoch == epoch + 1 and job.rank == 0:
            rank0_print(f"fault injection: killing rank 0 after epoch {epoch + 1}")
            os.kill(os.getpid(), signal.SIGKILL)
        if progress.stopped:
            rank0_print(f"early stop after epoch {epoch + 1}: no better validation score for {t.patience} epochs")
            break

    if job.trial:
        if job.rank != 0:
            return None
        payload = tracking.finish_trial(job, fit, progress)
        if fit.ckpt_dir is not None:
            ckpt_io.remove(fit.ckpt_dir)
        return payload
    fit.model.load_state_dict(progress.best_state)
    val = evaluate_split(job.cfg, fit.model, *data.evals["val"], job.device)
    test = evaluate_split(job.cfg, fit.model, *data.evals["test"], job.device)
    test_new = _gather_new_user_mask(job.cfg, job.manifest, data.local["test"])
    if job.rank != 0:
        return None
    calibration, val_cal, test_cal = calibrate(job.cfg, val, test)
    tracking.log_user_group_metrics(job.cfg, test_cal.y, test_cal.p, test_new)
    payload = tracking.log_results(job, data, fit, progress, calibration, val_cal, test, test_cal)
    if fit.ckpt_dir is not None:
        # The version is registered: the same training launched again is a new run, not a resume.
        ckpt_io.remove(fit.ckpt_dir)
    return payload


def _run_epoch(job: TrainingJob, data: EncodedData, fit: Fitting, progress: Progress, epoch: int) -> None:
    """Train one epoch (0-based ``epoch``), score it on validation and advance ``progress``."""
    t, device, steps, local_bs = job.cfg.training, job.device, fit.steps, fit.local_bs
    n_local = len(data.train_y)
    fit.model.train()
    gen = torch.Generator().manual_seed(t.seed * 1_000_003 + epoch * 7919 + job.rank)
    order = torch.randperm(n_local, generator=gen)
    order = order.repeat(math.ceil(steps * local_bs / n_local))[: steps * local_bs]  # [steps * b]
    started = time.perf_counter()
    loss_sum = 0.0
    for step in range(steps):
        idx = order[step * local_bs : (step + 1) * local_bs]
        loss_sum += train_step(
            fit.ddp_model,
            fit.model,
            fit.optimizer,
            to_device(take(data.train_x, idx), device),
            data.train_y[idx].to(device),
            data.train_w[idx].to(device),
            grad_clip_norm=t.grad_clip_norm,
        )
        fit.scheduler.step()
    elapsed = time.perf_counter() - started
    train_loss = all_mean(loss_sum / steps, device)
    samples_per_s = steps * local_bs * job.world / max(elapsed, 1e-9)
    val_metrics = evaluate_split(job.cfg, fit.model, *data.evals["val"], device).metrics
    val_score = score(job.cfg, val_metrics)
    val_metrics["score"] = val_score
    improved = val_score > progress.best_score
    if improved:
        progress.best_score, progress.best_epoch, progress.since_best = val_score, epoch + 1, 0
        progress.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in fit.model.state_dict().items()})
    else:
        progress.since_best += 1
    progress.history.append(
        {"epoch": epoch + 1, "train_loss": train_loss, **{f"val_{k}": v for k, v in val_metrics.items()}}
    )
    rank0_print(
        f"epoch {epoch + 1}/{job.epochs} loss {train_loss:.4f} val score {val_score:.4f} ("
        + ", ".join(f"{m} {val_metrics.get(m, float('nan')):.4f}" for m in t.early_stopping)
        + f") samples/s {samples_per_s:.0f}"
        + (" *" if improved else ""),
    )
    if job.rank == 0:
        tracking.log_epoch(train_loss, samples_per_s, fit.scheduler.get_last_lr()[0], val_metrics, epoch + 1)
    progress.epoch = epoch + 1
    progress.stopped = bool(t.patience and progress.since_best >= t.patience)


def _save_checkpoint(job: TrainingJob, fit: Fitting, progress: Progress, ckpt_dir: Path) -> None:
    """All ranks hand in their RNG states; rank 0 writes the epoch's checkpoint atomically."""
    rngs = gather_objects(ckpt_io.rng_state())
    if job.rank != 0:
        return
    ckpt_io.save(
        ckpt_dir,
        {
            "run_id": fit.run_id,
            "model": {k: v.detach().cpu() for k, v in fit.model.state_dict().items()},
            "optimizer": fit.optimizer.state_dict(),
            "scheduler": fit.scheduler.state_dict(),
            "rng": rngs,
            **progress.to_checkpoint(),
        },
    )


def _gather_new_user_mask(cfg: PipelineConfig, manifest: dict[str, Any], local_test: pd.DataFrame) -> np.ndarray | None:
    """New-user flags of the test rows in the order ``evaluate_split`` gathers them (rank order)."""
    mask = new_user_mask(local_test, list(manifest["feature_columns"]), cfg.training.new_user_days)
    parts = gather_objects(mask)
    if any(p is None for p in parts):
        return None
    return np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else None
