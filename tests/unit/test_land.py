"""Landing into the immutable raw layer: atomic copies, identical rerun is a no-op, conflicts fail."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tasks.errors import DataError
from tasks.land import RAW_MANIFEST, RawConflictError, land_day, land_file, main
from tasks.layers import incoming_partition, layer_root

DAY = dt.date(2026, 1, 2)


def _deliver(cfg, text: str = "a,b\n1,2\n", name: str = "events.csv", day: dt.date = DAY):
    folder = incoming_partition(cfg, "synthetic", day)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder


def test_land_day_copies_bytes(cfg):
    _deliver(cfg)
    _deliver(cfg, "x\n", name="more.csv")
    report = land_day(cfg, DAY)
    target = layer_root(cfg, "raw") / "source=synthetic" / "dt=2026-01-02"
    assert report.target == target and not report.already_landed
    assert report.files == ("events.csv", "more.csv") and report.n_bytes == 10
    assert (target / "events.csv").read_text() == "a,b\n1,2\n"
    assert [p.name for p in target.parent.iterdir()] == ["dt=2026-01-02"]


def test_identical_rerun_is_noop(cfg):
    _deliver(cfg)
    land_day(cfg, DAY)
    again = land_day(cfg, DAY, source="synthetic")
    assert again.already_landed


def test_different_bytes_for_landed_day_fail_naming_file(cfg):
    _deliver(cfg)
    land_day(cfg, DAY)
    _deliver(cfg, "a,b\n9,9\n")
    with pytest.raises(RawConflictError, match="events.csv.*immutable"):
        land_day(cfg, DAY)
    target = layer_root(cfg, "raw") / "source=synthetic" / "dt=2026-01-02" / "events.csv"
    assert target.read_text() == "a,b\n1,2\n"


def test_missing_incoming_folder_names_path(cfg):
    with pytest.raises(FileNotFoundError, match="synthetic/dt=2026-01-02"):
        land_day(cfg, DAY)
    assert not layer_root(cfg, "raw").exists()


def test_unknown_source_rejected(cfg, tmp_path):
    (tmp_path / "f.csv").write_text("x\n")
    with pytest.raises(ValueError, match="unknown source 'nope'"):
        land_file(cfg, "nope", tmp_path / "f.csv", DAY)


def test_land_file_and_cli(cfg, tmp_path):
    export = tmp_path / "UserBehavior.csv"
    export.write_text("1,2,3,pv,1511544070\n")
    report = land_file(cfg, "taobao", export, dt.date(2017, 11, 25))
    assert (report.target / "UserBehavior.csv").read_bytes() == export.read_bytes()
    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  var_dir: {cfg.paths.var}\n  incoming_dir: {cfg.paths.incoming}\n")
    from tasks.config import DEFAULT_CONFIG

    again = main(
        [
            "--config",
            str(DEFAULT_CONFIG),
            "--config",
            str(config),
            "--file",
            str(export),
            "--source",
            "taobao",
            "--day",
            "2017-11-25",
        ]
    )
    assert again.already_landed


def test_names_spark_skips_land_renamed_with_a_manifest(cfg, caplog):
    _deliver(cfg, name="_part2.csv")
    _deliver(cfg, name=".DS_Store")
    report = land_day(cfg, DAY)
    assert report.files == ("delivered_part2.csv",)
    target = layer_root(cfg, "raw") / "source=synthetic" / "dt=2026-01-02"
    assert (target / "delivered_part2.csv").read_text() == "a,b\n1,2\n"
    assert json.loads((target / RAW_MANIFEST).read_text()) == {"delivered_part2.csv": "_part2.csv"}
    assert "not landing hidden file(s)" in caplog.text and ".DS_Store" in caplog.text
    assert land_day(cfg, DAY).already_landed


def test_renamed_file_clashing_with_a_delivered_name_fails(cfg):
    _deliver(cfg, name="_a.csv")
    _deliver(cfg, name="delivered_a.csv")
    with pytest.raises(DataError, match="would land as 'delivered_a.csv'"):
        land_day(cfg, DAY)
    assert not (layer_root(cfg, "raw") / "source=synthetic").exists()


def test_unfinished_hadoop_copy_is_refused(cfg):
    _deliver(cfg, name="events.csv._COPYING_")
    with pytest.raises(DataError, match="unfinished Hadoop copy"):
        land_day(cfg, DAY)
