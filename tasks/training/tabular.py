"""Training of a tabular family (``trainer = "local"``: ``lr``, ``lightgbm``) in this process.

The same contract as the DDP trainer: the same splits, encoder statistics of the train split, validation
metrics (the learners that stop early watch the validation split), test metrics through the packaged
``Predictor`` exactly as scoring calls it, the same MLflow run layout, yardsticks and registration, and
the same result file ``{run_id, model_version, model_uri, test_metrics}``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import PipelineConfig
from tasks.evaluate import SplitEval, data_facts, model_metrics, new_user_mask
from tasks.models.base import Predictor, build_model, family_settings, model_config
from tasks.models.encoding import FeatureEncoder, encode_targets
from tasks.models.tabular import TabularIntentModel, TabularSplit
from tasks.schema import USER_CATEGORY_LABEL
from tasks.training import tracking
from tasks.training.build import encoder_settings
from tasks.training.data import (
    SPLITS,
    TrainingError,
    candidate_columns,
    candidate_rows,
    read_candidates,
    read_files,
    read_manifest,
    require_validation,
    split_files,
)
from tasks.training.steps import calibrate, evaluation


def tabular_split(users: pd.DataFrame, cand: pd.DataFrame) -> TabularSplit:
    """User rows with their labels and weights, and their candidates ordered by user row."""
    y, w = encode_targets(users)
    rows = candidate_rows(users, cand)
    keep = np.flatnonzero(rows >= 0)
    keep = keep[np.argsort(rows[keep], kind="stable")]
    sub = cand.iloc[keep].reset_index(drop=True)
    return TabularSplit(
        users=users,
        labels=y.numpy().astype(np.int64),
        weights=w.numpy().astype(np.float64),
        cand_rows=rows[keep],
        cand=sub,
        cand_labels=sub[USER_CATEGORY_LABEL].to_numpy(dtype=np.float64),
    )


def read_split(cfg: PipelineConfig, training_set_dir: Path, split: str, manifest: dict[str, Any]) -> TabularSplit:
    """One split of a training set: its user rows and their candidates (with the category texts where the set's
    models read text)."""
    users = read_files(split_files(training_set_dir, split))
    return tabular_split(users, read_candidates(training_set_dir, split, users, candidate_columns(cfg, manifest)))


def predict_split(predictor: Predictor, split: TabularSplit) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [N, 3] and candidate probabilities [C] of ``split`` by any ``Predictor``, ``PREDICT_CHUNK``
    users at a time (as the packaged model predicts)."""
    from tasks.models.pyfunc import PREDICT_CHUNK

    intents, cats = [], []
    for start in range(0, len(split.users), PREDICT_CHUNK):
        stop = min(start + PREDICT_CHUNK, len(split.users))
        lo, hi = np.searchsorted(split.cand_rows, [start, stop])
        out = predictor.predict_chunk(
            split.users.iloc[start:stop], split.cand_rows[lo:hi] - start, split.cand.iloc[lo:hi], 0
        )
        intents.append(out.intent)
        cats.append(out.category)
    return np.concatenate(intents), np.concatenate(cats)


def evaluate_tabular(cfg: PipelineConfig, predictor: Predictor, split: TabularSplit) -> SplitEval:
    """Predictions and metrics of ``split`` by any ``Predictor``, predicted as the packaged model predicts."""
    if not len(split.users):
        raise TrainingError("split has no rows")
    p, cand_p = predict_split(predictor, split)
    return evaluation(cfg, split.labels, p, split.cand_rows, split.cand_labels, cand_p)


def new_tabular_model(
    cfg: PipelineConfig,
    model_type: str,
    manifest: dict[str, Any],
    train: TabularSplit,
    feature_columns: list[str],
    pair_columns: list[str],
) -> tuple[TabularIntentModel, FeatureEncoder]:
    """An unfitted ``model_type`` (its ``models.<type>`` settings, ``training.seed``) and the encoder fitted on the
    train split's ``feature_columns`` / ``pair_columns``."""
    t = cfg.training
    encoder = FeatureEncoder.fit(
        train.users,
        feature_columns,
        **encoder_settings(cfg, manifest),
    ).with_pair_stats(FeatureEncoder.partial_tabular_stats(train.cand, pair_columns))
    settings = family_settings(model_type, cfg.models.get(model_type, {}))
    return build_model(model_type, model_config(model_type, seed=t.seed, **settings)), encoder


