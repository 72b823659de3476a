"""Training sets (spark_jobs.training_set): cutoff splits, files, manifest, reruns and refusals."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import yaml
from pyspark.sql import functions as F_

from spark_jobs import features as F
from spark_jobs import training_set as T
from tasks.layers import layer_root, training_set_dir
from tasks.schema import LABEL_COLUMNS, SEQUENCE_COLUMNS
from tests.helpers.events import events_df, random_events, write_events_layer

D = dt.date


def small(cfg, horizon_days: int = 2, negative_sample_rate: float = 1.0):
    return cfg.model_copy(
        update={
            "features": cfg.features.model_copy(
                update={
                    "lookback_days": 5,
                    "windows_days": [1, 5],
                    "sequence_length": 4,
                    "item_buckets": 8,
                    "horizon_days": horizon_days,
                }
            ),
            # new_user_days must stay one of the shorter windows (config rule, checked when a CLI reloads it).
            "training": cfg.training.model_copy(update={"new_user_days": 1}),
            "training_set": cfg.training_set.model_copy(
                update={
                    "n_train_cutoffs": 3,
                    "n_val_cutoffs": 1,
                    "n_test_cutoffs": 1,
                    "files_per_split": 3,
                    "negative_sample_rate": negative_sample_rate,
                }
            ),
        }
    )


@pytest.fixture
def layer_rows():
    return random_events(30, D(2026, 1, 1), 12, seed=21)


def test_plan_leaves_horizon_gaps_between_splits(cfg):
    plan = T.plan_cutoffs(small(cfg, horizon_days=3), D(2026, 1, 20))
    assert plan.train == (D(2026, 1, 12), D(2026, 1, 13), D(2026, 1, 14))
    assert plan.val == (D(2026, 1, 17),) and plan.test == (D(2026, 1, 20),)
    assert plan.dropped == (D(2026, 1, 15), D(2026, 1, 16), D(2026, 1, 18), D(2026, 1, 19))
    # Label windows [c, c + 3) of consecutive splits do not overlap.
    assert plan.train[-1] + dt.timedelta(days=3) <= plan.val[0] and plan.val[-1] + dt.timedelta(days=3) <= plan.test[0]
    assert T.plan_cutoffs(small(cfg, horizon_days=1), D(2026, 1, 20)).dropped == ()


def test_build_splits_files_manifest_and_rerun(spark, cfg, layer_rows, tmp_path):
    c = small(cfg)
    write_events_layer(c, layer_rows)
    info = T.build(c, spark=spark)
    m = info.manifest
    # Events 2026-01-01..12 with a 2-day horizon: the latest labelled cutoff is 2026-01-11.
    assert info.path == training_set_dir(c, "cutoffs_2026-01-05_2026-01-11")
    assert m["cutoffs"] == {
        "train": ["2026-01-05", "2026-01-06", "2026-01-07"],
        "val": ["2026-01-09"],
        "test": ["2026-01-11"],
    }
    assert m["dropped_cutoffs"] == ["2026-01-08", "2026-01-10"]
    assert len(set().union(*map(set, m["cutoffs"].values()))) == sum(len(v) for v in m["cutoffs"].values())
    assert m["source"]["dt_first"] == "2025-12-31" and m["source"]["dt_last"] == "2026-01-12"
    assert json.loads((info.path / "manifest.json").read_text()) == m

    frames = {}
    for s in T.SPLITS:
        assert len(m["files"][s]) >= 2 and all((info.path / f).is_file() for f in m["files"][s])
        frames[s] = spark.read.parquet(str(info.path / s)).toPandas()
        assert len(frames[s]) == m["rows"][s] > 0
        assert sorted({d.isoformat() for d in frames[s]["ds"]}) == m["cutoffs"][s]
        assert not frames[s].duplicated(["user_id", "ds"]).any()
        assert (frames[s]["weight"] == 1.0).all()
        for lab in LABEL_COLUMNS:
            assert m["positive_rate"][s][lab] == pytest.approx(frames[s][lab].mean())
    assert m["feature_columns"] == F.tabular_columns(c.features)
    assert set(m["feature_columns"] + list(SEQUENCE_COLUMNS) + list(LABEL_COLUMNS)) <= set(frames["train"].columns)
    assert sum(m["positive_rate"]["train"].values()) > 0

    # The rows of one cutoff are exactly what the shared transform gives for it.
    cutoff = F.cutoff_instant(D(2026, 1, 9), "UTC")
    direct = F.build_features(events_df(spark, layer_rows), cutoff, c.features, "UTC", with_labels=True).toPandas()
    val = frames["val"].drop(columns=["ds", "weight"])[direct.columns]
    pd.testing.assert_frame_equal(
        val.sort_values("user_id")
        .reset_index(drop=True)
        .map(lambda v: list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v),
        direct.sort_values("user_id")
        .reset_index(drop=True)
        .map(lambda v: list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v),
    )

    uc = spark.read.parquet(str(info.path / "user_category" / "test")).toPandas()
    assert len(uc) == m["user_category"]["rows"]["test"] > 0
    assert {"user_id", "category_id", "ds", F.USER_CATEGORY_LABEL} <= set(uc.columns)

    # The rerun goes through the CLI with a 1-day config and --horizon 2: it must rebuild the same set,
    # so the horizon reached build() through the config (1 day would end at cutoff 2026-01-12).
    conf = tmp_path / "h1.yaml"
    conf.write_text(yaml.safe_dump(small(cfg, horizon_days=1).model_dump()))
    assert T.main(["--config", str(conf), "--horizon", "2"]) == 0
    again = json.loads((info.path / "manifest.json").read_text())
    assert again["horizon_days"] == 2 and again["cutoffs"] == m["cutoffs"] and again["rows"] == m["rows"]
    assert sorted(p.name for p in info.path.parent.iterdir()) == [info.path.name]
    assert spark.read.parquet(str(info.path / "train")).count() == m["rows"]["train"]


def test_cli_rejects_a_bad_horizon(cfg, tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(cfg.model_dump()))
    with pytest.raises(SystemExit) as exc:
        T.main(["--config", str(conf), "--horizon", "0"])
    assert exc.value.code == 2
    assert "features.horizon_days: Input should be greater than 0" in capsys.readouterr().err


def test_negative_subsampling_reweights_only_selected_negatives(spark):
    rows = [
        (f"u{i}", dt.date(2026, 1, 1 + i % 3), "train" if i % 4 else "test", 1.0, int(i % 5 == 0), 0, 0)
        for i in range(400)
    ]
    df = spark.createDataFrame(
        rows, "user_id string, ds date, _split string, weight double, label_purchase int, label_cart int, label_fav int"
    )
    out = T.subsample_negatives(df, 0.25, where=F_.col("_split") == "train").toPandas()
    again = T.subsample_negatives(df, 0.25, where=F_.col("_split") == "train").toPandas()
    pd.testing.assert_frame_equal(out, again)  # deterministic: the same rows every run
    src = pd.DataFrame(rows, columns=["user_id", "ds", "_split", "weight", "label_purchase", "label_cart", "label_fav"])
    neg_train = out[(out["_split"] == "train") & (out["label_purchase"] == 0)]
    assert (neg_train["weight"] == 4.0).all()
    assert 0.15 < len(neg_train) / ((src["_split"] == "train") & (src["label_purchase"] == 0)).sum() < 0.35
    assert (out.loc[out["_split"] == "test", "weight"] == 1.0).all()
    assert (out["_split"] == "test").sum() == (src["_split"] == "test").sum()
    assert out["label_purchase"].sum() == src["label_purchase"].sum()
    assert T.subsample_negatives(df, 1.0) is df
    with pytest.raises(ValueError, match="negative_sample_rate"):
        T.subsample_negatives(df, 0.0)


def test_missing_label_window_is_named(spark, cfg, layer_rows):
    c = small(cfg)
    write_events_layer(c, layer_rows)
    with pytest.raises(T.TrainingSetError, match="last cutoff 2026-01-12 .*missing for 2026-01-13"):
        T.build(c, last_cutoff=D(2026, 1, 12), spark=spark)
    assert not layer_root(c, "training_sets").exists() or not any(layer_root(c, "training_sets").iterdir())


def test_missing_history_and_gaps_are_named(spark, cfg, layer_rows):
    c = small(cfg, horizon_days=1)
    write_events_layer(c, layer_rows)
    with pytest.raises(T.TrainingSetError, match=r"earliest cutoff 2026-01-01 has no history: .*dt=2025-12-31"):
        T.build(c, last_cutoff=D(2026, 1, 5), spark=spark)
    for part in (layer_root(c, "events") / "dt=2026-01-08").glob("*.parquet"):
        part.unlink()
    with pytest.raises(T.TrainingSetError, match="missing: 2026-01-08"):
        T.build(c, last_cutoff=D(2026, 1, 10), spark=spark)
    with pytest.raises(T.TrainingSetError, match="training set id"):
        T.build(c, last_cutoff=D(2026, 1, 12), training_set_id="../escape", spark=spark)
