"""Evaluation metrics, weighted so that every deal counts once however many snapshots it has.

All functions take labels ``y`` (0/1), probabilities ``p`` and weights ``w`` (use
``per_deal_weights``: 1 / snapshots of the deal) and return plain floats.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

METRIC_NAMES: tuple[str, ...] = ("auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")
EPS = 1e-6


def per_deal_weights(deal_ids: pd.Series) -> np.ndarray:
    """Weight 1 / (snapshots of the deal) for each row, so each deal sums to 1.

    >>> per_deal_weights(pd.Series(["a", "a", "b"])).tolist()
    [0.5, 0.5, 1.0]
    """
    counts = deal_ids.map(deal_ids.value_counts())
    return 1.0 / counts.to_numpy(dtype=float)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = 10) -> float:
    """Weighted ECE over equal-width probability bins: sum_b share_b * |mean(y)_b - mean(p)_b|.

    >>> round(expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0]), np.ones(2)), 6)
    0.0
    """
    y, p, w = (np.asarray(a, dtype=float) for a in (y, p, w))
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    total = w.sum()
    weight = np.bincount(index, weights=w, minlength=bins)
    observed = np.bincount(index, weights=w * y, minlength=bins)
    predicted = np.bincount(index, weights=w * p, minlength=bins)
    return float(np.abs(observed - predicted).sum() / total)


def top_decile_lift(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    """Positive rate among the highest-scored 10% (by weight) divided by the overall rate.

    >>> top_decile_lift(np.array([1, 0] + [0] * 18), np.linspace(1, 0, 20), np.ones(20))
    10.0
    """
    y, p, w = (np.asarray(a, dtype=float) for a in (y, p, w))
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(w[order])
    top = order[cum <= 0.1 * w.sum() + 1e-12]
    if top.size == 0:
        top = order[:1]
    overall = np.average(y, weights=w)
    if overall == 0:
        return float("nan")
    return float(np.average(y[top], weights=w[top]) / overall)


def compute_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = 10) -> dict[str, float]:
    """ROC AUC, PR AUC, log-loss, Brier, ECE and top-decile lift, all weighted by ``w``.

    Metrics that need both classes are NaN when only one is present.
    """
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    w = np.asarray(w, dtype=float)
    both = 0 < y.sum() < len(y)
    return {
        "auc": float(roc_auc_score(y, p, sample_weight=w)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p, sample_weight=w)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, sample_weight=w, labels=[0, 1])),
        "brier": float(np.average((p - y) ** 2, weights=w)),
        "ece": expected_calibration_error(y, p, w, bins),
        "lift_top_decile": top_decile_lift(y, p, w) if both else float("nan"),
        "deals": float(w.sum()),
        "snapshots": float(len(y)),
    }


def forecast_by_month(frame: pd.DataFrame, probability_columns: list[str]) -> pd.DataFrame:
    """Per close month: expected won amount (sum of weight x probability x amount) vs actual.

    ``frame`` needs ``closed_at``, ``amount``, ``won``, ``weight`` and the probability columns.
    Because weights sum to one per deal, each deal contributes its average predicted value over
    its snapshots. Returns one row per month with ``actual_won`` and, per probability column,
    ``<col>`` (expected) and ``<col>_error_pct`` = 100 x (expected - actual) / actual.
    """
    month = frame["closed_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period("M").astype("str")
    weighted_amount = frame["weight"] * frame["amount"]
    parts = {"actual_won": weighted_amount * frame["won"]}
    parts.update({col: weighted_amount * frame[col] for col in probability_columns})
    table = pd.DataFrame(parts).groupby(month.rename("month")).sum().sort_index()
    actual = table["actual_won"].where(table["actual_won"] > 0)
    errors = {f"{col}_error_pct": 100.0 * (table[col] - actual) / actual for col in probability_columns}
    return table.assign(**errors).reset_index()
