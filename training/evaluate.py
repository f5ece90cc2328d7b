"""Evaluation of the win and slip models against the baselines, per slice and per close month.

Pure functions: predictions and labels in, plain dicts and frames out. Metrics are weighted
per deal (each snapshot weighs 1 / snapshots of its deal), so long-lived deals do not dominate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from training.metrics import INTERVAL_METRICS, LEAD_SIGN, bootstrap_intervals, compute_metrics, forecast_by_month

HEADLINE: tuple[str, ...] = ("auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")
SLICE_METRICS: tuple[str, ...] = ("auc", "brier", "ece")


def evaluate_predictions(
    y: np.ndarray, w: np.ndarray, predictions: dict[str, np.ndarray], bins: int = 10, deal_ids=None, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Metrics of each named prediction (model, stage_table, logistic_regression) on the same rows.

    With ``deal_ids``, AUC, Brier, ECE and log-loss each get a 90% deal-bootstrap interval
    (``auc_ci90_low`` / ``auc_ci90_high``, ...), and ``lead_over_<baseline>`` holds the model's lead
    over each baseline (AUC higher, Brier / ECE / log-loss lower: positive = the model is better)
    with its interval from the same resamples, so "the model beats the stage table" can be told
    from luck: it is real when the interval's low end is above 0.
    """
    result = {name: compute_metrics(y, p, w, bins) for name, p in predictions.items()}
    if deal_ids is None:
        return result
    baselines = [name for name in predictions if name != "model"] if "model" in predictions else []
    intervals = bootstrap_intervals(deal_ids, y, w, predictions, tuple(("model", b) for b in baselines), seed=seed, bins=bins)
    for name in predictions:
        for metric in INTERVAL_METRICS:
            result[name][f"{metric}_ci90_low"], result[name][f"{metric}_ci90_high"] = intervals[name][metric]
    for baseline in baselines:
        lead = {}
        for metric in INTERVAL_METRICS:
            lead[metric] = LEAD_SIGN[metric] * (result["model"][metric] - result[baseline][metric])
            lead[f"{metric}_ci90_low"], lead[f"{metric}_ci90_high"] = intervals[f"model-{baseline}"][metric]
        result[f"lead_over_{baseline}"] = lead
    return result


