"""A new model family is one file: a throwaway family written into tasks/models/families/ is a valid
``training.model_type`` and CLI choice, trains through the real launcher (torchrun, 2 gloo processes),
registers a version, and its packaged model reproduces the test metrics training logged."""

from __future__ import annotations

import sys
import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tasks.evaluate import evaluate_intents
from tasks.layers import layer_root
from tasks.models.families import FAMILIES_DIR, family_names
from tasks.registry import mlflow_store
from tasks.schema import LABEL_COLUMNS, PROBABILITY_COLUMNS
from tasks.train import main
from tasks.training.launcher import launch
from tests.helpers.config import isolated_config
from tests.helpers.trainingset import write_training_set

FAMILY_SOURCE = '''"""Throwaway model family of tests/torchrun/test_model_family.py: mean of the embedded events."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from tasks.models.base import IntentModel, IntentModelConfig, register_model


@dataclass(frozen=True)
class MeanPoolConfig(IntentModelConfig):
    # Factor on the pooled sequence representation.
    scale: float = 1.0


@register_model("NAME")
class MeanPoolIntentModel(IntentModel):
    config_class = MeanPoolConfig

    def __init__(self, cfg: MeanPoolConfig):
        super().__init__(cfg)
        self.project = nn.Linear(cfg.embedding_dim, cfg.hidden_dim)

    def encode_sequence(self, batch: dict[str, Tensor]) -> Tensor:
        x = self.embed(batch)  # [B, L, D], zero at padded positions
        n = batch["seq_mask"].sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1]
        return self.project(x.sum(dim=1) / n) * self.cfg.scale  # [B, H]
'''


@pytest.fixture
def family():
    """Name of a family that exists only as one file in tasks/models/families/ for the test's duration."""
    name = f"throwaway_{uuid.uuid4().hex[:8]}"
    path = FAMILIES_DIR / f"{name}.py"
    path.write_text(FAMILY_SOURCE.replace('"NAME"', repr(name)))
    try:
        yield name
    finally:
        path.unlink(missing_ok=True)
        for cached in (FAMILIES_DIR / "__pycache__").glob(f"{name}.*.pyc"):
            cached.unlink()
        sys.modules.pop(f"tasks.models.families.{name}", None)


def test_a_family_file_trains_through_the_launcher(family, tmp_path, capsys):
    assert family in family_names()
    cfg = isolated_config(
        tmp_path / "var",
        training={"model_type": family, "batch_size": 64, "embedding_dim": 16, "hidden_dim": 32, "baselines": False},
        models={family: {"scale": 0.5}},
    )
    ts = write_training_set(layer_root(cfg, "training_sets") / "ts_family", n_users=160, seed=5)
    with pytest.raises(SystemExit):
        main(["--training-set", str(ts), "--model-type", "gru", "--output", str(tmp_path / "x.json")])
    assert f"choose from {', '.join(repr(n) for n in family_names())}" in capsys.readouterr().err

    result = launch(cfg, ts, epochs=1, nproc=2, allow_unvalidated=True)

    assert result.model_version == "1"
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    assert client.get_model_version(cfg.mlflow.model_name, "1").tags["model_type"] == family
    params = client.get_run(result.run_id).data.params
    assert params["model_type"] == family and params["world_size"] == "2"
    assert params[f"models.{family}.scale"] == "0.5"
    test = pd.read_parquet(ts / "test")
    with mlflow_store(cfg):
        model = mlflow.pyfunc.load_model(result.model_uri)
    probs = model.predict(test)
    assert list(probs.columns) == list(PROBABILITY_COLUMNS) and len(probs) == len(test)
    assert ((probs > 0) & (probs < 1)).all().all()
    metrics = evaluate_intents(test[list(LABEL_COLUMNS)].to_numpy(), probs.to_numpy())
    assert metrics["purchase_roc_auc"] == pytest.approx(result.test_metrics["purchase_roc_auc"], abs=1e-3)


def test_a_family_section_with_an_unknown_key_fails_before_torchrun(family, tmp_path):
    cfg = isolated_config(tmp_path / "var", training={"model_type": family}, models={family: {"scael": 0.5}})
    ts = write_training_set(layer_root(cfg, "training_sets") / "ts_family", n_users=40, seed=5)
    with pytest.raises(ValueError, match=rf"models\.{family}: unknown key\(s\) \['scael'\]; MeanPoolConfig takes"):
        launch(cfg, ts, epochs=1, nproc=1, allow_unvalidated=True)
    assert not list(cfg.paths.runs_dir.glob("train-*"))
