"""Typed state of one training process, handed between the worker's stages and the MLflow tracking."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.config import PipelineConfig

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch
    from mlflow import ActiveRun

    from tasks.models.base import IntentModel
    from tasks.models.encoding import FeatureEncoder


@dataclass(frozen=True)
class TrainingJob:
    """What this process trains and where it stands in the process group.

    ``trial``: a search trial (nested under ``parent_run_id``, scored on validation, nothing registered);
    ``fault_after_epoch``: the crash drill of ``tasks.training.worker.train_distributed``.
    """

    cfg: PipelineConfig
    training_set_dir: Path
    output: Path
    manifest: dict[str, Any]
    files: dict[str, list[Path]]
    model_type: str
    epochs: int
    rank: int
    world: int
    device: torch.device
    validation: dict[str, Any] | None = None
    fault_after_epoch: int | None = None
    parent_run_id: str | None = None
    trial: bool = False
    # Register the trained model as a new version (off for a candidate that the selection may register).
    register: bool = True


@dataclass(frozen=True)
class EncodedData:
    """This rank's rows and their encoding; the statistics behind the encoder and weights are global."""

    encoder: FeatureEncoder
    local: dict[str, pd.DataFrame]  # split -> this rank's user rows
    train_x: dict[str, torch.Tensor]  # encoded train batch with its candidates
    train_y: torch.Tensor  # [N, 3] train labels
    train_w: torch.Tensor  # [N] train row weights
    # split (val, test) -> (encoded batch, labels [n, 3]), both None when this rank holds no rows of it.
    evals: dict[str, tuple[dict[str, torch.Tensor] | None, np.ndarray | None]]
    n_train: int  # train rows over all ranks
    n_train_candidates: int  # train candidate rows over all ranks
    pos_weight: tuple[float, ...]
    category_pos_weight: float
    text_vectors: np.ndarray | None  # [n, dim] rows 2.. of the model's text table; None without text


@dataclass
class Fitting:
    """The model and optimiser state being trained, and where its checkpoints and MLflow run are."""

    model: IntentModel
    ddp_model: torch.nn.Module  # the DDP wrapper, or ``model`` itself in a single process
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps: int  # optimiser steps per epoch, equal on every rank
    local_bs: int  # this rank's share of a global batch
    ckpt_dir: Path | None  # None when checkpoints are off
    resume: dict[str, Any] | None  # the checkpoint this training continues
    run: ActiveRun | None = None  # rank 0 only
    # Where the weights started (rank 0): init_from (the encoder's URI, or "none") and init_tensors copied.
    init: dict[str, Any] = field(default_factory=lambda: {"init_from": "none", "init_tensors": 0})

    @property
    def run_id(self) -> str:
        """The MLflow run of this training; only rank 0 holds it."""
        if self.run is None:
            raise RuntimeError("only rank 0 holds the training's MLflow run")
        return self.run.info.run_id


@dataclass
class Progress:
    """Where the epoch loop stands; exactly what a checkpoint stores beside model, optimiser and RNG states."""

    epoch: int = 0
    stopped: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = float("-inf")
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0
    since_best: int = 0

    def to_checkpoint(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> Progress:
        return cls(**{f.name: payload[f.name] for f in fields(cls)})
