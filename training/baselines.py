"""Baselines every training run must beat: the CRM stage table and a logistic regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from features.model.linear import CategoricalTerm, LinearModel, NumericTerm


def predict_stage_table(stages: pd.Series, table: dict[str, float]) -> np.ndarray:
    """Win probability from the CRM's fixed per-stage table (unknown stage -> the lowest entry).

    >>> predict_stage_table(pd.Series(["qualify", "contract"]), {"qualify": 0.2, "contract": 0.9}).tolist()
    [0.2, 0.9]
    """
    fallback = min(table.values())
    return stages.astype("object").map(table).fillna(fallback).to_numpy(dtype=float)


def fit_linear_model(
    matrix: np.ndarray,
    names: list[str],
    categorical: dict[str, list],
    y: np.ndarray,
    w: np.ndarray,
    monotone: dict[str, int] | None = None,
    c: float = 1.0,
    min_frequency: int = 5,
    max_iter: int = 500,
    clip_quantiles: tuple[float, float] = (0.01, 0.99),
) -> LinearModel:
    """Weighted logistic regression on the encoded matrix (``features.model.matrix``), as a ``LinearModel``.

    Numbers: clipped to their ``clip_quantiles`` (outliers do not extrapolate), median
    imputation, a missing indicator where training had missing values, both standardised.
    Categories (``categorical``: name -> the spec's levels): one-hot of levels seen at least
    ``min_frequency`` times plus one "other" column (missing, unknown, rare). L2 penalty ``1 / c``
    on the standardised coefficients, as scikit-learn's ``LogisticRegression(C=c)``.
    ``monotone`` (name -> +1/-1) forbids the wrong sign: a numeric feature whose slope comes out
    against its direction is dropped and the model refitted (its missing indicator stays).
    """
    matrix = np.asarray(matrix, dtype=float)
    w = np.asarray(w, dtype=float)
    wn = w / w.sum()
    monotone = monotone or {}
    numeric = {j: _numeric_input(matrix[:, j], wn, clip_quantiles)
               for j, name in enumerate(names) if name not in categorical}
    slots = {j: _level_slots(matrix[:, j], len(categorical[name]), min_frequency)
             for j, name in enumerate(names) if name in categorical}
    dropped: set[int] = set()
    while True:
        columns = {("value", j): x["value"] for j, x in numeric.items() if j not in dropped and x["value"] is not None}
        columns |= {("missing", j): x["missing"] for j, x in numeric.items() if x["missing"] is not None}
        columns |= {("level", j, level): (slot == level).astype(float)
                    for j, slot in slots.items() for level in np.unique(slot)}
        design = np.column_stack(list(columns.values())) if columns else np.zeros((len(matrix), 0))
        fit = LogisticRegression(C=c, max_iter=max_iter).fit(design, y, sample_weight=w)
        coef = dict(zip(columns, fit.coef_[0]))
        against = {j for j in numeric if coef.get(("value", j), 0.0) * monotone.get(names[j], 0) < 0}
        if not against:
            break
        dropped |= against
    terms = tuple(
        NumericTerm(
            column=j, median=x["median"], center=x["center"], missing_center=x["missing_center"],
            low=x["low"], high=x["high"],
            slope=float(coef.get(("value", j), 0.0) / x["value_sd"]),
            missing_slope=float(coef.get(("missing", j), 0.0) / x["missing_sd"]),
        )
        for j, x in numeric.items()
    )
    base = float(fit.intercept_[0])
    levels = []
    for j, slot in slots.items():
        n_levels = len(categorical[names[j]])
        # Rare and unseen levels take the "other" slot's coefficient; centre on the weighted mean term.
        other = coef.get(("level", j, n_levels), 0.0)
        raw = np.array([coef.get(("level", j, level), other) for level in range(n_levels)] + [other])
        mean = float(wn @ raw[slot])
        base += mean
        levels.append(CategoricalTerm(column=j, levels=tuple((raw[:n_levels] - mean).tolist()), other=float(other - mean)))
    return LinearModel(names=tuple(names), base=base, numeric=terms, categorical=tuple(levels))


def _numeric_input(values: np.ndarray, wn: np.ndarray, clip_quantiles: tuple[float, float]) -> dict:
    """A numeric feature's statistics and its standardised design columns (None when constant)."""
    missing = np.isnan(values)
    present = values[~missing]
    low, high = np.quantile(present, clip_quantiles) if len(present) else (-np.inf, np.inf)
    median = float(np.median(present)) if len(present) else 0.0
    imputed = np.clip(np.where(missing, median, values), low, high)
    value, value_sd = _standardised(imputed, wn)
    flag, missing_sd = _standardised(missing.astype(float), wn)
    return {"median": median, "center": float(wn @ imputed), "missing_center": float(wn @ missing),
            "low": float(low), "high": float(high),
            "value": value, "value_sd": value_sd, "missing": flag, "missing_sd": missing_sd}


def _level_slots(codes: np.ndarray, n_levels: int, min_frequency: int) -> np.ndarray:
    """Each row's one-hot slot: its level's code, or ``n_levels`` ("other") for missing, unknown or rare."""
    known = ~np.isnan(codes) & (codes >= 0) & (codes < n_levels)
    slot = np.where(known, codes, n_levels).astype(np.intp)
    rare = np.flatnonzero(np.bincount(slot, minlength=n_levels + 1)[:n_levels] < min_frequency)
    slot[np.isin(slot, rare)] = n_levels
    return slot


def _standardised(column: np.ndarray, wn: np.ndarray) -> tuple[np.ndarray | None, float]:
    """``column`` centred and scaled by its weighted mean and sd, and that sd (None, 1.0 when constant)."""
    mean = wn @ column
    sd = float(np.sqrt(wn @ (column - mean) ** 2))
    return ((column - mean) / sd, sd) if sd > 0 else (None, 1.0)
