"""Checking a CRM export against the data contract in ``features.schema``.

``check_tables`` takes raw tables (CSV read as text, Parquet typed, or frames built from a JSON
request) and returns either a typed ``Export`` or the full list of violations, each naming the
table, column, row and reason. It does no file I/O, so the serving code calls it on every request;
``load_export`` and ``run_validate`` add the reading of export folders at the edge.

Row numbers count data rows from 1, the header not counted (in a spreadsheet that shows the
header as row 1, the same row is one lower). Nothing is silently dropped or coerced: a row either
passes as it is or is reported.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.internals import create_dataframe_from_blocks

from features.mapping import NameMapping, load_mapping, normalize_name
from features.schema import (
    CLOSED_STAGES,
    EVENT_TABLES,
    OPEN_STAGES,
    TABLES,
    TIMESTAMP_DTYPE,
    Column,
    Export,
    Table,
)

# Violations kept in full detail per (table, column, rule); the count beyond it is still exact.
DETAIL_LIMIT = 1000
# Shown per (table, column, rule) by ``format_report`` unless told otherwise.
DEFAULT_MAX_PER_RULE = 20
# Columns up to this length take plain-Python fast paths (the one-deal request); same results.
SMALL_COLUMN = 256

OUTPUT_DTYPES: dict[str, str] = {
    "id": "str",
    "text": "str",
    "choice": "str",
    "timestamp": TIMESTAMP_DTYPE,
    "number": "float64",
    "flag": "boolean",
}

_OFFSET_PATTERN = r"[T ]\d{1,2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*[+-]\d{2}(?::?\d{2})?$"
_ZERO_OFFSET_PATTERN = r"[+-]00(?::?00)?$"
_TRUE_WORDS = ("true", "1")
_FALSE_WORDS = ("false", "0")


@dataclass(frozen=True)
class Violation:
    """One broken rule: where (table, column, row) and why.

    ``row`` is a human string such as ``"row 17 (deal_id=D000123)"`` or ``"whole table"``;
    ``rule`` is a short code (``unknown_value``, ``not_utc``...) used to group and count.
    """

    table: str
    column: str
    row: str
    reason: str
    rule: str = ""

    def __str__(self) -> str:
        return f"{self.table} | {self.column} | {self.row} | {self.reason}"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a contract check: a typed export, or the violations (never both).

    ``violations`` holds up to ``DETAIL_LIMIT`` violations per (table, column, rule);
    ``counts`` holds the exact number of each, so nothing found goes uncounted.
    ``notes`` are information that is not a violation (ignored extra columns or tables).
    """

    export: Export | None
    violations: list[Violation]
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.export is not None

    @property
    def total(self) -> int:
        """Exact number of violations found, including those beyond the detail limit."""
        return sum(self.counts.values()) if self.counts else len(self.violations)


class ContractError(ValueError):
    """An export breaks the data contract; ``str()`` is the full report."""

    def __init__(
        self,
        violations: Sequence[Violation],
        counts: dict[tuple[str, str, str], int] | None = None,
        max_per_rule: int = DEFAULT_MAX_PER_RULE,
    ) -> None:
        self.violations = list(violations)
        self.counts = dict(counts or {})
        self.max_per_rule = max_per_rule
        super().__init__(format_report(self.violations, max_per_rule, counts=self.counts))

    def __reduce__(self) -> tuple:
        # Rebuild from the violations, not the message, so the error survives pickling (worker processes).
        return (type(self), (self.violations, self.counts, self.max_per_rule))


class _Collector:
    """Gathers violations, keeping full detail for the first ``DETAIL_LIMIT`` of each rule."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.counts: dict[tuple[str, str, str], int] = {}

    def add(self, table: str, column: str, rule: str, row: str, reason: str) -> None:
        key = (table, column, rule)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] <= DETAIL_LIMIT:
            self.violations.append(Violation(table, column, row, reason, rule))

    def add_rows(
        self,
        table: Table,
        frame: pd.DataFrame,
        column: str,
        rule: str,
        mask: np.ndarray | pd.Series,
        reason: Callable[[np.ndarray], Sequence[str]],
    ) -> None:
        """Report every row where ``mask`` holds; reasons are built only for the rows kept in detail."""
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        if len(positions) == 0:
            return
        key = (table.name, column, rule)
        already = self.counts.get(key, 0)
        self.counts[key] = already + len(positions)
        keep = positions[: max(0, DETAIL_LIMIT - already)]
        if len(keep) == 0:
            return
        labels = describe_rows(frame, table, keep)
        for label, text in zip(labels, reason(keep), strict=True):
            self.violations.append(Violation(table.name, column, label, text, rule))


def describe_rows(frame: pd.DataFrame, table: Table, positions: np.ndarray) -> list[str]:
    """Return ``"row N (key=value, ...)"`` for each position, N counting data rows from 1.

    >>> t = TABLES["contacts"]
    >>> describe_rows(pd.DataFrame({"deal_id": ["D1"], "contact_id": ["C9"]}), t, np.array([0]))
    ['row 1 (deal_id=D1, contact_id=C9)']
    """
    keys = [k for k in table.key if k in frame.columns]
    columns = [frame[k].iloc[positions].tolist() for k in keys]
    labels = []
    for i, pos in enumerate(positions):
        parts = ", ".join(f"{k}={_show_key(columns[j][i])}" for j, k in enumerate(keys))
        labels.append(f"row {pos + 1} ({parts})" if parts else f"row {pos + 1}")
    return labels


def _show_key(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT or value is pd.NA:
        return "(empty)"
    if isinstance(value, pd.Timestamp | dt.datetime):
        return pd.Timestamp(value).isoformat()
    return str(value)


def _show(value: object) -> str:
    """Show a cell value in a reason: quoted, shortened when long."""
    text = _show_key(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return repr(text)


class _Cells:
    """Cell values fetched only when a reason is written: reasons are few, converting columns is not."""

    def __init__(self, series: pd.Series | pd.api.extensions.ExtensionArray | np.ndarray | pa.Array | list) -> None:
        self.series = series

    def __getitem__(self, position: int) -> object:
        if isinstance(self.series, pd.Series):
            return self.series.iloc[int(position)]
        if isinstance(self.series, pa.Array | pa.ChunkedArray):
            return self.series[int(position)].as_py()
        return self.series[int(position)]


@functools.lru_cache(maxsize=32)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _matches(text: pd.Series | list | pa.Array | pa.ChunkedArray, pattern: str) -> np.ndarray:
    """Where ``text`` matches the regular expression (RE2 via pyarrow; missing cells never match).

    Short columns use Python's ``re`` (compiled once): pyarrow compiles the pattern on every call.
    """
    if isinstance(text, list) or len(text) <= SMALL_COLUMN:
        compiled = _compiled(pattern)
        cells = text if isinstance(text, list) else text.to_pylist() if isinstance(
            text, pa.Array | pa.ChunkedArray) else text.tolist()
        return np.fromiter(
            (isinstance(v, str) and compiled.search(v) is not None for v in cells), bool, len(cells)
        )
    array = text if isinstance(text, pa.Array | pa.ChunkedArray) else pa.array(text, type=_LARGE_STRING)
    found = pc.match_substring_regex(array, pattern)
    return found.fill_null(False).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------
# Raw cells. A column arrives as an object array (a JSON request: Python str, float, bool, None),
# a ``str`` array (CSV text) or a typed Series (Parquet). String work happens on one pyarrow array
# per column; short columns (a one-deal request) are walked as Python lists, which costs less
# than any pandas call. The common paths build no Series or frame until the typed export.

_LARGE_STRING = pa.large_string()
_NULL_STRING = pa.scalar(None, type=_LARGE_STRING)
_NAT = np.iinfo(np.int64).min  # NaT as int64 microseconds
_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # what ``astype("str")`` gives in pandas 3
_TS_DTYPE = pd.DatetimeTZDtype("us", "UTC")  # TIMESTAMP_DTYPE as an object: no string parsing per call
_BOOL_DTYPE = pd.BooleanDtype()
_FLOAT_DTYPE = np.dtype("float64")
# OUTPUT_DTYPES as dtype objects: comparing against a dtype string parses the string every time.
_OUTPUT_DTYPE_OBJECTS = {
    "id": _STR_DTYPE, "text": _STR_DTYPE, "choice": _STR_DTYPE, "timestamp": _TS_DTYPE,
    "number": _FLOAT_DTYPE, "flag": _BOOL_DTYPE,
}

# A column as the parsers take it: an object column as a numpy array, a ``str`` column as its
# string array, any other (typed) column as a Series.
Raw = np.ndarray | pd.api.extensions.ExtensionArray | pd.Series


def _frame_columns(frame: pd.DataFrame, names: list[str]) -> dict[str, Raw]:
    """The raw cells of the named columns (see ``Raw``), read without a Series per column.

    ``frame[column]`` builds a Series (~15 us), a sizeable part of a one-deal check; the
    column arrays are what the parsers read anyway.
    """
    position: dict[str, int] = {}
    for i, label in enumerate(frame.columns.tolist()):
        position.setdefault(str(label), i)
    get_array = getattr(frame, "_get_column_array", None)  # private pandas, guarded: public fallback
    columns: dict[str, Raw] = {}
    for name in names:
        i = position[name]
        values = get_array(i) if get_array is not None else frame.iloc[:, i].array
        if isinstance(values, pd.arrays.NumpyExtensionArray):
            values = values.to_numpy()
        if isinstance(values, np.ndarray) and values.dtype == object:
            columns[name] = values
        elif isinstance(values.dtype, pd.StringDtype):
            columns[name] = values
        else:
            columns[name] = pd.Series(values, copy=False)
    return columns


def _string_cells(raw: Raw) -> pa.Array | None:
    """The cells as one ``large_string`` arrow array if every cell is a string or missing, else None."""
    if isinstance(raw, np.ndarray):
        try:
            return pa.array(raw, type=_LARGE_STRING, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
    if isinstance(raw.dtype, pd.StringDtype):
        return _arrow_of(raw.array if isinstance(raw, pd.Series) else raw)
    if raw.dtype == object:
        return _string_cells(raw.to_numpy())
    return None


def _arrow_of(strings: pd.api.extensions.ExtensionArray) -> pa.Array:
    """A pandas string array's data as one ``large_string`` arrow array (no copy for ``str``)."""
    array = pa.array(strings)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array if array.type == _LARGE_STRING else array.cast(_LARGE_STRING)


