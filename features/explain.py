"""Turn model outputs into what a manager reads: score, grade, risk level, factors, warnings.

Pure functions on frames and arrays (no MLflow, no HTTP), so offline scoring and the serving
endpoint produce the same explained scores from the same inputs:

- ``score_from_probability`` / ``grade_from_probability`` / ``risk_level_from_probabilities``:
  the documented cut-offs in ``ExplainConfig``;
- ``model_contributions``: SHAP contributions of the win model: TreeSHAP of its booster
  (``compute_contributions``, LightGBM ``pred_contrib``) blended with its linear half's exact terms;
- ``select_top_factors``: the top raising and lowering features per deal, vectorised;
- ``describe_factor``: one plain sentence per factor;
- ``flag_warnings``: rule-based warnings (no activity, ghosted, single-threaded, ...);
- ``explain_frame``: all of it for a batch, one row per deal.

Contributions are in the win model's log-odds units (before calibration): positive raises the
win probability, negative lowers it. The calibrated probability is monotone in the raw score, so
the sign and the ranking carry over.
"""

from __future__ import annotations

import functools
import math
import string
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

# --- configuration (data, not code) -----------------------------------------------------------


@dataclass(frozen=True)
class WarningThresholds:
    """Thresholds of the rule-based warnings; every value is configurable.

    >>> WarningThresholds().no_activity_days
    14.0
    """

    no_activity_days: float = 14.0  # no activity of any kind for this many days
    ghosted_days: float = 21.0  # nothing inbound for this long while the rep keeps reaching out
    ghosted_min_outbound_30d: float = 3.0  # ... with at least this many touches in the last 30 days
    single_thread_max_contacts: float = 1.0  # at most this many contacts engaged so far ...
    single_thread_share: float = 0.8  # ... or this share of contact activity goes to one person
    decision_maker_days: float = 30.0  # neither decision maker nor economic buyer engaged this long
    stalled_ratio: float = 2.0  # days in stage / days won deals typically take in that stage
    close_date_pushes: float = 2.0  # the expected close date moved out at least this often

    @classmethod
    def from_dict(cls, data: dict | None) -> "WarningThresholds":
        """Build from a plain mapping; unknown keys are an error that names them."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown warning thresholds {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in data.items()})


@dataclass(frozen=True)
class ExplainConfig:
    """Cut-offs for grades and risk levels, number of factors and warning thresholds.

    Grades by calibrated win probability: A >= 0.60, B >= 0.40, C >= 0.20, else D.
    Risk level: ``high`` when win < 0.20 or slip >= 0.70; ``medium`` when win < 0.40 or
    slip >= 0.40; else ``low``.
    """

    grade_cutoffs: tuple[tuple[str, float], ...] = (("A", 0.60), ("B", 0.40), ("C", 0.20))
    lowest_grade: str = "D"
    high_risk_win_below: float = 0.20
    high_risk_slip_from: float = 0.70
    medium_risk_win_below: float = 0.40
    medium_risk_slip_from: float = 0.40
    top_factors: int = 5
    warnings: WarningThresholds = field(default_factory=WarningThresholds)

    def to_dict(self) -> dict:
        return asdict(self)


# --- scores ----------------------------------------------------------------------------------


def score_from_probability(win_probability: np.ndarray) -> np.ndarray:
    """Map calibrated win probability to an integer score 1-99 (probability in percent, clipped).

    >>> score_from_probability(np.array([0.0, 0.314, 0.5, 1.0])).tolist()
    [1, 31, 50, 99]
    """
    p = np.asarray(win_probability, dtype=float)
    return np.clip(np.rint(p * 100.0), 1, 99).astype(int)


def grade_from_probability(win_probability: np.ndarray, config: ExplainConfig = ExplainConfig()) -> np.ndarray:
    """Grade A-D by calibrated win probability, using ``config.grade_cutoffs``.

    >>> grade_from_probability(np.array([0.75, 0.45, 0.25, 0.05])).tolist()
    ['A', 'B', 'C', 'D']
    """
    labels, codes = _grade_codes(win_probability, config)
    return np.array(labels, dtype=object)[codes]


def _grade_codes(win_probability, config: ExplainConfig) -> tuple[tuple[str, ...], np.ndarray]:
    """Grade labels and each deal's position in them (``grade_from_probability`` without the strings)."""
    p = np.asarray(win_probability, dtype=float)
    conditions = [p >= cut for _, cut in config.grade_cutoffs]
    labels = tuple(grade for grade, _ in config.grade_cutoffs) + (config.lowest_grade,)
    return labels, np.select(conditions, range(len(conditions)), default=len(conditions))


