import numpy as np

from features.model.bundle import Calibration
from training.calibration import fit_calibration
from training.metrics import compute_metrics


def test_calibration_keeps_or_improves_brier_on_miscalibrated_scores():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.95, 4000)
    y = (rng.uniform(size=truth.size) < truth).astype(float)
    raw = truth**3  # ranks right, probabilities far too low
    w = np.ones_like(y)
    calibration = fit_calibration(raw, y, w)
    before = compute_metrics(y, raw, w)["brier"]
    after = compute_metrics(y, calibration.apply(raw), w)["brier"]
    assert after < before
    assert compute_metrics(y, calibration.apply(raw), w)["ece"] < 0.02


def test_calibration_is_monotone_and_round_trips():
    rng = np.random.default_rng(1)
    raw = rng.uniform(size=500)
    y = (rng.uniform(size=500) < raw).astype(float)
    calibration = fit_calibration(raw, y, np.ones(500))
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(calibration.apply(grid)) >= 0)
    again = Calibration.from_dict(calibration.to_dict())
    assert np.array_equal(again.apply(grid), calibration.apply(grid))
