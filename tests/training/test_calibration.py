import numpy as np

from features.model.bundle import Calibration
from training.calibration import fit_calibration
from training.metrics import compute_metrics


def miscalibrated_sample(rng, n: int):
    """Outcomes drawn from true probabilities, and raw scores that rank them right but sit far too low."""
    truth = rng.uniform(0.05, 0.95, n)
    y = (rng.uniform(size=n) < truth).astype(float)
    return truth, y, truth**3


def test_calibration_fitted_on_one_sample_nears_the_true_probabilities_on_another():
    # Judged on an independent sample: on its own rows isotonic regression always looks perfect
    # (ECE 0.0 there), whatever it learnt.
    rng = np.random.default_rng(0)
    _, y_fit, raw_fit = miscalibrated_sample(rng, 4000)
    truth, y, raw = miscalibrated_sample(rng, 4000)
    w = np.ones_like(y)
    calibration = fit_calibration(raw_fit, y_fit, np.ones_like(y_fit))
    before = compute_metrics(y, raw, w)
    after = compute_metrics(y, calibration.apply(raw), w)
    best = compute_metrics(y, truth, w)  # the true probabilities: no calibration can do better
    # Measured: Brier raw 0.257, calibrated 0.180, truth 0.179; ECE raw 0.263, calibrated 0.026.
    # Left uncalibrated (identity) the Brier stays 0.257; fitted on shuffled labels it is 0.250.
    assert after["brier"] <= best["brier"] + 0.005
    assert after["ece"] <= 0.05 < before["ece"]


def test_calibration_is_monotone_and_round_trips():
    rng = np.random.default_rng(1)
    raw = rng.uniform(size=500)
    y = (rng.uniform(size=500) < raw).astype(float)
    calibration = fit_calibration(raw, y, np.ones(500))
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(calibration.apply(grid)) >= 0)
    again = Calibration.from_dict(calibration.to_dict())
    assert np.array_equal(again.apply(grid), calibration.apply(grid))