def evaluate_slices(
    slices: pd.DataFrame,
    y: np.ndarray,
    w: np.ndarray,
    predictions: dict[str, np.ndarray],
    bins: int = 10,
    min_deals: float = 20.0,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Metrics per value of each slice column (e.g. stage, segment, deal_type).

    Returns ``{column: {value: {prediction name: {auc, brier, ece, deals}}}}``; values with fewer
    than ``min_deals`` (weighted) deals are left out.
    """
    result: dict = {}
    for column in slices.columns:
        values = slices[column].astype("object").fillna("(missing)").to_numpy()
        per_value: dict = {}
        for value in pd.unique(values):
            mask = values == value
            if w[mask].sum() < min_deals:
                continue
            per_value[str(value)] = {
                name: {k: v for k, v in compute_metrics(y[mask], p[mask], w[mask], bins).items() if k in SLICE_METRICS + ("deals",)}
                for name, p in predictions.items()
            }
        result[column] = per_value
    return result


def summarise_forecast(table: pd.DataFrame, names: list[str]) -> dict:
    """Monthly forecast errors as JSON-ready data plus the mean absolute error per prediction."""
    months = []
    for row in table.to_dict(orient="records"):
        months.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    summary = {
        f"{name}_mean_abs_error_pct": float(table[f"{name}_error_pct"].abs().mean()) for name in names
    }
    actual = table["actual_won"].sum()
    summary.update(
        {f"{name}_wape_pct": float(100.0 * (table[name] - table["actual_won"]).abs().sum() / actual) for name in names}
    )
    summary.update(
        {f"{name}_total_error_pct": float(100.0 * (table[name].sum() - table["actual_won"].sum()) / table["actual_won"].sum())
         for name in names}
    )
    return {"months": months, **summary}


def evaluate_forecast(rows: pd.DataFrame, predictions: dict[str, np.ndarray]) -> dict:
    """Forecast check: per close month of the test period, expected vs actually won amount."""
    frame = rows[["closed_at", "amount", "won", "weight"]].assign(**predictions)
    table = forecast_by_month(frame, list(predictions))
    return summarise_forecast(table, list(predictions))


def weighted_auc(score: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """ROC AUC of ``score`` for labels ``y`` with weights ``w`` (ties count half); NaN with one class.

    One ``np.unique`` and two ``bincount``: cheap enough to run once per feature on every
    training snapshot.

    >>> weighted_auc(np.array([0.1, 0.4, 0.4, 0.9]), np.array([0, 0, 1, 1]), np.ones(4))
    0.875
    """
    y, w = np.asarray(y, dtype=float), np.asarray(w, dtype=float)
    values, inverse = np.unique(np.asarray(score, dtype=float), return_inverse=True)
    positive = np.bincount(inverse, weights=w * y, minlength=len(values))
    negative = np.bincount(inverse, weights=w * (1.0 - y), minlength=len(values))
    total = positive.sum() * negative.sum()
    if total <= 0:
        return float("nan")
    below = np.cumsum(negative) - negative
    return float((positive * (below + 0.5 * negative)).sum() / total)


def single_feature_auc(values, y: np.ndarray, w: np.ndarray, categorical: bool = False, min_level_weight: float = 20.0) -> float:
    """How well one feature alone separates won from lost: weighted AUC, in either direction (>= 0.5).

    Numbers rank by value, with missing values put below all others and, separately, above them
    (the better of the two: a feature that is missing mostly for lost deals separates too).
    Categories rank by their own weighted win rate on these rows; levels weighing under
    ``min_level_weight`` deals are pooled, so that a long tail of rare levels cannot look
    separating by chance; missing is a level of its own.

    >>> y, w = np.array([0, 0, 1, 1]), np.ones(4)
    >>> single_feature_auc(np.array([5.0, 4.0, 1.0, np.nan]), y, w)
    1.0
    >>> single_feature_auc(pd.Series(["a", "a", "b", "b"]), y, w, categorical=True, min_level_weight=1)
    1.0
    """
    y, w = np.asarray(y, dtype=float), np.asarray(w, dtype=float)
    if categorical:
        levels = pd.Series(values, copy=False).astype("object").fillna("\0missing").to_numpy()
        codes, uniques = pd.factorize(levels)
        weight = np.bincount(codes, weights=w, minlength=len(uniques))
        codes = np.where(weight[codes] < min_level_weight, len(uniques), codes)  # rare levels: one pool
        rate = np.bincount(codes, weights=w * y, minlength=len(uniques) + 1) / np.maximum(
            np.bincount(codes, weights=w, minlength=len(uniques) + 1), 1e-12)
        candidates = [rate[codes]]
    else:
        x = np.asarray(values, dtype=float)
        missing = np.isnan(x)
        candidates = [np.where(missing, -np.inf, x), np.where(missing, np.inf, x)] if missing.any() else [x]
    aucs = [weighted_auc(score, y, w) for score in candidates]
    aucs = [max(auc, 1.0 - auc) for auc in aucs if not math.isnan(auc)]
    return max(aucs) if aucs else float("nan")


def single_feature_aucs(features: pd.DataFrame, names: list[str], categorical: set[str], y: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """``single_feature_auc`` of each named feature on the same rows, strongest first."""
    aucs = {name: single_feature_auc(features[name].to_numpy() if name not in categorical else features[name], y, w,
                                     categorical=name in categorical) for name in names}
    return dict(sorted(aucs.items(), key=lambda item: -(item[1] if math.isfinite(item[1]) else 0.0)))


def leak_alarms(aucs: dict[str, float], win_test_auc: float | None, max_single_feature_auc: float, max_win_auc: float) -> list[str]:
    """One loud line per feature that alone separates won from lost too well, and for a win model too good to be true.

    >>> leak_alarms({"amount": 0.99, "deal_age_days": 0.6}, 0.97, 0.9, 0.95)[0][:70]
    'feature amount alone separates won from lost on the training snapshots'
    >>> len(leak_alarms({"amount": 0.7}, 0.8, 0.9, 0.95))
    0
    """
    alarms = [
        f"feature {name} alone separates won from lost on the training snapshots (AUC {auc:.3f}, alarm above "
        f"{max_single_feature_auc}): a value this telling is usually written after the outcome (a final booked "
        "amount, a closing stage, a field the CRM fills on closing); check how the export fills it"
        for name, auc in aucs.items() if math.isfinite(auc) and auc > max_single_feature_auc
    ]
    if win_test_auc is not None and math.isfinite(win_test_auc) and win_test_auc > max_win_auc:
        alarms.append(
            f"win model test AUC {win_test_auc:.3f} is above {max_win_auc}: more than CRM data allows for a "
            "deal's eventual outcome; some input probably knows the outcome"
        )
    return alarms


def finite(value: float) -> float | None:
    """NaN/inf -> None, for JSON."""
    return None if value is None or not math.isfinite(value) else float(value)


def clean_for_json(data):
    """Recursively replace NaN/inf floats with None and numpy scalars with Python numbers."""
    if isinstance(data, dict):
        return {str(k): clean_for_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [clean_for_json(v) for v in data]
    if isinstance(data, (np.floating, float)):
        return finite(float(data))
    if isinstance(data, np.integer):
        return int(data)
    if isinstance(data, pd.Timestamp):
        return data.isoformat()
    return data


def flatten_metrics(report: dict) -> dict[str, float]:
    """``{target}.{predictor}.{metric}`` numbers from the report, for MLflow metrics."""
    flat: dict[str, float] = {}
    for target in ("win", "slip"):
        for predictor, metrics in report.get(target, {}).items():
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
                    flat[f"{target}.{predictor}.{key}"] = float(value)
    for key, value in report.get("forecast", {}).items():
        if key != "months" and isinstance(value, (int, float)) and math.isfinite(value):
            flat[f"forecast.{key}"] = float(value)
    return flat
