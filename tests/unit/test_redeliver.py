"""A corrected re-delivery (tasks.land --redeliver): the landed raw partition is kept aside with a record."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from tasks.config import DEFAULT_CONFIG
from tasks.errors import EXIT_DATA_ERROR, run_cli
from tasks.land import RawConflictError, land_day, land_file, main
from tasks.layers import incoming_partition, raw_partition, redelivery_record, superseded_copies, superseded_dir

DAY = dt.date(2026, 1, 2)
OLD, NEW = b"a,b\n1,2\n", b"a,b\n1,3\n"


def _deliver(cfg, files: dict[str, bytes]) -> None:
    folder = incoming_partition(cfg, "synthetic", DAY)
    if folder.exists():
        for p in folder.iterdir():
            p.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_bytes(body)


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _config_args(cfg, tmp_path) -> list[str]:
    overlay = tmp_path / "paths.yaml"
    overlay.write_text(f"paths:\n  var_dir: {cfg.paths.var}\n  incoming_dir: {cfg.paths.incoming}\n")
    return ["--config", str(DEFAULT_CONFIG), "--config", str(overlay)]


def test_conflict_says_in_one_line_how_to_redeliver(cfg, tmp_path, capsys):
    _deliver(cfg, {"events.csv": OLD})
    land_day(cfg, DAY)
    _deliver(cfg, {"events.csv": NEW})
    with pytest.raises(RawConflictError) as err:
        land_day(cfg, DAY)
    message = str(err.value)
    assert "\n" not in message
    assert message.endswith("python -m tasks.land --day 2026-01-02 --source synthetic --redeliver")
    # The CLI prints that one line (no traceback) and exits as a data error, which is not retried.
    assert run_cli(lambda: main(["--day", str(DAY), *_config_args(cfg, tmp_path)])) == EXIT_DATA_ERROR
    assert capsys.readouterr().err.strip().splitlines() == [f"DATA ERROR (RawConflictError): {message}"]
    assert (raw_partition(cfg, "synthetic", DAY) / "events.csv").read_bytes() == OLD
    assert not superseded_dir(cfg, "synthetic", DAY).exists()


def test_redeliver_keeps_the_old_partition_with_a_record(cfg):
    _deliver(cfg, {"events.csv": OLD, "_part2.csv": OLD})
    land_day(cfg, DAY)
    _deliver(cfg, {"events.csv": NEW})
    report = land_day(cfg, DAY, redeliver=True, reason="price column fixed")

    target = raw_partition(cfg, "synthetic", DAY)
    assert sorted(p.name for p in target.iterdir()) == ["events.csv"]
    assert (target / "events.csv").read_bytes() == NEW
    (kept,) = superseded_copies(cfg, "synthetic", DAY)
    assert report.superseded == kept == superseded_dir(cfg, "synthetic", DAY) / "1"
    assert sorted(p.name for p in kept.iterdir()) == ["_delivered_names.json", "delivered_part2.csv", "events.csv"]
    assert (kept / "events.csv").read_bytes() == OLD
    record = json.loads(redelivery_record(kept).read_text())
    assert record["reason"] == "price column fixed" and record["day"] == "2026-01-02"
    assert record["superseded_sha256"]["events.csv"] == _sha(OLD) == record["superseded_sha256"]["delivered_part2.csv"]
    assert record["landed_sha256"] == {"events.csv": _sha(NEW)}
    assert dt.datetime.fromisoformat(record["recorded_at"]).tzinfo is not None
    assert "other delivered file names" in record["difference"]
    # The corrected delivery is now the landed one: landing it again is the usual no-op.
    assert land_day(cfg, DAY).already_landed


def test_each_redelivery_keeps_its_own_copy_and_an_identical_one_is_a_noop(cfg):
    bodies = [OLD, NEW, b"a,b\n1,4\n"]
    _deliver(cfg, {"events.csv": bodies[0]})
    land_day(cfg, DAY)
    for body in bodies[1:]:
        _deliver(cfg, {"events.csv": body})
        land_day(cfg, DAY, redeliver=True)
    again = land_day(cfg, DAY, redeliver=True)
    assert again.already_landed and again.superseded is None
    copies = superseded_copies(cfg, "synthetic", DAY)
    assert [p.name for p in copies] == ["1", "2"]
    assert [(p / "events.csv").read_bytes() for p in copies] == bodies[:2]
    assert [json.loads(redelivery_record(p).read_text())["reason"] for p in copies] == ["corrected re-export"] * 2


def test_redeliver_of_a_day_not_landed_yet_just_lands_it(cfg):
    _deliver(cfg, {"events.csv": OLD})
    report = land_day(cfg, DAY, redeliver=True)
    assert not report.already_landed and report.superseded is None
    assert not superseded_dir(cfg, "synthetic", DAY).exists()


def test_redeliver_one_export_file_from_the_cli(cfg, tmp_path, capsys):
    export = tmp_path / "sample.csv"
    export.write_bytes(OLD)
    land_file(cfg, "taobao", export, DAY)
    export.write_bytes(NEW)
    with pytest.raises(RawConflictError, match=rf"--source taobao --file {export} --redeliver$"):
        land_file(cfg, "taobao", export, DAY)
    args = ["--day", str(DAY), "--source", "taobao", "--file", str(export), *_config_args(cfg, tmp_path)]
    report = main([*args, "--redeliver", "--reason", "re-export"])
    assert (report.target / "sample.csv").read_bytes() == NEW
    assert f"record {redelivery_record(report.superseded)}" in capsys.readouterr().out
