"""Baselines every training run must beat: the CRM stage table and a logistic regression."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.linear import CategoricalTerm, LinearModel, NumericTerm


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
    """Weighted logistic regression on the encoded matrix (``features.matrix``), as a ``LinearModel``.

    Numbers: clipped to their ``clip_quantiles`` (outliers do not extrapolate), median
    imputation, a missing indicator where training had missing values, both standardised. Categories (``categorical``: name -> the spec's levels): one-hot of levels seen at
    least ``min_frequency`` times plus one "other" column (missing, unknown, rare). L2 penalty
    ``1 / c`` on the standardised coefficients, as scikit-learn's ``LogisticRegression(C=c)``.
    ``monotone`` (name -> +1/-1) forbids the wrong sign: a numeric feature whose slope comes out
    against its direction is dropped and the model refitted (its missing indicator stays).
    """
    from sklearn.linear_model import LogisticRegression

    matrix = np.asarray(matrix, dtype=float)
    w = np.asarray(w, dtype=float)
    wn = w / w.sum()
    monotone = monotone or {}
    numeric_cols = [j for j, name in enumerate(names) if name not in categorical]
    dropped: set[int] = set()
    while True:
        blocks, parts = [], []  # design columns, and what each one is: (kind, feature column, level)
        scale: dict[tuple, float] = {}  # sd of each standardised design column
        stats: dict[int, dict] = {}
        for j in numeric_cols:
            values = matrix[:, j]
            missing = np.isnan(values)
            present = values[~missing]
            low, high = (np.quantile(present, clip_quantiles) if len(present) else (-np.inf, np.inf))
            median = float(np.median(present)) if len(present) else 0.0
            imputed = np.clip(np.where(missing, median, values), low, high)
            stats[j] = {"median": median, "center": float(wn @ imputed), "missing_center": float(wn @ missing),
                        "low": float(low), "high": float(high)}
            if j not in dropped:
                _standardised(imputed, wn, ("value", j, None), blocks, parts, scale)
            if missing.any():
                _standardised(missing.astype(float), wn, ("missing", j, None), blocks, parts, scale)
        slots: dict[int, np.ndarray] = {}
        for j, name in enumerate(names):
            if name not in categorical:
                continue
            n_levels = len(categorical[name])
            codes = matrix[:, j]
            known = ~np.isnan(codes) & (codes >= 0) & (codes < n_levels)
            slot = np.where(known, codes, n_levels).astype(np.intp)
            counts = np.bincount(slot, minlength=n_levels + 1)
            rare = np.flatnonzero(counts[:n_levels] < min_frequency)
            slot[np.isin(slot, rare)] = n_levels
            slots[j] = slot
            for level in np.unique(slot):
                blocks.append((slot == level).astype(float))
                parts.append(("level", j, int(level)))
        design = np.column_stack(blocks) if blocks else np.zeros((len(matrix), 0))
        fit = LogisticRegression(C=c, max_iter=max_iter).fit(design, y, sample_weight=w)
        coef = dict(zip(parts, fit.coef_[0]))
        against = [
            j for j in numeric_cols
            if j not in dropped and coef.get(("value", j, None), 0.0) * monotone.get(names[j], 0) < 0
        ]
        if not against:
            break
        dropped.update(against)
    numeric = tuple(
        NumericTerm(
            column=j, median=stats[j]["median"], center=stats[j]["center"],
            slope=float(coef.get(("value", j, None), 0.0) / scale.get(("value", j, None), 1.0)),
            missing_center=stats[j]["missing_center"],
            missing_slope=float(coef.get(("missing", j, None), 0.0) / scale.get(("missing", j, None), 1.0)),
            low=stats[j]["low"], high=stats[j]["high"],
        )
        for j in numeric_cols
    )
    base = float(fit.intercept_[0])
    terms = []
    for j, slot in slots.items():
        n_levels = len(categorical[names[j]])
        raw = np.array([coef.get(("level", j, level), 0.0) for level in range(n_levels + 1)])
        # Rare levels share the "other" slot's coefficient; centre on the weighted mean term.
        raw[:n_levels][[("level", j, level) not in coef for level in range(n_levels)]] = raw[n_levels]
        mean = float(wn @ raw[slot])
        base += mean
        terms.append(CategoricalTerm(column=j, levels=tuple((raw[:n_levels] - mean).tolist()), other=float(raw[n_levels] - mean)))
    return LinearModel(names=tuple(names), base=base, numeric=numeric, categorical=tuple(terms))


def _standardised(column: np.ndarray, wn: np.ndarray, part: tuple, blocks: list, parts: list, scale: dict) -> None:
    """Append ``column`` centred and scaled by its weighted mean and sd (skipped when constant)."""
    mean = wn @ column
    sd = float(np.sqrt(wn @ (column - mean) ** 2))
    if sd > 0:
        blocks.append((column - mean) / sd)
        parts.append(part)
        scale[part] = sd
