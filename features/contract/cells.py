"""Parsing raw cells into the contract's types (text, choices, timestamps, numbers, flags), one column at a time.

A column arrives as CSV text, typed Parquet or a JSON request's Python objects; each parser
returns the typed column and reports every cell it cannot read, with its row and the reason.

Not pandera's dtype coercion (``bench/bench_contract.py``; details in ``features.contract.check``):
coercing a column fails or passes as a whole, so one unparseable number hides the column's other
rows from its range checks, and a non-UTC offset is converted without a word; a one-column pandera
schema costs 1.4-4 ms per call against 8-92 us here on one deal's column.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract.mapping import MAPPING_FILE_WHERE, NameMapping, normalize_name
from features.contract.schema import (
    TIMESTAMP_DTYPE,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    Column,
    Table,
)
from features.contract.violations import (
    FALSE_WORDS,
    LARGE_STRING,
    OFFSET_PATTERN,
    SMALL_COLUMN,
    TRUE_WORDS,
    ZERO_OFFSET_PATTERN,
    Cells,
    Collector,
    compiled_pattern,
    matches_pattern,
    show_value,
)

# ---------------------------------------------------------------------------------------------
# Raw cells. A column arrives as an object array (a JSON request: Python str, float, bool, None),
# a ``str`` array (CSV text) or a typed Series (Parquet). String work happens on one pyarrow array
# per column; short columns (a one-deal request) are walked as Python lists, which costs less
# than any pandas call. The common paths build no Series or frame until the typed export.

_NULL_STRING = pa.scalar(None, type=LARGE_STRING)
NAT = np.iinfo(np.int64).min  # NaT as int64 microseconds
_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # what ``astype("str")`` gives in pandas 3
_TS_DTYPE = pd.DatetimeTZDtype("us", "UTC")  # TIMESTAMP_DTYPE as an object: no string parsing per call
_BOOL_DTYPE = pd.BooleanDtype()
_FLOAT_DTYPE = np.dtype("float64")
# OUTPUT_DTYPES as dtype objects: comparing against a dtype string parses the string every time.
OUTPUT_DTYPE_OBJECTS = {
    "id": _STR_DTYPE, "text": _STR_DTYPE, "choice": _STR_DTYPE, "timestamp": _TS_DTYPE,
    "number": _FLOAT_DTYPE, "flag": _BOOL_DTYPE,
}

# A column as the parsers take it: an object column as a numpy array, a ``str`` column as its
# string array, any other (typed) column as a Series.
Raw = np.ndarray | pd.api.extensions.ExtensionArray | pd.Series


def frame_columns(frame: pd.DataFrame, names: list[str]) -> dict[str, Raw]:
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
            return pa.array(raw, type=LARGE_STRING, from_pandas=True)
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
    return array if array.type == LARGE_STRING else array.cast(LARGE_STRING)


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


def string_array(cells: pa.Array) -> pd.arrays.ArrowStringArray:
    """Arrow strings as the ``str`` array the export holds."""
    return pd.arrays.ArrowStringArray(cells, dtype=_STR_DTYPE)


def _text_series(cells: np.ndarray | list | pa.Array, index: pd.Index | None = None) -> pd.Series:
    """Strings (None where missing) as a ``str`` Series, built by pyarrow without pandas' inference."""
    array = cells if isinstance(cells, pa.Array) else pa.array(cells, type=LARGE_STRING, from_pandas=True)
    return pd.Series(string_array(array), index=index, copy=False)


def _blank_mask(cells: pa.Array, values: list | None = None) -> np.ndarray:
    """Cells that are missing or blank; a plain loop on short columns avoids pyarrow's per-call cost."""
    if len(cells) <= SMALL_COLUMN:
        values = cells.to_pylist() if values is None else values
        return np.fromiter((not isinstance(v, str) or not v.strip() for v in values), bool, len(values))
    # Missing, empty or all whitespace (what ``.str.strip() == ""`` finds) without copying the strings.
    blank = pc.or_kleene(pc.equal(cells, pa.scalar("", LARGE_STRING)), pc.utf8_is_space(cells))
    return blank.fill_null(True).to_numpy(zero_copy_only=False)


