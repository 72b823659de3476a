"""Drift: PSI and category share distance against hand-computed values; the nightly check's report and fail mode."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from expectations.drift import (
    DriftError,
    ReferenceProfile,
    binned_counts,
    category_drift,
    feature_drift,
    psi,
    quantile_edges,
)
from expectations.runner import DataQualityError
from spark_jobs.drift import check_drift
from tasks.layers import drift_reference_profile, drift_report, features_partition, training_set_dir, training_set_split

DS = dt.date(2026, 1, 10)


def test_psi_by_hand():
    # shares (0.3, 0.7) -> (0.6, 0.4): 0.3 ln 2 + (-0.3) ln(4/7)
    assert psi([30, 70], [60, 40]) == pytest.approx(0.3 * math.log(2) - 0.3 * math.log(4 / 7), rel=1e-12)
    assert psi([1, 2, 3], [10, 20, 30]) == 0.0
    # An empty bin is floored at 1e-4 instead of giving infinity.
    assert psi([50, 50], [100, 0]) == pytest.approx(0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))
    with pytest.raises(ValueError, match="equal length"):
        psi([1, 2], [1])


def test_feature_drift_in_spark_by_hand(spark):
    # Reference: 30 x 1.0, 30 x 2.0, 40 x 3.0 -> median 2.0 is the one edge of 2 bins: shares (0.3, 0.7).
    reference = spark.createDataFrame([(1.0, 5.0)] * 30 + [(2.0, 5.0)] * 30 + [(3.0, 5.0)] * 40, "x double, y double")
    # Current: 60 x 1.0 and 40 x 3.0 -> (0.6, 0.4); y: 10 nulls appear.
    current = spark.createDataFrame([(1.0, 5.0)] * 60 + [(3.0, None)] * 10 + [(3.0, 5.0)] * 30, "x double, y double")
    assert quantile_edges(reference, ["x"], 2, 0.0) == {"x": [2.0]}
    assert binned_counts(current, {"x": [2.0], "y": [5.0]}) == {"x": [0, 60, 40], "y": [10, 0, 90]}
    drift = feature_drift(current, reference, ["x", "y"], bins=2, relative_error=0.0)
    assert drift["x"] == pytest.approx(0.3 * math.log(2) - 0.3 * math.log(4 / 7), rel=1e-9)
    # y: reference all in bin 1; current 10% null: (0.1 - 1e-4) ln(0.1 / 1e-4) + (0.9 - 1) ln(0.9).
    assert drift["y"] == pytest.approx((0.1 - 1e-4) * math.log(0.1 / 1e-4) + (-0.1) * math.log(0.9), rel=1e-9)
    with pytest.raises(DriftError, match=r"current data lacks column\(s\) \['z'\]"):
        feature_drift(current.withColumn("z", current.x).drop("z"), reference.withColumn("z", reference.x), ["z"])


def test_category_drift_by_hand(spark):
    reference = spark.createDataFrame([(["a", "a", "b"],), (["a", "c"],)], "seq_category array<string>")
    current = spark.createDataFrame([(["b", "b"],), (["a", "d"],)], "seq_category array<string>")
    # top-2 reference categories a (3/5), b (1/5), other (1/5) vs current a 1/4, b 2/4, other 1/4.
    expected = 0.5 * (abs(0.6 - 0.25) + abs(0.2 - 0.5) + abs(0.2 - 0.25))
    assert category_drift(current, reference, "seq_category", top_k=2) == pytest.approx(expected)
    assert category_drift(reference, reference, "seq_category", top_k=2) == pytest.approx(0.0)


def _features(spark, path, values, categories):
    rows = [(f"u{i}", float(v), float(i % 3), cats) for i, (v, cats) in enumerate(zip(values, categories, strict=True))]
    spark.createDataFrame(rows, "user_id string, f_a double, f_b double, seq_category array<string>").coalesce(
        1
    ).write.mode("overwrite").parquet(str(path))


def test_check_drift_without_champion_or_features(spark, cfg):
    with pytest.raises(DriftError, match=r"no features for ds=2026-01-10"):
        check_drift(cfg, DS, spark=spark)
    _features(spark, features_partition(cfg, "user", DS), range(5), [["c"]] * 5)
    with pytest.raises(DriftError, match=r"no version of 'purchase_intent' holds @champion"):
        check_drift(cfg, DS, spark=spark)


def _register_champion(cfg, training_set_id: str) -> str:
    """A registered version holding @champion, tagged with its training set as train.py tags it."""
    import mlflow

    from tasks.registry import mlflow_store

    with mlflow_store(cfg) as client:
        exp = client.create_experiment(cfg.mlflow.experiment, artifact_location=cfg.mlflow.artifact_location)
        with mlflow.start_run(experiment_id=exp) as run:
            client.create_registered_model(cfg.mlflow.model_name)
            mv = client.create_model_version(cfg.mlflow.model_name, f"{run.info.artifact_uri}/model", run.info.run_id)
        client.set_model_version_tag(cfg.mlflow.model_name, mv.version, "training_set_id", training_set_id)
        client.set_registered_model_alias(cfg.mlflow.model_name, cfg.mlflow.champion_alias, mv.version)
    return str(mv.version)


def _monitoring_runs(cfg):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.resolved_tracking_uri)
    exp = client.get_experiment_by_name(cfg.mlflow.monitoring_experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


def test_nightly_drift_skips_without_champion_reports_logs_and_fails_when_told(spark, cfg, caplog, capsys):
    from spark_jobs.drift import nightly_drift

    reference = training_set_split(training_set_dir(cfg, "ts1"), "train")
    _features(spark, features_partition(cfg, "user", DS), [v + 1000 for v in range(100)], [["c1", "c2"]] * 100)
    with caplog.at_level("WARNING", logger="spark_jobs.drift"):
        assert nightly_drift(cfg, DS, spark=spark) is None
    assert "drift skipped for ds=2026-01-10: no version of 'purchase_intent' holds @champion yet" in caplog.text
    assert _monitoring_runs(cfg)[1] == []

    version = _register_champion(cfg, "ts1")
    # The champion's reference is gone: warn mode skips with the reason, fail mode stops.
    caplog.clear()
    with caplog.at_level("WARNING", logger="spark_jobs.drift"):
        assert nightly_drift(cfg, DS, spark=spark) is None
    assert "drift_action=warn" in caplog.text and "train split" in caplog.text
    strict = cfg.model_copy(update={"quality": cfg.quality.model_copy(update={"drift_action": "fail"})})
    with pytest.raises(DriftError, match="whose train split"):
        nightly_drift(strict, DS, spark=spark)

    _features(spark, reference, range(100), [["c1", "c2"]] * 100)
    report = nightly_drift(cfg, DS, spark=spark)
    assert report.reference == reference
    assert report.drifted == ("f_a",) and report.psi["f_b"] == pytest.approx(0.0)
    assert report.category_distance == {"seq_category": pytest.approx(0.0)}
    saved = json.loads(report.output.read_text())
    assert report.output == drift_report(cfg, DS) == cfg.paths.runs_dir / "drift" / "2026-01-10.json"
    assert saved["drifted"] == ["f_a"] and saved["psi"]["f_a"] == pytest.approx(report.psi["f_a"])
    with pytest.raises(DataQualityError, match=r"feature_psi_at_most\(column=f_a, threshold=0.25"):
        nightly_drift(strict, DS, spark=spark)
    assert f"drift report: {report.output}" in capsys.readouterr().out

    # Two runs of the same ds leave one monitoring run, tagged with the champion version.
    client, runs = _monitoring_runs(cfg)
    assert len(runs) == 1
    run = runs[0]
    # A machine-learning experiment: the MLflow UI lists its runs rather than GenAI traces.
    monitoring = client.get_experiment(run.info.experiment_id)
    assert monitoring.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.data.tags["ds"] == "2026-01-10" and run.data.tags["model_version"] == version
    assert run.data.tags["drifted"] == "f_a" and run.data.tags["drift_action"] == "fail"
    assert run.data.metrics["psi/f_a"] == pytest.approx(report.psi["f_a"])
    assert run.data.metrics["category_distance/seq_category"] == pytest.approx(0.0)
    assert run.data.metrics["drifted_columns"] == 1.0
    assert [f.path for f in client.list_artifacts(run.info.run_id, "drift")] == ["drift/2026-01-10.json"]


def test_the_references_profile_is_computed_once_and_again_for_a_rewritten_reference(spark, cfg, tmp_path, monkeypatch):
    import spark_jobs.drift as job

    reference = tmp_path / "reference"
    _features(spark, features_partition(cfg, "user", DS), [v * 2 for v in range(100)], [["c1", "c2", None]] * 100)
    _features(spark, reference, range(100), [["c1"], ["c2", "c3"]] * 50)
    first = check_drift(cfg, DS, reference, spark=spark)
    (kept,) = drift_reference_profile(cfg, "x").parent.glob("*.json")
    profile = ReferenceProfile.from_json(json.loads(kept.read_text()))
    # 0..99 in ten quantile bins (edges within the approximate quantiles' error), no nulls.
    assert list(profile.edges) == ["f_a", "f_b"] and len(profile.counts["f_a"]) == 11
    assert profile.counts["f_a"][0] == 0 and sum(profile.counts["f_a"]) == 100 and max(profile.counts["f_a"]) <= 11
    assert profile.categories["seq_category"].keys == ["c1", "c2", "c3"]
    assert profile.categories["seq_category"].counts == [50, 50, 50] and profile.categories["seq_category"].total == 150

    # A later night reads the kept profile: computing it again would fail here.
    def not_again(*args, **kwargs):
        raise AssertionError("the reference was profiled again")

    monkeypatch.setattr(job, "reference_profile", not_again)
    again = check_drift(cfg, DS, reference, spark=spark)
    assert (again.psi, again.category_distance, again.drifted) == (first.psi, first.category_distance, first.drifted)
    assert list(again.psi) == ["f_a", "f_b"] and first.drifted == ("f_a", "seq_category")
    # reference c1, c2, c3 a third each; current c1, c2 and null (other) a third each: 0.5 * (1/3 + 1/3)
    assert again.category_distance["seq_category"] == pytest.approx(1 / 3)

    # An unreadable kept profile is computed again.
    monkeypatch.undo()
    kept.write_text("{")
    assert check_drift(cfg, DS, reference, spark=spark).psi == first.psi
    assert ReferenceProfile.from_json(json.loads(kept.read_text())) == profile

    # The same reference rewritten with the current's values is another profile, and no drift.
    _features(spark, reference, [v * 2 for v in range(100)], [["c1", "c2", None]] * 100)
    rewritten = check_drift(cfg, DS, reference, spark=spark)
    assert len(list(kept.parent.glob("*.json"))) == 2
    assert rewritten.drifted == () and rewritten.category_distance["seq_category"] == pytest.approx(0.0)


def test_short_history_says_why_windowed_features_drift(cfg):
    from spark_jobs.drift import DriftReport, short_history
    from tasks.layers import events_partition, training_set_manifest

    reference = training_set_split(training_set_dir(cfg, "ts1"), "train")
    reference.mkdir(parents=True)
    first = dt.date(2026, 1, 1)
    train = [first + dt.timedelta(days=d) for d in range(1, 7)]
    manifest = {"cutoffs": {"train": [d.isoformat() for d in train], "val": [], "test": []}}
    training_set_manifest(reference.parent).write_text(json.dumps(manifest))
    for d in range(9):
        events_partition(cfg, first + dt.timedelta(days=d)).mkdir(parents=True)

    note = short_history(cfg, DS, reference)
    assert note == (
        "the events start 2026-01-01: ds 2026-01-10 has 9, the reference's first cutoff 2026-01-02 has 1 of the "
        "features.lookback_days=30 days of history, so features over long windows differ by construction "
        "(a log of lookback_days plus the training cutoffs avoids it)"
    )
    report = DriftReport(DS, reference, reference, {"f_a": 1.0}, {}, ("f_a",), "warn", reference, note=note)
    assert report.describe().endswith(f"; {note}") and "\n" not in report.describe()

    # A log as long as the lookback before the first training cutoff: nothing to explain.
    for d in range(1, 31):
        events_partition(cfg, first - dt.timedelta(days=d)).mkdir(parents=True)
    assert short_history(cfg, DS, reference) is None