def risk_level_from_probabilities(
    win_probability: np.ndarray, slip_probability: np.ndarray, config: ExplainConfig = ExplainConfig()
) -> np.ndarray:
    """Risk level ``high`` / ``medium`` / ``low`` from win and slip probability.

    >>> risk_level_from_probabilities(np.array([0.1, 0.5, 0.8]), np.array([0.2, 0.5, 0.1])).tolist()
    ['high', 'medium', 'low']
    """
    return np.array(RISK_LEVELS, dtype=object)[_risk_codes(win_probability, slip_probability, config)]


RISK_LEVELS: tuple[str, ...] = ("high", "medium", "low")


def _risk_codes(win_probability, slip_probability, config: ExplainConfig) -> np.ndarray:
    """Each deal's position in ``RISK_LEVELS``."""
    win = np.asarray(win_probability, dtype=float)
    slip = np.asarray(slip_probability, dtype=float)
    high = (win < config.high_risk_win_below) | (slip >= config.high_risk_slip_from)
    medium = (win < config.medium_risk_win_below) | (slip >= config.medium_risk_slip_from)
    return np.select([high, medium], [0, 1], default=2)


def value_at_risk_from(amount: np.ndarray, win_probability: np.ndarray) -> np.ndarray:
    """Value at risk = amount x (1 - win probability); a missing amount gives 0.

    >>> value_at_risk_from(np.array([1000.0, np.nan]), np.array([0.25, 0.5])).tolist()
    [750.0, 0.0]
    """
    amount = np.nan_to_num(np.asarray(amount, dtype=float), nan=0.0)
    return amount * (1.0 - np.asarray(win_probability, dtype=float))


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

    The model's log-odds blends the booster and its linear half (``features.linear``), and so do
    its contributions: TreeSHAP of the booster and the linear model's exact terms, mixed with
    the same weight, so each row still sums (with the blended bias) to the raw score.
    """
    from features.linear import blend_contributions

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


# --- sentences -------------------------------------------------------------------------------


def describe_factor(feature: str, value, row: dict) -> str:
    """One plain sentence for a feature's value in a deal, in the registry's manager phrasing.

    >>> describe_factor("days_in_stage_vs_won", 2.3, {"current_stage": "negotiate", "days_in_stage": 41})
    'In negotiate for 41 days, 2.3x what won deals take'
    >>> describe_factor("decision_maker_engaged_30d", 0.0, {})
    'No decision maker engaged in the last 30 days'
    >>> describe_factor("not_in_registry", 4.0, {})
    'not_in_registry = 4.0'
    """
    fields = _fields_of(feature)
    if fields is None:
        return f"{feature} = {value}"
    try:
        return _cached_sentence(feature, value, tuple((f, row.get(f)) for f in fields))
    except TypeError:  # an unhashable value: phrase it without the cache
        from features.registry import describe_feature

        return describe_feature(feature, value, row)


def _phrase(feature: str, value, context: tuple) -> str:
    """``describe_factor`` of a registry feature, given its template fields' ``(name, cell)`` pairs."""
    try:
        return _cached_sentence(feature, value, context)
    except TypeError:  # an unhashable value: phrase it without the cache
        from features.registry import describe_feature

        return describe_feature(feature, value, dict(context))


