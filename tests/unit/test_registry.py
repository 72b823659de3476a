"""Champion/challenger gate: no champion yet, promotion, rejection to challenger, thresholds, CLI."""

from __future__ import annotations

import copy
import json

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from tasks.evaluate import evaluate_intents
from tasks.models.base import TorchPredictor, build_model, model_config
from tasks.models.encoding import FeatureEncoder, encode_targets
from tasks.models.pyfunc import log_intent_model
from tasks.registry import (
    CHALLENGER_ALIAS,
    GateError,
    champion,
    gate,
    main,
    mlflow_store,
    show,
    unfair_comparison,
)
from tasks.training.steps import take, train_step
from tasks.training.tracking import ensure_experiment
from tests.helpers.trainingset import FEATURE_COLUMNS, write_training_set


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A small training set, a model trained on it in-process, and its inverted (worse than chance) twin."""
    ts = write_training_set(tmp_path_factory.mktemp("reg") / "ts", n_users=200, seed=1)
    train = pd.read_parquet(ts / "train")
    enc = FeatureEncoder.fit(train, list(FEATURE_COLUMNS), sequence_length=12, item_buckets=64)
    torch.manual_seed(0)
    good = build_model(
        "lstm",
        model_config(
            "lstm",
            vocab_sizes=enc.vocab_sizes,
            n_tabular=len(FEATURE_COLUMNS),
            sequence_length=12,
            embedding_dim=16,
            hidden_dim=32,
            dropout=0.0,
        ),
    )
    x, (y, w) = enc.encode(train), encode_targets(train)
    opt = torch.optim.AdamW(good.parameters(), lr=0.01)
    for _ in range(6):
        for idx in torch.randperm(len(y)).split(64):
            train_step(good, good, opt, take(x, idx), y[idx], w[idx], grad_clip_norm=1.0)
    bad = copy.deepcopy(good)
    with torch.no_grad():
        bad.head[-1].weight.neg_()
        bad.head[-1].bias.neg_()
    test = pd.read_parquet(ts / "test")
    auc = evaluate_intents(
        test[["label_purchase", "label_cart", "label_fav"]].to_numpy(), good.predict(enc.encode(test)).numpy()
    )["purchase_roc_auc"]
    assert auc > 0.6, f"fixture model did not learn (test AUC {auc:.3f})"
    return ts, enc, good, bad, train


def _register(cfg, model, enc, example, manifest: dict | None = None) -> str:
    with mlflow_store(cfg) as client, mlflow.start_run(experiment_id=ensure_experiment(cfg, client)):
        if manifest is not None:
            mlflow.log_dict(manifest, "training_set/manifest.json")  # as tasks.training.tracking logs it
        info = log_intent_model(
            TorchPredictor(model, enc, "lstm"), example, registered_model_name=cfg.mlflow.model_name
        )
    return str(info.registered_model_version)


def _aliases(cfg, version):
    return set(
        MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
        .get_model_version(cfg.mlflow.model_name, version)
        .aliases
    )


def test_gate_promotes_first_then_rejects_worse_then_promotes_equal(cfg, assets):
    ts, enc, good, bad, train = assets
    assert champion(cfg) is None
    v1 = _register(cfg, good, enc, train)
    assert champion(cfg) is None

    first = gate(cfg, v1, ts)
    assert first.promoted and first.alias == cfg.mlflow.champion_alias
    assert first.champion_version is None and first.champion_auc is None
    assert "no champion yet" in first.reason and first.candidate_auc > 0.6
    assert str(champion(cfg).version) == v1

    v2 = _register(cfg, bad, enc, train)
    second = gate(cfg, v2, ts)
    assert not second.promoted and second.alias == CHALLENGER_ALIAS
    assert second.champion_version == v1
    assert second.champion_auc == pytest.approx(first.candidate_auc)
    assert second.candidate_auc < 0.5 and "min_auc" in second.reason
    assert str(champion(cfg).version) == v1 and _aliases(cfg, v2) == {CHALLENGER_ALIAS}
    tags = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri).get_model_version(cfg.mlflow.model_name, v2).tags
    assert tags["gate_decision"] == "rejected" and tags["gate_champion_version"] == v1
    assert float(tags["gate_candidate_auc"]) == pytest.approx(second.candidate_auc, abs=1e-6)
    assert float(tags["gate_champion_auc"]) == pytest.approx(first.candidate_auc, abs=1e-6)
    assert tags["gate_reason"] == second.reason

    # Same weights as the champion: equal AUC passes with max_auc_drop 0, the alias moves.
    v3 = _register(cfg, good, enc, train)
    third = gate(cfg, v3, ts)
    assert third.promoted and third.champion_version == v1
    assert third.candidate_auc == pytest.approx(third.champion_auc)
    assert str(champion(cfg).version) == v3 and _aliases(cfg, v1) == set()
    assert _aliases(cfg, v2) == {CHALLENGER_ALIAS}
    again = gate(cfg, v3, ts)
    assert again.promoted and "already the champion" in again.reason


def test_gate_rejects_a_drop_beyond_tolerance_and_accepts_within(cfg, assets):
    ts, enc, good, bad, train = assets
    lenient = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"min_auc": 0.0})})
    v1 = _register(cfg, good, enc, train)
    assert gate(lenient, v1, ts).promoted
    v2 = _register(cfg, bad, enc, train)
    rejected = gate(lenient, v2, ts)
    assert not rejected.promoted and "max_auc_drop" in rejected.reason and "<" in rejected.reason
    tolerant = lenient.model_copy(update={"gate": lenient.gate.model_copy(update={"max_auc_drop": 1.0})})
    accepted = gate(tolerant, v2, ts)
    assert accepted.promoted and str(champion(cfg).version) == v2
    # Promoted from challenger: the challenger alias no longer points at it.
    assert _aliases(cfg, v2) == {cfg.mlflow.champion_alias}


def _set(train: list[str], val: list[str], test: list[str], horizon: int = 1) -> dict:
    return {"cutoffs": {"train": train, "val": val, "test": test}, "horizon_days": horizon}


def test_a_champion_fitted_on_the_test_labels_cannot_be_judged_on_them():
    champion_set = _set(["2026-01-04", "2026-01-05"], ["2026-01-06"], ["2026-01-07"])
    # The next training's split, or the same one: the champion's labels end before the first test cutoff.
    assert unfair_comparison("3", champion_set, _set(["2026-01-05"], ["2026-01-07"], ["2026-01-08"])) is None
    assert unfair_comparison("3", champion_set, champion_set) is None
    # A backfill for an older date: the champion's validation labels are this test split's.
    why = unfair_comparison("3", champion_set, _set(["2026-01-03"], ["2026-01-05"], ["2026-01-06"]))
    assert why.startswith("champion v3 was fitted on labels up to 2026-01-06 (cutoffs up to 2026-01-06, horizon 1d)")
    # Horizon 2 leaves a day out between splits; a label window of the last val cutoff ends at the test cutoff.
    h2 = _set(["2026-01-02", "2026-01-03"], ["2026-01-05"], ["2026-01-07"], horizon=2)
    assert unfair_comparison("3", h2, h2) is None
    assert "labels up to 2026-01-06" in unfair_comparison("3", h2, _set([], [], ["2026-01-06"]))
    # Without both manifests nothing is known, and the AUC comparison decides as before.
    assert unfair_comparison("3", None, champion_set) is None and unfair_comparison("3", champion_set, None) is None


def test_gate_keeps_a_champion_trained_on_newer_data(cfg, assets):
    ts, enc, good, bad, train = assets
    test_cutoffs = json.loads((ts / "manifest.json").read_text())["cutoffs"]["test"]
    later = _set([test_cutoffs[0]], ["2099-01-01"], ["2099-01-02"])
    v1 = _register(cfg, good, enc, train, manifest=later)
    assert gate(cfg, v1, ts).promoted
    # The same weights, equal AUC: promoted against a fair champion, kept out against this one.
    v2 = _register(cfg, good, enc, train)
    held = gate(cfg, v2, ts)
    assert not held.promoted and held.alias == CHALLENGER_ALIAS and str(champion(cfg).version) == v1
    assert held.reason.startswith(f"champion v{v1} was fitted on labels up to 2099-01-01")


def test_gate_evaluates_a_champion_logged_under_the_old_flat_metric_names(cfg, assets):
    """A champion trained before metrics were grouped (``test_purchase_roc_auc``, ``baseline_lr_test_...``)
    is compared on the same footing as a new candidate: the gate evaluates both models on the test split
    and reads no logged metric, whatever its name."""
    ts, enc, good, bad, train = assets
    with mlflow_store(cfg) as client, mlflow.start_run(experiment_id=ensure_experiment(cfg, client)):
        # Deliberately wrong values: were they read, the candidate below would be rejected.
        mlflow.log_metrics({"test_purchase_roc_auc": 0.999, "baseline_lr_test_purchase_roc_auc": 0.999})
        info = log_intent_model(TorchPredictor(good, enc, "lstm"), train, registered_model_name=cfg.mlflow.model_name)
    old = str(info.registered_model_version)
    assert gate(cfg, old, ts).promoted
    new = _register(cfg, good, enc, train)
    decision = gate(cfg, new, ts)
    assert decision.promoted and decision.champion_version == old
    assert decision.champion_auc == pytest.approx(decision.candidate_auc) and decision.champion_auc < 0.99


def test_store_does_not_leak_into_environment(cfg):
    import os

    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    with mlflow_store(cfg):
        assert mlflow.get_tracking_uri() == cfg.mlflow.resolved_tracking_uri
        assert mlflow.get_registry_uri() == cfg.mlflow.resolved_tracking_uri
    assert {k: os.environ.get(k) for k in before} == before
    assert mlflow.get_tracking_uri() != cfg.mlflow.resolved_tracking_uri


def test_gate_errors(cfg, assets, tmp_path):
    ts, enc, good, bad, train = assets
    with pytest.raises(GateError, match="no version '7'"):
        gate(cfg, "7", ts)
    v1 = _register(cfg, good, enc, train)
    (tmp_path / "empty" / "test").mkdir(parents=True)
    with pytest.raises(GateError, match="no Parquet files in test/"):
        gate(cfg, v1, tmp_path / "empty")
    assert champion(cfg) is None


def test_cli_gate_and_show(cfg, assets, tmp_path, capsys):
    ts, enc, good, bad, train = assets
    conf = tmp_path / "pipeline.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["show", "--config", str(conf)]) == 0
    assert json.loads(capsys.readouterr().out) == []
    v1 = _register(cfg, good, enc, train)
    assert main(["gate", "--version", v1, "--training-set", str(ts), "--config", str(conf)]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["promoted"] is True and decision["version"] == v1
    assert main(["show", "--config", str(conf)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == show(cfg)
    assert listed[0]["version"] == v1 and listed[0]["aliases"] == [cfg.mlflow.champion_alias]
    assert listed[0]["tags"]["gate_decision"] == "promoted"


def _bare_versions(cfg, n: int) -> list[str]:
    """``n`` registered versions (no model files: the live gate reads realized outcomes, never the models)."""
    from tasks.registry import mlflow_store

    with mlflow_store(cfg) as client:
        exp = client.create_experiment(cfg.mlflow.experiment, artifact_location=cfg.mlflow.artifact_location)
        client.create_registered_model(cfg.mlflow.model_name)
        versions = []
        for _ in range(n):
            with mlflow.start_run(experiment_id=exp) as run:
                mv = client.create_model_version(cfg.mlflow.model_name, f"{run.info.artifact_uri}/m", run.info.run_id)
            versions.append(str(mv.version))
    return versions


def _realized(cfg, days: int, champion: str, challenger: str, challenger_noise: float, first: int = 0) -> None:
    """Realized rows of 300 users on ``days`` days from 2026-01-10 + ``first``, as spark_jobs.outcomes writes them."""
    import datetime as dt
    import shutil

    import numpy as np

    from tasks.layers import realized_partition

    rng = np.random.default_rng(first)
    for d in range(first, first + days):
        ds = dt.date(2026, 1, 10) + dt.timedelta(days=d)
        signal = rng.normal(size=300)
        label = (signal + rng.normal(scale=0.8, size=300) > 1.0).astype(int)
        users = [f"u{i}" for i in range(300)]
        for role, version, noise in (("champion", champion, 1.0), ("challenger", challenger, challenger_noise)):
            folder = realized_partition(cfg, ds, role)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            pd.DataFrame(
                {
                    "user_id": users,
                    "model_name": cfg.mlflow.model_name,
                    "model_version": version,
                    "p_purchase": 1 / (1 + np.exp(-(signal + rng.normal(scale=noise, size=300)))),
                    "label_purchase": label,
                }
            ).to_parquet(folder / "part-0.parquet", index=False)


@pytest.mark.parametrize("mode", ["auto", "recommend"])
def test_live_gate_promotes_or_recommends_a_challenger_that_wins_on_realized_outcomes(tmp_path, mode):
    from tasks.registry import challenger, champion, live_gate
    from tests.helpers.config import isolated_config

    cfg = isolated_config(tmp_path / "var", gate={"promote_on_live": mode, "live_min_days": 5})
    old, new = _bare_versions(cfg, 2)
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    assert live_gate(cfg) is None  # no champion, no challenger
    client.set_registered_model_alias(cfg.mlflow.model_name, "champion", old)
    client.set_registered_model_alias(cfg.mlflow.model_name, "challenger", new)
    _realized(cfg, 4, old, new, challenger_noise=0.3)
    waiting = live_gate(cfg)
    assert (waiting.action, waiting.days) == ("wait", 4)
    assert client.get_model_version(cfg.mlflow.model_name, new).tags["live_decision"] == "wait"
    # A fifth day whose champion rows are another version's (scored before an alias moved) does not count.
    _realized(cfg, 1, "9", new, challenger_noise=0.3, first=4)
    assert live_gate(cfg).days == 4
    _realized(cfg, 1, old, new, challenger_noise=0.3, first=4)
    decision = live_gate(cfg)
    assert decision.days == 5 and decision.delta_auc > 0 and decision.interval[0] > 0
    tags = client.get_model_version(cfg.mlflow.model_name, new).tags
    assert tags["live_decision"] == decision.action == ("promote" if mode == "auto" else "recommend")
    if mode == "auto":
        assert (str(champion(cfg).version), challenger(cfg)) == (new, None)
        assert client.get_model_version(cfg.mlflow.model_name, old).tags["replaced_by_live"] == new
    else:
        assert (str(champion(cfg).version), str(challenger(cfg).version)) == (old, new)


def test_live_gate_holds_a_challenger_that_does_not_win(tmp_path):
    from tasks.registry import champion, live_gate
    from tests.helpers.config import isolated_config

    cfg = isolated_config(tmp_path / "var", gate={"promote_on_live": "auto", "live_min_days": 5})
    old, new = _bare_versions(cfg, 2)
    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    client.set_registered_model_alias(cfg.mlflow.model_name, "champion", old)
    client.set_registered_model_alias(cfg.mlflow.model_name, "challenger", new)
    _realized(cfg, 6, old, new, challenger_noise=2.0)
    decision = live_gate(cfg)
    assert decision.action == "hold" and decision.delta_auc < 0
    assert str(champion(cfg).version) == old
    off = isolated_config(tmp_path / "var", gate={"promote_on_live": "off"})
    assert live_gate(off) is None


def test_a_night_without_challenger_clears_its_stale_shadow_partition(tmp_path):
    import datetime as dt

    from tasks.layers import scores_partition
    from tasks.monitoring import shadow_needed
    from tests.helpers.config import isolated_config

    cfg = isolated_config(tmp_path / "var")
    ds = dt.date(2026, 1, 15)
    stale = scores_partition(cfg, ds, "challenger")
    stale.mkdir(parents=True)
    (stale / "part-0.parquet").write_bytes(b"left by an earlier run of the night")
    (version,) = _bare_versions(cfg, 1)
    MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri).set_registered_model_alias(
        cfg.mlflow.model_name, "challenger", version
    )
    assert shadow_needed(cfg, ds) and stale.is_dir()
    MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri).delete_registered_model_alias(
        cfg.mlflow.model_name, "challenger"
    )
    assert not shadow_needed(cfg, ds) and not stale.exists()