def train_tabular(
    cfg: PipelineConfig,
    training_set_dir: Path,
    output: Path,
    *,
    model_type: str,
    allow_unvalidated: bool = False,
    register: bool = True,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Fit ``model_type`` on the training set, log it (and register it, unless ``register`` is off); returns
    (and writes to ``output``) the result. ``parent_run_id``: the MLflow run to nest this one under."""
    t = cfg.training
    training_set_dir = Path(training_set_dir).resolve()
    manifest = read_manifest(training_set_dir)
    validation = None
    if t.require_validation and not allow_unvalidated:
        validation = require_validation(cfg, training_set_dir, manifest)
    files = {s: split_files(training_set_dir, s) for s in SPLITS}
    feats = [str(c) for c in manifest["feature_columns"]]
    pair_feats = [str(c) for c in manifest["user_category"]["feature_columns"]]
    splits = {s: read_split(cfg, training_set_dir, s, manifest) for s in SPLITS}
    n_train = len(splits["train"].users)
    if not n_train:
        raise TrainingError(f"train split of {training_set_dir} holds no rows")
    model, encoder = new_tabular_model(cfg, model_type, manifest, splits["train"], feats, pair_feats)
    with contextlib.ExitStack() as store:
        run = tracking.begin_run(
            cfg,
            store,
            manifest=manifest,
            model_type=model_type,
            training_set_dir=training_set_dir,
            validation=validation,
            parent_run_id=parent_run_id,
            params=dict(n_train_rows=n_train, n_train_candidate_rows=len(splits["train"].cand), world_size=1),
        )
        print(f"{model_type} in one process; {n_train} train rows, run {run.info.run_id}", flush=True)
        try:
            return _fit_and_register(cfg, model, encoder, splits, manifest, files, run.info.run_id, output, register)
        except BaseException:
            import mlflow

            mlflow.end_run(status="FAILED")
            raise


def _fit_and_register(
    cfg: PipelineConfig,
    model: Any,
    encoder: FeatureEncoder,
    splits: dict[str, TabularSplit],
    manifest: dict[str, Any],
    files: dict[str, list[Path]],
    run_id: str,
    output: Path,
    register: bool,
) -> dict[str, Any]:
    import mlflow

    started = time.perf_counter()
    model.fit(encoder, splits["train"], splits["val"] if len(splits["val"].users) else None)
    fit_s = time.perf_counter() - started
    mlflow.log_metrics({"train/fit_seconds": fit_s, **{f"train/{k}": v for k, v in model.fit_info.items()}})
    val = evaluate_tabular(cfg, model, splits["val"])
    mlflow.log_metrics({**model_metrics("val", val.metrics), **data_facts("val", val.metrics)})
    test = evaluate_tabular(cfg, model, splits["test"])
    calibration, val_cal, test_cal = calibrate(cfg, val, test)
    test_users = splits["test"].users
    tracking.log_user_group_metrics(
        cfg, test_cal.y, test_cal.p, new_user_mask(test_users, encoder.feature_columns, cfg.training.new_user_days)
    )
    print(f"fitted in {fit_s:.1f}s; val purchase_pr_auc {val.metrics['purchase_pr_auc']:.4f}", flush=True)
    return tracking.register_trained(
        cfg,
        files=files,
        manifest=manifest,
        predictor=model,
        encoder=encoder,
        calibration=calibration,
        val=val_cal,
        uncalibrated=test,
        test=test_cal,
        example=test_users,
        run_id=run_id,
        output=output,
        history=[],
        best_epoch=0,
        register=register,
    )
