"""Training-set gate: a well-formed set passes; overlapping, disordered, one-class or malformed splits fail by name."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from expectations.runner import DataQualityError
from spark_jobs.validate import main, validate_training_set
from tasks.layers import training_set_dir
from tasks.validation_results import partition_fingerprint, read_result, result_path
from tests.helpers.trainingset import write_training_set


def _set(cfg, name: str):
    return write_training_set(training_set_dir(cfg, name), n_users=60, seed=1, n_train_cutoffs=2)


def _rewrite(path, fn):
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def _set_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type))


def test_good_set_passes(spark, cfg):
    _set(cfg, "good")
    summary = validate_training_set(cfg, "good")
    assert summary.success, summary.describe()
    assert summary.name == "training_set_good" and summary.n_expectations == 9
    # The outcome is stored for training, tied to exactly these files.
    stored = read_result(result_path(cfg.paths.gx_dir, "training_set", "good"))
    assert stored["success"] and stored["summary"]["n_expectations"] == 9
    assert stored["fingerprint"] == partition_fingerprint(training_set_dir(cfg, "good"))


def test_each_broken_property_is_named(spark, cfg):
    root = _set(cfg, "broken")
    train_first = json.loads((root / "manifest.json").read_text())["cutoffs"]["train"][0]
    # val rows carry a train cutoff: overlap, disorder and a cutoff the manifest lists elsewhere.
    for f in sorted((root / "val").glob("*.parquet")):
        _rewrite(f, lambda t: _set_column(t, "ds", [dt.date.fromisoformat(train_first)] * t.num_rows))
    # test split with a single class.
    for f in sorted((root / "test").glob("*.parquet")):
        _rewrite(f, lambda t: _set_column(t, "label_purchase", [0] * t.num_rows))
    # train: a zero weight, a null label and one duplicated (ds, user) row.
    first = sorted((root / "train").glob("*.parquet"))[0]

    def breaks(t: pa.Table) -> pa.Table:
        t = _set_column(t, "weight", [0.0] + t.column("weight").to_pylist()[1:])
        t = _set_column(t, "label_cart", [None] + t.column("label_cart").to_pylist()[1:])
        return pa.concat_tables([t, t.slice(5, 1)])

    _rewrite(first, breaks)
    assert pc.sum(pq.read_table(root / "test").column("label_purchase")).as_py() == 0

    with pytest.raises(DataQualityError) as err:
        validate_training_set(cfg, "broken")
    failures = err.value.summary.failures
    named = {
        f.kwargs["unexpected_rows_query"].split("*/")[0] + "*/"
        if f.expectation == "unexpected_rows_expectation"
        else f.expectation: f
        for f in failures
    }
    assert set(named) == {
        "expect_compound_columns_to_be_unique",
        "/* split empty or without both label_purchase classes */",
        "/* cutoff in more than one split */",
        "/* splits out of time order or less than horizon_days=1 apart */",
        "/* labels null or not 0/1, or weight not positive */",
        "/* cutoff not listed under its split in manifest.json */",
    }
    one_class = named["/* split empty or without both label_purchase classes */"].sample_rows
    assert [(r["split"], r["positives"]) for r in one_class] == [("test", 0)]
    overlap = named["/* cutoff in more than one split */"].sample_rows
    assert [(str(r["ds"]), r["splits"]) for r in overlap] == [(train_first, ["train", "val"])]
    order = {
        (r["earlier"], r["later"])
        for r in named["/* splits out of time order or less than horizon_days=1 apart */"].sample_rows
    }
    assert order == {("train", "val")}
    bad = named["/* labels null or not 0/1, or weight not positive */"].sample_rows
    assert len(bad) == 1 and bad[0]["weight"] == 0.0 and bad[0]["label_cart"] is None
    unlisted = named["/* cutoff not listed under its split in manifest.json */"].sample_rows
    assert [(r["_split"], str(r["ds"])) for r in unlisted] == [("val", train_first)]
    message = str(err.value)
    assert "6 of 9 expectations failed" in message and "'split': 'test'" in message
    # The failed result is stored too, and training refuses the set with GX's own summary.
    from tasks.training.data import UnvalidatedTrainingSetError, read_manifest, require_validation

    stored = read_result(result_path(cfg.paths.gx_dir, "training_set", "broken"))
    assert stored["success"] is False and "6 of 9 expectations failed" in stored["description"]
    with pytest.raises(UnvalidatedTrainingSetError, match="'broken' failed validation .*6 of 9 expectations failed"):
        require_validation(cfg, root, read_manifest(root))


def test_a_text_that_escaped_cleaning_fails_a_set_built_with_text(spark, cfg):
    root = write_training_set(training_set_dir(cfg, "texts"), n_users=60, seed=1, n_train_cutoffs=2, text_dim=4)
    summary = validate_training_set(cfg, "texts")
    assert summary.success and summary.n_expectations == 10, summary.describe()

    first = sorted((root / "train").glob("*.parquet"))[0]
    leaked = "call me +1 (415) 555-0132"
    _rewrite(first, lambda t: _set_column(t, "seq_text", [[leaked]] + t.column("seq_text").to_pylist()[1:]))
    with pytest.raises(DataQualityError) as err:
        validate_training_set(cfg, "texts")
    (failure,) = err.value.summary.failures
    assert failure.kwargs["unexpected_rows_query"].startswith("/* texts that match a cleaning.pii_patterns pattern")
    assert [r["pattern"] for r in failure.sample_rows] == ["phone"]


def test_missing_manifest_or_splits_fail_clearly(cfg, tmp_path):
    import yaml

    root = _set(cfg, "nomanifest")
    (root / "manifest.json").unlink()
    with pytest.raises(DataQualityError, match=r"nomanifest/manifest.json is missing: not a complete training set"):
        validate_training_set(cfg, "nomanifest")
    assert read_result(result_path(cfg.paths.gx_dir, "training_set", "nomanifest"))["success"] is False
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump()))
    with pytest.raises(DataQualityError, match=r"training_sets/absent is missing or empty"):
        main(["training_set", "--training-set-id", "absent", "--config", str(config)])
    with pytest.raises(SystemExit):
        main(["training_set", "--day", "2026-01-05", "--config", str(config)])
