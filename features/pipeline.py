"""Point-in-time features: ``build_features(export, points, state)`` for training and serving alike.

Every event table is sorted once by (deal, time) with running sums; each point's features are
then read off with binary searches (``np.searchsorted``) at ``as_of`` and at ``as_of - window``.
No per-deal Python loop: the cost is O((events + points) log events) for any number of deals, and
the same code on a one-deal export is the serving path. See docs/features.md for the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks

from features.registry import (
    CATEGORICAL_FEATURES,
    ENGAGED_WINDOW_DAYS,
    FEATURE_NAMES,
    SHORT_WINDOW_DAYS,
    TREND_WINDOW_DAYS,
    WIN_RATE_PRIOR_DEALS,
)
from features.schema import (
    ACTIVITY_TYPES,
    OPEN_STAGES,
    ROLES,
    SENIORITY_LEVEL,
    STAGES,
    TIMESTAMP_DTYPE,
    Export,
)
from features.state import FeatureState

DAY_US = 86_400_000_000  # microseconds per day
_STR_DTYPE = pd.StringDtype(na_value=np.nan)  # the contract's "str" dtype
_NAT = np.iinfo(np.int64).min  # NaT in int64 microseconds
_STAGE_NAMES = pd.array(list(STAGES) + [None], dtype=_STR_DTYPE)  # stage code -> name; the last: missing
ENGAGED_ROLES: tuple[str, ...] = ("decision_maker", "economic_buyer", "champion")
SHARE_ROLES: tuple[str, ...] = ("decision_maker", "economic_buyer")  # roles with an activity-share feature
_OPEN_CODES = np.array([i for i, s in enumerate(STAGES) if s in OPEN_STAGES])


class FeatureInputError(ValueError):
    """The points asked for cannot be computed from the export (unknown deal, bad as_of)."""


# --------------------------------------------------------------------------------------------
# Sorted event index: the one vectorised primitive
# --------------------------------------------------------------------------------------------


class EventIndex:
    """Events sorted by (entity code, time, file order) with running sums, for as-of look-ups.

    ``locate(codes, times)`` returns, for each query, the slice ``[start, stop)`` of the sorted
    events of that entity at or before that time: ``stop - start`` events, ``stop - 1`` the last.

    >>> index = EventIndex(np.array([0, 0, 1]), np.array([10, 20, 5]), {"one": np.ones(3)})
    >>> start, stop = index.locate(np.array([0, 0, 1]), np.array([15, 20, 4]))
    >>> (stop - start).tolist(), index.window_sum("one", stop, start).tolist()
    ([1, 2, 0], [1.0, 2.0, 0.0])
    """

    def __init__(self, codes: np.ndarray, times: np.ndarray, values: dict[str, np.ndarray] | None = None):
        order = np.lexsort((np.arange(len(codes)), times, codes))
        self.order = order
        self.codes = codes[order]
        self.times = times[order]
        self.unique_times = np.unique(self.times)
        self.stride = np.int64(len(self.unique_times) + 1)
        rank = np.searchsorted(self.unique_times, self.times)
        self.keys = self.codes.astype(np.int64) * self.stride + rank + 1
        self.cums: dict[str, np.ndarray] = {}
        if values:
            # One 2-D cumulative sum for all columns: far fewer numpy calls than one per column.
            matrix = np.empty((len(order) + 1, len(values)))
            matrix[0] = 0.0
            for j, value in enumerate(values.values()):
                matrix[1:, j] = np.asarray(value, dtype=float)[order]
            np.nan_to_num(matrix, copy=False, nan=0.0)
            np.cumsum(matrix, axis=0, out=matrix)
            self.cums = {name: matrix[:, j] for j, name in enumerate(values)}

    def __len__(self) -> int:
        return len(self.codes)

    def add_running_sum(self, name: str, sorted_values: np.ndarray) -> None:
        """Store the running sum of values already in sorted order (NaN counts as 0)."""
        self.cums[name] = np.concatenate(([0.0], np.cumsum(np.nan_to_num(sorted_values, nan=0.0))))

    def stop(self, codes: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Sorted position just past the entity's last event at or before each time."""
        rank = np.searchsorted(self.unique_times, times, side="right")
        return np.searchsorted(self.keys, codes * self.stride + rank, side="right")

    def start(self, codes: np.ndarray) -> np.ndarray:
        """Sorted position of each entity's first event."""
        return np.searchsorted(self.keys, codes * self.stride, side="right")

    def end(self, codes: np.ndarray) -> np.ndarray:
        """Sorted position just past each entity's last event (at any time)."""
        return np.searchsorted(self.keys, (codes + 1) * self.stride, side="left")

    def locate(self, codes: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.start(codes), self.stop(codes, times)

    def window_sum(self, name: str, stop: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Sum of ``name`` over sorted events in ``[start, stop)``."""
        cum = self.cums[name]
        return cum[stop] - cum[start]

    def last_value(self, sorted_values: np.ndarray, start: np.ndarray, stop: np.ndarray, fill=np.nan) -> np.ndarray:
        """``sorted_values`` at the last event in ``[start, stop)``; ``fill`` where it is empty."""
        has = stop > start
        out = np.full(len(stop), fill, dtype=np.result_type(sorted_values.dtype, np.asarray(fill).dtype))
        out[has] = sorted_values[stop[has] - 1]
        return out


def forward_fill_last(mask: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """For each sorted row, the position of the latest row of the same entity where ``mask`` holds (-1 if none).

    >>> forward_fill_last(np.array([True, False, False, True]), np.array([0, 0, 1, 1])).tolist()
    [0, 0, -1, 3]
    """
    position = np.where(mask, np.arange(len(mask)), -1)
    position = np.maximum.accumulate(position) if len(position) else position
    same = position >= 0
    same[same] = codes[position[same]] == codes[same]
    return np.where(same, position, -1)


def group_cumcount(*keys: np.ndarray) -> np.ndarray:
    """0-based running count of each row within its group of equal ``keys`` (rows in given order).

    >>> group_cumcount(np.array([0, 0, 0, 1]), np.array([5, 6, 5, 5])).tolist()
    [0, 0, 1, 0]
    """
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n),) + tuple(reversed(keys)))
    new_group = np.zeros(n, dtype=bool)
    new_group[0] = True
    for key in keys:
        k = key[order]
        new_group[1:] |= k[1:] != k[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    counts = np.empty(n, dtype=np.int64)
    counts[order] = np.arange(n) - group_start
    return counts


def to_micros(values) -> np.ndarray:
    """UTC timestamps (Series, Index or array) as int64 microseconds since the epoch (NaT: int64 min)."""
    array = values.array if isinstance(values, (pd.Series, pd.Index)) else values
    if isinstance(array, pd.arrays.DatetimeArray) and array.tz is not None:
        return (array if array.unit == "us" else array.as_unit("us")).asi8  # fast path: contract dtype
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        index = index.tz_localize("UTC")
    return index.as_unit("us").asi8


SMALL_COLUMN = 256  # rows up to which a per-cell dict look-up is cheaper than one factorize


class Codebook:
    """Encodes values as their position in a fixed list (-1 for missing or unknown values).

    One ``factorize`` of the column, then a lookup of its few distinct values: cheap for a
    one-deal request and for a whole export alike.

    >>> Codebook(["call", "email"]).encode(pd.Series(["email", None, "fax", "email"])).tolist()
    [1, -1, -1, 1]
    """

    def __init__(self, values):
        self.values = values
        self._positions: dict | None = None
        self._index: pd.Index | None = None

    def encode(self, values) -> np.ndarray:
        if len(values) <= SMALL_COLUMN and (self._positions is not None or len(self.values) <= 4096):
            # A request's few rows: a dict look-up per cell beats factorize's fixed cost.
            positions = self._lookup()
            return np.fromiter((positions.get(v, -1) for v in text_values(values)), dtype=np.int64, count=len(values))
        if isinstance(values, pd.Series):
            array = values.array
        elif isinstance(values, pd.api.extensions.ExtensionArray):
            array = values
        else:
            array = pd.array(np.asarray(values, dtype=object))
        codes, uniques = array.factorize()
        if len(uniques) <= 64 and len(self.values) <= 4096:
            positions = self._lookup()
            lookup = np.fromiter((positions.get(u, -1) for u in uniques), dtype=np.int64, count=len(uniques))
        else:
            if self._index is None:
                self._index = pd.Index(self.values)
            lookup = self._index.get_indexer(uniques).astype(np.int64)
        return np.append(lookup, -1)[codes]  # factorize gives -1 for missing: the appended -1

    def _lookup(self) -> dict:
        if self._positions is None:
            self._positions = {v: i for i, v in enumerate(self.values)}
        return self._positions


def factorize_values(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes (first-appearance order, -1 for missing) and distinct values of a column.

    ``factorize`` for long columns; a dict pass for a request's few rows (same codes).

    >>> codes, uniques = factorize_values(pd.Series(["b", None, "a", "b"], dtype="str"))
    >>> codes.tolist(), uniques.tolist()
    ([0, -1, 1, 0], ['b', 'a'])
    """
    if len(values) > SMALL_COLUMN:
        codes, uniques = pd.array(values).factorize()
        return np.asarray(codes, dtype=np.int64), np.asarray(uniques, dtype=object)
    cells = text_values(values)
    seen: dict = {}
    codes = np.fromiter((-1 if v is None or v is pd.NA or v != v else seen.setdefault(v, len(seen)) for v in cells),
                        dtype=np.int64, count=len(cells))
    uniques = np.empty(len(seen), dtype=object)
    uniques[:] = list(seen)
    return codes, uniques


STAGE_CODES = Codebook(STAGES)
ROLE_CODES = Codebook(ROLES)
SENIORITY_CODES = Codebook(tuple(SENIORITY_LEVEL))
TYPE_CODES = Codebook(ACTIVITY_TYPES)
DIRECTION_CODES = Codebook(("outbound", "inbound"))
FIELD_CODES = Codebook(("expected_close_date", "amount"))


def _as_float(values) -> np.ndarray:
    """A numeric or boolean column or array (nullable) as float64 with NaN for missing."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(float)
    try:
        return values.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError, AttributeError):
        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _days(delta_us: np.ndarray) -> np.ndarray:
    return delta_us.astype(float) / DAY_US


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Points:
    """Validated points: deal row position in ``export.deals`` and as_of in microseconds."""

    deal_id: pd.api.extensions.ExtensionArray  # "str", in the caller's order
    as_of_stamps: pd.api.extensions.ExtensionArray  # TIMESTAMP_DTYPE, in the caller's order
    deal_row: np.ndarray
    as_of: np.ndarray
    deals: Codebook  # deal_id -> row of export.deals
    # Columns read during one build, keyed by (id(table), column, how): each frame column is read
    # (and each id column encoded) once, however many families use it.
    reads: dict = field(default_factory=dict, compare=False, repr=False)

    def read(self, table: pd.DataFrame, column: str, how: str = "array", convert=None):
        """``table[column].array`` (or ``convert`` of it, cached under ``how``), read once per build."""
        key = (id(table), column, how)
        hit = self.reads.get(key)
        if hit is not None and hit[0] is table:
            return hit[1]
        if how == "array":
            value = column_array(table, column, self.read(table, "", "names", lambda _: None))
        elif how == "names":
            value = text_values(table.columns)
        else:
            value = convert(self.read(table, column))
        self.reads[key] = (table, value)
        return value

    def micros(self, table: pd.DataFrame, column: str) -> np.ndarray:
        """A timestamp column as int64 microseconds (``to_micros``), read once per build."""
        return self.read(table, column, "micros", to_micros)

    def codes(self, table: pd.DataFrame, column: str, codebook: "Codebook") -> np.ndarray:
        """A column encoded with ``codebook``, read once per build."""
        return self.read(table, column, id(codebook), codebook.encode)


def prepare_points(export: Export, points: pd.DataFrame) -> Points:
    """Check points against the export; raises FeatureInputError naming the bad row."""
    names = text_values(points.columns)
    missing = [c for c in ("deal_id", "as_of") if c not in names]
    if missing:
        raise FeatureInputError(f"points: missing column(s) {missing}; expected deal_id, as_of")
    try:
        as_of = column_array(points, "as_of", names)
        if str(as_of.dtype) != TIMESTAMP_DTYPE:
            as_of = pd.to_datetime(pd.Series(as_of), utc=True).astype(TIMESTAMP_DTYPE).array
    except (ValueError, TypeError) as exc:
        raise FeatureInputError(f"points: column as_of: not a UTC timestamp ({exc})") from exc
    as_of_us = to_micros(as_of)
    if (as_of_us == _NAT).any():
        row = int(np.flatnonzero(as_of_us == _NAT)[0])
        raise FeatureInputError(f"points: row {row}, column as_of: missing timestamp")
    deal_ids = _as_str(column_array(points, "deal_id", names))
    deals = Codebook(text_values(column_array(export.deals, "deal_id")))
    deal_row = deals.encode(deal_ids)
    if (deal_row < 0).any():
        row = int(np.flatnonzero(deal_row < 0)[0])
        raise FeatureInputError(f"points: row {row}, column deal_id: deal {deal_ids[row]!r} is not in deals")
    return _checked_points(export, deal_ids, deals, deal_row, as_of, as_of_us)


def prepare_deals_as_of(export: Export, as_of) -> Points:
    """Points for every deal of the export, in its row order, at one ``as_of`` (a scoring request).

    What ``prepare_points`` gives for ``deal_id = export.deals["deal_id"]`` and that as_of,
    without a points frame to build and read back.
    """
    stamp = parse_as_of(as_of).as_unit("us")
    n = len(export.deals)
    as_of_stamps = pd.array(np.full(n, stamp.asm8), dtype=TIMESTAMP_DTYPE)
    deal_ids = _as_str(column_array(export.deals, "deal_id"))
    deals = Codebook(text_values(deal_ids))
    return _checked_points(export, deal_ids, deals, np.arange(n), as_of_stamps, to_micros(as_of_stamps))


def _as_str(values) -> pd.api.extensions.ExtensionArray:
    """Deal ids as a "str" array (as ``Series.astype(str)``)."""
    return values if values.dtype == _STR_DTYPE else pd.Series(values, copy=False).astype(str).array


def _checked_points(export: Export, deal_ids, deals: Codebook, deal_row, as_of, as_of_us) -> Points:
    """Points once no as_of is before its deal's creation; FeatureInputError naming the first such row."""
    created_at = to_micros(column_array(export.deals, "created_at"))
    created = created_at[deal_row]
    early = as_of_us < created
    if early.any():
        row = int(np.flatnonzero(early)[0])
        raise FeatureInputError(
            f"points: row {row}, column as_of: {as_of[row]} is before deal {deal_ids[row]!r} was created"
        )
    return Points(deal_id=deal_ids, as_of_stamps=as_of, deal_row=deal_row, as_of=as_of_us,
                  deals=deals, reads={(id(export.deals), "created_at", "micros"): (export.deals, created_at)})


def column_array(frame: pd.DataFrame, column: str, names: list | None = None):
    """``frame[column].array`` without building a Series (numpy array or extension array).

    ``names``: ``text_values(frame.columns)`` when the caller has it. A request's tables are new
    frames of few rows: a Series per column, and the hash table pandas builds over a new frame's
    column names, would be most of the cost of reading them.

    >>> column_array(pd.DataFrame({"a": [1.0], "b": ["x"]}), "a")
    array([1.])
    """
    get_array = getattr(frame, "_get_column_array", None)  # private pandas, guarded: public fallback
    names = text_values(frame.columns) if names is None else names
    if get_array is None or names.count(column) != 1:
        return frame[column].array
    return get_array(names.index(column))


def text_values(values) -> list:
    """Cells of a text array (or Series) as a list of Python objects; missing: None or NaN.

    >>> text_values(pd.array(["a", None], dtype="str"))
    ['a', None]
    """
    if isinstance(values, (pd.Series, pd.Index)):
        values = values.array
    to_arrow = getattr(values, "__arrow_array__", None)
    if to_arrow is not None:  # arrow-backed "str": far cheaper than an object ndarray
        return to_arrow().to_pylist()
    return np.asarray(values, dtype=object).tolist()


def _deal_codes(pts: Points, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Deal row position of each event, and the mask of events whose deal is in ``deals``."""
    codes = pts.codes(table, "deal_id", pts.deals)
    return codes, codes >= 0


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan)


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


def compute_stage_features(export: Export, pts: Points, state: FeatureState) -> dict[str, np.ndarray]:
    """Stage as of as_of, time in it (absolute and vs won deals), stage changes and back-steps."""
    n = len(pts.as_of)
    created = pts.micros(export.deals, "created_at")[pts.deal_row]
    out: dict[str, np.ndarray] = {"deal_age_days": _days(pts.as_of - created)}
    history = export.stage_history
    if history is None:
        out.update({k: _nan(n) for k in ("days_in_stage", "days_in_stage_vs_won", "stage_changes", "stage_back_steps")})
        out["current_stage"] = _STAGE_NAMES.take(np.full(n, len(STAGES), dtype=np.int64))
        return out
    codes, known = _deal_codes(pts, history)
    stage = pts.codes(history, "stage", STAGE_CODES).astype(float)
    index = EventIndex(codes[known], pts.micros(history, "entered_at")[known])
    stage_sorted = stage[known][index.order]
    is_open = np.isin(stage_sorted, _OPEN_CODES)
    back = np.zeros(len(index), dtype=float)
    if len(index) > 1:
        same_deal = index.codes[1:] == index.codes[:-1]
        back[1:] = same_deal & is_open[1:] & is_open[:-1] & (stage_sorted[1:] < stage_sorted[:-1])
    index.add_running_sum("back", back)
    start, stop = index.locate(pts.deal_row, pts.as_of)
    count = (stop - start).astype(float)
    current = index.last_value(stage_sorted, start, stop)
    entered = index.last_value(index.times.astype(float), start, stop)
    days_in_stage = (pts.as_of - entered) / DAY_US
    current_name = _STAGE_NAMES.take(np.nan_to_num(current, nan=len(STAGES)).astype(np.int64))
    typical = np.array([state.won_stage_days.get(s, np.nan) for s in STAGES] + [np.nan])
    typical_days = typical[np.nan_to_num(current, nan=len(STAGES)).astype(int)]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(typical_days > 0, days_in_stage / typical_days, np.nan)
    out.update(
        current_stage=current_name,
        days_in_stage=days_in_stage,
        days_in_stage_vs_won=ratio,
        stage_changes=np.maximum(count - 1, 0),
        stage_back_steps=index.window_sum("back", stop, start),
    )
    return out


def _parse_field_values(old: np.ndarray, new: np.ndarray, field: str) -> tuple[np.ndarray, np.ndarray]:
    """old_value/new_value text as floats: microseconds for expected_close_date, the number for amount."""
    text = np.concatenate([old, new]).astype(object, copy=False)  # arrays, not a Series: no index to build
    if field == "amount":
        values = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=float)
    else:
        values = _parse_iso_micros(text)
    return values[: len(old)], values[len(old):]


def _parse_iso_micros(text: np.ndarray) -> np.ndarray:
    """ISO dates/timestamps (UTC; trailing Z allowed) as float microseconds, NaN when missing or unparseable.

    numpy parses plain ISO text without pandas' per-call overhead; anything else (offsets, odd
    formats) goes through pandas.

    >>> _parse_iso_micros(np.array(["1970-01-02", "1970-01-01T00:00:01Z", None], dtype=object)).tolist()
    [86400000000.0, 1000000.0, nan]
    """
    present = pd.notna(text)
    out = np.full(len(text), np.nan)
    if not present.any():
        return out
    plain = np.char.rstrip(text[present].astype(str), "Z")
    # Only offset-free text: no "+hh:mm" and no "-hh:mm" beyond the two dashes of the date.
    if (np.char.find(plain, "+") < 0).all() and (np.char.count(plain, "-") == 2).all():
        try:
            out[present] = plain.astype("datetime64[us]").astype(np.int64).astype(float)
            return out
        except ValueError:
            pass
    stamps = pd.to_datetime(pd.Series(text, dtype=object), utc=True, errors="coerce", format="ISO8601")
    return np.where(stamps.isna().to_numpy(), np.nan, to_micros(stamps.astype(TIMESTAMP_DTYPE)).astype(float))


def extract_field_changes(pts: Points, history: pd.DataFrame) -> dict[str, tuple[np.ndarray, ...]]:
    """Per tracked field: (deal code, changed_at, old, new) of its changes, values parsed to floats."""
    codes, known = _deal_codes(pts, history)
    field = pts.codes(history, "field", FIELD_CODES)
    old_text = np.array(text_values(pts.read(history, "old_value")), dtype=object)
    new_text = np.array(text_values(pts.read(history, "new_value")), dtype=object)
    changed_at = pts.micros(history, "changed_at")
    out = {}
    for i, name in enumerate(FIELD_CODES.values):
        rows = known & (field == i)
        old, new = _parse_field_values(old_text[rows], new_text[rows], name)
        out[name] = (codes[rows], changed_at[rows], old, new)
    return out


def reconstruct_field(
    export: Export, pts: Points, field: str, changes: dict[str, tuple[np.ndarray, ...]] | None = None
) -> dict[str, np.ndarray]:
    """A tracked deal field as of each point, from field_history.

    Value: the last change at or before as_of (its new_value); else the first later change's
    old_value; else the deals row (the field never changed). Without field_history: NaN.
    Also returns ``initial`` (value at creation), for expected_close_date push counts, and for
    amount ``largest_cut``: the smallest new/old ratio of one change so far, capped at 1 (1: never cut).
    """
    n = len(pts.as_of)
    history = export.field_history
    if history is None:
        return {"value": _nan(n), "initial": _nan(n), "pushes": _nan(n), "days_pushed": _nan(n), "largest_cut": _nan(n)}
    if changes is None:
        changes = extract_field_changes(pts, history)
    codes, changed_at, old, new = changes[field]
    index = EventIndex(codes, changed_at)
    old_sorted, new_sorted = old[index.order], new[index.order]
    start, stop = index.locate(pts.deal_row, pts.as_of)
    end = index.end(pts.deal_row)
    if field == "amount":
        current = _as_float(pts.read(export.deals, "amount"))[pts.deal_row]
    else:
        current_us = pts.micros(export.deals, "expected_close_date")
        current = np.where(current_us == _NAT, np.nan, current_us.astype(float))[pts.deal_row]
    has_any = end > start
    first_old = np.where(has_any, old_sorted[np.minimum(start, max(len(index) - 1, 0))] if len(index) else np.nan, np.nan)
    value = np.where(stop > start, index.last_value(new_sorted, start, stop), np.where(has_any, first_old, current))
    initial = np.where(has_any, first_old, current)
    out = {"value": value, "initial": initial}
    if field == "expected_close_date":
        moved_days = (new_sorted - old_sorted) / DAY_US
        with np.errstate(invalid="ignore"):
            pushed = moved_days > 0
        index.add_running_sum("pushes", pushed.astype(float))
        index.add_running_sum("days_pushed", np.where(pushed, moved_days, 0.0))
        out["pushes"] = index.window_sum("pushes", stop, start)
        out["days_pushed"] = index.window_sum("days_pushed", stop, start)
    else:
        out["largest_cut"] = index.last_value(running_min_ratio(old_sorted, new_sorted, index.codes), start, stop, fill=1.0)
    return out


def running_min_ratio(old: np.ndarray, new: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per sorted change, the smallest ``new / old`` of its entity so far, in [0, 1].

    Ratios above 1 (increases) and unusable values (old not positive, NaN) count as 1.

    >>> running_min_ratio(np.array([10., 8., 9., 5.]), np.array([8., 9., 4.5, 6.]), np.array([0, 0, 0, 1])).tolist()
    [0.8, 0.8, 0.5, 1.0]
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(old > 0, new / old, np.nan)
    ratio = np.clip(np.nan_to_num(ratio, nan=1.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    # Entities are sorted ascending; shifting each one 2 lower than the previous (values lie in
    # [0, 1]) makes one running minimum restart at every entity.
    offset = 2.0 * codes.astype(float)
    return np.minimum.accumulate(ratio - offset) + offset if len(ratio) else ratio


def compute_field_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Days to expected close, close-date pushes, amount as known at as_of and its largest single cut."""
    changes = None if export.field_history is None else extract_field_changes(pts, export.field_history)
    close = reconstruct_field(export, pts, "expected_close_date", changes)
    amount = reconstruct_field(export, pts, "amount", changes)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(amount["initial"] > 0, amount["value"] / amount["initial"], np.nan)
    return {
        "days_to_expected_close": (close["value"] - pts.as_of) / DAY_US,
        "close_date_pushes": close["pushes"],
        "close_date_days_pushed": close["days_pushed"],
        "amount_change_ratio": ratio,
        "largest_amount_cut": amount["largest_cut"],
        "amount": amount["value"],
    }


def compute_contact_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Contacts on the deal and distinct roles present, counting contacts from their added_at."""
    n = len(pts.as_of)
    contacts = export.contacts
    if contacts is None:
        return {"contacts_count": _nan(n), "roles_present": _nan(n)}
    codes, known = _deal_codes(pts, contacts)
    role = pts.codes(contacts, "role", ROLE_CODES)[known]
    index = EventIndex(codes[known], pts.micros(contacts, "added_at")[known], {r: role == i for i, r in enumerate(ROLES)})
    start, stop = index.locate(pts.deal_row, pts.as_of)
    roles_present = sum((index.window_sum(r, stop, start) > 0).astype(float) for r in ROLES)
    return {"contacts_count": (stop - start).astype(float), "roles_present": roles_present}


def compute_activity_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Activity counts by window and type, inbound share and recency, trend, call metrics, threading."""
    n = len(pts.as_of)
    activities = export.activities
    names = [f"activities_{SHORT_WINDOW_DAYS}d", f"activities_{ENGAGED_WINDOW_DAYS}d"]
    names += [f"{t}s_{d}d" for d in (SHORT_WINDOW_DAYS, ENGAGED_WINDOW_DAYS) for t in ACTIVITY_TYPES]
    names += ["inbound_share", "days_since_last_activity", "days_since_last_inbound", "activity_trend_14d",
              "meetings_held", "mean_customer_talk_ratio", "next_step_rate", "contacts_engaged", "top_contact_share"]
    if activities is None:
        return {name: _nan(n) for name in names}
    codes, known = _deal_codes(pts, activities)
    kind = pts.codes(activities, "type", TYPE_CODES)[known]
    inbound = (pts.codes(activities, "direction", DIRECTION_CODES)[known] == 1).astype(float)
    values = {t: kind == i for i, t in enumerate(ACTIVITY_TYPES)} | {"inbound": inbound}
    for metric in ("customer_talk_ratio", "next_step_set"):
        if metric in activities.columns:
            metric_values = _as_float(pts.read(activities, metric))[known]
            values[metric] = metric_values
            values[f"{metric}_n"] = ~np.isnan(metric_values)
    index = EventIndex(codes[known], pts.micros(activities, "occurred_at")[known], values)
    start, stop = index.locate(pts.deal_row, pts.as_of)

    def window(days: int) -> np.ndarray:
        return index.stop(pts.deal_row, pts.as_of - days * DAY_US)

    total = (stop - start).astype(float)
    out: dict[str, np.ndarray] = {}
    for days in (SHORT_WINDOW_DAYS, ENGAGED_WINDOW_DAYS):
        lo = window(days)
        out[f"activities_{days}d"] = (stop - lo).astype(float)
        for t in ACTIVITY_TYPES:
            out[f"{t}s_{days}d"] = index.window_sum(t, stop, lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["inbound_share"] = np.where(total > 0, index.window_sum("inbound", stop, start) / total, np.nan)
        last_time = index.last_value(index.times.astype(float), start, stop)
        out["days_since_last_activity"] = (pts.as_of - last_time) / DAY_US
        last_inbound = forward_fill_last(np.asarray(values["inbound"], dtype=bool)[index.order], index.codes)
        inbound_pos = index.last_value(last_inbound, start, stop, fill=-1)
        inbound_time = np.where(inbound_pos >= 0, index.times[np.maximum(inbound_pos, 0)], np.nan) if len(index) else _nan(n)
        out["days_since_last_inbound"] = (pts.as_of - inbound_time) / DAY_US
        recent = (stop - window(TREND_WINDOW_DAYS)).astype(float)
        before = (window(TREND_WINDOW_DAYS) - window(2 * TREND_WINDOW_DAYS)).astype(float)
        out["activity_trend_14d"] = np.where(recent + before > 0, (recent - before) / (recent + before), 0.0)
        out["meetings_held"] = index.window_sum("meeting", stop, start)
        for metric, name in (("customer_talk_ratio", "mean_customer_talk_ratio"), ("next_step_set", "next_step_rate")):
            if metric in values:
                counted = index.window_sum(f"{metric}_n", stop, start)
                out[name] = np.where(counted > 0, index.window_sum(metric, stop, start) / counted, np.nan)
            else:
                out[name] = _nan(n)
    out |= _threading_features(pts, activities, known, index, start, stop)
    return {name: out[name] for name in names}


def _threading_features(pts: Points, activities: pd.DataFrame, known: np.ndarray, index: EventIndex, start, stop) -> dict:
    """Distinct contacts engaged so far and the share of contact activities on the top contact."""
    contact_code = pts.read(activities, "contact_id", "factorized", factorize_values)[0][known][index.order]
    has_contact = contact_code >= 0
    running = group_cumcount(index.codes, contact_code) + 1
    running = np.where(has_contact, running, 0)
    index.add_running_sum("with_contact", has_contact.astype(float))
    index.add_running_sum("new_contact", (has_contact & (running == 1)).astype(float))
    # Running max per deal: deals are sorted ascending, so offsetting by deal code resets the max.
    offset = index.codes.astype(np.int64) * (len(index) + 1)
    top = (np.maximum.accumulate(running + offset) - offset) if len(index) else running
    top_count = index.last_value(top.astype(float), start, stop, fill=0.0)
    with_contact = index.window_sum("with_contact", stop, start)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(with_contact > 0, top_count / with_contact, np.nan)
    return {"contacts_engaged": index.window_sum("new_contact", stop, start), "top_contact_share": share}


def match_contacts(pts: Points, contacts: pd.DataFrame, activities: pd.DataFrame, activity_deal: np.ndarray) -> np.ndarray:
    """Row of ``contacts`` for each activity's (deal_id, contact_id); -1 where there is none."""
    if not len(contacts):
        return np.full(len(activities), -1, dtype=np.int64)
    contact_deal = pts.codes(contacts, "deal_id", pts.deals)
    contact_code, contact_ids = pts.read(contacts, "contact_id", "factorized", factorize_values)
    activity_code = Codebook(contact_ids).encode(pts.read(activities, "contact_id"))
    width = np.int64(len(contact_ids) + 1)
    contact_key = contact_deal.astype(np.int64) * width + contact_code
    activity_key = activity_deal.astype(np.int64) * width + activity_code
    order = np.argsort(contact_key, kind="stable")
    position = np.minimum(np.searchsorted(contact_key[order], activity_key), len(contacts) - 1)
    found = (contact_key[order][position] == activity_key) & (activity_code >= 0) & (activity_deal >= 0)
    return np.where(found, order[position], -1)


def compute_role_engagement_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Roles and seniority engaged in the last 30 days; decision maker / economic buyer / champion recency.

    An activity engages its contact's role from the later of its time and the contact's added_at.
    The decision maker's and economic buyer's shares of the 30-day window count these activities
    (those with a contact of the deal): NaN when the window holds none.
    """
    n = len(pts.as_of)
    names = ["roles_engaged_30d", "max_seniority_engaged_30d"]
    names += [name for r in ENGAGED_ROLES for name in (f"{r}_engaged_30d", f"days_since_{r}_engaged")]
    names += [f"{r}_activity_share_{ENGAGED_WINDOW_DAYS}d" for r in SHARE_ROLES]
    names += [f"decision_maker_meetings_{ENGAGED_WINDOW_DAYS}d"]
    activities, contacts = export.activities, export.contacts
    if activities is None or contacts is None:
        return {name: _nan(n) for name in names}
    codes, known = _deal_codes(pts, activities)
    matched = match_contacts(pts, contacts, activities, codes)
    keep = known & (matched >= 0)
    contact_row = matched[keep]
    role = pts.codes(contacts, "role", ROLE_CODES)[contact_row]
    level = (pts.codes(contacts, "seniority", SENIORITY_CODES) + 1)[contact_row]  # 0: unknown seniority
    effective = np.maximum(pts.micros(activities, "occurred_at")[keep], pts.micros(contacts, "added_at")[contact_row])
    values = {r: role == i for i, r in enumerate(ROLES)} | {f"level_{v}": level == v for v in SENIORITY_LEVEL.values()}
    meeting = pts.codes(activities, "type", TYPE_CODES)[keep] == ACTIVITY_TYPES.index("meeting")
    values["decision_maker_meeting"] = meeting & (role == ROLES.index("decision_maker"))
    index = EventIndex(codes[keep], effective, values)
    start, stop = index.locate(pts.deal_row, pts.as_of)
    lo = index.stop(pts.deal_row, pts.as_of - ENGAGED_WINDOW_DAYS * DAY_US)
    out: dict[str, np.ndarray] = {}
    out["roles_engaged_30d"] = sum((index.window_sum(r, stop, lo) > 0).astype(float) for r in ROLES)
    max_level = np.zeros(n)
    for v in SENIORITY_LEVEL.values():
        max_level = np.where(index.window_sum(f"level_{v}", stop, lo) > 0, float(v), max_level)
    out["max_seniority_engaged_30d"] = max_level
    role_sorted = role[index.order]
    for r in ENGAGED_ROLES:
        out[f"{r}_engaged_30d"] = (index.window_sum(r, stop, lo) > 0).astype(float)
        last = index.last_value(forward_fill_last(role_sorted == ROLES.index(r), index.codes), start, stop, fill=-1)
        last_time = np.where(last >= 0, index.times[np.maximum(last, 0)], np.nan) if len(index) else _nan(n)
        out[f"days_since_{r}_engaged"] = (pts.as_of - last_time) / DAY_US
    in_window = (stop - lo).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r in SHARE_ROLES:
            out[f"{r}_activity_share_{ENGAGED_WINDOW_DAYS}d"] = np.where(in_window > 0, index.window_sum(r, stop, lo) / in_window, np.nan)
    out[f"decision_maker_meetings_{ENGAGED_WINDOW_DAYS}d"] = index.window_sum("decision_maker_meeting", stop, lo)
    return {name: out[name] for name in names}


_WIN_HISTORY_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def _win_history(state: FeatureState) -> dict:
    """Closed-deal history of the state, indexed by owner, by account and overall (cached per state).

    Serving applies one state to many requests; building the index once keeps one-deal calls cheap.
    """
    cached = _WIN_HISTORY_CACHE.get(id(state))
    if cached is not None and cached[0]() is state:
        return cached[1]
    built = _index_win_history(state)
    _WIN_HISTORY_CACHE[id(state)] = (weakref.ref(state, lambda _, key=id(state): _WIN_HISTORY_CACHE.pop(key, None)), built)
    return built


def _index_win_history(state: FeatureState) -> dict:
    history = state.closed_history()
    closed = to_micros(history["closed_at"]) if len(history) else np.zeros(0, dtype=np.int64)
    won = history["won"].to_numpy(dtype=float)
    built = {"all": EventIndex(np.zeros(len(history), dtype=np.int64), closed, {"won": won})}
    for key in ("owner_id", "account_id"):
        ids = Codebook(pd.unique(history[key].to_numpy(dtype=object)))
        built[key] = (ids, EventIndex(ids.encode(history[key]), closed, {"won": won}))
    built["segment"] = _index_segment_amounts(state.closed_amount_history())
    return built


def _index_segment_amounts(history: pd.DataFrame) -> tuple[Codebook, EventIndex, np.ndarray]:
    """Closed deals by segment and closing time, with the running median of their first amounts.

    ``medians[i]``: the median first amount of the segment's deals up to sorted position ``i``
    (its closing time and earlier), NaN while none has a known amount. A loop over the few
    segments, each one expanding median.
    """
    segments = Codebook(pd.unique(history["segment"].dropna().to_numpy(dtype=object)))
    index = EventIndex(segments.encode(history["segment"]), to_micros(history["closed_at"]))
    amounts = history["first_amount"].to_numpy(dtype=float)[index.order]
    medians = np.full(len(index), np.nan)
    bounds = np.flatnonzero(np.diff(index.codes, prepend=-2, append=-1))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if index.codes[lo] >= 0:  # missing segments (-1) get no median
            medians[lo:hi] = pd.Series(amounts[lo:hi]).expanding().median().to_numpy()
    return segments, index, medians


def compute_segment_amount_features(export: Export, pts: Points, state: FeatureState, amount: np.ndarray) -> dict[str, np.ndarray]:
    """The amount as of as_of over the median first amount of the segment's deals closed at or before as_of."""
    segments, index, medians = _win_history(state)["segment"]
    code = pts.codes(export.deals, "segment", segments)[pts.deal_row]
    start, stop = index.locate(code, pts.as_of)
    median = np.where(code >= 0, index.last_value(medians, start, stop), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"amount_vs_segment_median": np.where(median > 0, amount / median, np.nan)}


def compute_win_rate_features(export: Export, pts: Points, state: FeatureState) -> dict[str, np.ndarray]:
    """Owner's and account's closed deals and smoothed win rate, over deals closed at or before as_of."""
    history = _win_history(state)
    overall = history["all"]
    start, stop = overall.locate(np.zeros(len(pts.as_of), dtype=np.int64), pts.as_of)
    global_n = (stop - start).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        global_rate = np.where(global_n > 0, overall.window_sum("won", stop, start) / global_n, np.nan)
    out: dict[str, np.ndarray] = {}
    for key, prefix in (("owner_id", "owner"), ("account_id", "account")):
        ids, index = history[key]
        code = pts.codes(export.deals, key, ids)[pts.deal_row]
        # Unknown ids get code -1: an empty slice (no closed deals), hence the global rate.
        start, stop = index.locate(code, pts.as_of)
        closed = np.where(code >= 0, stop - start, 0).astype(float)
        wins = np.where(code >= 0, index.window_sum("won", stop, start), 0.0)
        out[f"{prefix}_closed_deals"] = closed
        out[f"{prefix}_win_rate"] = (wins + WIN_RATE_PRIOR_DEALS * global_rate) / (closed + WIN_RATE_PRIOR_DEALS)
    return out


def compute_context_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Categorical deal attributes, taken from the deals row (not tracked, assumed constant)."""
    deals = export.deals
    return {name: _take_text(pts.read(deals, name), pts.deal_row)
            for name in ("deal_type", "segment", "region", "product", "lead_source")}


def _take_text(values, rows: np.ndarray):
    """Rows of a text array: a "str" array stays one (no object round trip)."""
    if values.dtype == _STR_DTYPE:
        if len(rows) == len(values) and (rows == np.arange(len(rows))).all():
            return values.copy()  # every deal in order (a request): no take; a copy, as blocks are not copied
        return values.take(rows)
    return pd.Series(values).to_numpy(dtype=object, na_value=np.nan)[rows]


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def build_features(export: Export, points: pd.DataFrame, state: FeatureState) -> pd.DataFrame:
    """Features of each (deal_id, as_of) point from events at or before as_of only.

    Returns one row per point, in the points' order and index: deal_id, as_of, then every
    registry feature in registry order. The same call on a one-deal export serves one request.

    >>> from tests.factories import make_export
    >>> from features.state import fit_feature_state
    >>> export = make_export()
    >>> points = pd.DataFrame({"deal_id": ["D1"], "as_of": [pd.Timestamp("2026-03-01", tz="UTC")]})
    >>> row = build_features(export, points, fit_feature_state(export, "2026-12-31")).iloc[0]
    >>> row["current_stage"], float(row["days_in_stage"]), float(row["top_contact_share"])
    ('negotiate', 14.0, 0.6)
    """
    pts = prepare_points(export, points)
    return frame_from_columns(compute_features(export, pts, state), pts, points.index)


def build_features_as_of(export: Export, as_of, state: FeatureState) -> pd.DataFrame:
    """``build_features`` for every deal of the export at one ``as_of``: a scoring request's call.

    The same frame as ``build_features`` with points ``export.deals["deal_id"]`` at ``as_of`` (the
    deals' index), without building that points frame.

    >>> from tests.factories import make_export
    >>> from features.state import fit_feature_state
    >>> export = make_export()
    >>> state = fit_feature_state(export, "2026-12-31")
    >>> points = pd.DataFrame({"deal_id": export.deals["deal_id"], "as_of": pd.Timestamp("2026-03-01", tz="UTC")})
    >>> build_features_as_of(export, "2026-03-01", state).equals(build_features(export, points, state))
    True
    """
    pts = prepare_deals_as_of(export, as_of)
    return frame_from_columns(compute_features(export, pts, state), pts, export.deals.index)


def compute_features(export: Export, pts: Points, state: FeatureState) -> dict[str, np.ndarray]:
    """Every family's features of the points, as arrays by feature name."""
    columns: dict[str, np.ndarray] = {}
    columns |= compute_stage_features(export, pts, state)
    columns |= compute_field_features(export, pts)
    columns |= compute_contact_features(export, pts)
    columns |= compute_role_engagement_features(export, pts)
    columns |= compute_activity_features(export, pts)
    columns |= compute_win_rate_features(export, pts, state)
    columns |= compute_segment_amount_features(export, pts, state, columns["amount"])
    columns |= compute_context_features(export, pts)
    return columns


def frame_from_columns(columns: dict[str, np.ndarray], pts: Points, index: pd.Index) -> pd.DataFrame:
    """The feature frame, built once from plain arrays: deal_id, as_of, then the registry's features.

    Fixed dtypes whatever the values: "str" for categoricals (even all-missing), float64
    otherwise. Arrays, not Series, so that pandas does no per-column alignment (a one-deal
    request pays for the frame, not for the rows).
    """
    n = len(pts.as_of)
    numeric = np.empty((len(_NUMERIC_POSITIONS), n), dtype=np.float64)  # the frame's float block, one row per column
    for i, name in enumerate(_NUMERIC_NAMES):
        numeric[i] = columns[name]
    as_of = pts.as_of_stamps.copy()  # blocks are taken as they are: no memory shared with the points
    blocks = [(numeric, _NUMERIC_POSITIONS), (_as_text(pts.deal_id).copy(), np.array([0])), (as_of, np.array([1]))]
    blocks += [(_as_text(columns[name]), np.array([j])) for j, name in _TEXT_POSITIONS]
    return create_dataframe_from_blocks(blocks, index=index, columns=_FRAME_COLUMNS)


def _as_text(values) -> pd.api.extensions.ExtensionArray:
    """A categorical feature as a "str" array (kept when it already is one)."""
    if isinstance(values, pd.api.extensions.ExtensionArray) and values.dtype == _STR_DTYPE:
        return values
    return pd.array(values, dtype="str")


_FRAME_COLUMNS = pd.Index(("deal_id", "as_of") + FEATURE_NAMES)
_NUMERIC_NAMES = tuple(name for name in FEATURE_NAMES if name not in CATEGORICAL_FEATURES)
_NUMERIC_POSITIONS = np.array([j for j, name in enumerate(_FRAME_COLUMNS) if name in _NUMERIC_NAMES])
_TEXT_POSITIONS = tuple((j, name) for j, name in enumerate(_FRAME_COLUMNS) if name in CATEGORICAL_FEATURES)


def subset_export(export: Export, deal_ids) -> Export:
    """The export restricted to the given deals (every table; absent tables stay absent)."""
    wanted = set(map(str, deal_ids))
    tables = {
        name: None if table is None else table[table["deal_id"].isin(wanted)].reset_index(drop=True)
        for name, table in export.tables().items()
    }
    return Export(**tables)


def select_open_deals(export: Export, as_of) -> pd.DataFrame:
    """Points (deal_id, as_of) for every deal open at as_of: created at or before, not closed at or before."""
    as_of = parse_as_of(as_of)
    deals = export.deals
    is_open = (deals["created_at"] <= as_of) & ~(deals["closed_at"].notna() & (deals["closed_at"] <= as_of))
    ids = deals.loc[is_open, "deal_id"].to_numpy()
    return pd.DataFrame({"deal_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype=TIMESTAMP_DTYPE)})


def load_model_feature_state(model_uri: str) -> FeatureState:
    """Read feature_state.json from the bundle/ artifacts of a registered model version's run.

    ``model_uri`` is ``models:/<name>@<alias>`` or ``models:/<name>/<version>``; the tracking
    and registry URIs come from the environment (MLFLOW_TRACKING_URI), as MLflow does.
    """
    import json
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        raise ValueError(f"--model must look like models:/<name>@<alias> or models:/<name>/<version>, got {model_uri!r}")
    ref = model_uri[len("models:/"):]
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in ref:
        name, number = ref.split("/", 1)
        version = client.get_model_version(name, number)
    else:
        raise ValueError(f"--model {model_uri!r}: give an alias (@champion) or a version (/3)")
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path="bundle/feature_state.json", dst_path=tmp
        )
        return FeatureState.from_dict(json.loads(Path(path).read_text()))


def run_features(data: Path, as_of: str, out: Path, model: str | None = None, mapping: Path | None = None) -> Path:
    """CLI wiring: load the export, pick the deals open at as_of, compute their features, write them.

    The state is fitted on deals closed before as_of, or read from ``model``'s bundle, so the
    output is exactly what could have been known at as_of.
    """
    from features.contract import load_export
    from features.io import write_frame

    as_of_ts = parse_as_of(as_of)
    export = load_export(Path(data), mapping=mapping)
    state = load_model_feature_state(model) if model else fit_feature_state_before(export, as_of_ts)
    points = select_open_deals(export, as_of_ts)
    return write_frame(build_features(export, points, state), Path(out))


def parse_as_of(value) -> pd.Timestamp:
    """A UTC timestamp from text or a timestamp; naive values are taken as UTC.

    >>> parse_as_of("2026-06-30")
    Timestamp('2026-06-30 00:00:00+0000', tz='UTC')
    """
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise FeatureInputError(f"as_of: {value!r} is not a timestamp (e.g. 2026-06-30T00:00:00Z)") from exc
    if pd.isna(stamp):
        raise FeatureInputError(f"as_of: {value!r} is not a timestamp (e.g. 2026-06-30T00:00:00Z)")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def fit_feature_state_before(export: Export, as_of: pd.Timestamp) -> FeatureState:
    """The state fitted on deals closed strictly before as_of (what was known then)."""
    from features.state import fit_feature_state

    return fit_feature_state(export, as_of)
