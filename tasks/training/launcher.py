"""``launch``: train under torchrun and return the exact model version it registered.

The checks that need no process group run here first (manifest, file count, validation gate, model
settings), then the optional Optuna search of ``tasks.search``, then the registered training. The
dependency runs one way: this module uses the search, the search uses ``tasks.training.torchrun``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tasks.config import PipelineConfig
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
    model_version: str
    model_uri: str
    test_metrics: dict[str, float] = field(hash=False)
    output: Path


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
    ``fault_after_epoch`` is the crash drill of ``tasks.training.worker.train_distributed``.
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
    check_model_settings(cfg, model_type or cfg.training.model_type, int(manifest["sequence_length"]))
    parent_run_id = None
    if cfg.training.search.enabled if search is None else search:
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
    )
    trained = TrainResult(
        run_id=result["run_id"],
        model_name=result["model_name"],
        model_version=str(result["model_version"]),
        model_uri=result["model_uri"],
        test_metrics=result["test_metrics"],
        output=Path(result["output"]),
    )
    # The log ends with what the gate will judge and where to see the run.
    log.info("train: registered %s (run %s)", trained.model_uri, trained.run_id)
    log.info("train: test metrics: %s", metrics_text(trained.test_metrics))
    log.info("train: MLflow run: %s", mlflow_run_url(cfg, trained.run_id))
    return trained
