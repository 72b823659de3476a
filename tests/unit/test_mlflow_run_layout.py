"""How a training run reads in the MLflow UI: grouped metric names, the learning-curve figure, and
experiments created as machine-learning (custom-model) experiments."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from mlflow import MlflowClient

from tasks.evaluate import (
    category_ranking_metrics,
    data_facts,
    evaluate_intents,
    evaluate_user_groups,
    metric_name,
    model_metrics,
)
from tasks.experiments import (
    CUSTOM_MODEL_DEVELOPMENT,
    EXPERIMENT_KIND_TAG,
    ensure_experiment,
    experiment_runs_url,
    runs_page_url,
)
from tasks.schema import INTENTS
from tasks.training.tracking import loss_figure

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def evaluation():
    """Real metrics of one test split: intents, category ranking and the new/returning breakdown."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, len(INTENTS)))
    p = np.clip(0.6 * y + 0.4 * rng.random((200, len(INTENTS))), 0, 1)
    new = rng.random(200) < 0.3
    metrics = evaluate_intents(y, p)
    metrics.update(category_ranking_metrics(np.arange(200) // 4, rng.integers(0, 2, 200), rng.random(200), k=5))
    metrics.update(evaluate_user_groups(y, p, new))
    return metrics, int(new.sum())


def test_model_metrics_are_grouped_by_split_user_group_and_yardstick(evaluation):
    metrics, _ = evaluation
    names = model_metrics("test", metrics)
    sections = {k.rsplit("/", 1)[0] for k in names}
    assert sections == {"test", "test_new_users", "test_returning_users"}
    # roc_auc, pr_auc, log_loss, brier, ece, predicted_over_observed, precision, recall, f1, recall_top_10pct
    per_model = 10
    assert sum(k.startswith("test/purchase_") for k in names) == per_model
    assert names["test/purchase_roc_auc"] == metrics["purchase_roc_auc"]
    assert names["test_new_users/cart_pr_auc"] == metrics["new_users_cart_pr_auc"]
    assert names["test/category_ndcg_at_5"] == metrics["category_ndcg_at_5"]
    assert len(names) == 3 * len(INTENTS) * per_model + 2
    yard = model_metrics("test", metrics, yardstick="lr")
    assert {k.rsplit("/", 1)[0] for k in yard} == {f"yardstick/lr/{s}" for s in sections}
    assert yard["yardstick/lr/test_returning_users/fav_brier"] == metrics["returning_users_fav_brier"]
    assert metric_name("val", "purchase_pr_auc") == "val/purchase_pr_auc"
    assert metric_name("test", "f1", user_group="new_users", yardstick="lgbm") == "yardstick/lgbm/test_new_users/f1"
    with pytest.raises(ValueError, match="unknown user group 'old_users'"):
        metric_name("test", "f1", user_group="old_users")


def test_facts_of_the_rows_are_data_metrics_not_model_metrics(evaluation):
    metrics, n_new = evaluation
    names, facts = model_metrics("test", metrics), data_facts("test", metrics)
    assert not any(k.endswith(("positive_rate", "_rows", "category_users")) for k in names)
    assert facts["data/test_new_users_rows"] == n_new
    assert facts["data/test_returning_users_rows"] == 200 - n_new
    assert facts["data/test_purchase_positive_rate"] == metrics["purchase_positive_rate"]
    assert facts["data/test_category_users"] == metrics["category_users"]
    assert len(facts) + len(names) == len(metrics)  # every defined value is logged, under one name
    # Undefined values (one class in a split) are not logged.
    one_class = evaluate_intents(np.zeros((4, 3), dtype=int), np.full((4, 3), 0.2))
    assert "val/purchase_roc_auc" not in model_metrics("val", one_class)
    assert "val/purchase_log_loss" in model_metrics("val", one_class)


def test_loss_figure_has_a_titled_labelled_panel_per_quantity_with_whole_epochs():
    history = [
        {
            "epoch": e,
            "train_loss": 6.5 - e,
            **{f"val_{i}_log_loss": 0.6 - 0.01 * e for i in INTENTS},
            "val_purchase_pr_auc": 0.3 + 0.01 * e,
            "val_purchase_roc_auc": 0.7 + 0.01 * e,
            "val_category_ndcg_at_5": 0.4,
            "val_score": 0.7 + 0.01 * e,
        }
        for e in (1, 2)
    ]
    fig = loss_figure(history, best_epoch=2)
    fig.canvas.draw()
    train_ax, loss_ax, rank_ax = fig.axes
    assert fig.get_suptitle()
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel()
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.get_lines())  # the kept epoch
    curves = {ax: [line for line in ax.get_lines() if list(line.get_xdata()) == [1, 2]] for ax in fig.axes}
    # Train loss (~6) and validation log loss (~0.6) never share an axis.
    assert [list(line.get_ydata()) for line in curves[train_ax]] == [[5.5, 4.5]]
    assert {line.get_label() for line in curves[loss_ax]} == set(INTENTS)
    assert max(max(line.get_ydata()) for line in curves[loss_ax]) < 1
    assert {line.get_label() for line in curves[rank_ax]} == {
        "early-stopping score (training.early_stopping)",
        "purchase_pr_auc",
        "purchase_roc_auc",
        "category_ndcg_at_5",
    }


def test_experiments_are_created_and_marked_as_machine_learning(cfg):
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    assert experiment_runs_url(client, "purchase_intent", "http://localhost:5000") is None
    exp_id = ensure_experiment(client, "purchase_intent", cfg.mlflow.artifact_location)
    exp = client.get_experiment(exp_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == CUSTOM_MODEL_DEVELOPMENT
    assert exp.artifact_location == cfg.mlflow.artifact_location
    assert ensure_experiment(client, "purchase_intent", cfg.mlflow.artifact_location) == exp_id

    # An experiment from before (no kind) is marked on first use; a kind someone chose is kept.
    old = client.create_experiment("older", artifact_location=cfg.mlflow.artifact_location)
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert ensure_experiment(client, "older", cfg.mlflow.artifact_location) == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == CUSTOM_MODEL_DEVELOPMENT
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    ensure_experiment(client, "chosen", cfg.mlflow.artifact_location)
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"

    assert (
        runs_page_url("http://localhost:5000/", exp_id)
        == f"http://localhost:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    )
    assert experiment_runs_url(client, "purchase_intent", "http://localhost:5000") == runs_page_url(
        "http://localhost:5000", exp_id
    )
