"""Distributed training of an intent model under torchrun, MLflow logging and registration.

Each process reads only its own Parquet files of every split (files ``rank::world``) and only the
user x category candidate rows of its own users (joined by (ds, user_id)), the ranks merge their
encoder statistics, and DDP averages gradients. Rank 0 logs params, per-epoch and test metrics,
the manifest and the packaged pyfunc model to MLflow, registers a new version of
``mlflow.model_name`` and writes ``{run_id, model_version, model_uri, test_metrics}`` to ``--output``.

Entry points:
    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.train \
        --training-set DIR --output JSON [--model-type lstm|bert] [--epochs E] [--config ...]
    python -m tasks.train --launch --training-set DIR [...]   (runs the command above, prints the result)
    ``launch(cfg, training_set_dir, ...)`` from Python.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import yaml

from tasks.validation_results import partition_fingerprint, read_result, result_path
from tasks import checkpoint as ckpt_io
from tasks.config import ENV_OVERRIDES, REPO_ROOT, PipelineConfig, add_common_args, config_from_args
from tasks.errors import DataError, run_cli
from tasks.evaluate import (
    EARLY_STOPPING_METRIC,
    category_ranking_metrics,
    evaluate_intents,
    evaluate_user_groups,
    finite,
    new_user_mask,
)
from tasks.models.base import IntentModel, IntentModelConfig, build_model, model_config
from tasks.models.encoding import EncoderStats, FeatureEncoder, encode_targets
from tasks.registry import mlflow_store
from tasks.schema import (
    CANDIDATE_CATEGORY_COLUMN,
    INTENTS,
    LABEL_COLUMNS,
    SEQUENCE_COLUMNS,
    TABULAR_PREFIX,
    USER_CATEGORY_LABEL,
)

SPLITS = ("train", "val", "test")
# A worker's final exception line, as torchrun relays it ("[rank0]: ValueError: ...").
_ERROR_LINE = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b[^:]*:\s")
_COLLATERAL = re.compile(r"gloo|Connection (reset|closed)|NCCL|ProcessGroup|timed out", re.I)
# Settings that change how a training is run or checked, not what it computes: a relaunch may alter them and resume.
_NOT_IN_CHECKPOINT_KEY = {"nproc_per_node", "checkpoints", "max_restarts", "require_validation", "search"}
MANIFEST_KEYS = (
    "id", "cutoffs", "feature_columns", "sequence_columns", "sequence_length", "item_buckets", "user_category",
)
# Key joining candidate rows to user rows.
CANDIDATE_KEY = ("ds", "user_id")


class TrainingError(RuntimeError):
    """Training could not run or did not finish; the message names the cause."""


class UnvalidatedTrainingSetError(TrainingError, DataError):
    """The training set has no passing validation result for its current files; retrying will not help."""


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    model_uri: str
    test_metrics: dict[str, float] = field(hash=False)
    output: Path


# ---- training-set input ----------------------------------------------------------------------


def read_manifest(training_set_dir: Path) -> dict[str, Any]:
    """The manifest of a training-set folder, checked against the input contract."""
    path = Path(training_set_dir) / "manifest.json"
    if not path.is_file():
        raise TrainingError(f"training set {training_set_dir} has no manifest.json")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TrainingError(f"{path} is not valid JSON: {e}") from None
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise TrainingError(f"{path} lacks keys: {', '.join(missing)}")
    feats = manifest["feature_columns"]
    if not isinstance(feats, list) or any(not str(c).startswith(TABULAR_PREFIX) for c in feats):
        raise TrainingError(f"{path}: feature_columns must be a list of {TABULAR_PREFIX}* names, got {feats!r}")
    absent = set(SEQUENCE_COLUMNS) - set(manifest["sequence_columns"])
    if absent:
        raise TrainingError(f"{path}: sequence_columns lacks {sorted(absent)}")
    for split in SPLITS:
        if split not in manifest["cutoffs"]:
            raise TrainingError(f"{path}: cutoffs lacks the {split!r} split")
    uc = manifest["user_category"]
    if not isinstance(uc, dict) or not isinstance(uc.get("feature_columns"), list):
        raise TrainingError(f"{path}: user_category must be an object with a feature_columns list")
    if uc.get("label_column") != USER_CATEGORY_LABEL:
        raise TrainingError(f"{path}: user_category.label_column must be {USER_CATEGORY_LABEL!r}")
    return manifest


def split_files(training_set_dir: Path, split: str) -> list[Path]:
    files = sorted((Path(training_set_dir) / split).glob("*.parquet"))
    if not files:
        raise TrainingError(f"training set {training_set_dir} has no Parquet files in {split}/")
    return files


def read_files(files: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    import pyarrow.parquet as pq

    if not files:
        return pd.DataFrame(columns=columns or [])
    return pq.read_table([str(f) for f in files], columns=columns).to_pandas()


def require_validation(cfg: PipelineConfig, training_set_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The passing validation result of exactly these training-set files, or an error saying what is missing.

    ``spark_jobs.validate training_set`` stores it; a result for other files (the set was rebuilt after
    its validation) or a failed one does not count.
    """
    set_id = str(manifest["id"])
    path = result_path(cfg.paths.gx_dir, "training_set", set_id)
    hint = (
        f"run `python -m spark_jobs.validate training_set --training-set-id {set_id}` first "
        "(or pass --allow-unvalidated for an ad-hoc run)"
    )
    result = read_result(path)
    if result is None:
        raise UnvalidatedTrainingSetError(f"training set {set_id!r} has no validation result at {path}; {hint}")
    if not result.get("success"):
        raise UnvalidatedTrainingSetError(
            f"training set {set_id!r} failed validation ({path}): {result.get('description', '')}"
        )
    if result.get("fingerprint") != partition_fingerprint(training_set_dir):
        raise UnvalidatedTrainingSetError(
            f"training set {set_id!r} at {training_set_dir} changed since its validation ({path}); {hint}"
        )
    return {**result, "path": str(path)}


