"""Probability calibration of the blended model, fitted on the validation period and stored as
``features.model.bundle.Calibration`` (a monotone lookup table serving applies with ``np.interp``).

Methods (``CalibrationConfig.method``):
- ``isotonic``: weighted isotonic regression. Flexible, but its steps are fitted to a few hundred
  validation deals: the plateaus at the ends (a whole range of raw scores mapped to one rate,
  0.0001 at the bottom) cost log-loss on deals it has not seen.
- ``platt``: a logistic regression on the raw log-odds (two numbers: slope and shift), stored as a
  dense table. Cannot overfit a few hundred deals, cannot fix a non-logistic shape.
- ``none``: the raw blend as it is (the identity table). The blend is a logistic regression and a
  log-loss-trained booster mixed by validation log-loss: already close to calibrated.
- ``auto`` (default): whichever of the three predicts held-out validation deals best. The
  validation deals are split in two halves at random, each candidate is fitted on one half and
  scored (weighted log-loss) on the other, both ways round; the winner is then refitted on all of
  validation. A map that only fits its own rows loses to ``none`` there and is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from features.model.bundle import Calibration
from training.config import CALIBRATION_METHODS
from training.metrics import EPS

CANDIDATES: tuple[str, ...] = ("none", "platt", "isotonic")  # "auto" picks among these; "none" wins ties
# The Platt table: raw probabilities spaced evenly in log-odds, fine enough that np.interp between
# its knots is within 1e-4 of the sigmoid.
PLATT_KNOTS = np.r_[0.0, 1.0 / (1.0 + np.exp(-np.linspace(-12.0, 12.0, 481))), 1.0]


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


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_platt(raw: np.ndarray, y: np.ndarray, w: np.ndarray) -> Calibration:
    """Weighted logistic regression of the outcome on the raw log-odds, as a table.

    >>> cal = fit_platt(np.array([0.2, 0.2, 0.6, 0.6]), np.array([0, 0, 0, 1]), np.ones(4))
    >>> cal.method, round(float(cal.apply(np.array([0.6]))[0]), 2)
    ('platt', 0.5)
    """
    model = LogisticRegression(C=1e6, max_iter=1000)  # two parameters: practically unpenalised
    model.fit(logit(raw)[:, None], np.asarray(y, dtype=float), sample_weight=np.asarray(w, dtype=float))
    slope, shift = float(model.coef_[0, 0]), float(model.intercept_[0])
    table = 1.0 / (1.0 + np.exp(-(slope * logit(PLATT_KNOTS) + shift)))
    return Calibration(x=tuple(PLATT_KNOTS.tolist()), y=tuple(table.tolist()), method="platt")


def identity_calibration() -> Calibration:
    """The raw probabilities unchanged.

    >>> identity_calibration().apply(np.array([0.25])).tolist()
    [0.25]
    """
    return Calibration(x=(0.0, 1.0), y=(0.0, 1.0), method="none")


FITTERS = {"isotonic": fit_calibration, "platt": fit_platt, "none": lambda raw, y, w: identity_calibration()}


def weighted_log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return float(np.average(-(y * np.log(p) + (1 - y) * np.log(1 - p)), weights=w))


@dataclass(frozen=True)
class CalibrationChoice:
    """The calibration a target ships with, and why: each candidate's held-out validation log-loss."""

    calibration: Calibration
    method: str
    held_out_log_loss: dict[str, float]

    def to_dict(self) -> dict:
        return {"method": self.method, "held_out_log_loss": dict(self.held_out_log_loss)}


def held_out_log_loss(raw: np.ndarray, y: np.ndarray, w: np.ndarray, deal_ids, seed: int = 0) -> dict[str, float]:
    """Each candidate's weighted log-loss on validation deals it was not fitted on (2 halves, both ways)."""
    codes, uniques = pd.factorize(pd.Series(deal_ids))
    half = np.random.default_rng(seed).permutation(len(uniques)) % 2 == 0
    first = half[codes]
    losses = {}
    for name in CANDIDATES:
        total, weight = 0.0, 0.0
        for fit_rows in (first, ~first):
            score_rows = ~fit_rows
            if len(np.unique(y[fit_rows])) < 2 or not score_rows.any():
                continue
            calibration = FITTERS[name](raw[fit_rows], y[fit_rows], w[fit_rows])
            share = w[score_rows].sum()
            total += share * weighted_log_loss(y[score_rows], calibration.apply(raw[score_rows]), w[score_rows])
            weight += share
        losses[name] = total / weight if weight else float("nan")
    return losses


def choose_calibration(
    raw: np.ndarray, y: np.ndarray, w: np.ndarray, deal_ids, method: str = "auto", seed: int = 0
) -> CalibrationChoice:
    """The calibration of one target on the validation period (``method``: see the module docstring).

    >>> rng = np.random.default_rng(0)
    >>> truth = rng.uniform(0.05, 0.95, 4000); y = (rng.random(4000) < truth).astype(float)
    >>> choose_calibration(truth, y, np.ones(4000), np.arange(4000)).method  # calibrated already
    'none'
    >>> choose_calibration(truth ** 3, y, np.ones(4000), np.arange(4000)).method != "none"
    True
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    raw, y, w = (np.asarray(a, dtype=float) for a in (raw, y, w))
    losses = held_out_log_loss(raw, y, w, deal_ids, seed)
    if method == "auto":
        finite = {name: loss for name, loss in losses.items() if np.isfinite(loss)}
        method = min(finite, key=lambda name: (finite[name], CANDIDATES.index(name))) if finite else "none"
    return CalibrationChoice(calibration=FITTERS[method](raw, y, w), method=method, held_out_log_loss=losses)