@functools.lru_cache(maxsize=None)
def _fields_of(feature: str) -> tuple[str, ...] | None:
    """Other features that ``feature``'s templates use; None for a feature not in the registry."""
    from features.registry import FEATURES_BY_NAME, TEMPLATE_BUILTINS

    if feature not in FEATURES_BY_NAME:
        return None
    return tuple(sorted({
        name
        for template in FEATURES_BY_NAME[feature].phrases.values()
        for _, name, _, _ in string.Formatter().parse(template)
        if name and name not in TEMPLATE_BUILTINS
    }))


@functools.lru_cache(maxsize=65536)
def _cached_sentence(feature: str, value, context: tuple) -> str:
    # Counts, flags and categories repeat across deals: each sentence is phrased once.
    from features.registry import describe_feature

    return describe_feature(feature, value, dict(context))


@functools.lru_cache(maxsize=1)
def template_fields() -> frozenset[str]:
    """Names of other features that the registry's sentence templates use (besides ``value``).

    >>> "current_stage" in template_fields()
    True
    """
    from features.registry import FEATURE_NAMES

    return frozenset(field for name in FEATURE_NAMES for field in _fields_of(name))


# --- warnings --------------------------------------------------------------------------------

WARNING_CODES: tuple[str, ...] = (
    "no_activity",
    "ghosted",
    "single_threaded",
    "no_decision_maker",
    "stalled_in_stage",
    "close_date_pushed",
)


class FeatureCells:
    """A feature frame's columns, each read from the frame once per call (as floats, or as cells).

    One explanation reads the same few columns for rules, warning messages and sentences; a
    one-deal request would otherwise pay pandas' cost of a Series per read.
    """

    def __init__(self, frame: pd.DataFrame):
        from features.pipeline import text_values

        self.frame = frame
        self.names = text_values(frame.columns)
        self.present = frozenset(self.names)
        self._arrays: dict = {}
        self._floats: dict = {}
        self._cells: dict = {}

    @classmethod
    def of(cls, features) -> "FeatureCells":
        return features if isinstance(features, FeatureCells) else cls(features)

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, name: str) -> bool:
        return name in self.present

    def array(self, name: str):
        """The column's numpy or extension array (``frame[name].array``)."""
        if name not in self._arrays:
            from features.pipeline import column_array

            self._arrays[name] = column_array(self.frame, name, self.names)
        return self._arrays[name]

    def floats(self, name: str) -> np.ndarray:
        """A numeric column as a float array (do not modify), or all-NaN when the feature is missing."""
        out = self._floats.get(name)
        if out is None:
            out = self._floats[name] = self._to_floats(name)
        return out

    def _to_floats(self, name: str) -> np.ndarray:
        if name not in self.present:
            return np.full(len(self.frame), np.nan)
        values = self.array(name)
        if isinstance(values, np.ndarray) and values.dtype == np.float64:
            return values
        column = pd.Series(values, copy=False)
        if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column.dtype):
            return column.to_numpy(dtype=float, na_value=np.nan)
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)

    def cells(self, name: str) -> list:
        """The column's cells as ``frame[name].to_numpy(dtype=object)`` holds them, as a list."""
        out = self._cells.get(name)
        if out is None:
            values = self.array(name)
            if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
                out = values.tolist()
            elif values.dtype == _STR_DTYPE:
                from features.pipeline import text_values

                out = [np.nan if v is None else v for v in text_values(values)]  # "str" holds NaN for missing
            else:
                out = pd.Series(values, copy=False).to_numpy(dtype=object).tolist()
            self._cells[name] = out
        return out


_STR_DTYPE = pd.StringDtype(na_value=np.nan)


def _column(features, name: str) -> np.ndarray:
    """A numeric column as a float array, or all-NaN when the feature is missing."""
    return FeatureCells.of(features).floats(name)


# Features the warning messages quote.
WARNING_COLUMNS: tuple[str, ...] = (
    "current_stage", "days_in_stage", "days_in_stage_vs_won", "days_since_last_activity", "days_since_last_inbound",
    "activities_30d", "contacts_engaged", "top_contact_share", "close_date_pushes",
)