def read_candidates(training_set_dir: Path, split: str, users: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The user_category rows of ``split`` whose (ds, user_id) is among ``users``.

    The candidate files are partitioned independently of the user files, so the filter (pushed down
    to the Parquet reader) keeps each rank to its own users' rows instead of the whole split.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    folder = Path(training_set_dir) / "user_category" / split
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise TrainingError(f"training set {training_set_dir} has no Parquet files in user_category/{split}/")
    cols = [*CANDIDATE_KEY, CANDIDATE_CATEGORY_COLUMN, *columns]
    if users.empty:
        return pd.DataFrame(columns=cols)
    ds = pads.dataset([str(f) for f in files], format="parquet")
    missing = [c for c in cols if c not in ds.schema.names]
    if missing:
        raise TrainingError(f"{folder} lacks candidate columns {missing}")
    wanted = pc.field("user_id").isin(pa.array(users["user_id"].astype(str).unique()))
    table = ds.to_table(columns=cols, filter=wanted)
    cand = table.to_pandas()
    keys = users[list(CANDIDATE_KEY)].drop_duplicates()
    return cand.merge(keys, on=list(CANDIDATE_KEY), how="inner")


def candidate_rows(users: pd.DataFrame, cand: pd.DataFrame) -> np.ndarray:
    """Row of ``users`` (positional) that each candidate belongs to, by (ds, user_id); -1 if none."""
    index = pd.MultiIndex.from_frame(users[list(CANDIDATE_KEY)].astype(str))
    if not index.is_unique:
        raise TrainingError(f"user rows repeat a {CANDIDATE_KEY} key; candidates cannot be joined")
    return index.get_indexer(pd.MultiIndex.from_frame(cand[list(CANDIDATE_KEY)].astype(str))).astype(np.int64)


# ---- process-group helpers (all degrade to single-process when no group exists) ----------------


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank."""
    rank, world = _world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _all_max(value: int, device: torch.device) -> int:
    if _world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _all_mean(value: float, device: torch.device) -> float:
    rank, world = _world()
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- model construction ------------------------------------------------------------------------


def positive_weights(
    cfg: PipelineConfig, positives: np.ndarray, rows: int, heads: int = len(INTENTS)
) -> tuple[float, ...]:
    """Per-head BCE positive weight: negatives/positives of the train split, capped (or 1 when off)."""
    if cfg.training.positive_weighting == "none":
        return (1.0,) * heads
    pos = np.asarray(positives, dtype=np.float64)
    ratio = np.where(pos > 0, (rows - pos) / np.maximum(pos, 1.0), cfg.training.max_pos_weight)
    return tuple(float(v) for v in np.clip(ratio, 1.0, cfg.training.max_pos_weight))


def build_model_config(
    cfg: PipelineConfig,
    model_type: str,
    encoder: FeatureEncoder,
    pos_weight: tuple[float, ...],
    category_pos_weight: float = 1.0,
) -> IntentModelConfig:
    t = cfg.training
    common = dict(
        vocab_sizes=encoder.vocab_sizes,
        n_tabular=len(encoder.feature_columns),
        sequence_length=encoder.sequence_length,
        embedding_dim=t.embedding_dim,
        hidden_dim=t.hidden_dim,
        dropout=t.dropout,
        field_fusion=t.field_fusion,
        pos_weight=pos_weight,
        n_pair_tabular=len(encoder.pair_feature_columns),
        category_pos_weight=category_pos_weight,
        category_loss_weight=t.category_loss_weight,
    )
    specific = {
        "lstm": dict(num_layers=t.lstm_layers),
        "bert": dict(
            num_layers=t.bert_layers,
            num_heads=t.bert_heads,
            intermediate_dim=t.bert_intermediate_dim,
            pooling=t.bert_pooling,
        ),
    }
    return model_config(model_type, **common, **specific.get(model_type, {}))


def lr_lambda(cfg: PipelineConfig, total_steps: int):
    warmup = int(cfg.training.warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if cfg.training.lr_schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def take(batch: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows ``idx`` [b] of a batch; with candidates, also those rows' candidates (cand_* keys),
    re-pointed at the new rows. Candidates must be ordered by cand_row (as encode_candidates makes them)."""
    out = {k: v[idx] for k, v in batch.items() if not k.startswith("cand_")}
    if "cand_row" not in batch:
        return out
    rows = batch["cand_row"]  # [C], ascending
    idx = torch.as_tensor(idx, dtype=torch.long)
    starts = torch.searchsorted(rows, idx)  # [b]
    counts = torch.searchsorted(rows, idx, right=True) - starts  # [b]
    offsets = torch.cumsum(counts, 0) - counts  # [b]
    total = int(counts.sum())
    pos = torch.repeat_interleave(starts - offsets, counts) + torch.arange(total)  # [c] positions in batch
    for k, v in batch.items():
        if k.startswith("cand_") and k != "cand_row":
            out[k] = v[pos]
    out["cand_row"] = torch.repeat_interleave(torch.arange(len(idx)), counts)  # [c]
    return out


def train_step(
    ddp_model: torch.nn.Module,
    model: IntentModel,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    weight: torch.Tensor,
    *,
    grad_clip_norm: float,
) -> float:
    """One optimiser step on this rank's share of a global batch; returns this rank's loss.

    ``ddp_model`` is the DDP wrapper (or the model itself in a single process); ``model`` the bare
    module whose ``loss`` is used. DDP averages gradients over ranks before the clip.
    """
    device_type = labels.device.type
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device_type == "cuda"):
        output = ddp_model(batch)  # IntentOutput: intent [b, 3], category [c]
    loss = model.loss(output, labels, weight, category_labels=batch.get("cand_label"))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def predict_encoded(
    model: IntentModel, batch: dict[str, torch.Tensor], device: torch.device, chunk: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Of an encoded split, ``chunk`` users per forward pass: user probabilities [N, 3], and per
    candidate its user's row [C], label [C] and probability [C] (empty without candidates)."""
    n = len(batch["tabular"])
    out, rows, labels, cats = [], [], [], []
    for s in range(0, n, chunk):
        part = take(batch, torch.arange(s, min(s + chunk, n)))
        cand_label = part.pop("cand_label", None)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = model.predict_output(to_device(part, device))
        out.append(pred.intent.float().cpu().numpy())
        if cand_label is not None:
            rows.append(part["cand_row"].numpy() + s)
            labels.append(cand_label.numpy())
            cats.append(pred.category.float().cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, len(INTENTS)), dtype=np.float32)
    if not rows:
        return probs, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)
    return probs, np.concatenate(rows), np.concatenate(labels), np.concatenate(cats)


