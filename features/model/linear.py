"""The linear (logistic) half of a model: log-odds and exact per-feature contributions from the matrix.

A ``LinearModel`` reads the same float matrix the boosters read (``features.model.matrix.encode_matrix``:
numbers, NaN for missing, categorical levels as codes). Each numeric feature adds
``slope * (value - center)``, the value first clipped to ``[low, high]`` (the training data's 1st
and 99th percentiles, so an outlier - a close date pushed 15 times - cannot dominate a score or
its explanation the way a straight line would extrapolate it); a missing value is replaced by ``median`` and adds
``missing_slope * (1 - missing_center)``, a present one ``- missing_slope * missing_center``);
each categorical feature adds its level's entry of ``levels`` (``other`` for a missing, unknown or
rare level). The model's log-odds is ``base`` plus those per-feature terms, so the terms are the
exact SHAP values of the linear model against its (per-deal weighted) training data as
background: every centre is a training mean.

Training (``training.baselines.fit_linear_model``) fits it; scoring (``features.model.predict``) blends
its log-odds with the booster's (``weight`` is the linear model's share of the blend) and
``features.model.explain`` blends the contributions the same way. Pure NumPy, no scikit-learn.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NumericTerm:
    """``slope * (clipped imputed value - center) + missing_slope * (is missing - missing_center)``."""

    column: int
    median: float
    center: float
    slope: float
    missing_center: float = 0.0
    missing_slope: float = 0.0
    low: float = -np.inf
    high: float = np.inf


@dataclass(frozen=True)
class CategoricalTerm:
    """``levels[code]`` for a level kept at training, ``other`` for missing, unknown or rare ones."""

    column: int
    levels: tuple[float, ...]
    other: float


@dataclass(frozen=True)
class LinearModel:
    """Logistic regression over the encoded matrix, stored as centred per-feature terms.

    >>> m = LinearModel(names=("x", "seg"), base=-1.0, weight=0.5,
    ...                 numeric=(NumericTerm(0, median=2.0, center=1.0, slope=0.5, missing_center=0.25, missing_slope=1.0),),
    ...                 categorical=(CategoricalTerm(1, levels=(0.3, -0.3), other=0.1),))
    >>> x = np.array([[3.0, 0.0], [np.nan, 5.0]])
    >>> m.contributions(x).tolist()
    [[0.75, 0.3], [1.25, 0.1]]
    >>> m.logit(x).round(6).tolist()
    [0.05, 0.35]
    """

    names: tuple[str, ...]
    base: float
    numeric: tuple[NumericTerm, ...] = ()
    categorical: tuple[CategoricalTerm, ...] = ()
    weight: float = 0.5  # the linear model's share of the blended log-odds (0: booster alone)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per-feature log-odds terms, shape (rows, features); rows sum to ``logit - base``."""
        matrix = np.asarray(matrix, dtype=float)
        out = np.zeros((len(matrix), len(self.names)))
        a = self._arrays
        if len(a["num_cols"]):
            values = matrix[:, a["num_cols"]]
            missing = np.isnan(values)
            imputed = np.clip(np.where(missing, a["median"], values), a["low"], a["high"])
            out[:, a["num_cols"]] = a["slope"] * (imputed - a["center"]) + a["missing_slope"] * (missing - a["missing_center"])
        for term, table in zip(self.categorical, a["tables"]):
            codes = matrix[:, term.column]
            known = ~np.isnan(codes) & (codes >= 0) & (codes < len(term.levels))
            out[:, term.column] = table[np.where(known, codes, len(term.levels)).astype(np.intp)]
        return out

    def logit(self, matrix: np.ndarray) -> np.ndarray:
        """Log-odds of the linear model alone."""
        return self.base + self.contributions(matrix).sum(axis=1)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Probability of the linear model alone (the logistic-regression baseline)."""
        return 1.0 / (1.0 + np.exp(-self.logit(matrix)))

    @functools.cached_property
    def _arrays(self) -> dict:
        """The terms as arrays, built on first use (a frozen dataclass still has an instance dict)."""
        n = self.numeric
        return {
            "num_cols": np.array([t.column for t in n], dtype=np.intp),
            "median": np.array([t.median for t in n]), "center": np.array([t.center for t in n]),
            "slope": np.array([t.slope for t in n]), "missing_center": np.array([t.missing_center for t in n]),
            "missing_slope": np.array([t.missing_slope for t in n]),
            "low": np.array([t.low for t in n]), "high": np.array([t.high for t in n]),
            "tables": [np.array([*t.levels, t.other]) for t in self.categorical],
        }

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "base": self.base,
            "weight": self.weight,
            "numeric": [
                {"feature": self.names[t.column], "median": t.median, "center": t.center, "slope": t.slope,
                 "missing_center": t.missing_center, "missing_slope": t.missing_slope,
                 "low": _bound(t.low), "high": _bound(t.high)}
                for t in self.numeric
            ],
            "categorical": [
                {"feature": self.names[t.column], "levels": list(t.levels), "other": t.other} for t in self.categorical
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LinearModel":
        """Read ``to_dict`` output; ValueError naming what is wrong (unknown feature, non-finite number)."""
        names = tuple(str(n) for n in data["names"])
        column = {name: j for j, name in enumerate(names)}

        def number(value, where: str) -> float:
            value = float(value)
            if not np.isfinite(value):
                raise ValueError(f"linear model: {where} is not a finite number")
            return value

        def col(entry: dict) -> int:
            if entry["feature"] not in column:
                raise ValueError(f"linear model: term for unknown feature {entry['feature']!r}")
            return column[entry["feature"]]

        def bound(entry: dict, key: str, default: float) -> float:
            value = entry.get(key)
            return default if value is None else number(value, f"{entry['feature']}.{key}")

        numeric = tuple(
            NumericTerm(col(e), *(number(e[k], f"{e['feature']}.{k}") for k in
                                  ("median", "center", "slope", "missing_center", "missing_slope")),
                        low=bound(e, "low", -np.inf), high=bound(e, "high", np.inf))
            for e in data.get("numeric", [])
        )
        categorical = tuple(
            CategoricalTerm(col(e), tuple(number(v, f"{e['feature']}.levels") for v in e["levels"]),
                            number(e["other"], f"{e['feature']}.other"))
            for e in data.get("categorical", [])
        )
        weight = number(data.get("weight", 0.5), "weight")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"linear model: weight {weight} is outside [0, 1]")
        return cls(names=names, base=number(data["base"], "base"), numeric=numeric, categorical=categorical, weight=weight)


def _bound(value: float) -> float | None:
    """A clip bound for JSON: None for no bound (JSON has no infinity)."""
    return None if np.isinf(value) else float(value)


def blend_logits(booster_logit: np.ndarray, linear: LinearModel | None, matrix: np.ndarray) -> np.ndarray:
    """The model's log-odds: ``(1 - w) * booster + w * linear`` (the booster's alone without a linear part)."""
    if linear is None or linear.weight == 0.0:
        return np.asarray(booster_logit, dtype=float)
    return (1.0 - linear.weight) * np.asarray(booster_logit, dtype=float) + linear.weight * linear.logit(matrix)


def blend_contributions(booster_contributions: np.ndarray, linear: LinearModel | None, matrix: np.ndarray) -> np.ndarray:
    """Per-feature terms of ``blend_logits`` (TreeSHAP and linear SHAP mixed with the same weight)."""
    if linear is None or linear.weight == 0.0:
        return booster_contributions
    return (1.0 - linear.weight) * booster_contributions + linear.weight * linear.contributions(matrix)


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """Logistic function, overflow-free for large negative log-odds."""
    logit = np.asarray(logit, dtype=float)
    out = np.empty_like(logit)
    positive = logit >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-logit[positive]))
    e = np.exp(logit[~positive])
    out[~positive] = e / (1.0 + e)
    return out
