"""Self-supervised pretraining of the behaviour encoder under torchrun, registered in MLflow: the CLI.

Reads the sequences of every user row of the training set's last ``pretrain.train_cutoffs`` train cutoffs
(every user with events in the lookback at those cutoffs; the labels are not read), holds out
``pretrain.holdout_fraction`` of the users (by a hash of user_id) and trains the sequence encoder of
``pretrain.model_type`` on masked-event prediction (``tasks.models.pretraining``) with DDP: gloo on CPU,
NCCL and bf16 autocast on CUDA. Validation and test cutoffs are never read, so the splits that judge the
fine-tuned models hold histories the encoder has not seen. Rank 0 logs the loss, throughput and the held-out
masked-event accuracy beside the majority guess to an MLflow run, registers the encoder as a new version
of ``pretrain.model_name`` (a pyfunc whose predict gives each user's sequence representation), points
``pretrain.alias`` at it and writes ``{run_id, model_version, model_uri, model_type, metrics}`` to
``--output``. A training of the same family then starts from it with ``training.init_from``
(``tasks.training.worker``).

    python -m tasks.pretrain --launch --training-set DIR [--nproc N]
    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.pretrain --training-set DIR --output JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tasks.config import PipelineConfig, add_common_args, config_from_args
from tasks.errors import DataError, run_cli
from tasks.models.base import TorchPredictor, build_model, model_class
from tasks.models.encoding import FeatureEncoder
from tasks.models.pretraining import (
    MaskedEventModel,
    choose_masked,
    majority_accuracy,
    mask_events,
    masked_accuracy,
    masked_loss,
)
from tasks.schema import SEQUENCE_COLUMNS, SEQUENCE_TEXT_COLUMN
from tasks.training.build import build_model_config, check_model_settings, encoder_settings, lr_lambda
from tasks.training.collectives import all_max, all_mean, process_group, rank0_print, seed_everything, world
from tasks.training.data import (
    TextTable,
    TrainingError,
    read_manifest,
    read_texts,
    require_validation,
    split_files,
)
from tasks.training.steps import take, to_device
from tasks.training.torchrun import run_module
from tasks.training.tracking import ensure_experiment, git_commit, write_json_atomic

# Artifact path of the packaged encoder inside its run.
ENCODER_ARTIFACT = "encoder"


class PretrainDataError(TrainingError, DataError):
    """The training set holds too few user rows with events to pretrain on; retrying will not help."""


@dataclass(frozen=True)
class PretrainResult:
    run_id: str
    model_name: str
    model_version: str
    model_uri: str
    model_type: str
    metrics: dict[str, float]


def pretrain_cutoffs(cfg: PipelineConfig, manifest: dict[str, Any]) -> list[str]:
    """The last ``pretrain.train_cutoffs`` train cutoffs of ``manifest`` (all of them when it has fewer)."""
    return [str(c) for c in manifest["cutoffs"]["train"]][-cfg.pretrain.train_cutoffs :]


def read_sequences(training_set_dir: Path, cutoffs: list[str], text: bool = False) -> pd.DataFrame:
    """user_id, ds and the seq_* columns (with ``text``, seq_text too) of the train rows at ``cutoffs`` with at
    least one event."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset([str(f) for f in split_files(training_set_dir, "train")], format="parquet").to_table(
        columns=["user_id", "ds", *SEQUENCE_COLUMNS, *([SEQUENCE_TEXT_COLUMN] if text else [])]
    )
    wanted = pc.and_(
        pc.is_in(pc.cast(table.column("ds"), pa.string()), value_set=pa.array(cutoffs)),
        pc.greater(pc.fill_null(pc.list_value_length(table.column(SEQUENCE_COLUMNS[0])), 0), 0),
    )
    return table.filter(wanted).to_pandas()