def _empty_mask(text: pd.Series | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """Cells of a ``str`` column that are missing or blank (whitespace only)."""
    return _blank_mask(_arrow_of(text.array if isinstance(text, pd.Series) else text))


def _nulled(cells: pa.Array, missing: np.ndarray) -> pa.Array:
    """``cells`` with the ``missing`` cells null; untouched when those are already all null."""
    if int(np.count_nonzero(missing)) == cells.null_count:
        return cells
    return pc.if_else(pa.array(missing), _NULL_STRING, cells)


def timestamps_of(micros: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Microseconds since the epoch (int64 min for NaT) as the export's UTC timestamp array.

    ``pd.array`` validates and infers (~30 us a column, a tenth of a one-deal check); the values
    are already exactly the array's storage, so they are wrapped as they are where pandas allows.
    """
    wall = micros.view("datetime64[us]")
    simple_new = getattr(pd.arrays.DatetimeArray, "_simple_new", None)  # private pandas, guarded: public fallback
    if simple_new is None:
        return pd.array(wall, dtype=_TS_DTYPE)
    return simple_new(wall, dtype=_TS_DTYPE)


# The supported range (``features.contract.schema.TIMESTAMP_MIN`` / ``TIMESTAMP_MAX``) in words, as reasons say it.
TIMESTAMP_RANGE = f"{TIMESTAMP_MIN:%Y-%m-%dT%H:%M:%SZ} to {TIMESTAMP_MAX:%Y-%m-%dT%H:%M:%SZ}"
_RANGE_MOMENTS = (TIMESTAMP_MIN.to_pydatetime(), TIMESTAMP_MAX.to_pydatetime())


def outside_timestamp_range(counts: np.ndarray, unit: str = "us") -> np.ndarray:
    """Where times, int64 counts of ``unit`` since the epoch (int64 min for NaT, never outside),
    lie outside the supported range. Compared in the times' own unit, so nothing overflows.

    >>> outside_timestamp_range(np.array([0, -1, NAT, 7_258_118_400_000_000, 7_258_118_400_000_001])).tolist()
    [False, True, False, False, True]
    """
    low, high = (int(bound.as_unit(unit).asm8.view(np.int64)) for bound in (TIMESTAMP_MIN, TIMESTAMP_MAX))
    return (counts != NAT) & ((counts < low) | (counts > high))


def timestamp_in_range(moment: dt.datetime) -> bool:
    """Whether one moment (naive: UTC) lies in the supported range, compared as Python datetimes
    (no conversion to pandas' units, so year 1 with any offset neither overflows nor wraps).

    >>> timestamp_in_range(dt.datetime(1, 1, 1)), timestamp_in_range(dt.datetime(2026, 6, 30, tzinfo=dt.timezone.utc))
    (False, True)
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return _RANGE_MOMENTS[0] <= moment <= _RANGE_MOMENTS[1]


def _within_range(values: pd.api.extensions.ExtensionArray) -> tuple[pd.api.extensions.ExtensionArray, np.ndarray]:
    """A typed datetime array with the times outside the range set to NaT, and where they were:
    converting such a time to microseconds may overflow (a Parquet ``timestamp[s]`` of year 10^7)."""
    outside = outside_timestamp_range(values.asi8, values.unit)
    if not outside.any():
        return values, outside
    values = values.copy()
    values[outside] = pd.NaT
    return values, outside


def _is_utc(dtype: pd.DatetimeTZDtype) -> bool:
    """Whether a tz-aware dtype is UTC (a fixed zero offset), whatever library named the zone."""
    return dtype.tz is dt.timezone.utc or str(dtype.tz) in ("UTC", "utc", "Etc/UTC", "Z", "+00:00")


def _micros_of(values: pd.Series | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch (int64 min where missing)."""
    return np.asarray(values.to_numpy(dtype="datetime64[us]")).view(np.int64)


class Parsed:
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


def parse_text_column(raw: Raw) -> Parsed:
    """Parse an ``id`` or ``text`` column: any non-blank string; blank cells are missing."""
    cells = _text_cells(raw)
    values = cells.to_pylist() if len(cells) <= SMALL_COLUMN else None
    missing = _blank_mask(cells, values)
    cells = _nulled(cells, missing)
    objects = None
    if values is not None:
        objects = [None if m else v for v, m in zip(values, missing.tolist())] if missing.any() else values
    return Parsed(string_array(cells), missing, np.zeros(len(cells), dtype=bool), cells, objects)


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
    raw: Raw, table: Table, column: Column, names: Mapping[str, str], section: str | None, out: Collector,
    frame: pd.DataFrame,
) -> Parsed:
    """Parse a ``choice`` column: map CRM names to canonical ones, report values still unknown."""
    cells = _text_cells(raw)
    lookup = _choice_lookup(names, column.allowed)
    objects = None
    if len(cells) <= SMALL_COLUMN:
        entries = [lookup[v] for v in cells.to_pylist()]
        objects = [e[0] for e in entries]
        missing = np.fromiter((e[1] for e in entries), bool, len(entries))
        invalid = np.fromiter((e[2] for e in entries), bool, len(entries))
        mapped = pa.array(objects, type=LARGE_STRING)
    else:
        # Each distinct cell looked up once; rows take their distinct value's result.
        encoded = pc.dictionary_encode(cells)
        entries = [lookup[v] for v in encoded.dictionary.to_pylist()] + [lookup[None]]
        codes = encoded.indices.fill_null(len(entries) - 1)
        numbers = codes.to_numpy(zero_copy_only=False)
        missing = np.array([e[1] for e in entries], dtype=bool)[numbers]
        invalid = np.array([e[2] for e in entries], dtype=bool)[numbers]
        mapped = pa.array([e[0] for e in entries], type=LARGE_STRING).take(codes)
    if invalid.any():
        allowed = ", ".join(column.allowed)
        hint = (
            f"; add a line '<CRM name>: <canonical {section}>' under '{section}:' in a mapping file "
            f"({MAPPING_FILE_WHERE}) to map it"
            if section
            else ""
        )
        shown = Cells(cells)
        out.add_rows(
            table, frame, column.name, "unknown_value", invalid,
            lambda pos: [f"unknown {column.name} {show_value(shown[p])}; allowed: {allowed}{hint}" for p in pos],
        )
    return Parsed(string_array(mapped), missing, invalid, mapped, objects)


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
    micros = np.full(len(missing), NAT, dtype=np.int64)
    malformed = np.zeros(len(missing), dtype=bool)
    if isinstance(stripped, list):
        compiled = compiled_pattern(_SIMPLE_ISO)
        if not all(compiled.search(v) is not None for v in stripped if v):
            return None
        present = np.flatnonzero(~missing)
        suffix = compiled_pattern(_ZERO_OFFSET_SUFFIX)
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


def parse_times(cells: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
        missing = pc.or_kleene(pc.is_null(stripped), pc.equal(stripped, pa.scalar("", LARGE_STRING)))
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
    with_offset = matches_pattern(present, OFFSET_PATTERN)
    if with_offset.any():
        zero = matches_pattern(present, ZERO_OFFSET_PATTERN)
        not_utc = with_offset & ~zero
    else:
        not_utc = with_offset
    malformed = (~missing) & (micros == NAT) & ~not_utc
    return micros, missing, malformed, not_utc


def _parse_timestamp_text(text: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
    """Parse a ``str`` Series of ISO-8601 text; returns (UTC values, missing, malformed, not_utc)."""
    micros, missing, malformed, not_utc = parse_times(_text_cells(text))
    return pd.Series(timestamps_of(micros), index=text.index, copy=False), missing, malformed, not_utc


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


def parse_timestamp_column(raw: Raw, table: Table, column: Column, out: Collector, frame: pd.DataFrame) -> Parsed:
    """Parse a ``timestamp`` column: ISO-8601, naive taken as UTC, any non-zero offset reported."""
    n = len(raw)
    strings = _string_cells(raw)
    dtype = raw.dtype
    outside = np.zeros(n, dtype=bool)  # typed times outside the range, found before any unit conversion
    if strings is not None:  # text: CSV cells, or request cells that are all strings or missing
        micros, missing, malformed, not_utc = parse_times(strings)
    elif isinstance(dtype, pd.DatetimeTZDtype) and _is_utc(dtype):
        # Typed UTC times (a Parquet export): nothing to parse or report, only the unit to settle.
        values = pd.array(raw, copy=False)
        missing = values.isna()
        values, outside = _within_range(values)
        micros = values.as_unit("us").asi8.copy()  # owned: the export never shares the input's memory
        malformed = not_utc = np.zeros(n, dtype=bool)
    elif isinstance(dtype, pd.DatetimeTZDtype):
        missing = raw.isna().to_numpy(dtype=bool)
        within, outside = _within_range(raw.array)
        within = pd.Series(within, index=raw.index, copy=False)
        values = within.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
        wall = within.dt.tz_localize(None).astype("datetime64[us]").to_numpy()
        not_utc = (~missing) & ~outside & (wall != values.dt.tz_localize(None).to_numpy())
        malformed = np.zeros(n, dtype=bool)
        micros = _micros_of(values.array).copy()  # owned: the export never shares the input's memory
    elif pd.api.types.is_datetime64_dtype(dtype):
        missing = raw.isna().to_numpy(dtype=bool)
        within, outside = _within_range(raw.array)
        within = pd.Series(within, index=raw.index, copy=False)
        micros = _micros_of(within.dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE).array).copy()
        not_utc = malformed = np.zeros(n, dtype=bool)
    elif dtype == object:
        values, missing, malformed, not_utc = _parse_timestamp_objects(pd.Series(raw, copy=False))
        micros = _micros_of(values.array)
    else:  # numbers, booleans: not timestamps
        missing = raw.isna().to_numpy(dtype=bool)
        malformed = ~missing
        not_utc = np.zeros(n, dtype=bool)
        micros = np.full(n, NAT, dtype=np.int64)
    shown = Cells(raw)
    if malformed.any():
        out.add_rows(
            table, frame, column.name, "bad_timestamp", malformed,
            lambda pos: [
                f"not an ISO-8601 timestamp: {show_value(shown[p])} (expected e.g. 2026-03-31T14:05:00Z)" for p in pos
            ],
        )
    invalid = malformed
    if not_utc.any():
        out.add_rows(
            table, frame, column.name, "not_utc", not_utc,
            lambda pos: [
                f"not UTC: {show_value(shown[p])} has a non-zero offset; send UTC ('Z', '+00:00' or no offset)"
                for p in pos
            ],
        )
        invalid = malformed | not_utc
    outside = (outside | outside_timestamp_range(micros)) & ~invalid
    if outside.any():
        placeholder = "; leave the cell empty where it stands for no date" if column.nullable else ""
        out.add_rows(
            table, frame, column.name, "out_of_range", outside,
            lambda pos: [
                f"{show_value(shown[p])} is outside the supported range {TIMESTAMP_RANGE}{placeholder}" for p in pos
            ],
        )
        invalid = invalid | outside
    if invalid.any():
        micros = np.where(invalid, NAT, micros)
    return Parsed(timestamps_of(micros), missing, invalid, micros=micros)


def to_float(text: pa.Array | pd.Series) -> np.ndarray:
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


def parse_number_column(raw: Raw, table: Table, column: Column, out: Collector, frame: pd.DataFrame) -> Parsed:
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
        array = to_float(pc.if_else(pa.array(missing), _NULL_STRING, stripped) if missing.any() else stripped)
        unparsed = (~missing) & np.isnan(array)
    shown = Cells(raw)
    infinite = np.isinf(array)
    bad = unparsed | infinite
    if bad.any():
        out.add_rows(
            table, frame, column.name, "bad_number", bad,
            lambda pos: [f"not a finite number: {show_value(shown[p])}" for p in pos],
        )
    invalid = bad
    with np.errstate(invalid="ignore"):
        if column.min_value is not None:
            low = (~bad) & (array < column.min_value)
            if low.any():
                out.add_rows(
                    table, frame, column.name, "below_min", low,
                    lambda pos: [f"{show_value(shown[p])} is below the minimum {column.min_value:g}" for p in pos],
                )
                invalid = invalid | low
        if column.max_value is not None:
            high = (~bad) & (array > column.max_value)
            if high.any():
                out.add_rows(
                    table, frame, column.name, "above_max", high,
                    lambda pos: [f"{show_value(shown[p])} is above the maximum {column.max_value:g}" for p in pos],
                )
                invalid = invalid | high
    if invalid.any():
        array = np.where(invalid, np.nan, array)
    return Parsed(array.astype(np.float64, copy=False), missing, invalid)


def _request_flags(raw: Raw) -> tuple[np.ndarray, np.ndarray] | None:
    """A short object column of Python bools and None as (truth, missing), else None."""
    if not isinstance(raw, np.ndarray) or len(raw) > SMALL_COLUMN:
        return None
    cells = raw.tolist()
    if all(v is None or type(v) is bool for v in cells):
        return (np.fromiter((v is True for v in cells), bool, len(cells)),
                np.fromiter((v is None for v in cells), bool, len(cells)))
    return None


def parse_flag_column(raw: Raw, table: Table, column: Column, out: Collector, frame: pd.DataFrame) -> Parsed:
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
            is_true = pc.is_in(words, value_set=pa.array(TRUE_WORDS, LARGE_STRING)).fill_null(False)
            is_false = pc.is_in(words, value_set=pa.array(FALSE_WORDS, LARGE_STRING)).fill_null(False)
            is_true = is_true.to_numpy(zero_copy_only=False)
            is_false = is_false.to_numpy(zero_copy_only=False)
        invalid = (~missing) & ~is_true & ~is_false
        truth = is_true & ~invalid
        missing_or_invalid = missing | invalid
        if invalid.any():
            shown = Cells(raw)
            out.add_rows(
                table, frame, column.name, "bad_flag", invalid,
                lambda pos: [f"not a flag: {show_value(shown[p])} (expected true, false, 1 or 0)" for p in pos],
            )
        return Parsed(pd.arrays.BooleanArray(truth & ~missing_or_invalid, missing_or_invalid), missing, invalid)
    return Parsed(pd.arrays.BooleanArray(truth & ~missing, missing), missing, invalid)


def parse_column(
    raw: Raw, table: Table, column: Column, mapping: NameMapping, out: Collector, frame: pd.DataFrame
) -> Parsed:
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