def evaluate_split(
    cfg: PipelineConfig, model: IntentModel, encoded, labels: np.ndarray, device: torch.device
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Metrics of one split whose files are sharded over ranks; identical on every rank.

    User-level metrics over all users, plus category HitRate@k/NDCG@k over each user's candidates.
    """
    if encoded is not None:
        probs, cand_rows, cand_y, cand_p = predict_encoded(model, encoded, device, cfg.training.eval_batch_size)
        local = (labels, probs, cand_rows, cand_y, cand_p)
    else:
        local = None
    parts = [p for p in gather_objects(local) if p is not None and len(p[0])]
    if not parts:
        raise TrainingError("split has no rows on any rank")
    y = np.concatenate([p[0] for p in parts])
    p = np.concatenate([p[1] for p in parts])
    metrics = evaluate_intents(y, p, threshold=cfg.training.threshold, top_k_fraction=cfg.training.top_k_fraction)
    # Users are disjoint across ranks; offset each rank's rows so every user is one group.
    offsets = np.cumsum([0] + [len(q[0]) for q in parts])[:-1]
    groups = np.concatenate([q[2] + off for q, off in zip(parts, offsets, strict=True)])
    metrics.update(
        category_ranking_metrics(
            groups,
            np.concatenate([q[3] for q in parts]),
            np.concatenate([q[4] for q in parts]),
            k=cfg.training.category_eval_k,
        )
    )
    return metrics, y, p


def _score(metrics: dict[str, float]) -> float:
    # PR-AUC is undefined when the validation split has one class; fall back to (negated) log loss.
    v = metrics[EARLY_STOPPING_METRIC]
    return v if math.isfinite(v) else -metrics["purchase_log_loss"]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def ensure_experiment(cfg: PipelineConfig, client) -> str:
    """Id of ``mlflow.experiment``, created with ``mlflow.artifact_location`` when missing."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        try:
            return client.create_experiment(cfg.mlflow.experiment, artifact_location=cfg.mlflow.artifact_location)
        except MlflowException:
            # Another run created it between the lookup and the create.
            exp = client.get_experiment_by_name(cfg.mlflow.experiment)
            if exp is None:
                raise
    return exp.experiment_id


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ---- the per-process training run --------------------------------------------------------------


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
) -> dict[str, Any] | None:
    """Body of every torchrun process; returns the output payload on rank 0, None elsewhere.

    ``trial`` (a search trial): the MLflow run is nested under ``parent_run_id``, the result is the best
    validation score, and neither test metrics nor a model are logged.

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

    distributed = "WORLD_SIZE" in os.environ
    use_cuda = torch.cuda.is_available()
    if distributed:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    else:
        local_rank = 0
    rank, world = _world()
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    try:
        return _train(
            cfg, training_set_dir, output, manifest, files, model_type, epochs, rank, world, device,
            validation=validation, fault_after_epoch=fault_after_epoch, parent_run_id=parent_run_id, trial=trial,
        )
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        print(f"[train] {msg}", flush=True)


def _broadcast_checkpoint(folder: Path, rank: int, world: int) -> dict[str, Any] | None:
    """Rank 0 reads the checkpoint and every rank receives it (no shared filesystem needed between nodes)."""
    payload = ckpt_io.load(folder) if rank == 0 else None
    if world > 1:
        box = [payload]
        dist.broadcast_object_list(box, src=0)
        payload = box[0]
    return payload


def _train(
    cfg, training_set_dir, output, manifest, files, model_type, epochs, rank, world, device,
    *, validation=None, fault_after_epoch=None, parent_run_id=None, trial=False,
):
    t = cfg.training
    if len(files["train"]) < world:
        raise TrainingError(
            f"train split has {len(files['train'])} file(s), fewer than the {world} processes; "
            "each process needs at least one file"
        )
    if t.batch_size < world:
        raise TrainingError(f"batch_size {t.batch_size} is smaller than the {world} processes")
    seed_everything(t.seed)
    feats = list(manifest["feature_columns"])

    # Each rank reads only its own files of each split, and the candidates of its own users.
    local = {s: read_files(files[s][rank::world]) for s in SPLITS}
    if local["train"].empty:
        raise TrainingError(f"rank {rank}: its train files {files['train'][rank::world]} hold no rows")
    pair_feats = [str(c) for c in manifest["user_category"]["feature_columns"]]
    local_cand = {
        s: read_candidates(training_set_dir, s, local[s], [*pair_feats, USER_CATEGORY_LABEL]) for s in SPLITS
    }

    stats = EncoderStats(feature_columns=feats)
    for part in gather_objects(FeatureEncoder.partial_stats(local["train"], feats)):
        stats = stats.merge(part)
    encoder = FeatureEncoder.from_stats(
        stats,
        sequence_length=int(manifest["sequence_length"]),
        item_buckets=int(manifest["item_buckets"]),
        gap_buckets=t.gap_buckets,
        max_categories=t.max_categories,
        category_min_count=t.category_min_count,
    )
    pair_stats = EncoderStats(feature_columns=pair_feats)
    for part in gather_objects(FeatureEncoder.partial_tabular_stats(local_cand["train"], pair_feats)):
        pair_stats = pair_stats.merge(part)
    encoder = encoder.with_pair_stats(pair_stats)
    train_y, train_w = encode_targets(local["train"])
    positives = sum(p for p in gather_objects(train_y.sum(dim=0).numpy()))
    n_train = stats.n_rows
    pos_weight = positive_weights(cfg, positives, n_train)
    cand_pos = sum(gather_objects(float(local_cand["train"][USER_CATEGORY_LABEL].sum())))
    (category_pos_weight,) = positive_weights(cfg, np.array([cand_pos]), pair_stats.n_rows, heads=1)

    def encode_split(s: str) -> dict[str, torch.Tensor]:
        rows = candidate_rows(local[s], local_cand[s])
        return {**encoder.encode(local[s]), **encoder.encode_candidates(rows, local_cand[s], with_labels=True)}

    train_x = encode_split("train")
    evals = {}
    for s in ("val", "test"):
        if local[s].empty:
            evals[s] = (None, None)
        else:
            y, _ = encode_targets(local[s])
            evals[s] = (encode_split(s), y.numpy())

    mcfg = build_model_config(cfg, model_type, encoder, pos_weight, category_pos_weight)
    torch.manual_seed(t.seed)
    model = build_model(model_type, mcfg).to(device)
    key = ckpt_io.training_key(
        manifest, model_type, epochs, t.model_dump(mode="json", exclude=_NOT_IN_CHECKPOINT_KEY), world
    )
    ckpt_dir = ckpt_io.checkpoint_dir(cfg.paths.runs_dir, str(manifest["id"]), model_type, key)
    resume = _broadcast_checkpoint(ckpt_dir, rank, world) if t.checkpoints else None
    if resume is not None:
        # Before the DDP wrap, which broadcasts rank 0's parameters to the others.
        model.load_state_dict(resume["model"])
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        ddp_model = model

    local_bs = t.batch_size // world
    n_local = len(train_y)
    # Ranks may hold different row counts; all run the longest rank's step count (shorter shards wrap)
    # so every step is a collective all ranks join, and every rank's share of a batch has equal size.
    steps = _all_max(math.ceil(n_local / local_bs), device)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=t.learning_rate, weight_decay=t.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps * epochs))
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])

    run = None
    store = contextlib.ExitStack()
    if rank == 0 and resume is not None:
        import mlflow

        store.enter_context(mlflow_store(cfg))
        # The resumed training continues the interrupted MLflow run: one run, complete per-epoch history.
        run = mlflow.start_run(run_id=resume["run_id"])
        mlflow.set_tag("resumed_after_epoch", str(resume["epoch"]))
        _log(rank, f"resumed from checkpoint {ckpt_dir} after epoch {resume['epoch']}, run {run.info.run_id}")
    elif rank == 0:
        import mlflow

        exp_id = ensure_experiment(cfg, store.enter_context(mlflow_store(cfg)))
        run = mlflow.start_run(
            experiment_id=exp_id,
            run_name=f"{'trial' if trial else model_type}-{manifest['id']}",
            parent_run_id=parent_run_id,
        )
        params = {f"training.{k}": v for k, v in t.model_dump().items()}
        params.update(
            model_type=model_type,
            epochs_requested=epochs,
            world_size=world,
            device=device.type,
            training_set_id=manifest["id"],
            training_set_dir=str(training_set_dir),
            n_train_rows=n_train,
            pos_weight=list(pos_weight),
            category_pos_weight=category_pos_weight,
            n_train_candidate_rows=pair_stats.n_rows,
            category_vocab_size=len(encoder.category_index),
            n_parameters=sum(p.numel() for p in model.parameters()),
            local_batch_size=local_bs,
            steps_per_epoch=steps,
        )
        params["training.model_type"] = model_type
        mlflow.log_params(params)
        tags = {"training_set_id": str(manifest["id"]), "model_type": model_type}
        if commit := _git_commit():
            tags["git_commit"] = commit
            tags["mlflow.source.git.commit"] = commit
        mlflow.set_tags(tags)
        mlflow.log_dict(manifest, "training_set/manifest.json")
        from tasks.lineage import log_training_set_lineage

        log_training_set_lineage(manifest, training_set_dir, partition_fingerprint(training_set_dir), validation)
        _log(rank, f"{model_type} on {world} process(es), {device.type}; {n_train} train rows, run {run.info.run_id}")

    try:
        payload = _fit_and_log(
            cfg, model, ddp_model, optimizer, scheduler, encoder, manifest, files, local,
            train_x, train_y, train_w, evals, model_type, epochs, steps, local_bs, rank, world, device, output, run,
            resume=resume, ckpt_dir=ckpt_dir if t.checkpoints else None, fault_after_epoch=fault_after_epoch,
            trial=trial,
        )
    except BaseException:
        if run is not None:
            import mlflow

            mlflow.end_run(status="FAILED")
        raise
    finally:
        store.close()
    return payload


def _fit_and_log(
    cfg, model, ddp_model, optimizer, scheduler, encoder, manifest, files, local,
    train_x, train_y, train_w, evals, model_type, epochs, steps, local_bs, rank, world, device, output, run,
    *, resume=None, ckpt_dir=None, fault_after_epoch=None, trial=False,
):
    t = cfg.training
    n_local = len(train_y)
    best_score, best_state, best_epoch, since_best = -math.inf, None, 0, 0
    history = []
    start_epoch, stopped = 0, False
    if resume is not None:
        best_score, best_state, best_epoch = resume["best_score"], resume["best_state"], resume["best_epoch"]
        since_best, history, start_epoch, stopped = (
            resume["since_best"], resume["history"], resume["epoch"], resume["stopped"],
        )
        # Dropout masks continue from where the interrupted run stood, so the resumed epochs are identical.
        ckpt_io.set_rng_state(resume["rng"][rank])
    for epoch in range(start_epoch, epochs):
        if stopped:
            break
        model.train()
        gen = torch.Generator().manual_seed(t.seed * 1_000_003 + epoch * 7919 + rank)
        order = torch.randperm(n_local, generator=gen)
        order = order.repeat(math.ceil(steps * local_bs / n_local))[: steps * local_bs]  # [steps * b]
        started = time.perf_counter()
        loss_sum = 0.0
        for step in range(steps):
            idx = order[step * local_bs : (step + 1) * local_bs]
            loss_sum += train_step(
                ddp_model,
                model,
                optimizer,
                to_device(take(train_x, idx), device),
                train_y[idx].to(device),
                train_w[idx].to(device),
                grad_clip_norm=t.grad_clip_norm,
            )
            scheduler.step()
        elapsed = time.perf_counter() - started
        train_loss = _all_mean(loss_sum / steps, device)
        samples_per_s = steps * local_bs * world / max(elapsed, 1e-9)
        val_metrics, _, _ = evaluate_split(cfg, model, *evals["val"], device)
        score = _score(val_metrics)
        improved = score > best_score
        if improved:
            best_score, best_epoch, since_best = score, epoch + 1, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            since_best += 1
        history.append({"epoch": epoch + 1, "train_loss": train_loss, **{f"val_{k}": v for k, v in val_metrics.items()}})
        _log(
            rank,
            f"epoch {epoch + 1}/{epochs} loss {train_loss:.4f} val {EARLY_STOPPING_METRIC} "
            f"{val_metrics[EARLY_STOPPING_METRIC]:.4f} samples/s {samples_per_s:.0f}"
            + (" *" if improved else ""),
        )
        if rank == 0:
            import mlflow

            mlflow.log_metrics(
                {
                    "train_loss": train_loss,
                    "samples_per_s": samples_per_s,
                    "lr": scheduler.get_last_lr()[0],
                    **{f"val_{k}": v for k, v in finite(val_metrics).items()},
                },
                step=epoch + 1,
            )
        # Every rank computed the same gathered metrics, so all stop at the same epoch.
        stopped = bool(t.patience and since_best >= t.patience)
        if ckpt_dir is not None:
            _save_checkpoint(
                ckpt_dir, rank, run, model, optimizer, scheduler,
                epoch=epoch + 1, stopped=stopped, history=history, best_score=best_score, best_state=best_state,
                best_epoch=best_epoch, since_best=since_best,
            )
        if fault_after_epoch == epoch + 1 and rank == 0:
            _log(rank, f"fault injection: killing rank 0 after epoch {epoch + 1}")
            os.kill(os.getpid(), signal.SIGKILL)
        if stopped:
            _log(rank, f"early stop after epoch {epoch + 1}: no better validation score for {t.patience} epochs")
            break

    if trial:
        return _finish_trial(run, output, best_score, best_epoch, ckpt_dir) if rank == 0 else None
    model.load_state_dict(best_state)
    test_metrics, test_y, test_p = evaluate_split(cfg, model, *evals["test"], device)
    test_new = _gather_new_user_mask(cfg, manifest, local["test"])
    if rank != 0:
        return None
    _log_user_group_metrics(cfg, test_y, test_p, test_new)
    payload = _log_results(
        cfg, model, encoder, manifest, files, local, model_type, test_metrics, test_y, test_p, history, best_epoch,
        output, run,
    )
    if ckpt_dir is not None:
        # The version is registered: the same training launched again is a new run, not a resume.
        ckpt_io.remove(ckpt_dir)
    return payload


def _finish_trial(run, output, best_score: float, best_epoch: int, ckpt_dir) -> dict[str, Any]:
    import mlflow

    payload = {"run_id": run.info.run_id, "best_val_score": best_score, "best_epoch": best_epoch}
    mlflow.log_metrics({"best_val_score": best_score, "best_epoch": float(best_epoch)})
    mlflow.end_run()
    _write_json_atomic(Path(output), payload)
    if ckpt_dir is not None:
        ckpt_io.remove(ckpt_dir)
    return payload


def _gather_new_user_mask(cfg, manifest, local_test: pd.DataFrame) -> np.ndarray | None:
    """New-user flags of the test rows in the order ``evaluate_split`` gathers them (rank order)."""
    mask = new_user_mask(local_test, list(manifest["feature_columns"]), cfg.training.new_user_days)
    parts = gather_objects(mask)
    if any(p is None for p in parts):
        return None
    return np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else None


def _log_user_group_metrics(cfg, test_y: np.ndarray, test_p: np.ndarray, new_mask: np.ndarray | None) -> None:
    import mlflow

    if new_mask is None:
        mlflow.set_tag("user_group_breakdown", "unavailable: no f_<type>_<N>d counts for training.new_user_days")
        return
    groups = evaluate_user_groups(
        test_y, test_p, new_mask, threshold=cfg.training.threshold, top_k_fraction=cfg.training.top_k_fraction
    )
    mlflow.log_metrics({f"test_{k}": v for k, v in finite(groups).items()})


def _save_checkpoint(folder, rank, run, model, optimizer, scheduler, **state) -> None:
    """All ranks hand in their RNG states; rank 0 writes the epoch's checkpoint atomically."""
    rngs = gather_objects(ckpt_io.rng_state())
    if rank != 0:
        return
    ckpt_io.save(
        folder,
        {
            "run_id": run.info.run_id,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rngs,
            **state,
        },
    )


