"""The tabular families (lr, lightgbm) train through the same launcher as the sequence models, register a
version with the same pyfunc contract (probabilities, top categories from their pair model, reasons from
their own contributions) and reproduce the metrics training logged; fitted in one process, no torchrun."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.config import ConfigError
from tasks.evaluate import category_ranking_metrics, evaluate_intents
from tasks.layers import layer_root
from tasks.registry import gate, mlflow_store
from tasks.schema import LABEL_COLUMNS, PROBABILITY_COLUMNS, REASONS_COLUMN, TOP_CATEGORIES_COLUMN
from tasks.train import main
from tasks.training.launcher import launch
from tests.helpers.config import isolated_config
from tests.helpers.trainingset import FEATURE_COLUMNS, with_candidate_arrays, write_training_set

FAMILIES = ("lr", "lightgbm")


@pytest.fixture(scope="module", params=FAMILIES)
def trained(request, tmp_path_factory):
    family = request.param
    tmp = tmp_path_factory.mktemp(family)
    cfg = isolated_config(tmp / "var", training={"model_type": family})
    ts = write_training_set(layer_root(cfg, "training_sets") / "ts", n_users=400, seed=5)
    return family, cfg, ts, launch(cfg, ts, allow_unvalidated=True)


def test_registers_a_version_of_its_family_that_reproduces_the_logged_metrics(trained):
    family, cfg, ts, result = trained
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    assert client.get_model_version(cfg.mlflow.model_name, result.model_version).tags["model_type"] == family
    run = client.get_run(result.run_id).data
    assert run.params["model_type"] == family and run.params["world_size"] == "1"
    # The yardsticks and validation metrics are logged as for a sequence model.
    assert {"val/purchase_pr_auc", "test/purchase_roc_auc", "yardstick/lr/test/purchase_roc_auc"} <= set(run.metrics)
    test = pd.read_parquet(ts / "test")
    with mlflow_store(cfg):
        model = mlflow.pyfunc.load_model(result.model_uri)
    probs = model.predict(test)
    assert list(probs.columns) == list(PROBABILITY_COLUMNS) and len(probs) == len(test)
    metrics = evaluate_intents(test[list(LABEL_COLUMNS)].to_numpy(), probs.to_numpy())
    assert metrics["purchase_roc_auc"] == pytest.approx(result.test_metrics["purchase_roc_auc"], abs=1e-9)
    # The synthetic labels follow the f_* features: a tabular model finds them.
    assert result.test_metrics["purchase_roc_auc"] > 0.7


def test_ranks_every_candidate_with_its_pair_model_as_training_measured(trained):
    _, cfg, ts, result = trained
    with_cand, cand = with_candidate_arrays(ts, pd.read_parquet(ts / "test"))
    with mlflow_store(cfg):
        ranked = mlflow.pyfunc.load_model(result.model_uri).predict(with_cand, params={"top_k_categories": 100})
    assert list(ranked.columns) == [*PROBABILITY_COLUMNS, TOP_CATEGORIES_COLUMN]
    label = cand.set_index(["_key", "category_id"])["label_purchase_in_category"]
    groups, labels, scores = [], [], []
    for key, top in zip(with_cand["_key"], ranked[TOP_CATEGORIES_COLUMN], strict=True):
        for item in top if top is not None else []:
            cat, p = item.rsplit(":", 1)
            groups.append(key)
            labels.append(label[(key, cat)])
            scores.append(float(p))
    assert len(groups) == len(cand)
    m = category_ranking_metrics(np.array(groups), np.array(labels), np.array(scores), k=5)
    # Scores are printed to 4 decimals, so ties may reorder: close to, not exactly, the logged value.
    assert m["category_ndcg_at_5"] == pytest.approx(result.test_metrics["category_ndcg_at_5"], abs=0.02)


def test_reasons_are_the_features_that_push_the_purchase_logit_up(trained):
    family, cfg, ts, result = trained
    rows = pd.read_parquet(ts / "test").head(50)
    with mlflow_store(cfg):
        model = mlflow.pyfunc.load_model(result.model_uri)
    out = model.predict(rows, params={"reasons_top_k": 3})
    assert list(out.columns) == [*PROBABILITY_COLUMNS, REASONS_COLUMN]
    inner = model.unwrap_python_model().predictor.inner  # the family's model behind the packaged calibration
    x = inner.user_matrix(rows)
    contrib = inner.contributions(x)  # [B, F]
    # Contributions are additive: with the intercept (bias) they give the model's purchase logit itself.
    p = inner.predict_chunk(rows, None, None, 0).intent[:, 0]
    logit = np.log(p / (1 - p))
    head = inner.heads[0]
    bias = head.intercept_[0] if family == "lr" else head.predict(x, pred_contrib=True)[:, -1]
    np.testing.assert_allclose(contrib.sum(axis=1) + bias, logit, rtol=1e-6, atol=1e-6)
    for reasons, row in zip(out[REASONS_COLUMN], contrib, strict=True):
        positive = [inner.feature_columns[j] for j in np.argsort(-row, kind="stable") if row[j] > 0][:3]
        assert list(reasons) == positive
    assert any(len(r) for r in out[REASONS_COLUMN])
    assert set(inner.feature_columns) == set(FEATURE_COLUMNS)


def test_the_gate_takes_it_like_any_family(trained):
    _, cfg, ts, result = trained
    decision = gate(cfg, result.model_version, ts)
    assert decision.promoted and decision.candidate_auc == pytest.approx(result.test_metrics["purchase_roc_auc"])


@pytest.mark.parametrize("family", FAMILIES)
def test_clear_errors(family, tmp_path, capsys):
    cfg = isolated_config(tmp_path / "var", training={"model_type": family})
    ts = write_training_set(layer_root(cfg, "training_sets") / "ts", n_users=40, seed=2)
    bad = isolated_config(tmp_path / "var", training={"model_type": family}, models={family: {"max_itr": 3}})
    with pytest.raises(ConfigError, match=rf"models\.{family}: unknown key\(s\) \['max_itr'\]"):
        launch(bad, ts, allow_unvalidated=True)
    with pytest.raises(SystemExit):
        main(["--training-set", str(ts), "--output", str(tmp_path / "x.json"), "--model-type", family])
    assert "is fitted in one process, not under torchrun: use --launch" in capsys.readouterr().err
    assert not list(cfg.paths.runs_dir.glob("train-*"))