def holdout_mask(user_ids: pd.Series, fraction: float) -> np.ndarray:
    """True for the users held out: a stable hash of user_id, so every rank and every rerun agree."""
    buckets = np.fromiter((zlib.crc32(str(u).encode()) % 10_000 for u in user_ids), dtype=np.int64, count=len(user_ids))
    return buckets < round(fraction * 10_000)


def pretrain_distributed(cfg: PipelineConfig, training_set_dir: Path, output: Path) -> dict[str, Any] | None:
    """Body of every torchrun process; the result payload on rank 0, None elsewhere."""
    p = cfg.pretrain
    manifest = read_manifest(Path(training_set_dir).resolve())
    check_model_settings(cfg, p.model_type, int(manifest["sequence_length"]))
    texts = read_texts(cfg, Path(training_set_dir).resolve(), manifest)
    rows = read_sequences(Path(training_set_dir).resolve(), pretrain_cutoffs(cfg, manifest), texts is not None)
    held = holdout_mask(rows["user_id"], p.holdout_fraction)
    train_rows, val_rows = rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise PretrainDataError(
            f"{len(rows)} user rows with events at train cutoffs {', '.join(pretrain_cutoffs(cfg, manifest))}: "
            f"{len(train_rows)} to train on, {len(val_rows)} held out; both must be > 0"
        )

    with process_group() as device:
        return _pretrain(cfg, manifest, train_rows, val_rows, texts, output, device)


