"""Selection among candidate families on the validation split: the rule on constructed metrics, and the real
thing on lr and lightgbm candidates trained on one training set (registration, tags, idempotence)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from mlflow import MlflowClient

from tasks.config import ConfigError
from tasks.layers import layer_root
from tasks.registry import Candidate, GateError, choose, gate, main, select
from tasks.training.launcher import launch
from tests.helpers.config import isolated_config
from tests.helpers.trainingset import write_training_set


def _c(name: str, pr: float, ndcg: float = 0.5) -> Candidate:
    return Candidate(f"run-{name}", name, {"purchase_pr_auc": pr, "category_ndcg_at_5": ndcg}, {})


def test_the_best_validation_metric_wins():
    chosen, reason = choose(
        [_c("lstm", 0.30), _c("lr", 0.42), _c("bert", 0.35)], "purchase_pr_auc", "category_ndcg_at_5", 0.002
    )
    assert chosen.model_type == "lr"
    assert reason == "best validation purchase_pr_auc (lr 0.4200, bert 0.3500, lstm 0.3000)"


def test_near_ties_go_to_the_tie_break_metric():
    cands = [_c("lstm", 0.420, ndcg=0.60), _c("lr", 0.421, ndcg=0.55), _c("bert", 0.30, ndcg=0.90)]
    chosen, reason = choose(cands, "purchase_pr_auc", "category_ndcg_at_5", 0.002)
    # bert has the best NDCG but is not within the margin; of the two tied, lstm ranks categories better.
    assert chosen.model_type == "lstm"
    assert reason.startswith("2 within 0.002 of the best validation purchase_pr_auc")
    assert reason.endswith("best category_ndcg_at_5 of them (lstm 0.6000, lr 0.5500)")
    # Without a margin only the exact best counts.
    assert choose(cands, "purchase_pr_auc", "category_ndcg_at_5", 0.0)[0].model_type == "lr"


def test_an_unmeasured_metric_counts_as_worst_and_none_at_all_is_an_error():
    assert (
        choose([_c("lstm", math.nan), _c("lr", 0.1)], "purchase_pr_auc", "category_ndcg_at_5", 0.0)[0].model_type
        == "lr"
    )
    with pytest.raises(GateError, match="no candidate has a validation purchase_pr_auc"):
        choose([_c("lstm", math.nan)], "purchase_pr_auc", "category_ndcg_at_5", 0.0)
    with pytest.raises(GateError, match="no candidates"):
        choose([], "purchase_pr_auc", "category_ndcg_at_5", 0.0)


@pytest.mark.parametrize(
    "training,message",
    [
        ({"candidates": ["lr", "gru"]}, r"unknown model families \['gru'\]"),
        ({"candidates": ["lr", "lr"]}, "candidates repeat a family"),
        ({"candidates": []}, "at least 1 item"),
        ({"selection": {"metric": "purchase_log_loss"}}, "not a validation metric where higher is better"),
        (
            {"selection": {"tie_break": "category_ndcg_at_10"}},
            "category metrics are at k = training.category_eval_k = 5",
        ),
        ({"early_stopping": {"purchase_brier": 1.0}}, "not a validation metric where higher is better"),
        ({"early_stopping": {"purchase_pr_auc": 0.0}}, "weight must be > 0"),
    ],
)
def test_config_refuses_bad_candidates_and_selection(tmp_path, training, message):
    with pytest.raises(ConfigError, match=message):
        isolated_config(tmp_path / "var", training=training)


def test_early_stopping_scores_both_heads_by_their_weights(tmp_path):
    from tasks.training.steps import score

    cfg = isolated_config(
        tmp_path / "var", training={"early_stopping": {"purchase_pr_auc": 1.0, "category_ndcg_at_5": 0.5}}
    )
    metrics = {"purchase_pr_auc": 0.4, "category_ndcg_at_5": 0.6, "purchase_log_loss": 0.3}
    assert score(cfg, metrics) == pytest.approx(0.4 + 0.5 * 0.6)
    # An undertrained category head lowers the score even when the purchase head is as good.
    assert score(cfg, {**metrics, "category_ndcg_at_5": 0.2}) < score(cfg, metrics)
    # A metric undefined on this split drops out; with none defined, the negated log loss decides.
    assert score(cfg, {**metrics, "category_ndcg_at_5": math.nan}) == pytest.approx(0.4)
    assert score(cfg, {"purchase_pr_auc": math.nan, "purchase_log_loss": 0.3}) == pytest.approx(-0.3)


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """lr and lightgbm trained as candidates (logged, not registered) on one training set."""
    tmp = tmp_path_factory.mktemp("select")
    cfg = isolated_config(tmp / "var")
    ts = write_training_set(layer_root(cfg, "training_sets") / "ts", n_users=300, seed=3)
    results = [launch(cfg, ts, model_type=f, register=False, allow_unvalidated=True) for f in ("lr", "lightgbm")]
    return cfg, ts, results


def test_candidates_are_logged_not_registered(candidates):
    cfg, _, results = candidates
    assert [r.model_version for r in results] == [None, None]
    assert [r.model_uri for r in results] == [f"runs:/{r.run_id}/model" for r in results]
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    assert client.search_model_versions(f"name = '{cfg.mlflow.model_name}'") == []
    for r in results:
        logged = client.get_run(r.run_id).data.metrics
        assert logged["val_kept/purchase_pr_auc"] == pytest.approx(r.val_metrics["purchase_pr_auc"])


def test_select_registers_the_best_on_validation_with_every_candidates_metrics(candidates, tmp_path, capsys):
    cfg, ts, results = candidates
    best = max(results, key=lambda r: r.val_metrics["purchase_pr_auc"])
    conf = tmp_path / "pipeline.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["select", *(a for r in results for a in ("--run-id", r.run_id)), "--config", str(conf)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["model_type"], printed["run_id"], printed["version"]) == (best.model_type, best.run_id, "1")
    chosen = select(cfg, [r.run_id for r in results])
    assert (chosen.model_type, chosen.run_id, chosen.version) == (best.model_type, best.run_id, "1")
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    mv = client.get_model_version(cfg.mlflow.model_name, "1")
    assert mv.run_id == best.run_id and mv.tags["model_type"] == best.model_type
    assert mv.tags["selection_reason"] == chosen.reason and "best validation purchase_pr_auc" in chosen.reason
    table = json.loads(mv.tags["selection_candidates"])
    assert {row["model_type"]: row["val_purchase_pr_auc"] for row in table} == {
        r.model_type: pytest.approx(r.val_metrics["purchase_pr_auc"]) for r in results
    }
    assert {row["model_type"]: row["test_purchase_roc_auc"] for row in table} == {
        r.model_type: pytest.approx(r.test_metrics["purchase_roc_auc"]) for r in results
    }
    for r in results:
        assert client.get_run(r.run_id).data.tags["selection"] == ("chosen" if r is best else "not chosen")
    # A rerun (a retried task) registers nothing new.
    assert select(cfg, [r.run_id for r in results]).version == "1"
    assert len(client.search_model_versions(f"name = '{cfg.mlflow.model_name}'")) == 1
    # The gate judges the selected version like any other.
    assert gate(cfg, chosen.version, ts).promoted


def test_select_refuses_candidates_of_different_training_sets(candidates, tmp_path):
    cfg, _, results = candidates
    other = write_training_set(layer_root(cfg, "training_sets") / "other", n_users=60, seed=4)
    stray = launch(cfg, other, model_type="lr", register=False, allow_unvalidated=True)
    with pytest.raises(GateError, match="trained on different training sets"):
        select(cfg, [results[0].run_id, stray.run_id])
    with pytest.raises(GateError, match="no training run 'nope'"):
        select(cfg, ["nope"])
