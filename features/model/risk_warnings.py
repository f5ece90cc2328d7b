"""Rule-based warnings on a deal's features (no activity, ghosted, single-threaded, ...) and their messages."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.model.grades import WarningThresholds
from features.pointintime.events import column_array, text_values

# --- warnings --------------------------------------------------------------------------------

WARNING_CODES: tuple[str, ...] = (
    "no_activity",
    "ghosted",
    "single_threaded",
    "no_decision_maker",
    "stalled_in_stage",
    "close_date_pushed",
    "close_date_passed",
)


class FeatureCells:
    """A feature frame's columns, each read from the frame once per call (as floats, or as cells).

    One explanation reads the same few columns for rules, warning messages and sentences; a
    one-deal request would otherwise pay pandas' cost of a Series per read.
    """

    def __init__(self, frame: pd.DataFrame):
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
                out = [np.nan if v is None else v for v in text_values(values)]  # "str" holds NaN for missing
            else:
                out = pd.Series(values, copy=False).to_numpy(dtype=object).tolist()
            self._cells[name] = out
        return out


_STR_DTYPE = pd.StringDtype(na_value=np.nan)


def feature_column(features, name: str) -> np.ndarray:
    """A numeric column as a float array, or all-NaN when the feature is missing."""
    return FeatureCells.of(features).floats(name)


# Features the warning messages quote.
WARNING_COLUMNS: tuple[str, ...] = (
    "current_stage", "days_in_stage", "days_in_stage_vs_won", "days_since_last_activity", "days_since_last_inbound",
    "activities_30d", "contacts_engaged", "top_contact_share", "close_date_pushes", "days_to_expected_close",
)


def flag_warnings(features: pd.DataFrame, thresholds: WarningThresholds = WarningThresholds()) -> pd.DataFrame:
    """Boolean frame, one column per warning code, one row per deal (same index as ``features``).

    A rule whose input features are missing (the table was absent from the request or export)
    does not fire: missing is not zero.

    >>> f = pd.DataFrame({"days_since_last_activity": [20.0, 2.0], "close_date_pushes": [3, 0]})
    >>> flag_warnings(f)[["no_activity", "close_date_pushed"]].to_numpy().tolist()
    [[True, True], [False, False]]
    """
    return pd.DataFrame(flag_arrays(features, thresholds), index=features.index)


def flag_arrays(features, thresholds: WarningThresholds) -> dict[str, np.ndarray]:
    """``flag_warnings`` as a dict of boolean arrays (no frame: cheap for one-deal requests)."""
    t = thresholds
    features = FeatureCells.of(features)
    age = feature_column(features, "deal_age_days")
    activities_30d = feature_column(features, "activities_30d")  # NaN: no activity log
    has_log = ~np.isnan(activities_30d)
    last_activity = feature_column(features, "days_since_last_activity")
    last_inbound = feature_column(features, "days_since_last_inbound")
    engaged = feature_column(features, "contacts_engaged")
    top_share = feature_column(features, "top_contact_share")
    dm_flag = feature_column(features, "decision_maker_engaged_30d")  # NaN: no contact or activity data
    dm_days = feature_column(features, "days_since_decision_maker_engaged")
    eb_days = feature_column(features, "days_since_economic_buyer_engaged")
    ratio = feature_column(features, "days_in_stage_vs_won")
    pushes = feature_column(features, "close_date_pushes")
    to_close = feature_column(features, "days_to_expected_close")  # negative: the date has passed

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
            # A stale expected close date is a warning, not a risk level (ExplainConfig says why).
            "close_date_passed": to_close < -t.close_date_overdue_days,
        }


def describe_warnings(
    flags: pd.DataFrame, features: pd.DataFrame, thresholds: WarningThresholds = WarningThresholds()
) -> list[list[dict]]:
    """Turn warning flags into ``[{"code", "message"}, ...]`` per deal (only the rules that fired).

    >>> f = pd.DataFrame({"close_date_pushes": [3.0]})
    >>> describe_warnings(flag_warnings(f), f)
    [[{'code': 'close_date_pushed', 'message': 'Close date pushed 3 times'}]]
    """
    return describe_fired(flags.to_numpy(dtype=bool), list(flags.columns), features, thresholds)


def describe_fired(fired: np.ndarray, codes: list[str], features, thresholds: WarningThresholds):
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
    if code == "close_date_passed":
        return [f"Expected close date passed {-days:.0f} days ago" if days <= -1 else "Expected close date passed today"
                for days in numbers("days_to_expected_close")]
    return [f"Close date pushed {pushes:.0f} times" for pushes in numbers("close_date_pushes")]