def flag_warnings(features: pd.DataFrame, thresholds: WarningThresholds = WarningThresholds()) -> pd.DataFrame:
    """Boolean frame, one column per warning code, one row per deal (same index as ``features``).

    A rule whose input features are missing (the table was absent from the request or export)
    does not fire: missing is not zero.

    >>> f = pd.DataFrame({"days_since_last_activity": [20.0, 2.0], "close_date_pushes": [3, 0]})
    >>> flag_warnings(f)[["no_activity", "close_date_pushed"]].to_numpy().tolist()
    [[True, True], [False, False]]
    """
    return pd.DataFrame(_flag_arrays(features, thresholds), index=features.index)


def _flag_arrays(features, thresholds: WarningThresholds) -> dict[str, np.ndarray]:
    """``flag_warnings`` as a dict of boolean arrays (no frame: cheap for one-deal requests)."""
    t = thresholds
    features = FeatureCells.of(features)
    age = _column(features, "deal_age_days")
    activities_30d = _column(features, "activities_30d")  # NaN: no activity log
    has_log = ~np.isnan(activities_30d)
    last_activity = _column(features, "days_since_last_activity")
    last_inbound = _column(features, "days_since_last_inbound")
    engaged = _column(features, "contacts_engaged")
    top_share = _column(features, "top_contact_share")
    dm_flag = _column(features, "decision_maker_engaged_30d")  # NaN: no contact or activity data
    dm_days = _column(features, "days_since_decision_maker_engaged")
    eb_days = _column(features, "days_since_economic_buyer_engaged")
    ratio = _column(features, "days_in_stage_vs_won")
    pushes = _column(features, "close_date_pushes")

    with np.errstate(invalid="ignore"):
        silent = (last_activity >= t.no_activity_days) | (
            np.isnan(last_activity) & has_log & (age >= t.no_activity_days)
        )
        unanswered = (last_inbound >= t.ghosted_days) | (np.isnan(last_inbound) & has_log & (age >= t.ghosted_days))
        dm_absent = (np.isnan(dm_days) | (dm_days > t.decision_maker_days)) & (
            np.isnan(eb_days) | (eb_days > t.decision_maker_days)
        )
        return {
            "no_activity": silent,
            "ghosted": unanswered & (activities_30d >= t.ghosted_min_outbound_30d),
            "single_threaded": ~np.isnan(top_share)
            & ((engaged <= t.single_thread_max_contacts) | (top_share >= t.single_thread_share)),
            "no_decision_maker": ~np.isnan(dm_flag) & dm_absent,
            "stalled_in_stage": ratio >= t.stalled_ratio,
            "close_date_pushed": pushes >= t.close_date_pushes,
        }


def describe_warnings(
    flags: pd.DataFrame, features: pd.DataFrame, thresholds: WarningThresholds = WarningThresholds()
) -> list[list[dict]]:
    """Turn warning flags into ``[{"code", "message"}, ...]`` per deal (only the rules that fired).

    >>> f = pd.DataFrame({"close_date_pushes": [3.0]})
    >>> describe_warnings(flag_warnings(f), f)
    [[{'code': 'close_date_pushed', 'message': 'Close date pushed 3 times'}]]
    """
    return _describe_fired(flags.to_numpy(dtype=bool), list(flags.columns), features, thresholds)


def _describe_fired(fired: np.ndarray, codes: list[str], features, thresholds: WarningThresholds):
    out: list[list[dict]] = [[] for _ in range(len(fired))]
    if not fired.any():
        return out
    features = FeatureCells.of(features)
    for j, code in enumerate(codes):  # code by code, so each deal's warnings keep the codes' order
        rows = np.flatnonzero(fired[:, j])
        if len(rows):
            for row, message in zip(rows.tolist(), _warning_messages(code, features, rows, thresholds)):
                out[row].append({"code": code, "message": message})
    return out


