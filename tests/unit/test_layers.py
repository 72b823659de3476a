"""The data catalog names every layer path exactly as docs/data-layers.md documents it."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks import layers as L
from tests.helpers.config import isolated_config

DAY = dt.date(2026, 1, 2)


def test_layer_paths(tmp_path):
    cfg = isolated_config(tmp_path / "var")
    data = tmp_path / "var" / "data"
    assert L.incoming_partition(cfg, "synthetic", DAY) == cfg.paths.incoming / "synthetic" / "dt=2026-01-02"
    assert L.raw_partition(cfg, "taobao", DAY) == data / "raw" / "source=taobao" / "dt=2026-01-02"
    assert L.events_partition(cfg, DAY) == data / "events" / "dt=2026-01-02"
    assert L.quarantine_partition(cfg, DAY) == data / "quarantine" / "dt=2026-01-02"
    assert L.features_partition(cfg, "user", DAY) == data / "features" / "user" / "ds=2026-01-02"
    assert L.features_partition(cfg, "user_category", DAY) == data / "features" / "user_category" / "ds=2026-01-02"
    assert L.scores_partition(cfg, DAY) == data / "scores" / "ds=2026-01-02"
    ts = L.training_set_dir(cfg, "2026-01-02-h7")
    assert ts == data / "training_sets" / "2026-01-02-h7"
    assert L.training_set_split(ts, "val") == ts / "val"
    assert L.training_set_candidates(ts, "test") == ts / "user_category" / "test"
    assert L.training_set_manifest(ts) == ts / "manifest.json"
    assert L.drift_report(cfg, DAY) == tmp_path / "var" / "runs" / "drift" / "2026-01-02.json"
    assert L.validation_result(cfg, "training_set", "a b/c") == cfg.paths.gx_dir / "results" / "training_set_a_b_c.json"
    assert L.layer_root(cfg, "scores") == L.scores_root(cfg)


def test_partition_names_round_trip():
    assert L.partition_day(L.partition_name(L.DAY_KEY, DAY), L.DAY_KEY) == DAY
    assert L.partition_day("ds=2026-01-02", L.DAY_KEY) is None
    assert L.partition_day("dt=2026-01-02.tmp", L.DAY_KEY) is None


def test_unknown_names_are_refused(tmp_path):
    cfg = isolated_config(tmp_path / "var")
    with pytest.raises(ValueError, match="unknown data layer 'gold'"):
        L.layer_root(cfg, "gold")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown features table 'item'"):
        L.features_root(cfg, "item")  # type: ignore[arg-type]
