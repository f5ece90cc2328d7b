"""The primitives of the point-in-time computation: a sorted event index with running sums for as-of
look-ups, codebooks, validated points (deal, as_of), and a field's value as of a moment rebuilt
from its history. Shared by the feature families (``pipeline``) and the fitted state (``state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.contract.cells import TIMESTAMP_RANGE
from features.contract.schema import (
    ACTIVITY_TYPES,
    OPEN_STAGES,
    ROLES,
    SENIORITY_LEVEL,
    STAGES,
    TIMESTAMP_DTYPE,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    Export,
)
from features.contract.violations import show_value

DAY_US = 86_400_000_000  # microseconds per day
STR_DTYPE = pd.StringDtype(na_value=np.nan)  # the contract's "str" dtype
_NAT = np.iinfo(np.int64).min  # NaT in int64 microseconds
STAGE_NAMES = pd.array(list(STAGES) + [None], dtype=STR_DTYPE)  # stage code -> name; the last: missing
OPEN_STAGE_CODES = np.array([i for i, s in enumerate(STAGES) if s in OPEN_STAGES])


class FeatureInputError(ValueError):
    """The points asked for cannot be computed from the export (unknown deal, bad as_of)."""


# --------------------------------------------------------------------------------------------
# Sorted event index: the one vectorised primitive
# --------------------------------------------------------------------------------------------


class EventIndex:
    """Events sorted by (entity code, time, file order) with running sums, for as-of look-ups.

    ``locate(codes, times)`` returns, for each query, the slice ``[start, stop)`` of the sorted
    events of that entity at or before that time: ``stop - start`` events, ``stop - 1`` the last.

    Running sums restart at each entity (``group_running_sums``), so a window's sum depends on
    that entity's events alone: a deal's features are the same to the last bit whatever other
    deals share the export (one deal in a request, a batch, a partition of a Dask run). A sum
    running over the whole export would make ``cum[stop] - cum[start]`` round differently with
    the deals before it.

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
        # Where the previous sorted event is of the same entity: a window starting there does not
        # start at the entity's first event.
        self.continues = np.zeros(len(order), dtype=bool)
        self.continues[1:] = self.codes[1:] == self.codes[:-1]
        self.cums: dict[str, np.ndarray] = {}
        if values:
            # One 2-D running sum for all columns: far fewer calls than one per column.
            matrix = np.empty((len(order), len(values)))
            for j, value in enumerate(values.values()):
                matrix[:, j] = np.asarray(value, dtype=float)[order]
            np.nan_to_num(matrix, copy=False, nan=0.0)
            running = group_running_sums(self.codes, matrix)
            self.cums = {name: running[:, j] for j, name in enumerate(values)}

    def __len__(self) -> int:
        return len(self.codes)

    def add_running_sum(self, name: str, sorted_values: np.ndarray) -> None:
        """Store the per-entity running sum of values already in sorted order (NaN counts as 0)."""
        values = np.nan_to_num(np.asarray(sorted_values, dtype=float), nan=0.0)
        self.cums[name] = group_running_sums(self.codes, values[:, None])[:, 0]

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
        """Sum of ``name`` over sorted events in ``[start, stop)`` (one entity's events; 0 when empty).

        The entity's running sum at ``stop - 1`` less its running sum just before ``start``.
        """
        running = self.cums[name]
        out = np.zeros(len(stop))
        has = stop > start
        first, last = start[has], stop[has] - 1
        before = np.where(self.continues[first], running[np.maximum(first - 1, 0)], 0.0)
        out[has] = running[last] - before
        return out

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