def _text_cells(raw: Raw) -> pa.Array:
    """The cells as ``large_string`` arrow data, null where missing; numbers become their usual text."""
    strings = _string_cells(raw)
    if strings is not None:
        return strings
    series = raw if isinstance(raw, pd.Series) else pd.Series(raw, copy=False)
    return _arrow_of(series.astype("str").array)


def _inferred_cells(raw: Raw) -> pa.Array | None:
    """An object column's cells as one pyarrow array of the type they share, or None if mixed.

    A JSON request gives Python floats, bools and None; one conversion finds whether a column is
    all numbers or all booleans (missing allowed) without converting every cell to text first.
    """
    if not isinstance(raw, np.ndarray):
        if raw.dtype != object:
            return None
        raw = raw.to_numpy()
    try:
        return pa.array(raw, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _string_array(cells: pa.Array) -> pd.arrays.ArrowStringArray:
    """Arrow strings as the ``str`` array the export holds."""
    return pd.arrays.ArrowStringArray(cells, dtype=_STR_DTYPE)


def _text_series(cells: np.ndarray | list | pa.Array, index: pd.Index | None = None) -> pd.Series:
    """Strings (None where missing) as a ``str`` Series, built by pyarrow without pandas' inference."""
    array = cells if isinstance(cells, pa.Array) else pa.array(cells, type=_LARGE_STRING, from_pandas=True)
    return pd.Series(_string_array(array), index=index, copy=False)


def _blank_mask(cells: pa.Array, values: list | None = None) -> np.ndarray:
    """Cells that are missing or blank; a plain loop on short columns avoids pyarrow's per-call cost."""
    if len(cells) <= SMALL_COLUMN:
        values = cells.to_pylist() if values is None else values
        return np.fromiter((not isinstance(v, str) or not v.strip() for v in values), bool, len(values))
    # Missing, empty or all whitespace (what ``.str.strip() == ""`` finds) without copying the strings.
    blank = pc.or_kleene(pc.equal(cells, pa.scalar("", _LARGE_STRING)), pc.utf8_is_space(cells))
    return blank.fill_null(True).to_numpy(zero_copy_only=False)


def _empty_mask(text: pd.Series | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """Cells of a ``str`` column that are missing or blank (whitespace only)."""
    return _blank_mask(_arrow_of(text.array if isinstance(text, pd.Series) else text))


def _nulled(cells: pa.Array, missing: np.ndarray) -> pa.Array:
    """``cells`` with the ``missing`` cells null; untouched when those are already all null."""
    if int(np.count_nonzero(missing)) == cells.null_count:
        return cells
    return pc.if_else(pa.array(missing), _NULL_STRING, cells)


def _timestamps_of(micros: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Microseconds since the epoch (int64 min for NaT) as the export's UTC timestamp array.

    ``pd.array`` validates and infers (~30 us a column, a tenth of a one-deal check); the values
    are already exactly the array's storage, so they are wrapped as they are where pandas allows.
    """
    wall = micros.view("datetime64[us]")
    simple_new = getattr(pd.arrays.DatetimeArray, "_simple_new", None)  # private pandas, guarded: public fallback
    if simple_new is None:
        return pd.array(wall, dtype=_TS_DTYPE)
    return simple_new(wall, dtype=_TS_DTYPE)


def _is_utc(dtype: pd.DatetimeTZDtype) -> bool:
    """Whether a tz-aware dtype is UTC (a fixed zero offset), whatever library named the zone."""
    return dtype.tz is dt.timezone.utc or str(dtype.tz) in ("UTC", "utc", "Etc/UTC", "Z", "+00:00")


def _micros_of(values: pd.Series | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch (int64 min where missing)."""
    return np.asarray(values.to_numpy(dtype="datetime64[us]")).view(np.int64)


class _Parsed:
    """A parsed column: the typed values for the export, ``missing``, ``invalid``, and views for the rules.

    ``array`` has the export dtype (NA where the cell is empty or invalid). Rules read
    ``strings`` (arrow), ``objects`` (Python values, None where NA) or ``micros`` (timestamps),
    each built at most once and only when a rule asks.
    """

    __slots__ = ("array", "missing", "invalid", "_strings", "_objects", "_micros")

    def __init__(self, array: pd.api.extensions.ExtensionArray | np.ndarray, missing: np.ndarray,
                 invalid: np.ndarray, strings: pa.Array | None = None, objects: list | None = None,
                 micros: np.ndarray | None = None) -> None:
        self.array = array
        self.missing = missing  # the cell is empty
        self.invalid = invalid  # the cell is present but broke a rule
        self._strings = strings
        self._objects = None if objects is None else _object_array(objects)
        self._micros = micros

    @property
    def strings(self) -> pa.Array:
        """String values as arrow (null where NA)."""
        if self._strings is None:
            self._strings = _arrow_of(self.array)
        return self._strings

    @property
    def objects(self) -> np.ndarray:
        """Values as a numpy object array, None where NA."""
        if self._objects is None:
            self._objects = self.strings.to_numpy(zero_copy_only=False)
        return self._objects

    @property
    def micros(self) -> np.ndarray:
        """Timestamp values as int64 microseconds since the epoch (int64 min where NA)."""
        if self._micros is None:
            self._micros = _micros_of(self.array)
        return self._micros


def _object_array(values: list) -> np.ndarray:
    """A list as a 1-d object array (``np.array`` would nest tuples and lists)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def parse_text_column(raw: Raw) -> _Parsed:
    """Parse an ``id`` or ``text`` column: any non-blank string; blank cells are missing."""
    cells = _text_cells(raw)
    values = cells.to_pylist() if len(cells) <= SMALL_COLUMN else None
    missing = _blank_mask(cells, values)
    cells = _nulled(cells, missing)
    objects = None
    if values is not None:
        objects = [None if m else v for v, m in zip(values, missing.tolist())] if missing.any() else values
    return _Parsed(_string_array(cells), missing, np.zeros(len(cells), dtype=bool), cells, objects)


class _ChoiceLookup(dict):
    """Raw cell -> (canonical value or None, missing, invalid), worked out once per distinct cell.

    Kept per (mapping section, allowed values) for the process: a request's few stage and role
    names are normalised once, not on every call. Bounded, so odd inputs cannot grow it forever.
    """

    LIMIT = 10_000

    def __init__(self, names: Mapping[str, str], allowed: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        self.allowed = frozenset(allowed)

    def __missing__(self, value: object) -> tuple[str | None, bool, bool]:
        if not isinstance(value, str) or not value.strip():
            entry = (None, True, False)
        else:
            canonical = self.names.get(normalize_name(value), value)
            entry = (canonical, False, False) if canonical in self.allowed else (None, False, True)
        if len(self) < self.LIMIT:
            self[value] = entry
        return entry


_CHOICE_LOOKUPS: dict[tuple[int, tuple[str, ...]], _ChoiceLookup] = {}


def _choice_lookup(names: Mapping[str, str], allowed: tuple[str, ...]) -> _ChoiceLookup:
    """The lookup for a mapping section; a section is immutable, so its identity is its key."""
    key = (id(names), allowed)
    lookup = _CHOICE_LOOKUPS.get(key)
    if lookup is None or lookup.names is not names:
        if len(_CHOICE_LOOKUPS) >= 64:  # user mappings loaded again and again: start afresh
            _CHOICE_LOOKUPS.clear()
        lookup = _CHOICE_LOOKUPS[key] = _ChoiceLookup(names, allowed)
    return lookup


@functools.lru_cache(maxsize=64)
def _plain_names(allowed: tuple[str, ...]) -> Mapping[str, str]:
    """Normalised name -> name for a choice column that no mapping section renames."""
    return MappingProxyType({normalize_name(a): a for a in allowed})


def parse_choice_column(
    raw: Raw, table: Table, column: Column, names: Mapping[str, str], section: str | None, out: _Collector,
    frame: pd.DataFrame,
) -> _Parsed:
    """Parse a ``choice`` column: map CRM names to canonical ones, report values still unknown."""
    cells = _text_cells(raw)
    lookup = _choice_lookup(names, column.allowed)
    objects = None
    if len(cells) <= SMALL_COLUMN:
        entries = [lookup[v] for v in cells.to_pylist()]
        objects = [e[0] for e in entries]
        missing = np.fromiter((e[1] for e in entries), bool, len(entries))
        invalid = np.fromiter((e[2] for e in entries), bool, len(entries))
        mapped = pa.array(objects, type=_LARGE_STRING)
    else:
        # Each distinct cell looked up once; rows take their distinct value's result.
        encoded = pc.dictionary_encode(cells)
        entries = [lookup[v] for v in encoded.dictionary.to_pylist()] + [lookup[None]]
        codes = encoded.indices.fill_null(len(entries) - 1)
        numbers = codes.to_numpy(zero_copy_only=False)
        missing = np.array([e[1] for e in entries], dtype=bool)[numbers]
        invalid = np.array([e[2] for e in entries], dtype=bool)[numbers]
        mapped = pa.array([e[0] for e in entries], type=_LARGE_STRING).take(codes)
    if invalid.any():
        allowed = ", ".join(column.allowed)
        hint = (
            f"; add a line '<CRM name>: <canonical {section}>' under '{section}:' in a mapping file "
            "(--mapping) to map it"
            if section
            else ""
        )
        shown = _Cells(cells)
        out.add_rows(
            table, frame, column.name, "unknown_value", invalid,
            lambda pos: [f"unknown {column.name} {_show(shown[p])}; allowed: {allowed}{hint}" for p in pos],
        )
    return _Parsed(_string_array(mapped), missing, invalid, mapped, objects)


_SIMPLE_ISO = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]00:00)?$"  # RE2: ASCII digits
_ZERO_OFFSET_SUFFIX = r"(?:Z|[+-]00:00)$"


# Fixed layouts of plain UTC ISO text, a subset of _SIMPLE_ISO checked and read on a long column's
# bytes by numpy (RE2 costs ~100 ns a cell): byte length -> (digit positions, {position: allowed
# bytes}). The digits are YYYYMMDD, then hhmmss where the layout has a time.
_DATE_DIGITS = (0, 1, 2, 3, 5, 6, 8, 9)
_TIME_DIGITS = _DATE_DIGITS + (11, 12, 14, 15, 17, 18)
_DATE_LITERALS = {4: b"-", 7: b"-"}
_TIME_LITERALS = {**_DATE_LITERALS, 10: b"T ", 13: b":", 16: b":"}
_FIXED_LAYOUTS: dict[int, tuple[tuple[int, ...], dict[int, bytes]]] = {
    10: (_DATE_DIGITS, _DATE_LITERALS),  # 2026-03-31
    19: (_TIME_DIGITS, _TIME_LITERALS),  # 2026-03-31T14:05:00 (or a space for the T)
    20: (_TIME_DIGITS, {**_TIME_LITERALS, 19: b"Z"}),  # 2026-03-31T14:05:00Z
}
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_LAYOUT_CHUNK = 1 << 16  # rows read at a time


def _micros_of_fields(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(microseconds since the epoch, valid) of rows of digit values YYYYMMDD[hhmmss].

    Valid: a real proleptic Gregorian date (year 0 included, as numpy) and a time of day below
    24:00:00. Days from the civil date by Howard Hinnant's algorithm.
    """
    def number(first: int, width: int) -> np.ndarray:
        value = digits[:, first].astype(np.int64)
        for i in range(first + 1, first + width):
            value = value * 10 + digits[:, i]
        return value

    year, month, day = number(0, 4), number(4, 2), number(6, 2)
    has_time = digits.shape[1] > 8
    hour, minute, second = (number(8, 2), number(10, 2), number(12, 2)) if has_time else (0, 0, 0)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[np.clip(month, 0, 12)] + (leap & (month == 2))
    valid = (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    if has_time:
        valid &= (hour < 24) & (minute < 60) & (second < 60)
    shifted = year - (month <= 2)
    era = shifted // 400
    year_of_era = shifted - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return (((days * 24 + hour) * 60 + minute) * 60 + second) * 1_000_000, valid


def _fixed_layouts(cells: pa.Array, todo: np.ndarray):
    """Yield (rows, microseconds since the epoch) for the rows in ``todo`` laid out exactly as one
    of ``_FIXED_LAYOUTS`` with a real date and time; other rows are left to the general path.

    Read from the digits, not by numpy's string cast: that cast crashes the process (numpy 2.4)
    when a cell of a long bytes array is an impossible date.
    """
    _, offsets, data = cells.buffers()
    if data is None or data.size == 0:
        return
    offsets = np.frombuffer(offsets, dtype=np.int64)[cells.offset: cells.offset + len(cells) + 1]
    lengths = np.diff(offsets)
    data = np.frombuffer(data, dtype=np.uint8)
    for length, (digits, literals) in _FIXED_LAYOUTS.items():
        matching = np.flatnonzero(todo & (lengths == length))
        if len(matching) == 0:
            continue
        # Row i of ``windows`` is the ``length`` bytes from byte i: a view, so a cut is one take.
        windows = np.lib.stride_tricks.as_strided(
            data, shape=(len(data) - length + 1, length), strides=(1, 1), writeable=False
        )
        for start in range(0, len(matching), _LAYOUT_CHUNK):  # bounded temporaries on long columns
            rows = matching[start: start + _LAYOUT_CHUNK]
            cut = windows[offsets[rows]]
            values = cut[:, list(digits)] - 48  # uint8: bytes below '0' wrap round to large values
            ok = (values < 10).all(axis=1)
            for position, allowed in literals.items():
                byte = cut[:, position]
                match = byte == allowed[0]
                for other in allowed[1:]:
                    match |= byte == other
                ok &= match
            micros, valid = _micros_of_fields(values[ok])
            yield rows[ok][valid], micros[valid]


def _parse_simple_iso(stripped: list | pa.Array, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Parse plain UTC ISO-8601 text (the shape CRMs and requests send) with numpy's C parser.

    ``stripped`` holds the trimmed cells: a list for short columns (Python's cached ``re``), a
    pyarrow array for long ones (fixed layouts checked on the bytes, RE2 for the rest). Returns
    (microseconds since the epoch, NaT where empty or invalid; malformed mask), or None when any
    cell has another shape, so the caller uses pandas' ISO-8601 parser instead. The two parsers
    agree on this shape (year 0 included); tests check short and long columns give the same result.
    """
    micros = np.full(len(missing), _NAT, dtype=np.int64)
    malformed = np.zeros(len(missing), dtype=bool)
    if isinstance(stripped, list):
        compiled = _compiled(_SIMPLE_ISO)
        if not all(compiled.search(v) is not None for v in stripped if v):
            return None
        present = np.flatnonzero(~missing)
        suffix = _compiled(_ZERO_OFFSET_SUFFIX)
        wall = np.array([suffix.sub("", stripped[i]) for i in present], dtype=object)
    else:
        todo = ~missing
        for rows, values in _fixed_layouts(stripped, todo):  # an impossible date is left to the path below
            micros[rows] = values
            todo[rows] = False
        present = np.flatnonzero(todo)
        if len(present) == 0:
            return micros, malformed
        rest = stripped if len(present) == len(stripped) else stripped.take(pa.array(present))
        if not pc.all(pc.match_substring_regex(rest, _SIMPLE_ISO)).as_py():
            return None
        # The shape is checked, so 'Z', '+00:00' and '-00:00' can only be the suffix: literal removal
        # (a regex replace costs twice the parse).
        wall = pc.ascii_rtrim(rest, characters="Z")
        for offset in ("+00:00", "-00:00"):
            if pc.any(pc.ends_with(wall, offset)).as_py():
                wall = pc.replace_substring(wall, offset, "")
        wall = wall.to_numpy(zero_copy_only=False)
    if len(present) == 0:
        return micros, malformed
    try:  # the whole column in one call; an impossible date (2026-02-30) sends it cell by cell
        micros[present] = wall.astype("datetime64[us]").view(np.int64)
    except ValueError:
        for i, text in zip(present, wall):
            try:
                micros[i] = np.datetime64(text, "us").view(np.int64)
            except ValueError:
                malformed[i] = True
    return micros, malformed


def _parse_times(cells: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse ISO-8601 text; returns (UTC microseconds, NaT where missing or malformed; missing,
    malformed, not_utc).

    Plain UTC text takes numpy's parser (``_parse_simple_iso``); anything else pandas' ISO-8601
    parser with the offset rules. Short columns are handled as lists: no per-call pandas cost.
    """
    n = len(cells)
    if n <= SMALL_COLUMN:
        stripped = [v.strip() if isinstance(v, str) else "" for v in cells.to_pylist()]
        missing = np.fromiter((not c for c in stripped), bool, n)
        simple = _parse_simple_iso(stripped, missing)
    else:
        stripped = pc.utf8_trim_whitespace(cells)
        missing = pc.or_kleene(pc.is_null(stripped), pc.equal(stripped, pa.scalar("", _LARGE_STRING)))
        missing = missing.to_numpy(zero_copy_only=False)
        simple = _parse_simple_iso(stripped, missing)
    if simple is not None:
        micros, malformed = simple
        return micros, missing, malformed, np.zeros(n, dtype=bool)
    if n <= SMALL_COLUMN:
        present = [c or None for c in stripped]
        parsed = pd.to_datetime(present, format="ISO8601", utc=True, errors="coerce").astype(TIMESTAMP_DTYPE)
    else:
        present = _text_series(pc.if_else(pa.array(missing), _NULL_STRING, stripped) if missing.any() else stripped)
        parsed = pd.to_datetime(present, format="ISO8601", utc=True, errors="coerce").astype(TIMESTAMP_DTYPE)
    micros = _micros_of(parsed)
    with_offset = _matches(present, _OFFSET_PATTERN)
    if with_offset.any():
        zero = _matches(present, _ZERO_OFFSET_PATTERN)
        not_utc = with_offset & ~zero
    else:
        not_utc = with_offset
    malformed = (~missing) & (micros == _NAT) & ~not_utc
    return micros, missing, malformed, not_utc


def _parse_timestamp_text(text: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a ``str`` Series of ISO-8601 text; returns (UTC values, missing, malformed, not_utc)."""
    micros, missing, malformed, not_utc = _parse_times(_text_cells(text))
    return pd.Series(_timestamps_of(micros), index=text.index, copy=False), missing, malformed, not_utc


def _parse_timestamp_objects(raw: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a column of mixed Python objects (a JSON request): strings, datetimes, dates, None."""
    n = len(raw)
    missing = np.zeros(n, dtype=bool)
    malformed = np.zeros(n, dtype=bool)
    not_utc = np.zeros(n, dtype=bool)
    instants: list[object] = [pd.NaT] * n
    string_pos: list[int] = []
    for i, value in enumerate(raw.tolist()):
        if value is None or value is pd.NaT or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            missing[i] = True
        elif isinstance(value, str):
            string_pos.append(i)
        elif isinstance(value, dt.datetime):
            offset = value.utcoffset()
            if offset is None:
                instants[i] = pd.Timestamp(value).tz_localize("UTC")
            elif offset == dt.timedelta(0):
                instants[i] = pd.Timestamp(value).tz_convert("UTC")
            else:
                not_utc[i] = True
        elif isinstance(value, dt.date):
            instants[i] = pd.Timestamp(value).tz_localize("UTC")
        else:
            malformed[i] = True
    values = pd.Series(pd.DatetimeIndex(instants, dtype=TIMESTAMP_DTYPE), index=raw.index)
    if string_pos:
        sub = pd.Series([raw.iat[i] for i in string_pos], dtype="str")
        parsed, sub_missing, sub_malformed, sub_not_utc = _parse_timestamp_text(sub)
        where = np.asarray(string_pos)
        values.iloc[where] = parsed.to_numpy()
        missing[where] = sub_missing
        malformed[where] = sub_malformed
        not_utc[where] = sub_not_utc
    return values, missing, malformed, not_utc


def parse_timestamp_column(raw: Raw, table: Table, column: Column, out: _Collector, frame: pd.DataFrame) -> _Parsed:
    """Parse a ``timestamp`` column: ISO-8601, naive taken as UTC, any non-zero offset reported."""
    n = len(raw)
    strings = _string_cells(raw)
    dtype = raw.dtype
    if strings is not None:  # text: CSV cells, or request cells that are all strings or missing
        micros, missing, malformed, not_utc = _parse_times(strings)
    elif isinstance(dtype, pd.DatetimeTZDtype) and _is_utc(dtype):
        # Typed UTC times (a Parquet export): nothing to parse or report, only the unit to settle.
        values = pd.array(raw, copy=False)
        missing = values.isna()
        micros = values.as_unit("us").asi8.copy()  # owned: the export never shares the input's memory
        malformed = not_utc = np.zeros(n, dtype=bool)
    elif isinstance(dtype, pd.DatetimeTZDtype):
        missing = raw.isna().to_numpy(dtype=bool)
        values = raw.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
        wall = raw.dt.tz_localize(None).astype("datetime64[us]").to_numpy()
        not_utc = (~missing) & (wall != values.dt.tz_localize(None).to_numpy())
        malformed = np.zeros(n, dtype=bool)
        micros = _micros_of(values.array).copy()  # owned: the export never shares the input's memory
    elif pd.api.types.is_datetime64_dtype(dtype):
        missing = raw.isna().to_numpy(dtype=bool)
        micros = _micros_of(raw.dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE).array).copy()
        not_utc = malformed = np.zeros(n, dtype=bool)
    elif dtype == object:
        values, missing, malformed, not_utc = _parse_timestamp_objects(pd.Series(raw, copy=False))
        micros = _micros_of(values.array)
    else:  # numbers, booleans: not timestamps
        missing = raw.isna().to_numpy(dtype=bool)
        malformed = ~missing
        not_utc = np.zeros(n, dtype=bool)
        micros = np.full(n, _NAT, dtype=np.int64)
    shown = _Cells(raw)
    if malformed.any():
        out.add_rows(
            table, frame, column.name, "bad_timestamp", malformed,
            lambda pos: [
                f"not an ISO-8601 timestamp: {_show(shown[p])} (expected e.g. 2026-03-31T14:05:00Z)" for p in pos
            ],
        )
    invalid = malformed
    if not_utc.any():
        out.add_rows(
            table, frame, column.name, "not_utc", not_utc,
            lambda pos: [
                f"not UTC: {_show(shown[p])} has a non-zero offset; send UTC ('Z', '+00:00' or no offset)"
                for p in pos
            ],
        )
        invalid = malformed | not_utc
    if invalid.any():
        micros = np.where(invalid, _NAT, micros)
    return _Parsed(_timestamps_of(micros), missing, invalid, micros=micros)


def _to_float(text: pa.Array | pd.Series) -> np.ndarray:
    """Parse number text to float64, NaN where unparseable; pyarrow's cast first, pandas if any cell fails."""
    cells = text if isinstance(text, pa.Array) else _arrow_of(text.array)
    try:
        return pc.cast(cells, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_numeric(_text_series(cells), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _request_numbers(raw: Raw) -> np.ndarray | None:
    """A short object column of Python floats, ints (not bools) and None as float64, else None."""
    if not isinstance(raw, np.ndarray) or len(raw) > SMALL_COLUMN:
        return None
    cells = raw.tolist()
    if all(v is None or type(v) is float or type(v) is int for v in cells):
        return np.array(cells, dtype=np.float64)
    return None


def parse_number_column(raw: Raw, table: Table, column: Column, out: _Collector, frame: pd.DataFrame) -> _Parsed:
    """Parse a ``number`` column: finite, within the column's min/max; NaN text is not a number."""
    n = len(raw)
    array = _request_numbers(raw)
    cells = None if array is not None else _inferred_cells(raw)
    if cells is not None and not (pa.types.is_floating(cells.type) or pa.types.is_integer(cells.type)
                                  or pa.types.is_null(cells.type)):
        cells = None  # text or booleans: parsed as text below, so true is not 1
    unparsed = np.zeros(n, dtype=bool)
    if array is not None:
        missing = np.isnan(array)
    elif cells is not None:  # unsafe: an integer beyond 2**53 rounds to the nearest float, as numpy does
        array = cells.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        missing = np.isnan(array)
    elif (isinstance(raw, pd.Series) and pd.api.types.is_numeric_dtype(raw.dtype)
          and not pd.api.types.is_bool_dtype(raw.dtype)):
        array = raw.to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(array)
    else:
        stripped = pc.utf8_trim_whitespace(_text_cells(raw))
        missing = _blank_mask(stripped)
        array = _to_float(pc.if_else(pa.array(missing), _NULL_STRING, stripped) if missing.any() else stripped)
        unparsed = (~missing) & np.isnan(array)
    shown = _Cells(raw)
    infinite = np.isinf(array)
    bad = unparsed | infinite
    if bad.any():
        out.add_rows(
            table, frame, column.name, "bad_number", bad,
            lambda pos: [f"not a finite number: {_show(shown[p])}" for p in pos],
        )
    invalid = bad
    with np.errstate(invalid="ignore"):
        if column.min_value is not None:
            low = (~bad) & (array < column.min_value)
            if low.any():
                out.add_rows(
                    table, frame, column.name, "below_min", low,
                    lambda pos: [f"{_show(shown[p])} is below the minimum {column.min_value:g}" for p in pos],
                )
                invalid = invalid | low
        if column.max_value is not None:
            high = (~bad) & (array > column.max_value)
            if high.any():
                out.add_rows(
                    table, frame, column.name, "above_max", high,
                    lambda pos: [f"{_show(shown[p])} is above the maximum {column.max_value:g}" for p in pos],
                )
                invalid = invalid | high
    if invalid.any():
        array = np.where(invalid, np.nan, array)
    return _Parsed(array.astype(np.float64, copy=False), missing, invalid)


def _request_flags(raw: Raw) -> tuple[np.ndarray, np.ndarray] | None:
    """A short object column of Python bools and None as (truth, missing), else None."""
    if not isinstance(raw, np.ndarray) or len(raw) > SMALL_COLUMN:
        return None
    cells = raw.tolist()
    if all(v is None or type(v) is bool for v in cells):
        return (np.fromiter((v is True for v in cells), bool, len(cells)),
                np.fromiter((v is None for v in cells), bool, len(cells)))
    return None


def parse_flag_column(raw: Raw, table: Table, column: Column, out: _Collector, frame: pd.DataFrame) -> _Parsed:
    """Parse a ``flag`` column: true/false/1/0 (any case), or booleans."""
    n = len(raw)
    invalid = np.zeros(n, dtype=bool)
    flags = _request_flags(raw)
    cells = None if flags is not None else _inferred_cells(raw)
    if flags is not None:
        truth, missing = flags
    elif cells is not None and (pa.types.is_boolean(cells.type) or pa.types.is_null(cells.type)):
        missing = cells.is_null().to_numpy(zero_copy_only=False)
        truth = cells.cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
    elif isinstance(raw, pd.Series) and pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.astype("boolean").array
        missing = values.isna()
        truth = values.to_numpy(dtype=bool, na_value=False)
    else:
        if isinstance(raw, pd.Series) and pd.api.types.is_numeric_dtype(raw.dtype):
            numbers = raw.to_numpy(dtype="float64", na_value=np.nan)
            missing = np.isnan(numbers)
            is_true, is_false = numbers == 1, numbers == 0
        else:
            text = _text_cells(raw)
            words = pc.utf8_lower(pc.utf8_trim_whitespace(text))
            missing = _blank_mask(text)
            is_true = pc.is_in(words, value_set=pa.array(_TRUE_WORDS, _LARGE_STRING)).fill_null(False)
            is_false = pc.is_in(words, value_set=pa.array(_FALSE_WORDS, _LARGE_STRING)).fill_null(False)
            is_true = is_true.to_numpy(zero_copy_only=False)
            is_false = is_false.to_numpy(zero_copy_only=False)
        invalid = (~missing) & ~is_true & ~is_false
        truth = is_true & ~invalid
        missing_or_invalid = missing | invalid
        if invalid.any():
            shown = _Cells(raw)
            out.add_rows(
                table, frame, column.name, "bad_flag", invalid,
                lambda pos: [f"not a flag: {_show(shown[p])} (expected true, false, 1 or 0)" for p in pos],
            )
        return _Parsed(pd.arrays.BooleanArray(truth & ~missing_or_invalid, missing_or_invalid), missing, invalid)
    return _Parsed(pd.arrays.BooleanArray(truth & ~missing, missing), missing, invalid)


def parse_column(
    raw: Raw, table: Table, column: Column, mapping: NameMapping, out: _Collector, frame: pd.DataFrame
) -> _Parsed:
    """Parse one column by its contract kind and report empty cells in non-nullable columns."""
    if column.kind in ("id", "text"):
        parsed = parse_text_column(raw)
    elif column.kind == "choice":
        section = mapping.for_column(table.name, column.name)
        names = mapping.section(section) if section else _plain_names(column.allowed)
        parsed = parse_choice_column(raw, table, column, names, section, out, frame)
    elif column.kind == "timestamp":
        parsed = parse_timestamp_column(raw, table, column, out, frame)
    elif column.kind == "number":
        parsed = parse_number_column(raw, table, column, out, frame)
    elif column.kind == "flag":
        parsed = parse_flag_column(raw, table, column, out, frame)
    else:  # a mistake in schema.py, not in the data
        raise ValueError(f"{table.name}.{column.name}: unknown column kind {column.kind!r}")
    if not column.nullable and parsed.missing.any():
        out.add_rows(
            table, frame, column.name, "empty", parsed.missing,
            lambda pos: [f"empty {column.name}; this column must have a value" for _ in pos],
        )
    return parsed


# ---------------------------------------------------------------------------------------------
# Table and cross-table rules.


def check_columns(table: Table, frame: pd.DataFrame, out: _Collector, notes: list[str]) -> list[str]:
    """Report required columns that are missing (expected vs found); return the usable columns."""
    found = [str(c) for c in frame.columns]
    missing = [c.name for c in table.columns if c.required and c.name not in found]
    if missing:
        expected = ", ".join(c.name for c in table.columns if c.required)
        near = {normalize_name(c.replace("\ufeff", "")): c for c in found}
        look_alikes = [f"{near[m]!r} for {m}" for m in missing if m in near]
        hint = f"; check spelling, case and spaces: {', '.join(look_alikes)}" if look_alikes else ""
        out.add(
            table.name, ", ".join(missing), "missing_column", "whole table",
            f"required column{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}; "
            f"expected: {expected}; found: {', '.join(found) or '(none)'}{hint}",
        )
    extra = [c for c in found if c not in table.column_names]
    if extra:
        notes.append(f"{table.name}: extra columns ignored: {', '.join(extra)}")
    return [c.name for c in table.columns if c.name in found]


def _codes(cells: pa.Array) -> tuple[np.ndarray, int]:
    """Hash codes of string cells (-1 where null) and the number of distinct values."""
    encoded = pc.dictionary_encode(cells)
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def _isin(objects: np.ndarray, values: Sequence[str]) -> np.ndarray:
    """Where an object array equals one of a few strings (None never does)."""
    found = np.zeros(len(objects), dtype=bool)
    for value in values:
        found |= objects == value
    return found


def check_unique_key(table: Table, frame: pd.DataFrame, parsed: dict[str, _Parsed], out: _Collector) -> None:
    """Report rows whose key repeats an earlier row's key (duplicate ids), naming the first row."""
    if not table.unique_key or any(k not in parsed for k in table.key):
        return
    n = len(frame)
    if n < 2:  # one row cannot repeat another
        return
    columns = [parsed[k] for k in table.key]
    if n <= SMALL_COLUMN:
        seen: dict[tuple, int] = {}
        repeats: dict[int, int] = {}
        for i, key in enumerate(zip(*(c.objects.tolist() for c in columns))):
            if None in key:
                continue
            first_seen = seen.setdefault(key, i)
            if first_seen != i:
                repeats[i] = first_seen
        if not repeats:
            return
        duplicated = np.zeros(n, dtype=bool)
        duplicated[list(repeats)] = True
        first = np.arange(n)
        first[list(repeats)] = list(repeats.values())
    else:
        if len(columns) == 1:
            cells = columns[0].strings
            if len(pc.unique(cells)) - (cells.null_count > 0) == n - cells.null_count:  # twice count_distinct's speed
                return
        combined = np.zeros(n, dtype=np.int64)
        complete = np.ones(n, dtype=bool)
        for c in columns:
            codes, size = _codes(c.strings)
            combined = combined * (size + 1) + codes
            complete &= codes >= 0
        keys = combined[complete]
        if len(pd.unique(keys)) == len(keys):  # a hash pass; the sort below only when a key repeats
            return
        _, first_index, inverse = np.unique(combined, return_index=True, return_inverse=True)
        first = first_index[inverse]
        duplicated = complete & (first != np.arange(n))
        if not duplicated.any():
            return
    cells = [_Cells(c.objects) for c in columns]

    def reason(pos: np.ndarray) -> list[str]:
        return [
            f"duplicate {' / '.join(table.key)} "
            f"{' / '.join(_show(c[p]) for c in cells)}; first seen at row {int(first[p]) + 1}"
            for p in pos
        ]

    out.add_rows(table, frame, ", ".join(table.key), "duplicate_key", duplicated, reason)


def _known(*columns: _Parsed) -> np.ndarray:
    """Rows where every one of the parsed columns holds a value (neither missing nor invalid)."""
    known = ~(columns[0].missing | columns[0].invalid)
    for column in columns[1:]:
        known &= ~(column.missing | column.invalid)
    return known


def check_deals(frame: pd.DataFrame, parsed: dict[str, _Parsed], out: _Collector) -> None:
    """Deal-level rules: closed_at set iff won/lost, stage consistent with outcome, closed after created."""
    table = TABLES["deals"]
    if not {"outcome", "stage", "closed_at", "created_at"} <= parsed.keys():
        return
    outcome = parsed["outcome"].objects
    stage = parsed["stage"].objects
    closed = parsed["closed_at"]
    closed_at_set = ~closed.missing
    is_closed = _isin(outcome, CLOSED_STAGES)
    is_open = outcome == "open"
    out.add_rows(
        table, frame, "closed_at", "closed_at_missing", is_closed & closed.missing,
        lambda pos: [f"empty closed_at but outcome is {outcome[p]!r}; a won or lost deal needs closed_at" for p in pos],
    )
    out.add_rows(
        table, frame, "closed_at", "closed_at_set_on_open", is_open & closed_at_set,
        lambda pos: ["closed_at is set but outcome is 'open'; an open deal has no closed_at" for _ in pos],
    )
    known = _known(parsed["stage"], parsed["outcome"])
    open_stage = _isin(stage, OPEN_STAGES)
    mismatch = known & ((is_closed & (stage != outcome)) | (is_open & ~open_stage))
    out.add_rows(
        table, frame, "stage", "stage_outcome_mismatch", mismatch,
        lambda pos: [
            f"stage {stage[p]!r} does not match outcome {outcome[p]!r}; expected "
            + (f"{outcome[p]!r}" if outcome[p] != "open" else f"one of {', '.join(OPEN_STAGES)}")
            for p in pos
        ],
    )
    created = parsed["created_at"]
    before = (closed.micros != _NAT) & (created.micros != _NAT) & (closed.micros < created.micros)
    closed_shown = _Cells(closed.array)
    created_shown = _Cells(created.array)
    out.add_rows(
        table, frame, "closed_at", "closed_before_created", before,
        lambda pos: [
            f"closed_at {_show(closed_shown[p])} is before created_at {_show(created_shown[p])}" for p in pos
        ],
    )


@dataclass(frozen=True)
class _DealIndex:
    """Deals by id; ``position`` finds each event's deal row (the first row with that id wins;
    duplicates are reported separately)."""

    ids: _Parsed
    created_at: np.ndarray | None  # per deals row, int64 microseconds
    stage: np.ndarray | None  # per deals row, canonical stage or None

    def position(self, deal_id: _Parsed) -> np.ndarray:
        """Row in deals of each event's deal, -1 where the id is missing or not in deals."""
        if len(deal_id.missing) <= SMALL_COLUMN and len(self.ids.missing) <= SMALL_COLUMN:
            rows: dict[str, int] = {}
            for i, value in enumerate(self.ids.objects.tolist()):
                if value is not None:
                    rows.setdefault(value, i)
            return np.fromiter((rows.get(v, -1) for v in deal_id.objects.tolist()), np.int64, len(deal_id.missing))
        found = pc.index_in(deal_id.strings, value_set=self.ids.strings, skip_nulls=True)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _utc(micros: int) -> pd.Timestamp:
    return pd.Timestamp(np.datetime64(int(micros), "us")).tz_localize("UTC")


def index_deals(parsed: dict[str, _Parsed]) -> _DealIndex | None:
    if "deal_id" not in parsed:
        return None
    created = parsed["created_at"].micros if "created_at" in parsed else None
    stage = parsed["stage"].objects if "stage" in parsed else None
    return _DealIndex(parsed["deal_id"], created, stage)


def check_events(
    table: Table, frame: pd.DataFrame, parsed: dict[str, _Parsed], deals: _DealIndex, out: _Collector
) -> np.ndarray | None:
    """Every event's deal exists and no event precedes its deal's created_at; returns deal positions."""
    if "deal_id" not in parsed:
        return None
    deal_id = parsed["deal_id"]
    where = deals.position(deal_id)
    unknown = (where < 0) & ~deal_id.missing
    if unknown.any():
        ids_shown = _Cells(deal_id.objects)
        out.add_rows(
            table, frame, "deal_id", "unknown_deal", unknown,
            lambda pos: [f"deal_id {_show(ids_shown[p])} is not in deals" for p in pos],
        )
    time_column = table.time_column
    if time_column in parsed and deals.created_at is not None and len(deals.created_at):
        created = deals.created_at[np.clip(where, 0, None)]
        event_time = parsed[time_column].micros
        early = (where >= 0) & (created != _NAT) & (event_time != _NAT) & (event_time < created)
        out.add_rows(
            table, frame, time_column, "before_created", early,
            lambda pos: [
                f"{time_column} {_show(_utc(event_time[p]))} is before the deal's created_at "
                f"{_show(_utc(created[p]))}"
                for p in pos
            ],
        )
    return where


def check_stage_history(
    frame: pd.DataFrame, parsed: dict[str, _Parsed], deals: _DealIndex, where: np.ndarray, out: _Collector
) -> None:
    """Per deal: no two entries at the same time, the last is the current stage, nothing after won/lost.

    Entries are ordered by (deal, entered_at, row) with numpy, so one deal and a whole export take
    the same path.
    """
    table = TABLES["stage_history"]
    if not {"deal_id", "stage", "entered_at"} <= parsed.keys():
        return
    usable = np.flatnonzero((where >= 0) & _known(parsed["stage"], parsed["entered_at"]))
    if len(usable) == 0:
        return
    stage = parsed["stage"].objects
    time = parsed["entered_at"].micros
    rows = usable[np.lexsort((usable, time[usable], where[usable]))]  # sorted row positions
    deal, at = where[rows], time[rows]
    n = len(frame)
    new_deal = np.r_[True, deal[1:] != deal[:-1]]
    new_time = new_deal | np.r_[True, at[1:] != at[:-1]]

    if not new_time.all():
        run_start = np.maximum.accumulate(np.where(new_time, np.arange(len(rows)), 0))
        mask = np.zeros(n, dtype=bool)
        first_of = np.zeros(n, dtype=np.int64)
        mask[rows[~new_time]] = True
        first_of[rows] = rows[run_start]
        out.add_rows(
            table, frame, "entered_at", "same_time", mask,
            lambda pos: [
                f"two stage entries of this deal at the same time (also row {first_of[p] + 1}); the order is ambiguous"
                for p in pos
            ],
        )

    group_start = np.flatnonzero(new_deal)
    group = np.cumsum(new_deal) - 1
    terminal = _isin(stage[rows], CLOSED_STAGES)
    if terminal.any():
        never = np.iinfo(np.int64).max
        first_terminal = np.minimum.reduceat(np.where(terminal, at, never), group_start)[group]
        after = (first_terminal != never) & (at > first_terminal)
        if after.any():
            mask = np.zeros(n, dtype=bool)
            terminal_at = np.zeros(n, dtype=np.int64)
            mask[rows[after]] = True
            terminal_at[rows] = first_terminal
            out.add_rows(
                table, frame, "entered_at", "after_terminal", mask,
                lambda pos: [
                    f"stage entry after the deal was closed (won/lost entered at "
                    f"{_show(pd.Timestamp(terminal_at[p], unit='us', tz='UTC'))})"
                    for p in pos
                ],
            )

    if deals.stage is not None:
        last = rows[np.r_[group_start[1:] - 1, len(rows) - 1]]
        current = deals.stage[where[last]]
        differs = pd.notna(current) & (stage[last] != current)
        if differs.any():
            mask = np.zeros(n, dtype=bool)
            current_of = np.empty(n, dtype=object)
            mask[last[differs]] = True
            current_of[last] = current
            out.add_rows(
                table, frame, "stage", "last_stage_mismatch", mask,
                lambda pos: [
                    f"the deal's last stage entry is {stage[p]!r} but its current stage in deals is {current_of[p]!r}"
                    for p in pos
                ],
            )


def _pairs_in(first: pa.Array, second: pa.Array, first_in: pa.Array, second_in: pa.Array) -> np.ndarray:
    """Whether each (first, second) pair occurs among the (first_in, second_in) pairs; hash-based."""
    a_codes, a_size = _codes(pa.concat_arrays([first, first_in]))
    b_codes, b_size = _codes(pa.concat_arrays([second, second_in]))
    pairs = a_codes * (b_size + 1) + b_codes
    valid = (a_codes >= 0) & (b_codes >= 0)
    n = len(first)
    return np.isin(pairs[:n], pairs[n:][valid[n:]]) & valid[:n]


def _contact_pairs_in(
    contact_id: _Parsed, deal_row: np.ndarray, contacts_contact_id: _Parsed, contacts_deal_row: np.ndarray
) -> np.ndarray:
    """Whether each (deal row, contact_id) pair occurs among the contacts' pairs; hash-based.

    Deal rows stand for deal ids (two ids are equal exactly when they find the same first row of
    deals), so only the contact ids are encoded. The caller passes rows where every deal is known.
    """
    codes, size = _codes(pa.concat_arrays([contact_id.strings, contacts_contact_id.strings]))
    n = len(deal_row)
    pairs = deal_row * (size + 1) + codes[:n]
    contact_codes = codes[n:]
    valid = (contacts_deal_row >= 0) & (contact_codes >= 0)
    on_deal = contacts_deal_row[valid] * (size + 1) + contact_codes[valid]
    return pc.is_in(pa.array(pairs), value_set=pa.array(on_deal)).to_numpy(zero_copy_only=False)


def check_activity_contacts(
    frame: pd.DataFrame, parsed: dict[str, _Parsed], contacts: dict[str, _Parsed] | None, out: _Collector,
    deal_rows: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
) -> None:
    """An activity's contact_id, when set, must be a contact of the same deal.

    ``deal_rows``: the row in deals of each activity's and each contact's deal (``check_events``),
    when known; pairs are then matched on deal rows instead of deal id text.
    """
    if contacts is None or not {"deal_id", "contact_id"} <= contacts.keys():
        return
    if not {"deal_id", "contact_id"} <= parsed.keys():
        return
    contact_id = parsed["contact_id"]
    deal_id = parsed["deal_id"]
    known = ~(contact_id.missing | deal_id.missing)
    if not known.any():
        return
    if len(known) <= SMALL_COLUMN and len(contacts["deal_id"].missing) <= SMALL_COLUMN:
        on_deal = set(zip(contacts["deal_id"].objects.tolist(), contacts["contact_id"].objects.tolist()))
        pairs = zip(deal_id.objects.tolist(), contact_id.objects.tolist())
        not_on_deal = known & np.fromiter((pair not in on_deal for pair in pairs), bool, len(known))
    elif deal_rows[0] is not None and deal_rows[1] is not None and (deal_rows[0][known] >= 0).all():
        not_on_deal = known & ~_contact_pairs_in(contact_id, deal_rows[0], contacts["contact_id"], deal_rows[1])
    else:  # an activity of a deal not in deals: its pair is matched on the id text
        not_on_deal = known & ~_pairs_in(
            deal_id.strings, contact_id.strings, contacts["deal_id"].strings, contacts["contact_id"].strings
        )
    if not not_on_deal.any():
        return
    contact_shown = _Cells(contact_id.objects)
    deal_shown = _Cells(deal_id.objects)
    out.add_rows(
        TABLES["activities"], frame, "contact_id", "contact_not_on_deal", not_on_deal,
        lambda pos: [
            f"contact_id {_show(contact_shown[p])} is not a contact of deal {_show(deal_shown[p])} in contacts"
            for p in pos
        ],
    )


def check_field_values(frame: pd.DataFrame, parsed: dict[str, _Parsed], out: _Collector) -> None:
    """old_value / new_value parse as the tracked field's type: dates for the close date, numbers for amount."""
    table = TABLES["field_history"]
    if "field" not in parsed:
        return
    tracked = parsed["field"].objects
    for column in ("old_value", "new_value"):
        if column not in parsed:
            continue
        values = parsed[column]
        present = ~values.missing
        is_date = present & (tracked == "expected_close_date")
        is_amount = present & (tracked == "amount")
        if not (is_date.any() or is_amount.any()):
            continue
        cells = values.objects  # one conversion; the subsets below are numpy takes
        shown = _Cells(cells)
        if is_date.any():
            _, _, malformed, not_utc = _parse_times(pa.array(cells[is_date], type=_LARGE_STRING))
            bad = np.zeros(len(cells), dtype=bool)
            bad[np.flatnonzero(is_date)] = malformed | not_utc
            out.add_rows(
                table, frame, column, "bad_field_value", bad,
                lambda pos: [
                    f"expected_close_date value {_show(shown[p])} is not an ISO-8601 UTC date" for p in pos
                ],
            )
        if is_amount.any():
            stripped = pc.utf8_trim_whitespace(pa.array(cells[is_amount], type=_LARGE_STRING))  # as .str.strip()
            numbers = _to_float(stripped)
            bad = np.zeros(len(cells), dtype=bool)
            bad[np.flatnonzero(is_amount)] = ~np.isfinite(numbers)
            out.add_rows(
                table, frame, column, "bad_field_value", bad,
                lambda pos: [f"amount value {_show(shown[p])} is not a finite number" for p in pos],
            )


# ---------------------------------------------------------------------------------------------
# Composition.


def _absent_column(kind: str, n_rows: int) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """An optional column the input did not have: all missing, in the export dtype."""
    if kind == "number":
        return np.full(n_rows, np.nan)
    if kind == "flag":
        return pd.arrays.BooleanArray(np.zeros(n_rows, dtype=bool), np.ones(n_rows, dtype=bool))
    if kind == "timestamp":
        return _timestamps_of(np.full(n_rows, _NAT, dtype=np.int64))
    return _string_array(pa.nulls(n_rows, type=_LARGE_STRING))


@functools.lru_cache(maxsize=None)
def _column_index(table_name: str) -> pd.Index:
    """A table's column labels as a pandas Index, built once per process."""
    return pd.Index(TABLES[table_name].column_names)


def build_frame(table: Table, parsed: dict[str, _Parsed], n_rows: int) -> pd.DataFrame:
    """Assemble the typed table in contract column order; optional absent columns are all-missing.

    Each column is handed to pandas as its own block, as it is: ``pd.DataFrame(dict)`` infers
    the column labels' dtype and sanitizes every array again, half of a one-deal check's cost.
    """
    blocks = []
    numbers, number_positions = [], []
    for position, column in enumerate(table.columns):
        if column.name in parsed:
            values = parsed[column.name].array
            dtype = _OUTPUT_DTYPE_OBJECTS[column.kind]
            values = values if values.dtype == dtype else values.astype(dtype)
        else:
            values = _absent_column(column.kind, n_rows)
        if isinstance(values, np.ndarray):
            numbers.append(values)
            number_positions.append(position)
        else:
            blocks.append((values, np.array([position])))
    if numbers:
        # One float block (rows as columns), a copy: owned and writable, not a view of the input
        # or of read-only arrow memory.
        blocks.append((np.vstack(numbers), np.array(number_positions)))
    # A shallow copy of the built labels (~8 us, not ~100 us): an Index's name can be set in place.
    columns = _column_index(table.name).copy()
    return create_dataframe_from_blocks(blocks, index=pd.RangeIndex(n_rows), columns=columns)


def check_tables(raw: dict[str, pd.DataFrame], mapping: NameMapping | None = None) -> CheckResult:
    """Check raw tables against the contract; return the typed export or every violation.

    ``raw`` maps table names to frames: text from CSV, typed from Parquet, or Python values from a
    JSON request. ``mapping`` renames CRM stage/role/... names (default: canonical + Salesforce).
    No file I/O beyond reading the shipped default mapping once per process.
    """
    mapping = mapping if mapping is not None else load_mapping()
    out = _Collector()
    notes: list[str] = []
    for name in raw:
        if name not in TABLES:
            notes.append(f"table {name!r} is not part of the contract and was ignored")
    present = {name: raw[name] for name in TABLES if raw.get(name) is not None}
    for table in TABLES.values():
        if table.required and table.name not in present:
            out.add(
                table.name, "-", "missing_table", "whole table",
                f"required table {table.name} is missing; tables found: {', '.join(present) or '(none)'}",
            )

    frames: dict[str, pd.DataFrame] = {}
    parsed: dict[str, dict[str, _Parsed]] = {}
    for name, frame in present.items():
        table = TABLES[name]
        if not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1):
            frame = frame.reset_index(drop=True)
        frames[name] = frame
        usable = check_columns(table, frame, out, notes)
        cells = _frame_columns(frame, usable)
        parsed[name] = {
            column: parse_column(cells[column], table, table.column(column), mapping, out, frame)
            for column in usable
        }
        check_unique_key(table, frame, parsed[name], out)

    deal_rows: dict[str, np.ndarray | None] = {}
    if "deals" in parsed:
        check_deals(frames["deals"], parsed["deals"], out)
        deals = index_deals(parsed["deals"])
        if deals is not None:
            for name in EVENT_TABLES:
                if name not in parsed:
                    continue
                where = deal_rows[name] = check_events(TABLES[name], frames[name], parsed[name], deals, out)
                if name == "stage_history" and where is not None:
                    check_stage_history(frames[name], parsed[name], deals, where, out)
    if "activities" in parsed:
        check_activity_contacts(
            frames["activities"], parsed["activities"], parsed.get("contacts"), out,
            (deal_rows.get("activities"), deal_rows.get("contacts")),
        )
    if "field_history" in parsed:
        check_field_values(frames["field_history"], parsed["field_history"], out)

    if out.counts:
        return CheckResult(None, _ordered(out.violations), out.counts, notes)
    export = Export(
        **{name: build_frame(TABLES[name], parsed[name], len(frames[name])) for name in present}
    )
    return CheckResult(export, [], {}, notes)


def _ordered(violations: list[Violation]) -> list[Violation]:
    """Order violations by table (contract order), keeping the order found within a table."""
    rank = {name: i for i, name in enumerate(TABLES)}
    return sorted(violations, key=lambda v: rank.get(v.table, -1))


# ---------------------------------------------------------------------------------------------
# Reporting and the edge: folders and the CLI.


def format_report(
    violations: Sequence[Violation],
    max_per_rule: int = DEFAULT_MAX_PER_RULE,
    counts: dict[tuple[str, str, str], int] | None = None,
) -> str:
    """Render violations as a ``table | column | row | reason`` report with per-table counts.

    At most ``max_per_rule`` lines per (table, column, rule); the rest are summarised as
    ``... and N more``, using ``counts`` (exact totals) when given.
    """
    groups: dict[tuple[str, str, str], list[Violation]] = {}
    for v in violations:
        groups.setdefault((v.table, v.column, v.rule), []).append(v)
    totals = {key: max(len(items), (counts or {}).get(key, 0)) for key, items in groups.items()}
    for key, count in (counts or {}).items():
        if key not in groups:
            groups[key] = []
            totals[key] = count
    rows: list[tuple[str, str, str, str]] = []
    for key, items in groups.items():
        shown = items[: max(0, max_per_rule)]
        rows.extend((v.table, v.column, v.row, v.reason) for v in shown)
        if totals[key] > len(shown):
            rule = f" ({key[2]})" if key[2] else ""
            rows.append((key[0], key[1], f"... and {totals[key] - len(shown)} more{rule}", ""))
    header = ("table", "column", "row", "reason")
    widths = [max(len(header[i]), *(min(len(r[i]), 50) for r in rows)) if rows else len(header[i]) for i in range(3)]

    def line(cells: tuple[str, str, str, str]) -> str:
        shown = [*(cells[i].ljust(widths[i]) for i in range(3)), cells[3]] if cells[3] else list(cells[:3])
        return " | ".join(shown).rstrip()

    total = sum(totals.values())
    per_table: dict[str, int] = {}
    for (table, _, _), count in totals.items():
        per_table[table] = per_table.get(table, 0) + count
    summary = ", ".join(f"{table} {count}" for table, count in per_table.items())
    lines = [
        f"{total} contract violation{'s' if total != 1 else ''} ({summary}):",
        line(header),
        "-+-".join("-" * w for w in [*widths, 6]),
        *(line(r) for r in rows),
    ]
    return "\n".join(lines)


def _folder_violation(folder: Path, reason: str) -> Violation:
    return Violation("(export)", "-", str(folder), reason, "folder")


def read_export_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Read an export folder's raw tables, turning folder and file problems into ``ContractError``."""
    from features.io import ExportFolderError, find_table_files, read_raw_tables

    folder = Path(folder)
    try:
        files = find_table_files(folder)
    except ExportFolderError as exc:
        raise ContractError([_folder_violation(folder, str(exc))]) from None
    if not files:
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise ContractError(
            [
                _folder_violation(
                    folder,
                    "no contract tables found; expected deals.csv or deals.parquet and optionally "
                    f"{', '.join(n for n in TABLES if n != 'deals')} (.csv or .parquet); "
                    f"files found: {', '.join(present) or '(none)'}",
                )
            ]
        )
    try:
        return read_raw_tables(folder)
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas/pyarrow parser errors are ValueErrors
        raise ContractError([_folder_violation(folder, f"a table file cannot be read: {exc}")]) from None


def load_export(folder: Path, mapping: NameMapping | Path | None = None) -> Export:
    """Read and check an export folder; return the typed export or raise ``ContractError``.

    ``mapping`` is a loaded ``NameMapping``, a YAML file to load, or None for the default; an
    unusable mapping file is also a ``ContractError``.
    """
    from features.mapping import MappingError

    if not isinstance(mapping, NameMapping):
        try:
            mapping = load_mapping(mapping)
        except MappingError as exc:  # one error type for callers: the inputs are not usable
            raise ContractError([Violation("(mapping)", "-", str(mapping), str(exc), "mapping")]) from None
    result = check_tables(read_export_tables(folder), mapping)
    if result.export is None:
        raise ContractError(result.violations, result.counts)
    return result.export


def run_validate(data: Path, mapping: Path | None = None, max_errors: int = DEFAULT_MAX_PER_RULE) -> int:
    """Check an export folder and print the report; return the exit code.

    0: the export passes (one summary line); 1: it breaks the contract (full report);
    2: the mapping file itself is unusable.
    """
    from features.mapping import MappingError

    try:
        name_mapping = load_mapping(mapping)
    except MappingError as exc:
        print(f"error: {exc}")
        return 2
    try:
        raw = read_export_tables(data)
    except ContractError as exc:
        print(format_report(exc.violations, max_errors))
        return 1
    result = check_tables(raw, name_mapping)
    for note in result.notes:
        print(f"note: {note}")
    if result.export is None:
        print(format_report(result.violations, max_errors, counts=result.counts))
        return 1
    sizes = ", ".join(
        f"{name} {len(frame)} rows" if frame is not None else f"{name} absent"
        for name, frame in result.export.tables().items()
    )
    print(f"OK: {data} passes the data contract ({sizes})")
    return 0
