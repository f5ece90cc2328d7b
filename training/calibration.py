"""Isotonic probability calibration, stored as ``features.model.bundle.Calibration`` (a lookup table)."""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

from features.model.bundle import Calibration


def fit_calibration(raw: np.ndarray, y: np.ndarray, w: np.ndarray) -> Calibration:
    """Fit a weighted isotonic map raw probability -> observed rate on the validation period.

    The table is anchored at 0 and 1 so every raw probability maps inside the fitted range.

    >>> cal = fit_calibration(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), np.ones(4))
    >>> cal.apply(np.array([0.05, 0.95])).round(4).tolist()
    [0.0001, 0.9999]
    """
    raw = np.asarray(raw, dtype=float)
    y = np.asarray(y, dtype=float)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(raw, y, sample_weight=np.asarray(w, dtype=float))
    x_table = np.asarray(iso.X_thresholds_, dtype=float)
    y_table = np.asarray(iso.y_thresholds_, dtype=float)
    if x_table[0] > 0.0:
        x_table, y_table = np.r_[0.0, x_table], np.r_[y_table[0], y_table]
    if x_table[-1] < 1.0:
        x_table, y_table = np.r_[x_table, 1.0], np.r_[y_table, y_table[-1]]
    return Calibration(x=tuple(x_table.tolist()), y=tuple(y_table.tolist()), method="isotonic")
