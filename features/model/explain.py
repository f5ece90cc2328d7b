"""The whole explanation of a batch: score, grade, risk level, factors and warnings, one row per deal.

Pure functions on frames and arrays (no MLflow, no HTTP), so offline scoring and the serving
endpoint produce the same explained scores from the same inputs. The parts live beside it:

- ``features.model.grades``: score, grade, risk level and value at risk, cut-offs in ``ExplainConfig``;
- ``features.model.contributions``: SHAP contributions (TreeSHAP blended with the linear half's
  exact terms) and the top raising and lowering factors per deal;
- ``features.model.sentences``: one plain sentence per factor;
- ``features.model.risk_warnings``: rule-based warnings (no activity, ghosted, single-threaded, ...);
- ``explain_frame`` / ``explain_scores`` here: all of it for a batch.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks

from features.model.contributions import model_contributions, select_top_factors
from features.model.grades import (
    RISK_LEVELS,
    ExplainConfig,
    grade_codes,
    risk_codes,
    score_from_probability,
    value_at_risk_from,
    value_at_risk_ratio_from,
)
from features.model.predict import encode_bundle_matrix, predict_matrix_probabilities
from features.model.risk_warnings import (
    FeatureCells,
    describe_fired,
    feature_column,
    flag_arrays,
)
from features.model.sentences import describe_factor, factor_phrase, template_fields_of

# --- the whole explanation for a batch -------------------------------------------------------


def _plain(value):
    """JSON-friendly scalar: NaN/NA -> None, numpy -> Python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if not math.isfinite(v) else v
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value) if not isinstance(value, (int, str)) else value


def _plain_values(features, name: str, positions: np.ndarray) -> list:
    """JSON-friendly values (``_plain``) of column ``name`` at ``positions``; float columns in one go."""
    if name not in features:
        return [None] * len(positions)
    values = features.array(name)
    if values.dtype == np.float64:
        picked = np.asarray(values)[positions]
        out = picked.astype(object)
        out[~np.isfinite(picked)] = None
        return out.tolist()
    cells = features.cells(name)
    # Text cells are str or NaN: only the NaN needs ``_plain``.
    return [value if type(value) is str else _plain(value) for value in (cells[i] for i in positions.tolist())]


def describe_top_factors(
    features: pd.DataFrame, contributions: np.ndarray, names: list[str], up: np.ndarray, down: np.ndarray
) -> tuple[list[list[dict]], list[list[dict]]]:
    """Factor dicts (``feature, value, contribution, sentence``) of the selected top factors per row.

    Only the selected cells are read and phrased, one feature column at a time; the sentence of
    each (feature, value, context) is phrased once (``describe_factor``'s cache).
    """
    features = FeatureCells.of(features)
    n, k = up.shape
    chosen = np.hstack([up, down])  # per row: up factors, then down factors
    rows, slots = np.nonzero(chosen >= 0)  # row-major: each row's factors in strength order
    cols = chosen[rows, slots]
    strength = contributions[rows, cols]
    order = np.argsort(cols, kind="stable")  # factors grouped by feature, each group in row order
    starts = np.flatnonzero(np.diff(cols[order], prepend=-1))
    grouped: list[dict] = []
    for at in np.split(order, starts[1:]) if len(order) else ():
        name = names[cols[at[0]]]
        picked = _plain_values(features, name, rows[at])
        fields = template_fields_of(name)
        if not fields:  # the sentence depends on the value alone: phrase each distinct value once
            phrase = factor_phrase if fields is not None else (lambda feature, value, _: describe_factor(feature, value, {}))
            phrased = {value: phrase(name, value, ()) for value in dict.fromkeys(picked)}
            sentences = [phrased[value] for value in picked]
        else:
            # Context cells as the frame holds them (the sentence templates format them).
            at_rows = rows[at].tolist()
            contexts = [[cells[i] for i in at_rows] if (cells := features.cells(f) if f in features else None) is not None
                        else [None] * len(at) for f in fields]
            sentences = [factor_phrase(name, value, tuple(zip(fields, context))) for value, *context in zip(picked, *contexts)]
        grouped += [{"feature": name, "value": value, "contribution": c, "sentence": sentence}
                    for value, c, sentence in zip(picked, strength[at].tolist(), sentences)]
    inverse = np.empty(len(order), dtype=np.intp)
    inverse[order] = np.arange(len(order))
    items = np.fromiter(grouped, dtype=object, count=len(grouped))[inverse].tolist()  # back to row-major order
    is_up = slots < k
    bounds_up = np.searchsorted(rows * 2 + ~is_up, np.arange(n) * 2, side="left")
    bounds_down = np.searchsorted(rows * 2 + ~is_up, np.arange(n) * 2 + 1, side="left")
    ends = np.append(bounds_up[1:], len(items))
    return (
        [items[a:b] for a, b in zip(bounds_up.tolist(), bounds_down.tolist())],
        [items[a:b] for a, b in zip(bounds_down.tolist(), ends.tolist())],
    )


