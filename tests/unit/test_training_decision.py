"""The training DAG's skip decision: train only when the champion has not seen these cutoffs and this horizon."""

from __future__ import annotations

import datetime as dt
import json

import mlflow
import pytest
import yaml

from tasks.config import ConfigError, with_overrides
from tasks.cutoffs import plan_cutoffs
from tasks.registry import decide_training, main, mlflow_store, training_decision

CUTOFFS = {"train": ["2026-01-03", "2026-01-04"], "val": ["2026-01-05"], "test": ["2026-01-06"]}
MANIFEST = {"id": "2026-01-07-h1", "cutoffs": CUTOFFS, "horizon_days": 1}


def test_force_and_no_champion_train():
    forced = decide_training("2026-01-07-h1", CUTOFFS, 1, "3", "2026-01-07-h1", MANIFEST, force=True)
    assert forced.train and "force_retrain" in forced.reason
    first = decide_training("2026-01-07-h1", CUTOFFS, 1, None, None, None)
    assert first.train and first.reason == "no champion yet"


def test_same_cutoffs_and_horizon_skip_whatever_the_id():
    d = decide_training("2026-01-08-h1", CUTOFFS, 1, "3", "2026-01-07-h1", MANIFEST)
    assert not d.train
    assert "champion v3" in d.reason and "2026-01-03..2026-01-06" in d.reason and "force_retrain=true" in d.reason


@pytest.mark.parametrize(
    "cutoffs, horizon",
    [
        ({**CUTOFFS, "test": ["2026-01-07"]}, 1),  # one newer cutoff
        (CUTOFFS, 2),  # same cutoffs, other label horizon
        ({**CUTOFFS, "train": ["2026-01-02", "2026-01-03", "2026-01-04"]}, 1),  # a longer window
    ],
)
def test_new_cutoffs_or_horizon_train(cutoffs, horizon):
    d = decide_training("2026-01-07-h1", cutoffs, horizon, "3", "2026-01-07-h1", MANIFEST)
    assert d.train and d.reason.startswith("new data:") and "champion v3" in d.reason


def test_without_a_manifest_the_id_decides():
    assert not decide_training("2026-01-07-h1", CUTOFFS, 1, "3", "2026-01-07-h1", None).train
    other = decide_training("2026-01-08-h1", CUTOFFS, 1, "3", "2026-01-07-h1", None)
    assert other.train and "differs" in other.reason


def test_horizon_override_is_validated_and_moves_the_plan(cfg):
    h3 = with_overrides(cfg, {"features": {"horizon_days": 3}})
    assert h3.features.horizon_days == 3 and cfg.features.horizon_days == 1
    t = cfg.training_set
    # h - 1 = 2 cutoffs left out between each pair of splits.
    assert len(plan_cutoffs(h3, dt.date(2026, 1, 20)).dropped) == 4
    assert plan_cutoffs(h3, dt.date(2026, 1, 20)).first == dt.date(2026, 1, 20) - dt.timedelta(
        days=t.n_train_cutoffs + t.n_val_cutoffs + t.n_test_cutoffs + 4 - 1
    )
    with pytest.raises(ConfigError, match=r"features\.horizon_days: Input should be greater than 0"):
        with_overrides(cfg, {"features": {"horizon_days": 0}})
    with pytest.raises(ConfigError, match=r"features\.horizon_days"):
        with_overrides(cfg, {"features": {"horizon_days": "2"}})


def _champion(cfg, manifest: dict) -> str:
    """A registered version, trained (as train.py records it) on ``manifest``, holding @champion."""
    with mlflow_store(cfg) as client:
        exp = client.create_experiment(cfg.mlflow.experiment, artifact_location=cfg.mlflow.artifact_location)
        run = mlflow.start_run(experiment_id=exp)
        mlflow.log_dict(manifest, "training_set/manifest.json")
        client.create_registered_model(cfg.mlflow.model_name)
        mv = client.create_model_version(cfg.mlflow.model_name, f"{run.info.artifact_uri}/model", run.info.run_id)
        client.set_model_version_tag(cfg.mlflow.model_name, mv.version, "training_set_id", manifest["id"])
        client.set_registered_model_alias(cfg.mlflow.model_name, cfg.mlflow.champion_alias, mv.version)
        mlflow.end_run()
    return str(mv.version)


def test_training_decision_reads_the_champions_run(cfg, tmp_path, capsys):
    last = dt.date(2026, 1, 10)
    assert training_decision(cfg, "2026-01-11-h1", last).reason == "no champion yet"
    plan = plan_cutoffs(cfg, last)
    version = _champion(cfg, {"id": "2026-01-11-h1", "cutoffs": plan.as_manifest(), "horizon_days": 1})

    same = training_decision(cfg, "2026-01-11-h1", last)
    assert not same.train and f"champion v{version}" in same.reason
    assert training_decision(cfg, "2026-01-11-h1", last, force=True).train
    assert training_decision(cfg, "2026-01-12-h1", last + dt.timedelta(days=1)).train
    assert training_decision(with_overrides(cfg, {"features": {"horizon_days": 2}}), "2026-01-11-h2", last).train

    conf = tmp_path / "pipeline.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    args = ["should-train", "--config", str(conf), "--training-set-id", "2026-01-11-h1", "--last-cutoff", str(last)]
    assert main(args) == 1
    assert json.loads(capsys.readouterr().out)["train"] is False
    assert main([*args, "--horizon", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["train"] is True
    with pytest.raises(SystemExit):
        main([*args, "--horizon", "0"])
