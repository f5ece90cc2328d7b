"""Evaluation of the win and slip models against the baselines, per slice and per close month.

Pure functions: predictions and labels in, plain dicts and frames out. Metrics are weighted
per deal (each snapshot weighs 1 / snapshots of its deal), so long-lived deals do not dominate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from training.metrics import compute_metrics, forecast_by_month

HEADLINE: tuple[str, ...] = ("auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")
SLICE_METRICS: tuple[str, ...] = ("auc", "brier", "ece")


def evaluate_predictions(
    y: np.ndarray, w: np.ndarray, predictions: dict[str, np.ndarray], bins: int = 10
) -> dict[str, dict[str, float]]:
    """Metrics of each named prediction (model, stage_table, logistic_regression) on the same rows."""
    return {name: compute_metrics(y, p, w, bins) for name, p in predictions.items()}


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
