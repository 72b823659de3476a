"""The item-level signals of the feature ablation (bench.item_signals) on a hand-made log, at a cutoff in a
non-UTC business day."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from bench.item_signals import SIGNALS, item_signals

UTC = dt.UTC


def _t(day: int, hour: int) -> pd.Timestamp:
    # Asia/Shanghai is UTC+8: the cutoff of ds 2017-12-02 is 2017-12-01 16:00 UTC.
    return pd.Timestamp(dt.datetime(2017, 12, day, hour, tzinfo=UTC))


def test_signals_on_a_hand_made_log(tmp_path):
    rows = [
        ("u1", "A", "c1", "cart", _t(1, 1)),
        ("u1", "A", "c1", "purchase", _t(1, 2)),  # A was bought after its cart: not open
        ("u1", "B", "c1", "cart", _t(1, 3)),  # B stays open
        ("u1", "B", "c1", "purchase", _t(1, 1)),  # ... this purchase came before the cart
        ("u1", "C", "c2", "fav", _t(1, 4)),  # C stays open
        ("u1", "D", "c2", "view", _t(1, 5)),
        ("u1", "D", "c2", "view", _t(1, 6)),
        ("u1", "D", "c2", "view", _t(1, 7)),
        ("u1", "E", "c3", "cart", _t(1, 17)),  # after the cutoff: not seen
        ("u2", "F", "c9", "view", _t(1, 15)),
        ("u2", "F", "c9", "view", _t(1, 15)),
        ("u2", "G", "c9", "view", _t(1, 15)),
        ("u2", "H", "c8", "view", _t(1, 15)),
    ]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "event_type", "event_time"])
    folder = tmp_path / "events" / "dt=2017-12-01"
    folder.mkdir(parents=True)
    events.to_parquet(folder / "part-0.parquet")
    keys = pd.DataFrame({"user_id": ["u2", "u1", "u3"], "ds": ["2017-12-02"] * 3})
    out = item_signals(keys, tmp_path / "events", 30, "Asia/Shanghai")
    assert list(out.columns) == list(SIGNALS)
    # Rows in the order of the keys; a user without events gets zeros.
    assert out.iloc[1].to_dict() == {
        "open_items": 2.0,
        "max_item_views": 3.0,
        # u1's 24 hours before the cutoff hold 8 events: at most 3 on one item (D), 4 in one category (c1).
        "last_day_item_share": pytest.approx(3 / 8),
        "last_day_category_share": pytest.approx(4 / 8),
    }
    assert out.iloc[0].to_dict() == {
        "open_items": 0.0,
        "max_item_views": 2.0,
        "last_day_item_share": pytest.approx(2 / 4),
        "last_day_category_share": pytest.approx(3 / 4),
    }
    assert out.iloc[2].tolist() == [0.0, 0.0, 0.0, 0.0]