def explain_frame(
    features: pd.DataFrame,
    contributions: np.ndarray,
    feature_names: list[str],
    win_probability: np.ndarray,
    slip_probability: np.ndarray,
    config: ExplainConfig = ExplainConfig(),
) -> pd.DataFrame:
    """Explained scores, one row per row of ``features`` (same index).

    Args:
        features: the point-in-time feature frame (human-readable values; ``amount`` and
            ``deal_id`` used when present).
        contributions: SHAP contributions, shape (len(features), len(feature_names)).
        feature_names: the model's features in the matrix's column order.

    Returns a frame with columns ``win_probability, score, grade, slip_probability, risk_level,
    value_at_risk, factors_up, factors_down, warnings``; factor and warning cells are lists of
    dicts (``feature, value, contribution, sentence`` / ``code, message``).
    """
    contributions = np.asarray(contributions, dtype=float)
    if contributions.shape != (len(features), len(feature_names)):
        raise ValueError(
            f"contributions have shape {contributions.shape}, expected {(len(features), len(feature_names))}"
        )
    return frame_from_blocks(
        _explain_columns(features, contributions, feature_names, win_probability, slip_probability, config),
        features.index,
    )


def frame_from_blocks(columns: dict, index: pd.Index) -> pd.DataFrame:
    """A frame built once from its columns: numbers by dtype in 2-D blocks, lists in an object block.

    What ``pd.DataFrame(columns, index=index)`` gives for float and int arrays, lists of Python
    objects and extension arrays (kept as they are), without its per-column inference.

    >>> frame_from_blocks({"a": np.array([1.0]), "b": [[1, 2]], "c": pd.array(["x"], dtype="str")}, pd.RangeIndex(1))
         a       b  c
    0  1.0  [1, 2]  x
    """
    n = len(index)
    groups: dict = {}
    blocks = []
    for j, values in enumerate(columns.values()):
        if isinstance(values, pd.api.extensions.ExtensionArray):
            blocks.append((values.copy(), np.array([j])))  # blocks are taken as they are: no shared memory
        elif isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
            groups.setdefault(values.dtype, []).append((j, values))
        else:
            groups.setdefault(np.dtype(object), []).append((j, np.fromiter(values, dtype=object, count=n)))
    for dtype, members in groups.items():
        block = np.empty((len(members), n), dtype=dtype)
        for i, (_, values) in enumerate(members):
            block[i] = values
        blocks.append((block, np.array([j for j, _ in members])))
    return create_dataframe_from_blocks(blocks, index=index, columns=_column_index(tuple(columns)))


@functools.lru_cache(maxsize=64)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """The (immutable) column index of explained frames, built once per column list."""
    return pd.Index(list(names))


def _explain_columns(features, contributions, feature_names, win_probability, slip_probability, config) -> dict:
    """``explain_frame``'s columns as a dict of arrays and lists (the frame is built once by the caller)."""
    features = FeatureCells.of(features)
    contributions = np.asarray(contributions, dtype=float)
    win = np.asarray(win_probability, dtype=float)
    slip = np.asarray(slip_probability, dtype=float)
    amount = feature_column(features, "amount")
    grades, grade = grade_codes(win, config)
    up, down = select_top_factors(contributions, config.top_factors)
    factors_up, factors_down = describe_top_factors(features, contributions, [str(n) for n in feature_names], up, down)
    flags = flag_arrays(features, config.warnings)
    return {
        "win_probability": win,
        "score": score_from_probability(win),
        "grade": _labels(grades).take(grade),
        "slip_probability": slip,
        "risk_level": _labels(RISK_LEVELS).take(
            risk_codes(win, value_at_risk_ratio_from(feature_column(features, "amount_vs_segment_median"), win), config)
        ),
        "value_at_risk": value_at_risk_from(amount, win),
        "factors_up": factors_up,
        "factors_down": factors_down,
        "warnings": describe_fired(np.column_stack(list(flags.values())).reshape(len(features), len(flags)),
                                    list(flags), features, config.warnings),
    }


@functools.lru_cache(maxsize=16)
def _labels(labels: tuple[str, ...]) -> pd.api.extensions.ExtensionArray:
    """Labels as a "str" array: a take of it is the frame's column of labels (no per-cell inference)."""
    return pd.array(list(labels), dtype="str")


def explain_scores(bundle, features_frame: pd.DataFrame, config: ExplainConfig = ExplainConfig()) -> pd.DataFrame:
    """Score and explain a feature frame with a model bundle: the one path offline and served.

    ``features_frame`` is ``features.pointintime.pipeline.build_features`` output (``deal_id``, ``as_of``, then
    the registry's features). Returns ``deal_id``, ``as_of``, ``amount`` and the columns of
    ``explain_frame``, same index. Probabilities come from ``features.model.predict`` (calibrated);
    contributions from the win booster on the same encoded matrix.
    """
    names = list(bundle.features["names"])
    matrix = encode_bundle_matrix(bundle, features_frame)  # once, for the boosters and TreeSHAP
    probabilities = predict_matrix_probabilities(bundle, matrix, features_frame.index)
    contributions = model_contributions(bundle, matrix)
    if contributions.shape != (len(features_frame), len(names)):
        raise ValueError(f"contributions have shape {contributions.shape}, expected {(len(features_frame), len(names))}")
    features = FeatureCells(features_frame)
    explained = _explain_columns(
        features,
        contributions,
        names,
        probabilities["win_probability"].to_numpy(),
        probabilities["slip_probability"].to_numpy(),
        config,
    )
    keys = {name: features.array(name) if name in features else np.full(len(features_frame), None)
            for name in ("deal_id", "as_of")}
    # One frame, built once: deal_id, as_of, the explanation, amount.
    return frame_from_blocks({**keys, **explained, "amount": features.floats("amount")}, features_frame.index)