def _log_results(
    cfg, model, encoder, manifest, files, local, model_type, test_metrics, test_y, test_p, history, best_epoch, output, run
):
    import mlflow
    from mlflow import MlflowClient

    from tasks.models.pyfunc import log_intent_model

    model = model.to("cpu").eval()
    metrics = {f"test_{k}": v for k, v in finite(test_metrics).items()}
    metrics["best_epoch"] = float(best_epoch)
    mlflow.log_metrics(metrics)
    if cfg.training.baselines:
        from tasks.models.baselines import evaluate_baselines, evaluate_category_baseline

        train_cols = [*encoder.feature_columns, *LABEL_COLUMNS, "weight"]
        for name, m in evaluate_baselines(
            cfg, encoder, read_files(files["train"], train_cols), read_files(files["test"], train_cols)
        ).items():
            mlflow.log_metrics({f"baseline_{name}_test_{k}": v for k, v in finite(m).items()})
        # The pair yardstick sees the candidates of exactly the users the model is evaluated on.
        cand_cols = [*encoder.pair_feature_columns, USER_CATEGORY_LABEL]
        set_dir = _training_set_dir(files)
        m = evaluate_category_baseline(
            cfg,
            read_candidates(set_dir, "train", read_files(files["train"], list(CANDIDATE_KEY)), cand_cols),
            read_candidates(set_dir, "test", read_files(files["test"], list(CANDIDATE_KEY)), cand_cols),
            encoder.pair_feature_columns,
        )
        mlflow.log_metrics({f"baseline_lgbm_test_{k}": v for k, v in finite(m).items()})
    _log_plots(history, test_y, test_p)
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
        "run_id": run.info.run_id,
        "model_name": cfg.mlflow.model_name,
        "model_version": version,
        "model_uri": f"models:/{cfg.mlflow.model_name}/{version}",
        "test_metrics": finite(test_metrics),
    }
    mlflow.end_run()
    _write_json_atomic(Path(output), payload)
    print(f"[train] registered {payload['model_uri']} (run {payload['run_id']})", flush=True)
    return payload


