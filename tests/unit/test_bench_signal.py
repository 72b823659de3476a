"""The pure pieces of bench.signal_study's analysis: the tail pattern, shuffled sequences, split AUCs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.signal_study import TAIL_FEATURES, shuffled_sequences, split_auc, swapped_sequences, tail_pattern_features
from tasks.schema import EVENT_TYPE_INDEX, SEQUENCE_COLUMNS

V, C, F, P = (EVENT_TYPE_INDEX[t] for t in ("view", "cart", "fav", "purchase"))


def _rows(*seqs: list[tuple[int, int, int, str]]) -> pd.DataFrame:
    """Rows from sequences of (event type, gap-to-cutoff bucket, item bucket, category), oldest first."""
    out = {c: [] for c in SEQUENCE_COLUMNS}
    for seq in seqs:
        types, gaps, items, cats = (list(x) for x in zip(*seq, strict=True)) if seq else ([], [], [], [])
        out["seq_event_type"].append(np.array(types, dtype=np.int64))
        out["seq_gap_cutoff_bucket"].append(np.array(gaps, dtype=np.int64))
        out["seq_item_bucket"].append(np.array(items, dtype=np.int64))
        out["seq_category"].append(np.array(cats, dtype=object))
        out["seq_gap_prev_bucket"].append(np.arange(len(types), dtype=np.int64))
        out["seq_hour"].append(np.full(len(types), 20, dtype=np.int64))
    return pd.DataFrame(out)


def test_tail_pattern_reads_events_after_the_last_purchase_in_the_last_day():
    pdf = _rows(
        # Old views (bucket 20) and a purchase; then a research-like burst: item 7 three times, a cart, a fav.
        [(V, 20, 1, "a"), (P, 16, 1, "a"), (V, 16, 7, "b"), (V, 15, 7, "b"), (C, 15, 7, "b"), (F, 14, 9, "c")],
        # Everything older than the last-day bucket: no tail.
        [(V, 18, 3, "a"), (C, 18, 3, "a")],
        # Ends with a purchase: no tail.
        [(V, 10, 2, "a"), (P, 9, 2, "a")],
        [],
    )
    got = tail_pattern_features(pdf)
    assert list(got.columns) == list(TAIL_FEATURES)
    assert got.iloc[0].tolist() == [4.0, 1.0, 1.0, 3.0, 0.75]
    assert (got.iloc[1:] == 0).all().all()


def test_shuffled_sequences_keep_each_event_whole():
    pdf = _rows([(V, 17 - i, i, str(i)) for i in range(12)], [(V, 5, 1, "x")])
    out = shuffled_sequences(pdf, seed=3)
    assert not np.array_equal(out.loc[0, "seq_item_bucket"], pdf.loc[0, "seq_item_bucket"])
    for i in range(len(pdf)):
        before = sorted(zip(*(pdf.loc[i, c].tolist() for c in SEQUENCE_COLUMNS), strict=True))
        after = sorted(zip(*(out.loc[i, c].tolist() for c in SEQUENCE_COLUMNS), strict=True))
        assert before == after
    assert np.array_equal(pdf.loc[0, "seq_item_bucket"], np.arange(12))  # the input is left alone


def test_split_auc_separates_mission_buyers_from_other_buyers():
    y = np.array([1, 1, 1, 0, 0, 0])
    pending = np.array([True, False, False, False, True, False])
    score = np.array([0.9, 0.1, 0.6, 0.5, 0.4, 0.3])
    full, mission, other = split_auc(y, score, pending)
    assert mission == 1.0
    assert other == pytest.approx(0.5)  # 0.6 beats all three non-buyers, 0.1 none
    assert full == pytest.approx(6 / 9)
    assert np.isnan(split_auc(y, score, np.zeros(6, dtype=bool))[1])


def test_paired_auc_difference_matches_sklearn_and_brackets_it():
    from sklearn.metrics import roc_auc_score

    from bench.signal_study import paired_auc_difference

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=400)
    a = y + rng.normal(0, 1.5, size=400)
    b = y + rng.normal(0, 0.7, size=400)
    got = paired_auc_difference(y, a, np.round(b, 1), n_boot=300)  # rounding: ties take mid-ranks
    assert got["diff"] == pytest.approx(roc_auc_score(y, np.round(b, 1)) - roc_auc_score(y, a))
    assert 0 < got["lo"] < got["diff"] < got["hi"]
    same = paired_auc_difference(y, a, a, n_boot=50)
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0}


def test_swapped_sequences_move_whole_sequences_between_rows():
    pdf = _rows(*[[(V, 10, 100 * k + i, str(k)) for i in range(k + 1)] for k in range(8)]).assign(f_x=np.arange(8.0))
    out = swapped_sequences(pdf, seed=5)
    assert out["f_x"].tolist() == pdf["f_x"].tolist()
    moved = [int(v[0]) // 100 for v in out["seq_item_bucket"]]  # the source row of each sequence
    assert sorted(moved) == list(range(8)) and moved != list(range(8))
    for i, k in enumerate(moved):
        for c in SEQUENCE_COLUMNS:
            assert np.array_equal(out.loc[i, c], pdf.loc[k, c])
