"""A seed ensemble of a sequence family: two LSTM members trained under torchrun, packaged with their weights
side by side, load back as one model whose purchase ranking is that of the members' mean."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from scipy.stats import spearmanr

from tasks.layers import layer_root
from tasks.registry import mlflow_store
from tasks.training.launcher import launch
from tests.helpers.config import isolated_config
from tests.helpers.trainingset import with_candidate_arrays, write_training_set


def test_lstm_seed_ensemble(tmp_path):
    cfg = isolated_config(tmp_path / "var", training={"model_type": "lstm", "ensemble_seeds": 2})
    ts = write_training_set(layer_root(cfg, "training_sets") / "ts", n_users=200, seed=3)
    result = launch(cfg, ts, epochs=1, allow_unvalidated=True)
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    members = client.get_run(result.run_id).data.tags["ensemble_member_run_ids"].split(",")
    assert len(members) == 2 and result.model_type == "lstm" and result.model_version == "1"
    with_cand, _ = with_candidate_arrays(ts, pd.read_parquet(ts / "test"))
    with mlflow_store(cfg):
        p = mlflow.pyfunc.load_model(result.model_uri).predict(with_cand)["p_purchase"].to_numpy()
        member_p = [mlflow.pyfunc.load_model(f"runs:/{m}/model").predict(with_cand)["p_purchase"] for m in members]
    assert not np.allclose(member_p[0], member_p[1])
    assert spearmanr(p, np.mean(member_p, axis=0)).statistic > 0.9999
