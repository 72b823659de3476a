"""The training DAG's cutoff and trigger reason for scheduled, manual and asset-triggered runs."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import yaml

from tasks.config import DEFAULT_CONFIG


@pytest.fixture
def wiring(tmp_path, monkeypatch):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"pipeline": {"timezone": "Asia/Shanghai"}}))
    monkeypatch.setenv("PIPELINE_CONFIG", f"{DEFAULT_CONFIG}:{overlay}")
    from dags import _wiring

    return _wiring


def _event(**extra):
    return SimpleNamespace(extra=extra)


def test_a_scheduled_or_manual_run_keeps_its_logical_date(wiring):
    logical = dt.datetime(2026, 1, 14, 16, tzinfo=dt.UTC)
    assert wiring.run_cutoff(logical, {}) is logical
    assert wiring.local_ds(wiring.run_cutoff(logical, {})) == "2026-01-15"  # Shanghai midnight
    assert wiring.trigger_reason(SimpleNamespace(run_type=SimpleNamespace(value="scheduled")), {}) == "scheduled"


def test_an_asset_triggered_run_takes_the_latest_cutoff_its_events_name(wiring):
    asset = "warehouse://purchase_intent/intent_model_health"
    events = {
        asset: [
            _event(ds="2026-01-14", reason="realized purchase ROC-AUC below 0.600 on 3 days"),
            _event(ds="2026-01-15", reason="features drifted: f_view_1d"),
        ]
    }
    cutoff = wiring.run_cutoff(None, events)
    assert cutoff == dt.datetime(2026, 1, 15, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert wiring.local_ds(cutoff, -1) == "2026-01-14"
    reason = wiring.trigger_reason(SimpleNamespace(run_type="asset_triggered"), events)
    assert reason == (
        "model health degraded: realized purchase ROC-AUC below 0.600 on 3 days (ds=2026-01-14); "
        "features drifted: f_view_1d (ds=2026-01-15)"
    )


def test_a_run_without_logical_date_or_cutoff_event_is_refused(wiring):
    with pytest.raises(ValueError, match="no logical date and no triggering asset event"):
        wiring.run_cutoff(None, {"warehouse://x": [_event(reason="no ds")]})
