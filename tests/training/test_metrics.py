import numpy as np
import pandas as pd
import pytest

from training.metrics import (
    compute_metrics,
    expected_calibration_error,
    forecast_by_month,
    per_deal_weights,
)


def test_per_deal_weights_sum_to_one_per_deal():
    ids = pd.Series(["a"] * 5 + ["b"])
    w = per_deal_weights(ids)
    assert pytest.approx(w.sum()) == 2.0
    assert w[-1] == 1.0


def test_weighting_stops_a_long_lived_deal_from_dominating():
    # One deal with 99 confidently wrong snapshots, 10 deals with one right snapshot each.
    y = np.r_[np.zeros(99), np.ones(5), np.zeros(5)]
    p = np.r_[np.full(99, 0.9), np.full(5, 0.8), np.full(5, 0.2)]
    ids = pd.Series(["long"] * 99 + [f"d{i}" for i in range(10)])
    unweighted = compute_metrics(y, p, np.ones_like(y))
    weighted = compute_metrics(y, p, per_deal_weights(ids))
    assert weighted["brier"] < unweighted["brier"]
    assert weighted["deals"] == pytest.approx(11.0)


def test_perfectly_calibrated_bins_have_zero_ece():
    # 1 of 4 won at 0.25, 3 of 4 won at 0.75: every bin's observed rate equals its prediction.
    p = np.r_[np.full(4, 0.25), np.full(4, 0.75)]
    y = np.r_[np.ones(1), np.zeros(3), np.ones(3), np.zeros(1)]
    assert expected_calibration_error(y, p, np.ones(8)) == pytest.approx(0.0)


def test_ece_gaps_of_opposite_sign_in_two_bins_add_up_not_cancel():
    # Bin 0.25 wins 3 of 10 (0.05 above), bin 0.75 wins 7 of 10 (0.05 below): overall the mean
    # prediction equals the mean outcome, yet each bin is 0.05 off, so the ECE is 0.05.
    p = np.r_[np.full(10, 0.25), np.full(10, 0.75)]
    y = np.r_[np.ones(3), np.zeros(7), np.ones(7), np.zeros(3)]
    assert y.mean() == pytest.approx(p.mean())
    assert expected_calibration_error(y, p, np.ones(20)) == pytest.approx(0.05)


def test_single_class_gives_nan_auc_not_an_error():
    metrics = compute_metrics(np.zeros(4), np.full(4, 0.1), np.ones(4))
    assert np.isnan(metrics["auc"]) and metrics["brier"] == pytest.approx(0.01)


def test_forecast_error_is_relative_to_won_amount():
    frame = pd.DataFrame({
        "closed_at": pd.to_datetime(["2026-01-05", "2026-01-20", "2026-02-03"], utc=True),
        "amount": [100.0, 100.0, 50.0],
        "won": [1.0, 0.0, 1.0],
        "weight": [1.0, 1.0, 1.0],
        "model": [0.5, 0.5, 1.0],
    })
    table = forecast_by_month(frame, ["model"]).set_index("month")
    assert table.loc["2026-01", "actual_won"] == 100.0
    assert table.loc["2026-01", "model_error_pct"] == pytest.approx(0.0)
    assert table.loc["2026-02", "model_error_pct"] == pytest.approx(0.0)