def _pretrain(
    cfg: PipelineConfig,
    manifest: dict[str, Any],
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    texts: TextTable | None,
    output: Path,
    device: torch.device,
) -> dict[str, Any] | None:
    p, t = cfg.pretrain, cfg.training
    rank, size = world()
    if p.batch_size < size:
        raise TrainingError(f"pretrain.batch_size {p.batch_size} is smaller than the {size} processes")
    seed_everything(t.seed)
    # Every rank reads all rows, so every rank fits the same vocabulary without a collective.
    encoder = FeatureEncoder.fit(
        train_rows,
        [],
        **encoder_settings(cfg, manifest),
    )
    if texts is not None:
        encoder = encoder.with_texts(texts.texts, texts.vectors.shape[1], texts.encoder, texts.through)
    local = encoder.encode(train_rows.iloc[rank::size])  # this rank's users
    torch.manual_seed(t.seed)
    intent = build_model(p.model_type, build_model_config(cfg, p.model_type, encoder, pos_weight=(1.0,) * 3))
    if texts is not None:
        intent.embed.set_text_vectors(torch.from_numpy(texts.vectors))
    model = MaskedEventModel(intent)
    gen = torch.Generator().manual_seed(t.seed * 1_000_003 + rank)
    probe = take(local, torch.arange(min(8, len(local["seq_mask"]))))
    frozen = model.freeze_unreached(probe, choose_masked(probe["seq_mask"], p.mask_rate, gen))
    model.to(device)
    ddp = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if size > 1
        else model
    )
    local_bs = p.batch_size // size
    n_local = len(local["seq_mask"])
    # Ranks may hold different user counts; all run the longest rank's step count (shorter shards wrap).
    steps = all_max(math.ceil(n_local / local_bs), device)
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=p.learning_rate, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps * p.epochs))
    store = contextlib.ExitStack()
    run = None
    try:
        if rank == 0:
            run = _start_run(cfg, manifest, store, encoder, model, size, device, len(train_rows), len(val_rows), frozen)
        history = []
        for epoch in range(p.epochs):
            model.train()
            order = torch.randperm(n_local, generator=torch.Generator().manual_seed(t.seed * 7919 + epoch * 31 + rank))
            order = order.repeat(math.ceil(steps * local_bs / n_local))[: steps * local_bs]  # [steps * b]
            started, loss_sum = time.perf_counter(), 0.0
            for step in range(steps):
                batch = to_device(take(local, order[step * local_bs : (step + 1) * local_bs]), device)
                chosen = choose_masked(batch["seq_mask"].cpu(), p.mask_rate, gen).to(device)  # [b, L]
                with _autocast(device):
                    loss = masked_loss(ddp(mask_events(batch, chosen), chosen), batch, chosen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip_norm)
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss)
            elapsed = time.perf_counter() - started
            train_loss = all_mean(loss_sum / steps, device)
            samples_per_s = steps * local_bs * size / max(elapsed, 1e-9)
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "samples_per_s": samples_per_s})
            rank0_print(
                f"epoch {epoch + 1}/{p.epochs} loss {train_loss:.4f} samples/s {samples_per_s:.0f}", job="pretrain"
            )
            if run is not None:
                import mlflow

                mlflow.log_metrics(
                    {"pretrain_loss": train_loss, "pretrain_samples_per_s": samples_per_s}, step=epoch + 1
                )
        if rank != 0:
            return None
        return _finish(cfg, manifest, encoder, model, local, val_rows, history, output)
    except BaseException:
        if run is not None:
            import mlflow

            mlflow.end_run(status="FAILED")
        raise
    finally:
        store.close()


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on CPU, where bf16 matmuls are slower than fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _start_run(
    cfg: PipelineConfig,
    manifest: dict[str, Any],
    store: contextlib.ExitStack,
    encoder: FeatureEncoder,
    model: MaskedEventModel,
    size: int,
    device: torch.device,
    n_train: int,
    n_val: int,
    frozen: list[str],
):
    """Rank 0's MLflow run of the pretraining, with its settings and data; ``store`` keeps the store open."""
    import mlflow

    from tasks.registry import mlflow_store

    p = cfg.pretrain
    exp_id = ensure_experiment(cfg, store.enter_context(mlflow_store(cfg)))
    run = mlflow.start_run(experiment_id=exp_id, run_name=f"pretrain-{p.model_type}-{manifest['id']}")
    own = cfg.models.get(p.model_type, {})
    mlflow.log_params(
        {
            **{f"pretrain.{k}": v for k, v in p.model_dump().items()},
            **{f"models.{p.model_type}.{k}": v for k, v in own.items()},
            **{f"training.{k}": getattr(cfg.training, k) for k in ("embedding_dim", "hidden_dim", "dropout", "seed")},
            "training_set_id": manifest["id"],
            "pretrain_cutoffs": ",".join(pretrain_cutoffs(cfg, manifest)),
            "n_train_rows": n_train,
            "n_holdout_rows": n_val,
            "world_size": size,
            "device": device.type,
            "precision": "bf16" if device.type == "cuda" else "fp32",
            "category_vocab_size": len(encoder.category_index),
            "n_parameters": sum(q.numel() for q in model.parameters()),
            "frozen_unreached": ",".join(frozen) or "none",
        }
    )
    tags = {"training_set_id": str(manifest["id"]), "model_type": p.model_type, "job": "pretrain"}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    mlflow.set_tags(tags)
    rank0_print(
        f"{p.model_type} on {size} process(es), {device.type}; {n_train} user rows, run {run.info.run_id}",
        job="pretrain",
    )
    return run


