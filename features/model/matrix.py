"""The model matrix shared by training and serving: feature frame -> float64 numpy array.

Categoricals become integer codes of the levels seen in training (unknown level -> NaN, which
LightGBM treats as missing). A plain array is ~70x cheaper than a categorical DataFrame for a
one-row LightGBM prediction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.pointintime.definitions import CATEGORICAL_FEATURES, FEATURE_NAMES
from features.pointintime.events import SMALL_COLUMN, column_array, text_values


@dataclass(frozen=True)
class MatrixSpec:
    """Ordered feature names and, per categorical feature, its levels (code = position).

    Reads like the dict it serialises to: ``spec["names"]``, ``spec["categorical"]``.
    """

    names: tuple[str, ...]
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def keys(self):
        return ("names", "categorical")

    def to_dict(self) -> dict:
        return {"names": list(self.names), "categorical": {k: list(v) for k, v in self.categorical.items()}}

    @classmethod
    def from_dict(cls, data) -> "MatrixSpec":
        """Rebuild from ``to_dict()`` output (or pass a MatrixSpec through); ValueError on bad input."""
        if isinstance(data, MatrixSpec):
            return data
        try:
            names = tuple(str(n) for n in data["names"])
            categorical = {str(k): tuple(str(v) for v in levels) for k, levels in data.get("categorical", {}).items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"matrix spec: expected {{'names': [...], 'categorical': {{...}}}} ({exc!r})") from exc
        stray = set(categorical) - set(names)
        if stray:
            raise ValueError(f"matrix spec: categorical features {sorted(stray)} are not in names")
        return cls(names=names, categorical=categorical)


def fit_matrix_spec(features_frame: pd.DataFrame, names: tuple[str, ...] = FEATURE_NAMES) -> MatrixSpec:
    """Fix the column order and the levels of each categorical feature from training features.

    >>> frame = pd.DataFrame({"amount": [1.0, 2.0], "segment": ["smb", "ent"]})
    >>> fit_matrix_spec(frame, names=("amount", "segment")).to_dict()
    {'names': ['amount', 'segment'], 'categorical': {'segment': ['ent', 'smb']}}
    """
    missing = [n for n in names if n not in features_frame.columns]
    if missing:
        raise ValueError(f"features frame: missing feature column(s) {missing}")
    categorical = {
        name: tuple(sorted(map(str, features_frame[name].dropna().unique())))
        for name in names
        if name in CATEGORICAL_FEATURES
    }
    return MatrixSpec(names=tuple(names), categorical=categorical)


def encode_matrix(features_frame: pd.DataFrame, spec) -> np.ndarray:
    """The float64 matrix (rows x spec names); categoricals as codes of the spec's levels.

    Column by column from the frame's arrays (no Series, no sub-frame): a one-deal request pays
    for its ~60 cells, not for pandas' per-frame machinery; the spec is compiled once per content.

    >>> spec = MatrixSpec(names=("amount", "segment"), categorical={"segment": ("ent", "smb")})
    >>> encode_matrix(pd.DataFrame({"amount": [5.0, None], "segment": ["smb", "new"]}), spec).tolist()
    [[5.0, 1.0], [nan, nan]]
    """
    names, categorical = _compile_spec(_spec_key(spec))
    columns = text_values(features_frame.columns)
    present = set(columns)
    missing = [n for n in names if n not in present]
    if missing:
        raise ValueError(f"features frame: missing feature column(s) {missing} required by the model")
    out = np.empty((len(features_frame), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        values = column_array(features_frame, name, columns)
        levels = categorical.get(name)
        if levels is not None:
            out[:, j] = encode_levels(values, levels)
        elif isinstance(values, np.ndarray) and values.dtype == np.float64:
            out[:, j] = values
        else:
            out[:, j] = _numeric(values, name)
    return out


def _numeric(values, name: str) -> np.ndarray:
    """A non-float64 feature column as float64 (NaN for missing); ValueError naming the column."""
    try:
        return pd.Series(values, copy=False).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        try:
            return pd.to_numeric(pd.Series(values, copy=False)).to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"features frame: column {name}: not numeric ({exc})") from exc


def _spec_key(spec) -> tuple:
    """A hashable copy of a spec (MatrixSpec or its dict): the cache key of its compiled form."""
    if isinstance(spec, MatrixSpec):
        return spec.names, tuple(spec.categorical.items())
    try:
        names = tuple(spec["names"])
        categorical = tuple((k, tuple(v)) for k, v in spec.get("categorical", {}).items())
        return names, categorical
    except (KeyError, TypeError, AttributeError):
        MatrixSpec.from_dict(spec)  # raises the error that names what is wrong
        raise


@functools.lru_cache(maxsize=64)
def _compile_spec(key: tuple) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Validated names and categorical levels of a spec key (``MatrixSpec.from_dict``'s checks, once)."""
    names, categorical = key
    spec = MatrixSpec.from_dict({"names": list(names), "categorical": {k: list(v) for k, v in categorical}})
    return spec.names, dict(spec.categorical)


@functools.lru_cache(maxsize=256)
def _level_codes(levels: tuple[str, ...]) -> dict[str, float]:
    return {level: float(code) for code, level in enumerate(levels)}


def encode_levels(column, levels: tuple[str, ...]) -> np.ndarray:
    """Codes (as float) of a categorical column's values in ``levels``; NaN for missing or unknown.

    A dict look-up per cell for a request's few rows; one ``factorize`` and a look-up of the few
    distinct values for a training set.

    >>> encode_levels(pd.Series(["smb", None, "galactic", "ent"]), ("ent", "smb")).tolist()
    [1.0, nan, nan, 0.0]
    """
    lookup = _level_codes(tuple(levels))
    values = column.array if isinstance(column, pd.Series) else column
    if len(values) <= SMALL_COLUMN:
        return np.fromiter(
            (np.nan if v is None or v is pd.NA or v != v else lookup.get(v if type(v) is str else str(v), np.nan)
             for v in text_values(values)),
            dtype=np.float64, count=len(values),
        )
    codes, uniques = pd.array(values).factorize()
    table = np.fromiter((lookup.get(str(u), np.nan) for u in uniques), dtype=np.float64, count=len(uniques))
    return np.append(table, np.nan)[codes]  # factorize gives -1 for missing: the appended NaN
