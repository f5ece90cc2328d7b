"""Evaluation plots (matplotlib, Agg backend): calibration, lift, forecast by month, SHAP summary.

Each function returns a ``matplotlib.figure.Figure``; the caller logs and closes it. matplotlib
(~0.4 s to import) and shap (~2 s) are imported when a plot is drawn, not when the training
pipeline is imported: only the MLflow logging step draws.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _pyplot():
    """pyplot on the Agg backend (files only, no display), imported on first use: see the module docstring."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_calibration(y: np.ndarray, w: np.ndarray, predictions: dict[str, np.ndarray], bins: int = 10):
    """Reliability diagram: mean predicted vs observed (weighted) per probability bin."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, p in predictions.items():
        index = np.clip((np.asarray(p) * bins).astype(int), 0, bins - 1)
        weight = np.bincount(index, weights=w, minlength=bins)
        keep = weight > 0
        mean_p = np.bincount(index, weights=w * p, minlength=bins)[keep] / weight[keep]
        mean_y = np.bincount(index, weights=w * y, minlength=bins)[keep] / weight[keep]
        ax.plot(mean_p, mean_y, marker="o", label=name)
    ax.set(xlabel="predicted probability", ylabel="observed rate (per-deal weighted)", title="Calibration (test period)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def plot_lift(y: np.ndarray, w: np.ndarray, predictions: dict[str, np.ndarray], deciles: int = 10):
    """Positive rate per score decile (by weight) relative to the overall rate."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    overall = np.average(y, weights=w)
    width = 0.8 / max(len(predictions), 1)
    for i, (name, p) in enumerate(predictions.items()):
        order = np.argsort(-np.asarray(p), kind="stable")
        share = np.cumsum(w[order]) / w.sum()
        decile = np.minimum((share * deciles - 1e-9).astype(int), deciles - 1)
        rate = np.bincount(decile, weights=w[order] * y[order], minlength=deciles) / np.maximum(
            np.bincount(decile, weights=w[order], minlength=deciles), 1e-12
        )
        ax.bar(np.arange(1, deciles + 1) + i * width - 0.4 + width / 2, rate / overall, width=width, label=name)
    ax.axhline(1.0, color="grey", linestyle=":")
    ax.set(xlabel="score decile (1 = highest)", ylabel="lift over overall rate", title="Lift by decile (test period)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_forecast(months: list[dict], names: list[str]):
    """Won amount per close month against each predictor's expected amount."""
    plt = _pyplot()
    frame = pd.DataFrame(months)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = np.arange(len(frame))
    ax.bar(x, frame["actual_won"], color="lightgrey", label="won amount")
    for name in names:
        ax.plot(x, frame[name], marker="o", label=f"{name} forecast")
    ax.set_xticks(x, frame["month"], rotation=45, ha="right")
    ax.set(ylabel="amount", title="Forecast by close month (test period)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_shap_summary(contributions: np.ndarray, matrix: np.ndarray, feature_names: list[str], max_display: int = 20):
    """SHAP beeswarm of a model's contributions (``features.model.contributions.model_contributions``) on a sample of rows.

    The contributions are what serving explains with: TreeSHAP of the booster blended with the
    linear half's exact terms (the same values ``shap.TreeExplainer`` gives for the booster alone).
    """
    plt = _pyplot()
    import shap  # ~2 s: see the module docstring

    values = np.asarray(contributions, dtype=float)
    # summary_plot draws on pyplot's current figure: without a new one it drew over the previous
    # plot (the forecast figure in a training run, the calibration curve in the notebook).
    fig = plt.figure()
    # An explicit generator: the beeswarm's jitter must not depend on (or warn about) the global RNG.
    shap.summary_plot(
        values, matrix, feature_names=feature_names, max_display=max_display, show=False,
        rng=np.random.default_rng(0),
    )
    fig.tight_layout()
    return fig
