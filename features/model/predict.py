"""Score a feature frame with a model bundle: the one prediction path for training and serving.

Pure (no MLflow, no I/O): ``encode_matrix`` -> booster and linear model blended in log-odds
(``raw_probability``) -> ``Calibration.apply``.
Training's evaluation calls these functions, so offline scores and served scores are the
same code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.model.bundle import ModelBundle
from features.model.linear import LinearModel, blend_logits, sigmoid
from features.model.matrix import encode_matrix

PROBABILITY_COLUMNS: tuple[str, str] = ("win_probability", "slip_probability")


def encode_bundle_matrix(bundle: ModelBundle, features_frame: pd.DataFrame) -> np.ndarray:
    """Encode a feature frame into the numeric matrix the bundle's boosters were trained on."""
    return encode_matrix(features_frame, bundle.features)  # the spec dict: compiled once per content, not per call


def raw_probability(booster, linear: LinearModel | None, matrix: np.ndarray) -> np.ndarray:
    """Uncalibrated probability of one target: the booster's, blended with its linear model if any.

    Training fits the calibration on exactly this (``training.pipeline.fit_bundle``).
    """
    if booster is None:  # a model training skipped (ModelBundle.skipped): missing, never a made-up number
        return np.full(len(matrix), np.nan)
    if linear is None or linear.weight == 0.0:
        return np.asarray(booster.predict(matrix), dtype=float)
    return sigmoid(blend_logits(booster.predict(matrix, raw_score=True), linear, matrix))


def predict_raw(bundle: ModelBundle, features_frame: pd.DataFrame) -> pd.DataFrame:
    """Uncalibrated booster probabilities, one row per input row (same index).

    Returns a frame with ``win_probability`` and ``slip_probability`` before calibration;
    use ``predict_probabilities`` for the calibrated values that are reported and served.
    """
    return predict_raw_matrix(bundle, encode_bundle_matrix(bundle, features_frame), features_frame.index)


def predict_raw_matrix(bundle: ModelBundle, matrix: np.ndarray, index: pd.Index | None = None) -> pd.DataFrame:
    """``predict_raw`` on a matrix already encoded by ``encode_bundle_matrix`` (encode once, use twice)."""
    if len(matrix) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in PROBABILITY_COLUMNS}, index=index)
    return pd.DataFrame(
        {
            "win_probability": raw_probability(*bundle.halves("win"), matrix),
            "slip_probability": raw_probability(*bundle.halves("slip"), matrix),
        },
        index=index,
    )


def apply_calibration(bundle: ModelBundle, raw: pd.DataFrame) -> pd.DataFrame:
    """Map raw probabilities through the bundle's isotonic calibrations; returns a new frame."""
    return raw.assign(
        win_probability=bundle.win_calibration.apply(raw["win_probability"].to_numpy()),
        slip_probability=_calibrate(bundle.slip_calibration, raw["slip_probability"].to_numpy()),
    )


def _calibrate(calibration, raw: np.ndarray) -> np.ndarray:
    """``calibration.apply``; NaN throughout for a model the bundle does not hold (no calibration)."""
    return np.full(len(raw), np.nan) if calibration is None else calibration.apply(raw)


def predict_probabilities(bundle: ModelBundle, features_frame: pd.DataFrame) -> pd.DataFrame:
    """Calibrated win and slip probabilities, one row per input row (same index).

    ``features_frame`` is what ``features.pointintime.pipeline.build_features`` returns (deal_id, as_of,
    then the registry's features); extra columns are ignored by ``encode_matrix``.
    """
    return apply_calibration(bundle, predict_raw(bundle, features_frame))


def predict_matrix_probabilities(bundle: ModelBundle, matrix: np.ndarray, index: pd.Index | None = None) -> pd.DataFrame:
    """``predict_probabilities`` on a matrix already encoded by ``encode_bundle_matrix``.

    Serving encodes a request's features once and hands the same matrix to the boosters and
    to TreeSHAP; the numbers are those of ``predict_probabilities`` on the frame.
    """
    if len(matrix) == 0:
        return predict_raw_matrix(bundle, matrix, index)
    # One frame, built once (predict_raw_matrix + apply_calibration without the intermediate frame).
    return pd.DataFrame(
        {
            "win_probability": bundle.win_calibration.apply(raw_probability(*bundle.halves("win"), matrix)),
            "slip_probability": _calibrate(bundle.slip_calibration, raw_probability(*bundle.halves("slip"), matrix)),
        },
        index=index,
    )
