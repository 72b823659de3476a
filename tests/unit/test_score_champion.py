"""A champion whose artifacts are missing or truncated stops scoring on the driver with one line naming it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from spark_jobs.score import ChampionArtifactError, check_champion, main, resolve_champion, run
from tasks.errors import EXIT_DATA_ERROR, run_cli
from tasks.layers import features_partition
from tasks.models.base import TorchPredictor, build_model, model_config
from tasks.models.encoding import FeatureEncoder
from tasks.models.pyfunc import log_intent_model
from tasks.registry import mlflow_store
from tasks.training.tracking import ensure_experiment
from tests.helpers.trainingset import FEATURE_COLUMNS, write_training_set

DS = dt.date(2026, 1, 20)


@pytest.fixture
def champion(cfg, tmp_path):
    """A small (untrained) intent model registered and aliased @champion; returns its weights file."""
    ts = write_training_set(tmp_path / "ts", n_users=60, seed=1)
    train = pd.read_parquet(ts / "train")
    enc = FeatureEncoder.fit(train, list(FEATURE_COLUMNS), sequence_length=12, item_buckets=64)
    torch.manual_seed(0)
    settings = dict(embedding_dim=8, hidden_dim=8, dropout=0.0, sequence_length=12)
    model = build_model(
        "lstm", model_config("lstm", vocab_sizes=enc.vocab_sizes, n_tabular=len(FEATURE_COLUMNS), **settings)
    )
    with mlflow_store(cfg) as client, mlflow.start_run(experiment_id=ensure_experiment(cfg, client)):
        info = log_intent_model(TorchPredictor(model, enc, "lstm"), train, registered_model_name=cfg.mlflow.model_name)
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    client.set_registered_model_alias(cfg.mlflow.model_name, cfg.mlflow.champion_alias, version)
    (weights,) = Path(cfg.mlflow.artifact_root).rglob("weights.pt")
    # Scoring looks for the features partition before the model: any Parquet file will do.
    features = features_partition(cfg, "user", DS)
    features.mkdir(parents=True)
    train.head(5).to_parquet(features / "part-0.parquet")
    return version, weights


def test_intact_champion_passes_the_check(cfg, champion):
    check_champion(cfg, resolve_champion(cfg))


def test_missing_weights_name_version_and_file(cfg, champion):
    version, weights = champion
    weights.unlink()
    message = f"model purchase_intent version {version} (alias champion): artifact file weights.pt is missing"
    with pytest.raises(ChampionArtifactError) as err:
        run(cfg, DS, "run-1")
    assert str(err.value) == message


def test_truncated_weights_one_line_from_the_cli(cfg, champion, tmp_path, capsys):
    # The CLI's entry point in this process (tests/unit/test_config.py runs `python -m spark_jobs.score` itself).
    version, weights = champion
    weights.write_bytes(weights.read_bytes()[:100])
    conf = tmp_path / "pipeline.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    argv = ["--config", str(conf), "--ds", DS.isoformat(), "--run-id", "r"]
    assert run_cli(lambda: main(argv)) == EXIT_DATA_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and "at org.apache" not in err, err
    (line,) = [x for x in err.splitlines() if "ERROR" in x]
    assert line.startswith(
        f"DATA ERROR (ChampionArtifactError): model purchase_intent version {version} (alias champion): "
        "artifacts do not load ("
    ), line