def _training_set_dir(files: dict[str, list[Path]]) -> Path:
    """The training-set folder of the split files."""
    return files["train"][0].parent.parent


def _log_plots(history: list[dict[str, float]], y: np.ndarray, p: np.ndarray) -> None:
    """ROC, PR and calibration curves per head and the loss curve, as PNG artifacts of the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], marker="o", label="train loss")
    ax.plot([h["epoch"] for h in history], [h["val_purchase_log_loss"] for h in history], marker="o",
            label="val purchase log loss")
    ax.set_xlabel("epoch")
    ax.legend()
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
        [("ROC (test)", "false positive rate", "true positive rate"),
         ("precision-recall (test)", "recall", "precision"),
         ("calibration (test)", "mean predicted", "observed rate")],
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend()
    axes[2].plot([0, 1], [0, 1], ls="--", c="grey")
    mlflow.log_figure(fig, "plots/test_curves.png")
    plt.close(fig)


# ---- launcher ----------------------------------------------------------------------------------


def launch(
    cfg: PipelineConfig,
    training_set_dir: Path,
    *,
    model_type: str | None = None,
    epochs: int | None = None,
    nproc: int | None = None,
    search: bool | None = None,
    allow_unvalidated: bool = False,
    fault_after_epoch: int | None = None,
) -> TrainResult:
    """Run training under torchrun as a subprocess (output streamed) and return the version it registered.

    The child gets exactly ``cfg`` (dumped to a YAML file under ``paths.runs_dir``), not whatever
    the environment would load. ``search`` (default ``training.search.enabled``) first runs the Optuna
    search of ``tasks.search``; the best trial's settings then train the registered model.
    ``allow_unvalidated`` skips the check for a passing validation result (ad-hoc runs only);
    ``fault_after_epoch`` is the crash drill of ``train_distributed``.
    """
    training_set_dir = Path(training_set_dir).resolve()
    manifest = read_manifest(training_set_dir)
    nproc = nproc or cfg.training.nproc_per_node
    n_train_files = len(split_files(training_set_dir, "train"))
    if n_train_files < nproc:
        raise TrainingError(
            f"train split of {training_set_dir} has {n_train_files} file(s), fewer than the {nproc} processes"
        )
    if cfg.training.require_validation and not allow_unvalidated:
        # Fail here, before torchrun starts, with the same message the workers would give.
        require_validation(cfg, training_set_dir, manifest)
    parent_run_id = None
    if cfg.training.search.enabled if search is None else search:
        from tasks.search import run_search

        cfg, parent_run_id = run_search(
            cfg, training_set_dir, manifest, model_type=model_type, nproc=nproc, allow_unvalidated=allow_unvalidated
        )
    result = run_torchrun(
        cfg, training_set_dir, model_type=model_type, epochs=epochs, nproc=nproc,
        allow_unvalidated=allow_unvalidated, fault_after_epoch=fault_after_epoch, parent_run_id=parent_run_id,
    )
    return TrainResult(
        run_id=result["run_id"],
        model_name=result["model_name"],
        model_version=str(result["model_version"]),
        model_uri=result["model_uri"],
        test_metrics=result["test_metrics"],
        output=Path(result["output"]),
    )


def run_torchrun(
    cfg: PipelineConfig,
    training_set_dir: Path,
    *,
    model_type: str | None = None,
    epochs: int | None = None,
    nproc: int,
    allow_unvalidated: bool = False,
    fault_after_epoch: int | None = None,
    parent_run_id: str | None = None,
    trial: bool = False,
) -> dict[str, Any]:
    """One torchrun training (``trial``: scored on validation only, nothing registered); its result JSON."""
    runs = cfg.paths.runs_dir
    runs.mkdir(parents=True, exist_ok=True)
    token = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    cfg_file = runs / f"train-{token}.config.yaml"
    output = runs / f"train-{token}.json"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
        "--max-restarts", str(cfg.training.max_restarts),
        "-m", "tasks.train",
        "--training-set", str(training_set_dir),
        "--output", str(output),
        "--config", str(cfg_file),
    ]
    if model_type:
        cmd += ["--model-type", model_type]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    if allow_unvalidated:
        cmd += ["--allow-unvalidated"]
    if fault_after_epoch:
        cmd += ["--fault-after-epoch", str(fault_after_epoch)]
    if parent_run_id:
        cmd += ["--parent-run-id", parent_run_id]
    if trial:
        cmd += ["--trial"]
    env = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES and k != "PIPELINE_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("OMP_NUM_THREADS", "1")
    tail: deque[str] = deque(maxlen=40)
    causes: list[str] = []
    try:
        with subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                tail.append(line)
                if _ERROR_LINE.match(line) and "ChildFailedError" not in line:
                    causes.append(line.strip())
            rc = proc.wait()
    finally:
        cfg_file.unlink(missing_ok=True)
    if rc != 0:
        # A rank that fails takes its peers down with transport errors; report the root cause first.
        root = [c for c in causes if not _COLLATERAL.search(c)]
        cause = (root or causes or ["see the output above"])[0]
        raise TrainingError(f"torchrun training exited with status {rc}: {cause}\nlast output:\n{''.join(tail)}")
    if not output.is_file():
        raise TrainingError(f"torchrun training succeeded but wrote no result file {output}")
    return {**json.loads(output.read_text()), "output": str(output)}


def main(argv: list[str] | None = None) -> int:
    parser = add_common_args(argparse.ArgumentParser(prog="python -m tasks.train", description=__doc__.split("\n")[0]))
    parser.add_argument("--training-set", type=Path, required=True, help="training-set folder (with manifest.json)")
    parser.add_argument("--output", type=Path, help="result JSON written by rank 0 (required unless --launch)")
    parser.add_argument("--model-type", choices=("lstm", "bert"), help="default: training.model_type")
    parser.add_argument("--epochs", type=int, help="default: training.epochs")
    parser.add_argument("--launch", action="store_true", help="start torchrun with --nproc processes and wait")
    parser.add_argument("--nproc", type=int, help="processes for --launch (default: training.nproc_per_node)")
    parser.add_argument("--search", action=argparse.BooleanOptionalAction, default=None,
                        help="with --launch: Optuna search first (default: training.search.enabled)")
    parser.add_argument("--allow-unvalidated", action="store_true",
                        help="train even without a passing validation result of the training set (ad-hoc runs)")
    parser.add_argument("--fault-after-epoch", type=int,
                        help="crash drill: rank 0 kills itself after writing that epoch's checkpoint")
    parser.add_argument("--parent-run-id", help="nest this training's MLflow run under that run (search)")
    parser.add_argument("--trial", action="store_true",
                        help="search trial: score on the validation split only; no test metrics, no registration")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs <= 0:
        parser.error("--epochs must be positive")
    cfg = config_from_args(args)
    if args.launch:
        result = launch(
            cfg, args.training_set, model_type=args.model_type, epochs=args.epochs, nproc=args.nproc,
            search=args.search, allow_unvalidated=args.allow_unvalidated, fault_after_epoch=args.fault_after_epoch,
        )
        print(json.dumps({"model_version": result.model_version, "model_uri": result.model_uri,
                          "run_id": result.run_id, "output": str(result.output)}))
        return 0
    if args.output is None:
        parser.error("--output is required (or use --launch)")
    train_distributed(
        cfg, args.training_set, args.output, model_type=args.model_type, epochs=args.epochs,
        allow_unvalidated=args.allow_unvalidated, fault_after_epoch=args.fault_after_epoch,
        parent_run_id=args.parent_run_id, trial=args.trial,
    )
    return 0


if __name__ == "__main__":
    # Bad data (e.g. an unvalidated training set) exits 65 with one line, as every step's CLI does.
    sys.exit(run_cli(main))