def _finish(
    cfg: PipelineConfig,
    manifest: dict[str, Any],
    encoder: FeatureEncoder,
    model: MaskedEventModel,
    train_batch: dict[str, torch.Tensor],
    val_rows: pd.DataFrame,
    history: list[dict[str, float]],
    output: Path,
) -> dict[str, Any]:
    """Rank 0: held-out metrics, the packaged encoder, its version and alias, the result file."""
    import mlflow

    from tasks.models.pyfunc import log_encoder_model

    p = cfg.pretrain
    model = model.to("cpu")
    val = encoder.encode(val_rows)
    chosen = choose_masked(val["seq_mask"], p.mask_rate, torch.Generator().manual_seed(cfg.training.seed + 1))
    val_loss, acc = masked_accuracy(model, val, chosen)
    base = majority_accuracy(train_batch, val, chosen)
    metrics = {"holdout_masked_loss": val_loss}
    for f in acc:
        short = f.removeprefix("seq_")
        metrics[f"holdout_acc_{short}"] = acc[f]
        metrics[f"majority_acc_{short}"] = base[f]
    mlflow.log_metrics(metrics)
    info = log_encoder_model(
        TorchPredictor(model.encoder, encoder, p.model_type),
        val_rows,
        name=ENCODER_ARTIFACT,
        registered_model_name=p.model_name,
        metadata={"training_set_id": str(manifest["id"]), "model_type": p.model_type},
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(p.model_name, p.alias, version)
    for key, value in {"model_type": p.model_type, "training_set_id": str(manifest["id"])}.items():
        client.set_model_version_tag(p.model_name, version, key, value)
    run_id = mlflow.active_run().info.run_id
    mlflow.end_run()
    payload = {
        "run_id": run_id,
        "model_name": p.model_name,
        "model_version": version,
        "model_uri": f"models:/{p.model_name}/{version}",
        "model_type": p.model_type,
        "metrics": metrics,
        "history": history,
    }
    write_json_atomic(output, payload)
    rank0_print(
        f"registered {payload['model_uri']} (@{p.alias}, run {run_id}); held-out masked-event accuracy: "
        + ", ".join(f"{f.removeprefix('seq_')} {acc[f]:.3f} (majority guess {base[f]:.3f})" for f in acc),
        job="pretrain",
    )
    return payload


def launch_pretrain(
    cfg: PipelineConfig, training_set_dir: Path, *, nproc: int | None = None, allow_unvalidated: bool = False
) -> PretrainResult:
    """Pretrain in a torchrun subprocess of ``nproc`` processes (default ``training.nproc_per_node``); the
    exact version it registered. Like training, it refuses a training set without a passing validation
    result (``training.require_validation``) unless ``allow_unvalidated``."""
    manifest = read_manifest(Path(training_set_dir).resolve())
    if cfg.training.require_validation and not allow_unvalidated:
        require_validation(cfg, Path(training_set_dir).resolve(), manifest)
    check_model_settings(cfg, cfg.pretrain.model_type, int(manifest["sequence_length"]))
    if model_class(cfg.pretrain.model_type).trainer != "torchrun":
        raise TrainingError(f"pretrain.model_type {cfg.pretrain.model_type!r} is not a torchrun (sequence) family")
    result = run_module(
        cfg,
        "tasks.pretrain",
        ["--training-set", str(Path(training_set_dir).resolve())],
        nproc=nproc or cfg.training.nproc_per_node,
        what="pretraining",
    )
    return PretrainResult(
        run_id=result["run_id"],
        model_name=result["model_name"],
        model_version=str(result["model_version"]),
        model_uri=result["model_uri"],
        model_type=result["model_type"],
        metrics=result["metrics"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(
        argparse.ArgumentParser(prog="python -m tasks.pretrain", description=__doc__.split("\n")[0])
    )
    parser.add_argument("--training-set", type=Path, required=True, help="training-set folder (with manifest.json)")
    parser.add_argument("--output", type=Path, help="result JSON written by rank 0 (required unless --launch)")
    parser.add_argument("--launch", action="store_true", help="start torchrun with --nproc processes and wait")
    parser.add_argument("--nproc", type=int, help="processes for --launch (default: training.nproc_per_node)")
    parser.add_argument(
        "--allow-unvalidated",
        action="store_true",
        help="pretrain even without a passing validation result of the training set (ad-hoc runs)",
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.launch:
        result = launch_pretrain(cfg, args.training_set, nproc=args.nproc, allow_unvalidated=args.allow_unvalidated)
        print(json.dumps(result.__dict__, indent=2, sort_keys=True))
        return 0
    if args.output is None:
        parser.error("--output is required without --launch")
    pretrain_distributed(cfg, args.training_set, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
