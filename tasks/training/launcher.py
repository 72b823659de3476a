"""``launch``: train a model family and return the exact model version it registered.

The checks that need no process group run here first (manifest, validation gate, model settings). A
family's ``trainer`` says how it trains: "torchrun" (the sequence models: file count check, the optional
Optuna search of ``tasks.search``, then the registered DDP training) or "local" (the tabular models,
fitted in this process by ``tasks.training.tabular``). The
dependency runs one way: this module uses the search, the search uses ``tasks.training.torchrun``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tasks.config import PipelineConfig, with_overrides
from tasks.models.base import model_class
from tasks.run_summary import metrics_text, mlflow_run_url
from tasks.search import run_search
from tasks.training.build import check_model_settings
from tasks.training.data import TrainingError, read_manifest, require_validation, split_files
from tasks.training.torchrun import run_torchrun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    model_type: str
    model_version: str | None  # None when launched with register=False
    model_uri: str  # models:/<name>/<version>, or runs:/<run_id>/model when not registered
    val_metrics: dict[str, float] = field(hash=False)
    test_metrics: dict[str, float] = field(hash=False)
    output: Path


def _train_local(
    cfg: PipelineConfig,
    training_set_dir: Path,
    model_type: str,
    allow_unvalidated: bool,
    register: bool,
    parent_run_id: str | None,
) -> dict:
    """A family fitted in this process (``trainer = "local"``); its result file sits where torchrun's would."""
    from tasks.training.tabular import train_tabular

    output = cfg.paths.runs_dir / f"train-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.json"
    payload = train_tabular(
        cfg,
        training_set_dir,
        output,
        model_type=model_type,
        allow_unvalidated=allow_unvalidated,
        register=register,
        parent_run_id=parent_run_id,
    )
    return {**payload, "output": str(output)}


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
    register: bool = True,
    parent_run_id: str | None = None,
    init_from: str | None = None,
) -> TrainResult:
    """Train ``model_type`` (default ``training.model_type``) by its family's trainer and return the version
    it registered. A "torchrun" family trains in a torchrun subprocess (output streamed); ``nproc``,
    ``epochs``, ``search`` and ``fault_after_epoch`` apply to it only. The child gets exactly ``cfg``
    (dumped to a YAML file under ``paths.runs_dir``), not whatever the environment would load. ``search``
    (default ``training.search.enabled``) first runs the Optuna search of ``tasks.search``; the best
    trial's settings then train the registered model. ``allow_unvalidated`` skips the check for a passing
    validation result (ad-hoc runs only); ``fault_after_epoch`` is the crash drill of
    ``tasks.training.worker.train_distributed``. ``register`` off logs the model to its run without
    registering a version: a candidate that ``tasks.registry.select`` may register. With
    ``training.ensemble_seeds`` > 1 the family trains that many seeds and the result is their seed ensemble
    (``tasks.training.ensemble``). ``parent_run_id`` nests the training's MLflow run under that run (a
    backtest's); not with ``search``, whose study is the parent. ``init_from`` (a pretrained encoder's
    models:/ URI) replaces ``training.init_from``: a torchrun family of the encoder's type starts from it.
    """
    if init_from is not None:
        cfg = with_overrides(cfg, {"training": {"init_from": init_from}})
    training_set_dir = Path(training_set_dir).resolve()
    manifest = read_manifest(training_set_dir)
    model_type = model_type or cfg.training.model_type
    if cfg.training.require_validation and not allow_unvalidated:
        # Fail here, before any process starts, with the same message the workers would give.
        require_validation(cfg, training_set_dir, manifest)
    check_model_settings(cfg, model_type, int(manifest["sequence_length"]))
    trainer = model_class(model_type).trainer
    searching = cfg.training.search.enabled if search is None else search
    if cfg.training.ensemble_seeds > 1:
        if searching:
            raise TrainingError(
                "training.search with training.ensemble_seeds > 1: search first (ensemble_seeds 1), then train the "
                "ensemble with the best trial's settings"
            )
        from tasks.training.ensemble import train_ensemble

        def member(member_cfg: PipelineConfig, parent: str) -> TrainResult:
            return launch(
                member_cfg,
                training_set_dir,
                model_type=model_type,
                epochs=epochs,
                nproc=nproc,
                search=False,
                allow_unvalidated=True,
                register=False,
                parent_run_id=parent,
            )

        result = train_ensemble(
            cfg,
            training_set_dir,
            model_type=model_type,
            allow_unvalidated=allow_unvalidated,
            register=register,
            parent_run_id=parent_run_id,
            train_member=member,
        )
    elif trainer == "local":
        if searching:
            log.warning(
                "train: no search for %s: the search tunes the torchrun families' training settings; %s is fitted "
                "with its models.%s settings",
                model_type,
                model_type,
                model_type,
            )
        result = _train_local(cfg, training_set_dir, model_type, allow_unvalidated, register, parent_run_id)
    else:
        nproc = nproc or cfg.training.nproc_per_node
        n_train_files = len(split_files(training_set_dir, "train"))
        if n_train_files < nproc:
            raise TrainingError(
                f"train split of {training_set_dir} has {n_train_files} file(s), fewer than the {nproc} processes"
            )
        if searching:
            if parent_run_id is not None:
                raise TrainingError("a search nests its trials under its own parent run: give no parent_run_id")
            cfg, parent_run_id = run_search(
                cfg, training_set_dir, manifest, model_type=model_type, nproc=nproc, allow_unvalidated=allow_unvalidated
            )
        result = run_torchrun(
            cfg,
            training_set_dir,
            model_type=model_type,
            epochs=epochs,
            nproc=nproc,
            allow_unvalidated=allow_unvalidated,
            fault_after_epoch=fault_after_epoch,
            parent_run_id=parent_run_id,
            register=register,
        )
    version = result["model_version"]
    trained = TrainResult(
        run_id=result["run_id"],
        model_name=result["model_name"],
        model_type=result["model_type"],
        model_version=None if version is None else str(version),
        model_uri=result["model_uri"],
        val_metrics=result["val_metrics"],
        test_metrics=result["test_metrics"],
        output=Path(result["output"]),
    )
    # The log ends with what the gate will judge and where to see the run.
    log.info("train: %s %s (run %s)", "registered" if register else "logged", trained.model_uri, trained.run_id)
    log.info("train: test metrics: %s", metrics_text(trained.test_metrics))
    log.info("train: MLflow run: %s", mlflow_run_url(cfg, trained.run_id))
    return trained
