"""SHAP contributions of the win model and the top factors per deal.

``model_contributions`` blends TreeSHAP of the booster (LightGBM ``pred_contrib``) with the linear
half's exact terms, in the win model's log-odds units (before calibration): positive raises the win
probability, negative lowers it; calibration is monotone, so sign and ranking carry over.
``select_top_factors`` picks the top raising and lowering features per deal, vectorised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.model.linear import blend_contributions

# --- SHAP contributions ----------------------------------------------------------------------


def compute_contributions(booster, matrix: pd.DataFrame) -> np.ndarray:
    """TreeSHAP contributions of a LightGBM booster: shape (n_rows, n_features); bias dropped.

    LightGBM's ``pred_contrib`` is exact TreeSHAP and needs no extra dependency; each row's
    contributions plus the bias sum to the raw (log-odds) score.
    """
    if len(matrix) == 0:
        return np.zeros((0, matrix.shape[1]))
    contrib = np.asarray(booster.predict(matrix, pred_contrib=True))
    return contrib[:, :-1]


def model_contributions(bundle, matrix: np.ndarray, target: str = "win") -> np.ndarray:
    """SHAP contributions of a bundle's model for ``target`` ("win" or "slip"), shape (rows, features).

    The model's log-odds blends the booster and its linear half (``features.model.linear``), and so do
    its contributions: TreeSHAP of the booster and the linear model's exact terms, mixed with
    the same weight, so each row still sums (with the blended bias) to the raw score.
    """
    booster, linear = bundle.halves(target)
    return blend_contributions(compute_contributions(booster, matrix), linear, matrix)


def select_top_factors(contributions: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the ``k`` largest positive and ``k`` most negative contributions per row.

    Returns ``(up, down)``, each of shape (n_rows, k), ordered by strength; ``-1`` pads rows with
    fewer than ``k`` positive (or negative) contributions.

    >>> up, down = select_top_factors(np.array([[0.5, -0.2, 0.1, 0.0]]), k=2)
    >>> up.tolist(), down.tolist()
    ([[0, 2]], [[1, -1]])
    """
    c = np.nan_to_num(np.asarray(contributions, dtype=float))
    n, f = c.shape
    k_eff = min(k, f)
    order_up = _smallest_first(-c, k_eff)
    order_down = _smallest_first(c, k_eff)
    up = np.where(np.take_along_axis(c, order_up, axis=1) > 0, order_up, -1)
    down = np.where(np.take_along_axis(c, order_down, axis=1) < 0, order_down, -1)
    if k_eff < k:
        pad = np.full((n, k - k_eff), -1)
        up, down = np.hstack([up, pad]), np.hstack([down, pad])
    return up, down


def _smallest_first(keys: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the ``k`` smallest keys in ascending order, ties by column.

    Exactly ``np.argsort(keys, axis=1, kind="stable")[:, :k]``, without sorting whole rows: a
    partition finds each row's k smallest, ties at the k-th are cut by column, only the k are sorted.

    >>> _smallest_first(np.array([[3.0, 1.0, 2.0, 1.0]]), 2).tolist()
    [[1, 3]]
    """
    n, f = keys.shape
    k = min(k, f)
    if k == 0 or n == 0:
        return np.zeros((n, k), dtype=np.intp)
    if k >= f or n * f <= 4096:  # a request's few rows: one small sort beats the partition's steps
        return np.argsort(keys, axis=1, kind="stable")[:, :k]
    part = np.argpartition(keys, k - 1, axis=1)[:, :k]  # the k smallest, ties at the k-th arbitrary
    kth = np.take_along_axis(keys, part, axis=1).max(axis=1, keepdims=True)
    ambiguous = np.flatnonzero((keys <= kth).sum(axis=1) > k)  # rows with a choice among ties
    if len(ambiguous):
        sub, cut = keys[ambiguous], kth[ambiguous]
        below, tied = sub < cut, sub == cut
        room = k - below.sum(axis=1, keepdims=True)
        chosen = below | (tied & (np.cumsum(tied, axis=1) <= room))  # the first tied columns that fit
        part[ambiguous] = np.nonzero(chosen)[1].reshape(len(ambiguous), k)
    columns = np.sort(part, axis=1)
    order = np.argsort(np.take_along_axis(keys, columns, axis=1), axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1)


