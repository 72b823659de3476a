"""Masked-event pretraining under torchrun (2 gloo processes): the registered encoder and its alias, its pyfunc,
a BERT fine-tuning that starts from its weights (checked on the registered model's tensors), and a retrain that
warm-starts from that fine-tuned model as the champion."""

from __future__ import annotations

import shutil

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

from tasks.layers import training_set_dir
from tasks.models.pyfunc import load_encoder
from tasks.pretrain import PretrainDataError, launch_pretrain, pretrain_distributed
from tasks.registry import mlflow_store
from tasks.schema import SEQUENCE_COLUMNS
from tasks.training.data import UnvalidatedTrainingSetError
from tasks.training.launcher import launch
from tests.helpers.config import isolated_config
from tests.helpers.trainingset import write_training_set


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    cfg = isolated_config(
        root / "var",
        training={"batch_size": 64, "embedding_dim": 16, "hidden_dim": 32, "learning_rate": 1e-9, "weight_decay": 0.0},
        pretrain={"epochs": 2, "batch_size": 64},
    )
    ts = write_training_set(training_set_dir(cfg, "ts_pre"), n_users=300, seed=2)
    return cfg, ts, launch_pretrain(cfg, ts, nproc=2, allow_unvalidated=True)


def test_pretraining_registers_an_encoder_version_with_its_alias_and_held_out_accuracy(pretrained):
    cfg, _, result = pretrained
    assert (result.model_name, result.model_version, result.model_type) == ("purchase_intent_encoder", "1", "bert")
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    assert str(client.get_model_version_by_alias("purchase_intent_encoder", "pretrained").version) == "1"
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2" and run.data.params["precision"] == "fp32"
    assert run.data.tags["job"] == "pretrain"
    # Every train cutoff's user rows with at least one event (3 cutoffs x 300 users, about 1 in 13 empty).
    n_rows = int(run.data.params["n_train_rows"]) + int(run.data.params["n_holdout_rows"])
    assert 780 < n_rows < 900 and int(run.data.params["n_holdout_rows"]) < 0.2 * n_rows
    assert run.data.params["pretrain_cutoffs"] == "2026-01-05,2026-01-06,2026-01-07"
    history = client.get_metric_history(result.run_id, "pretrain_loss")
    assert [m.step for m in history] == [1, 2]
    for field in ("event_type", "category", "item"):
        assert 0.0 <= result.metrics[f"holdout_acc_{field}"] <= 1.0
        assert run.data.metrics[f"majority_acc_{field}"] == pytest.approx(result.metrics[f"majority_acc_{field}"])
    # Nothing but the encoder is registered: the intent model's name holds no version.
    assert not client.search_model_versions(f"name='{cfg.mlflow.model_name}'")


def test_the_packaged_encoder_gives_each_user_its_sequence_representation(pretrained):
    cfg, ts, result = pretrained
    rows = pq.read_table(ts / "test").to_pandas().head(5)
    with mlflow_store(cfg):
        out = mlflow.pyfunc.load_model(result.model_uri).predict(rows)
    assert list(out.columns) == ["embedding"] and len(out) == 5
    assert all(len(v) == 32 for v in out["embedding"])


@pytest.fixture(scope="module")
def fine_tuned(pretrained):
    cfg, ts, result = pretrained
    return launch(cfg, ts, model_type="bert", epochs=1, nproc=2, allow_unvalidated=True, init_from=result.model_uri)


def test_a_bert_fine_tuning_starts_from_the_pretrained_weights(pretrained, fine_tuned):
    cfg, ts, result = pretrained
    trained = fine_tuned
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    params = client.get_run(trained.run_id).data.params
    assert params["init_from"] == result.model_uri and params["training.init_from"] == result.model_uri
    with mlflow_store(cfg):
        encoder = load_encoder(result.model_uri)
        tuned = mlflow.pyfunc.load_model(trained.model_uri).unwrap_python_model().predictor.inner
    pre, post = encoder.model.state_dict(), tuned.model.state_dict()
    assert int(params["init_tensors"]) == len(tuned.model.sequence_encoder_state()) > 20
    # A learning rate of 1e-9 leaves the weights where they started: the pretrained ones.
    for name in ("bert.encoder.layer.0.attention.self.query.weight", "embed.tables.seq_event_type.weight", "cls"):
        torch.testing.assert_close(post[name], pre[name], atol=1e-6, rtol=0)
    cats = [c for c in tuned.encoder.category_index if c in encoder.encoder.category_index]
    assert cats
    for c in cats:
        torch.testing.assert_close(
            post["embed.tables.seq_category.weight"][tuned.encoder.category_index[c]],
            pre["embed.tables.seq_category.weight"][encoder.encoder.category_index[c]],
            atol=1e-6,
            rtol=0,
        )


def test_pretraining_refuses_an_unvalidated_set_before_starting_torchrun(pretrained):
    cfg, ts, _ = pretrained
    with pytest.raises(UnvalidatedTrainingSetError, match="has no validation result"):
        launch_pretrain(cfg, ts, nproc=2)


def test_a_set_without_events_at_its_train_cutoffs_fails_with_the_reason(pretrained, tmp_path):
    cfg, ts, _ = pretrained
    empty = shutil.copytree(ts, tmp_path / "ts_empty")
    for part in (empty / "train").glob("*.parquet"):
        table = pq.read_table(part)
        for c in SEQUENCE_COLUMNS:
            i = table.schema.get_field_index(c)
            table = table.set_column(i, c, pa.array([[]] * table.num_rows, type=table.schema.field(c).type))
        pq.write_table(table, part)
    with pytest.raises(PretrainDataError, match="0 user rows with events at train cutoffs 2026-01-05, 2026-01-06"):
        pretrain_distributed(cfg, empty, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_a_retrain_warm_starts_from_the_champions_whole_model(pretrained, fine_tuned):
    cfg, ts, _ = pretrained
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    client.set_registered_model_alias(cfg.mlflow.model_name, cfg.mlflow.champion_alias, fine_tuned.model_version)
    champion_uri = f"models:/{cfg.mlflow.model_name}@{cfg.mlflow.champion_alias}"
    retrained = launch(cfg, ts, model_type="bert", epochs=1, nproc=1, allow_unvalidated=True, init_from=champion_uri)
    with mlflow_store(cfg):
        before = mlflow.pyfunc.load_model(fine_tuned.model_uri).unwrap_python_model().predictor.inner
        after = mlflow.pyfunc.load_model(retrained.model_uri).unwrap_python_model().predictor.inner
        with pytest.raises(ValueError, match="not a pretrained behaviour encoder"):
            load_encoder(champion_uri)
    params = client.get_run(retrained.run_id).data.params
    assert params["init_from"] == champion_uri
    # Heads included: every tensor of the champion's model.
    assert int(params["init_tensors"]) == len(after.model.state_dict()) > len(after.model.sequence_encoder_state())
    pre, post = before.model.state_dict(), after.model.state_dict()
    # A learning rate of 1e-9 leaves the weights where they started: the champion's.
    for name in ("head.3.weight", "category_head.0.weight", "bert.encoder.layer.0.attention.self.query.weight"):
        torch.testing.assert_close(post[name], pre[name], atol=1e-6, rtol=0)