def group_running_sums(codes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Running sums of each column of ``matrix`` (rows sorted by ``codes``), restarting at every code.

    Each entity's sums are computed from its own rows only (pandas' grouped cumulative sum, which
    also compensates rounding), so they do not depend on the rows of other entities.

    >>> group_running_sums(np.array([0, 0, 1, 1]), np.array([[0.1], [0.2], [0.1], [0.2]]))[:, 0].tolist()
    [0.1, 0.30000000000000004, 0.1, 0.30000000000000004]
    """
    if len(codes) == 0:
        return np.zeros(matrix.shape)
    return pd.DataFrame(matrix, copy=False).groupby(codes, sort=False).cumsum().to_numpy(dtype=float)


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


def as_float(values) -> np.ndarray:
    """A numeric or boolean column or array (nullable) as float64 with NaN for missing."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(float)
    try:
        return values.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError, AttributeError):
        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def days_of(delta_us: np.ndarray) -> np.ndarray:
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
    return values if values.dtype == STR_DTYPE else pd.Series(values, copy=False).astype(str).array


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


def deal_codes(pts: Points, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Deal row position of each event, and the mask of events whose deal is in ``deals``."""
    codes = pts.codes(table, "deal_id", pts.deals)
    return codes, codes >= 0


def nan_array(n: int) -> np.ndarray:
    return np.full(n, np.nan)

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
    codes, known = deal_codes(pts, history)
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
    Also returns ``initial`` (value at creation), for expected_close_date push counts and
    ``last_moved`` (time of the last change at or before as_of that moved the date, NaN if none),
    and for amount ``largest_cut``: the smallest new/old ratio of one change so far, capped at 1 (1: never cut).
    """
    n = len(pts.as_of)
    history = export.field_history
    if history is None:
        return {name: nan_array(n) for name in ("value", "initial", "pushes", "days_pushed", "last_moved", "largest_cut")}
    if changes is None:
        changes = extract_field_changes(pts, history)
    codes, changed_at, old, new = changes[field]
    index = EventIndex(codes, changed_at)
    old_sorted, new_sorted = old[index.order], new[index.order]
    start, stop = index.locate(pts.deal_row, pts.as_of)
    end = index.end(pts.deal_row)
    if field not in pts.read(export.deals, "", "names"):  # an export without the column: never known
        current = nan_array(n)
    elif field == "amount":
        current = as_float(pts.read(export.deals, "amount"))[pts.deal_row]
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
        # A change moves the date unless old and new are the same day-time (or both unreadable).
        moved = ~((old_sorted == new_sorted) | (np.isnan(old_sorted) & np.isnan(new_sorted)))
        last = index.last_value(forward_fill_last(moved, index.codes), start, stop, fill=-1)
        out["last_moved"] = np.where(last >= 0, index.times[np.maximum(last, 0)], np.nan) if len(index) else nan_array(n)
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
    # A grouped running minimum: exact, and each entity's from its own changes only (shifting
    # entities apart by an offset and back rounded the ratio differently for each entity code).
    return pd.Series(ratio, copy=False).groupby(codes, sort=False).cummin().to_numpy(dtype=float) if len(ratio) else ratio


def parse_as_of(value) -> pd.Timestamp:
    """A UTC timestamp from text or a timestamp; naive values are taken as UTC. Outside the data
    contract's range (``TIMESTAMP_MIN`` .. ``TIMESTAMP_MAX``, as the service and ``dealrisk validate``
    hold it) it is a ``FeatureInputError``: year 1 would otherwise select no deal and write an empty file.

    >>> parse_as_of("2026-06-30")
    Timestamp('2026-06-30 00:00:00+0000', tz='UTC')
    >>> parse_as_of("0001-01-01")
    Traceback (most recent call last):
    ...
    features.pointintime.events.FeatureInputError: as_of: '0001-01-01' is outside the supported range 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z
    """
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise FeatureInputError(f"as_of: {show_value(value)} is not a timestamp (e.g. 2026-06-30T00:00:00Z)") from exc
    if pd.isna(stamp):
        raise FeatureInputError(f"as_of: {show_value(value)} is not a timestamp (e.g. 2026-06-30T00:00:00Z)")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if not TIMESTAMP_MIN <= stamp <= TIMESTAMP_MAX:  # the contract's range, as the service and validate hold it
        raise FeatureInputError(f"as_of: {show_value(value)} is outside the supported range {TIMESTAMP_RANGE}")
    return stamp

