"""Evaluation metrics, weighted so that every deal counts once however many snapshots it has.

All functions take labels ``y`` (0/1), probabilities ``p`` and weights ``w`` (use
``per_deal_weights``: 1 / snapshots of the deal) and return plain floats.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    Rows of weight 0 count for nothing, even at the top (a truth point standing for no week):

    >>> top_decile_lift(np.array([0, 1, 0, 0]), np.array([0.9, 0.8, 0.2, 0.1]), np.array([0.0, 1.0, 1.0, 1.0]))
    3.0
    """
    y, p, w = (np.asarray(a, dtype=float) for a in (y, p, w))
    weighed = w > 0
    y, p, w = y[weighed], p[weighed], w[weighed]
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


# ---- deal-level bootstrap intervals ------------------------------------------------------------

INTERVAL_LEVEL = 0.9  # the report's keys say ci90
BOOTSTRAP_ROUNDS = 200
INTERVAL_METRICS: tuple[str, ...] = ("auc", "brier", "ece", "log_loss")


@dataclass(frozen=True)
class DealResamples:
    """Bootstrap resamples of deals: ``counts[b, d]`` is how often deal ``d`` is drawn in round ``b``.

    Snapshots of one deal are near-duplicates, so resampling snapshots would pretend there is far
    more evidence than there is: the unit drawn is the deal, with all its rows. Every metric and
    every predictor is computed on the same draws, so differences between them are paired.
    """

    codes: np.ndarray  # deal index of each row
    counts: np.ndarray  # (rounds, deals)

    @classmethod
    def draw(cls, deal_ids, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> DealResamples:
        codes, uniques = pd.factorize(pd.Series(deal_ids), sort=False)
        n = len(uniques)
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, n, size=(rounds, n)) + n * np.arange(rounds)[:, None]
        counts = np.bincount(picks.ravel(), minlength=rounds * n).reshape(rounds, n)
        return cls(codes=np.asarray(codes), counts=counts.astype(float))

    def per_deal(self, values: np.ndarray) -> np.ndarray:
        """Row values summed per deal (columns for a 2-D ``values``)."""
        n = self.counts.shape[1]
        if values.ndim == 1:
            return np.bincount(self.codes, weights=values, minlength=n)
        return np.stack([np.bincount(self.codes, weights=values[:, j], minlength=n) for j in range(values.shape[1])], axis=1)


def resampled_metrics(
    draws: DealResamples, y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int = 10
) -> dict[str, np.ndarray]:
    """AUC, Brier, ECE and log-loss of one predictor in every bootstrap round (arrays of ``rounds``).

    Weighted as ``compute_metrics`` is, the row weight multiplied by how often its deal was drawn.
    Brier, log-loss and ECE are sums over deals, so a round is one matrix product; AUC ranks once
    and re-counts positives and negatives below each score per round.
    """
    y, w = np.asarray(y, dtype=float), np.asarray(w, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    counts = draws.counts
    total = counts @ draws.per_deal(w)
    out = {
        "brier": counts @ draws.per_deal(w * (p - y) ** 2) / total,
        "log_loss": counts @ draws.per_deal(-w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / total,
    }
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    one_hot = np.zeros((len(p), bins))
    one_hot[np.arange(len(p)), index] = 1.0
    observed = counts @ draws.per_deal(one_hot * (w * y)[:, None])
    predicted = counts @ draws.per_deal(one_hot * (w * p)[:, None])
    out["ece"] = np.abs(observed - predicted).sum(axis=1) / total
    _, inverse = np.unique(p, return_inverse=True)
    aucs = np.full(len(counts), np.nan)
    for b, row_counts in enumerate(counts):
        wb = w * row_counts[draws.codes]
        positive = np.bincount(inverse, weights=wb * y)
        negative = np.bincount(inverse, weights=wb * (1 - y))
        pairs = positive.sum() * negative.sum()
        if pairs > 0:
            aucs[b] = (positive * (np.cumsum(negative) - 0.5 * negative)).sum() / pairs
    out["auc"] = aucs
    return out


def percentile_interval(values: np.ndarray, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """The central ``level`` share of the finite values (NaN, NaN when there are none).

    >>> [round(bound, 6) for bound in percentile_interval(np.arange(101.0), 0.9)]
    [5.0, 95.0]
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


# A lead is how much better the first predictor is: higher AUC, lower Brier / ECE / log-loss.
LEAD_SIGN = {"auc": 1.0, "brier": -1.0, "ece": -1.0, "log_loss": -1.0}


def bootstrap_intervals(
    deal_ids,
    y: np.ndarray,
    w: np.ndarray,
    predictions: dict[str, np.ndarray],
    leads: tuple[tuple[str, str], ...] = (),
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
    bins: int = 10,
    level: float = INTERVAL_LEVEL,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Deal-bootstrap ``level`` intervals of AUC, Brier, ECE and log-loss of each prediction, and
    of the lead of ``a`` over ``b`` for each pair in ``leads`` (key ``"a-b"``; positive = ``a`` better),
    paired on the same draws.

    >>> rng = np.random.default_rng(0)
    >>> ids = np.repeat(np.arange(200), 3); y = np.repeat(rng.random(200) < 0.3, 3).astype(float)
    >>> p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.1, 600), 0.01, 0.99)
    >>> ci = bootstrap_intervals(ids, y, np.ones(600) / 3, {"m": p, "flat": np.full(600, 0.3)}, (("m", "flat"),))
    >>> low, high = ci["m"]["auc"]; bool(low < compute_metrics(y, p, np.ones(600))["auc"] < high)
    True
    >>> ci["m-flat"]["auc"][0] > 0
    True
    """
    draws = DealResamples.draw(deal_ids, rounds, seed)
    rounds_of = {name: resampled_metrics(draws, y, p, w, bins) for name, p in predictions.items()}
    result = {name: {m: percentile_interval(values[m], level) for m in INTERVAL_METRICS} for name, values in rounds_of.items()}
    for a, b in leads:
        result[f"{a}-{b}"] = {
            m: percentile_interval(LEAD_SIGN[m] * (rounds_of[a][m] - rounds_of[b][m]), level) for m in INTERVAL_METRICS
        }
    return result
