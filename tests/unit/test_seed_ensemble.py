"""``training.ensemble_seeds``: K seeds of a family trained as nested runs and packaged as one registered model
whose probabilities are the (calibrated) mean of its members'; scoring's contract unchanged. LightGBM members
(their pair models subsample by seed), fitted in one process."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from tasks.config import with_overrides
from tasks.layers import layer_root
from tasks.registry import mlflow_store
from tasks.schema import PROBABILITY_COLUMNS, REASONS_COLUMN, TOP_CATEGORIES_COLUMN
from tasks.training.data import TrainingError
from tasks.training.launcher import launch
from tests.helpers.config import isolated_config
from tests.helpers.trainingset import with_candidate_arrays, write_training_set


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ensemble")
    cfg = isolated_config(tmp / "var", training={"model_type": "lightgbm", "ensemble_seeds": 3})
    ts = write_training_set(layer_root(cfg, "training_sets") / "ts", n_users=400, seed=5)
    return cfg, ts, launch(cfg, ts, allow_unvalidated=True)


def test_members_are_nested_runs_and_only_the_ensemble_is_registered(ensemble):
    cfg, _, result = ensemble
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    run = client.get_run(result.run_id)
    assert result.model_type == "lightgbm" and run.data.params["ensemble_seeds"] == "3"
    members = run.data.tags["ensemble_member_run_ids"].split(",")
    assert len(members) == 3
    for seed, member in zip((13, 14, 15), members, strict=True):
        data = client.get_run(member).data
        assert data.tags["mlflow.parentRunId"] == result.run_id and data.params["training.seed"] == str(seed)
    versions = client.search_model_versions(f"name = '{cfg.mlflow.model_name}'")
    assert [(str(v.version), v.run_id) for v in versions] == [(result.model_version, result.run_id)]
    # The spread of the members beside the ensemble's own metrics, and the kept model's validation metrics.
    metrics = run.data.metrics
    assert {"ensemble/members_test_purchase_roc_auc_sd", "val_kept/purchase_pr_auc", "test/purchase_ece"} <= set(
        metrics
    )
    assert run.info.status == "FINISHED"


def test_the_packaged_ensemble_is_the_calibrated_mean_of_its_members(ensemble):
    cfg, ts, result = ensemble
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    members = client.get_run(result.run_id).data.tags["ensemble_member_run_ids"].split(",")
    with_cand, _ = with_candidate_arrays(ts, pd.read_parquet(ts / "test"))
    with mlflow_store(cfg):
        model = mlflow.pyfunc.load_model(result.model_uri)
        out = model.predict(with_cand, params={"reasons_top_k": 3})
        member_out = [mlflow.pyfunc.load_model(f"runs:/{m}/model").predict(with_cand) for m in members]
    member_p = [o["p_purchase"].to_numpy() for o in member_out]
    assert list(out.columns) == [*PROBABILITY_COLUMNS, TOP_CATEGORIES_COLUMN, REASONS_COLUMN]
    # Reasons: the first member's features that raise p_purchase (up to 3); top categories from the pair models.
    n_reasons = out[REASONS_COLUMN].map(len)
    assert n_reasons.le(3).all() and n_reasons.eq(3).any() and out[TOP_CATEGORIES_COLUMN].notna().any()
    mean = np.mean(member_p, axis=0)
    # The seeds made different models (LightGBM's user heads do not subsample, its pair model does).
    assert (member_out[0][TOP_CATEGORIES_COLUMN] != member_out[1][TOP_CATEGORIES_COLUMN]).any()
    # Platt scaling of the mean: the same ranking, so the same ROC-AUC, and the logged test metric reproduced.
    p = out["p_purchase"].to_numpy()
    assert spearmanr(p, mean).statistic == pytest.approx(1.0)
    y = with_cand["label_purchase"].to_numpy()
    assert roc_auc_score(y, p) == pytest.approx(roc_auc_score(y, mean), abs=1e-12)
    assert roc_auc_score(y, p) == pytest.approx(result.test_metrics["purchase_roc_auc"], abs=1e-9)


def test_a_search_and_an_ensemble_do_not_mix(ensemble):
    cfg, ts, _ = ensemble
    with pytest.raises(TrainingError, match="training.search with training.ensemble_seeds > 1"):
        launch(with_overrides(cfg, {"training": {"search": {"enabled": True}}}), ts, allow_unvalidated=True)
