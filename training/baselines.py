"""Baselines every training run must beat: the CRM stage table and a logistic regression."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def predict_stage_table(stages: pd.Series, table: dict[str, float]) -> np.ndarray:
    """Win probability from the CRM's fixed per-stage table (unknown stage -> the lowest entry).

    >>> predict_stage_table(pd.Series(["qualify", "contract"]), {"qualify": 0.2, "contract": 0.9}).tolist()
    [0.2, 0.9]
    """
    fallback = min(table.values())
    return stages.astype("object").map(table).fillna(fallback).to_numpy(dtype=float)


def split_feature_kinds(
    frame: pd.DataFrame, features: list[str], categorical_names: tuple[str, ...] = ()
) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature names: the named ones plus string / category dtypes."""
    categorical = [
        f for f in features
        if f in categorical_names
        or isinstance(frame[f].dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(frame[f].dtype)
        or pd.api.types.is_object_dtype(frame[f].dtype)
    ]
    numeric = [f for f in features if f not in categorical]
    return numeric, categorical


def build_logistic_regression(numeric: list[str], categorical: list[str], max_iter: int = 500) -> Pipeline:
    """Median imputation (+ missing indicators) and scaling for numbers, one-hot for categories."""
    numeric_steps = make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True), StandardScaler())
    categorical_steps = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing", keep_empty_features=True),
        OneHotEncoder(handle_unknown="ignore", min_frequency=5),
    )
    columns = ColumnTransformer(
        [("numeric", numeric_steps, numeric), ("categorical", categorical_steps, categorical)],
        remainder="drop",
    )
    return Pipeline([("columns", columns), ("model", LogisticRegression(C=1.0, max_iter=max_iter))])


def prepare_logistic_input(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Numbers as float (booleans -> 0/1, missing -> NaN), categories as object with NaN for missing."""
    numbers = {c: pd.to_numeric(frame[c].astype("Float64"), errors="coerce").astype(float) for c in numeric}
    cats = {c: frame[c].astype("object").where(frame[c].notna(), np.nan) for c in categorical}
    return pd.DataFrame({**numbers, **cats}, index=frame.index)[numeric + categorical]


def fit_logistic_regression(
    frame: pd.DataFrame,
    features: list[str],
    y: np.ndarray,
    w: np.ndarray,
    categorical_names: tuple[str, ...] = (),
    max_iter: int = 500,
) -> tuple[Pipeline, list[str], list[str]]:
    """Fit the logistic-regression baseline on the raw feature frame; returns it with its column kinds."""
    numeric, categorical = split_feature_kinds(frame, features, categorical_names)
    model = build_logistic_regression(numeric, categorical, max_iter=max_iter)
    model.fit(prepare_logistic_input(frame, numeric, categorical), y, model__sample_weight=w)
    return model, numeric, categorical


def predict_logistic_regression(model: Pipeline, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> np.ndarray:
    """P(class 1) from a fitted logistic-regression baseline."""
    return model.predict_proba(prepare_logistic_input(frame, numeric, categorical))[:, 1]