def _warning_messages(code: str, features: "FeatureCells", rows: np.ndarray, t: WarningThresholds) -> list[str]:
    """The message of warning ``code`` for each of the given rows, each quoted column read once."""

    def numbers(name: str) -> list[float]:
        return features.floats(name)[rows].tolist()

    if code == "no_activity":
        return [f"No activity for {days:.0f} days" if math.isfinite(days) else "No activity logged since the deal was created"
                for days in numbers("days_since_last_activity")]
    if code == "ghosted":
        return [f"Customer silent {f'for {days:.0f} days' if math.isfinite(days) else 'since the deal was created'} "
                f"despite {touches:.0f} touches in the last 30 days"
                for days, touches in zip(numbers("days_since_last_inbound"), numbers("activities_30d"))]
    if code == "single_threaded":
        return [f"Single-threaded: {engaged:.0f} contact(s) engaged, {share:.0%} of contact activity with one person"
                for engaged, share in zip(numbers("contacts_engaged"), numbers("top_contact_share"))]
    if code == "no_decision_maker":
        return [f"No decision maker or economic buyer engaged in the last {t.decision_maker_days:.0f} days"] * len(rows)
    if code == "stalled_in_stage":
        stages = features.cells("current_stage") if "current_stage" in features else None
        picked = [stages[i] for i in rows.tolist()] if stages is not None else ["stage"] * len(rows)
        return [f"Stalled in {stage}: {days:.0f} days, {ratio:.1f}x what won deals take"
                for stage, days, ratio in zip(picked, numbers("days_in_stage"), numbers("days_in_stage_vs_won"))]
    return [f"Close date pushed {pushes:.0f} times" for pushes in numbers("close_date_pushes")]


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
        fields = _fields_of(name)
        if not fields:  # the sentence depends on the value alone: phrase each distinct value once
            phrase = _phrase if fields is not None else (lambda feature, value, _: describe_factor(feature, value, {}))
            phrased = {value: phrase(name, value, ()) for value in dict.fromkeys(picked)}
            sentences = [phrased[value] for value in picked]
        else:
            # Context cells as the frame holds them (the sentence templates format them).
            at_rows = rows[at].tolist()
            contexts = [[cells[i] for i in at_rows] if (cells := features.cells(f) if f in features else None) is not None
                        else [None] * len(at) for f in fields]
            sentences = [_phrase(name, value, tuple(zip(fields, context))) for value, *context in zip(picked, *contexts)]
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
    from pandas.api.internals import create_dataframe_from_blocks

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
    amount = _column(features, "amount")
    grades, grade = _grade_codes(win, config)
    up, down = select_top_factors(contributions, config.top_factors)
    factors_up, factors_down = describe_top_factors(features, contributions, [str(n) for n in feature_names], up, down)
    flags = _flag_arrays(features, config.warnings)
    return {
        "win_probability": win,
        "score": score_from_probability(win),
        "grade": _labels(grades).take(grade),
        "slip_probability": slip,
        "risk_level": _labels(RISK_LEVELS).take(_risk_codes(win, slip, config)),
        "value_at_risk": value_at_risk_from(amount, win),
        "factors_up": factors_up,
        "factors_down": factors_down,
        "warnings": _describe_fired(np.column_stack(list(flags.values())).reshape(len(features), len(flags)),
                                    list(flags), features, config.warnings),
    }


@functools.lru_cache(maxsize=16)
def _labels(labels: tuple[str, ...]) -> pd.api.extensions.ExtensionArray:
    """Labels as a "str" array: a take of it is the frame's column of labels (no per-cell inference)."""
    return pd.array(list(labels), dtype="str")


def explain_scores(bundle, features_frame: pd.DataFrame, config: ExplainConfig = ExplainConfig()) -> pd.DataFrame:
    """Score and explain a feature frame with a model bundle: the one path offline and served.

    ``features_frame`` is ``features.pipeline.build_features`` output (``deal_id``, ``as_of``, then
    the registry's features). Returns ``deal_id``, ``as_of``, ``amount`` and the columns of
    ``explain_frame``, same index. Probabilities come from ``features.scoring`` (calibrated);
    contributions from the win booster on the same encoded matrix.
    """
    from features.scoring import encode_bundle_matrix, predict_matrix_probabilities

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
