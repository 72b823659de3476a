"""Calibration on the validation split: the error metric on hand-computed cases, Platt and isotonic fits on
data with a known distortion, the fallbacks, and the packaged wrapper."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.evaluate import binary_metrics, expected_calibration_error
from tasks.models.base import Prediction
from tasks.models.calibration import (
    CALIBRATION_ARTIFACT,
    CalibratedPredictor,
    Calibration,
    Calibrator,
    with_calibration,
)


def test_ece_on_hand_computed_bins():
    # Two equal-mass bins: {0.1, 0.2} with one positive (|0.5 - 0.15| = 0.35) and {0.8, 0.9} with two (0.15).
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.8, 0.9])
    assert expected_calibration_error(y, p, bins=2) == pytest.approx((2 * 0.35 + 2 * 0.15) / 4)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0]), bins=2) == 0.0
    assert np.isnan(expected_calibration_error(np.zeros(0), np.zeros(0)))
    m = binary_metrics(y, p)
    assert m["predicted_over_observed"] == pytest.approx(2.0 / 3.0)
    assert np.isnan(binary_metrics(np.zeros(4, dtype=int), p)["predicted_over_observed"])


def _inflated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), and the probabilities a model trained with positive weight 9 gives:
    sigmoid(z + log 9), which ranks perfectly well but reads ~9x too high on rare events."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-3.0, 1.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    p = 1 / (1 + np.exp(-(z + np.log(9.0))))
    return y, p, z


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_makes_inflated_probabilities_honest(method):
    y_val, p_val, _ = _inflated(20_000, 1)
    y_test, p_test, _ = _inflated(20_000, 2)
    cal = Calibrator.fit(method, p_val, y_val)
    before, after = expected_calibration_error(y_test, p_test), expected_calibration_error(y_test, cal.apply(p_test))
    assert before > 0.1 and after < 0.01
    # The expected number of buyers matches the realised one.
    assert cal.apply(p_test).sum() == pytest.approx(y_test.sum(), rel=0.1)
    q = cal.apply(p_test)
    assert np.all(np.diff(q[np.argsort(p_test)]) >= 0)  # monotone: the ranking is never reversed
    if method == "platt":
        # Strictly increasing: exactly the same order, so every ranking metric is unchanged.
        assert (np.argsort(q, kind="stable") == np.argsort(p_test, kind="stable")).all()
        assert cal.params["b"] == pytest.approx(-np.log(9.0), abs=0.15) and cal.params["a"] == pytest.approx(1, abs=0.1)


def test_fallbacks_keep_the_probabilities_and_say_why():
    p = np.linspace(0.1, 0.9, 50)
    one_class = Calibrator.fit("platt", p, np.zeros(50))
    assert one_class.method == "none" and "one class" in one_class.note
    np.testing.assert_array_equal(one_class.apply(p), p)
    reversed_ = Calibrator.fit("platt", p, (p < 0.5).astype(int))
    assert reversed_.method == "none" and "reverse the ranking" in reversed_.note
    np.testing.assert_array_equal(Calibrator.fit("none", p, (p > 0.5).astype(int)).apply(p), p)
    with pytest.raises(ValueError, match="unknown calibration method 'beta'"):
        Calibrator.fit("beta", p, (p > 0.5).astype(int))


class _Fixed:
    """A stand-in Predictor: fixed probabilities, so only the wrapper is under test."""

    model_type = "fixed"
    feature_columns = ["f_a"]
    pair_feature_columns = ["f_uc_a"]

    def predict_chunk(self, users, cand_rows, cand, reasons_k):
        n, c = len(users), 0 if cand is None else len(cand)
        return Prediction(np.full((n, 3), 0.6), np.full(c, 0.3), [["f_a"]] * n if reasons_k else None)

    def spec(self):
        return {"model_type": "fixed", "model_config": {}}

    def save(self, folder):
        (folder / "w").write_text("x")
        return {"w": str(folder / "w")}


def test_the_packaged_wrapper_calibrates_every_output_and_round_trips(tmp_path):
    heads = [Calibrator("platt", {"a": 1.0, "b": -1.0})] * 3
    cal = Calibration(heads, Calibrator("isotonic", {"x": [0.0, 1.0], "y": [0.0, 0.5]}))
    wrapped = CalibratedPredictor(_Fixed(), cal)
    users = pd.DataFrame({"f_a": [1.0, 2.0]})
    out = wrapped.predict_chunk(users, np.array([0, 1]), pd.DataFrame({"f_uc_a": [1.0, 2.0]}), 2)
    expected = 1 / (1 + np.exp(-(np.log(0.6 / 0.4) - 1.0)))
    np.testing.assert_allclose(out.intent, np.full((2, 3), expected))
    np.testing.assert_allclose(out.category, [0.15, 0.15])
    assert out.reasons == [["f_a"], ["f_a"]]
    artifacts = wrapped.save(tmp_path)
    assert set(artifacts) == {"w", CALIBRATION_ARTIFACT}
    loaded = with_calibration(_Fixed(), artifacts)
    np.testing.assert_allclose(loaded.predict_chunk(users, None, None, 0).intent, out.intent)
    bare = _Fixed()
    assert with_calibration(bare, {"w": artifacts["w"]}) is bare
