"""A run for a date past the data stops before any JVM starts, with one line naming the missing and the newest day."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.availability import days_text, require_event_days, require_raw_day, require_training_events
from tasks.config import with_overrides
from tasks.errors import DataError, NoDataError
from tasks.land import land_day
from tasks.layers import events_partition, incoming_partition

D = dt.date


def _events(cfg, first: dt.date, n: int) -> None:
    for i in range(n):
        folder = events_partition(cfg, first + dt.timedelta(days=i))
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_bytes(b"PAR1")


def test_days_text():
    assert days_text([D(2026, 1, 3), D(2026, 1, 1), D(2026, 1, 2)]) == "2026-01-01..2026-01-03"
    assert days_text([D(2026, 1, 1), D(2026, 1, 5)]) == "2026-01-01, 2026-01-05"
    many = [D(2026, 1, d) for d in (1, 3, 5, 7, 9, 11)]
    assert days_text(many) == "2026-01-01, 2026-01-03, 2026-01-05, 2026-01-07 and 2 more"


def test_training_past_the_data_names_the_newest_day(cfg):
    cfg = with_overrides(cfg, {"training_set": {"n_train_cutoffs": 3, "n_val_cutoffs": 1, "n_test_cutoffs": 1}})
    _events(cfg, D(2026, 1, 1), 14)  # 2026-01-01..2026-01-14
    # The trigger form's "now": the last cutoff's label window lies months past the data.
    with pytest.raises(NoDataError) as err:
        require_training_events(cfg, D(2026, 11, 30))
    assert str(err.value) == (
        "no events landed for 2026-11-30: the label window of the last cutoff 2026-11-30 has not fully landed "
        "(events partitions missing for 2026-11-30); newest cleaned day is 2026-01-14; "
        "choose a logical date up to 2026-01-15"
    )
    assert isinstance(err.value, DataError)  # exit 65 / AirflowFailException: not retried
    # The day after the newest events is the latest logical date that trains (last cutoff = ds - horizon).
    require_training_events(cfg, D(2026, 1, 14))
    # A gap inside the cutoffs and a missing history day are named too.
    (events_partition(cfg, D(2026, 1, 12)) / "part-0.parquet").unlink()
    with pytest.raises(NoDataError, match=r"no events landed for 2026-01-12: cutoffs .* missing: 2026-01-12"):
        require_training_events(cfg, D(2026, 1, 14))
    with pytest.raises(NoDataError, match=r"earliest cutoff 2026-01-01 has no history: events partition dt=2025-12-31"):
        require_training_events(cfg, D(2026, 1, 5))


def test_no_events_at_all(cfg):
    with pytest.raises(NoDataError, match=r"no events landed for 2026-12-01 \(x\); no cleaned day exists yet under "):
        require_event_days(cfg, [D(2026, 12, 1)], "x")


def test_missing_raw_day_names_the_newest_landed_one(cfg):
    for day in (D(2026, 1, 1), D(2026, 1, 2)):
        folder = incoming_partition(cfg, "synthetic", day)
        folder.mkdir(parents=True)
        (folder / "events.csv").write_text("a\n")
        land_day(cfg, day)
    require_raw_day(cfg, "synthetic", D(2026, 1, 2))
    with pytest.raises(
        NoDataError, match=r"no raw data landed for synthetic 2026-11-30: .*newest landed day is 2026-01-02"
    ):
        require_raw_day(cfg, "synthetic", D(2026, 11, 30))


def test_no_delivery_names_the_newest_delivered_day(cfg):
    folder = incoming_partition(cfg, "synthetic", D(2026, 1, 14))
    folder.mkdir(parents=True)
    (folder / "events.csv").write_text("a\n")
    with pytest.raises(NoDataError) as err:
        land_day(cfg, D(2026, 11, 30))
    assert str(err.value).startswith("no incoming delivery for synthetic 2026-11-30: folder ")
    assert str(err.value).endswith("does not exist; newest delivered day is 2026-01-14")
