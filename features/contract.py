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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.mapping import NameMapping, load_mapping, map_series, normalize_name
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

    def __init__(self, series: pd.Series | pd.api.extensions.ExtensionArray | np.ndarray) -> None:
        self.series = series

    def __getitem__(self, position: int) -> object:
        if isinstance(self.series, pd.Series):
            return self.series.iloc[int(position)]
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
    array = text if isinstance(text, pa.Array | pa.ChunkedArray) else pa.array(text, type=pa.large_string())
    found = pc.match_substring_regex(array, pattern)
    return found.fill_null(False).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------------------
# Column parsing: each returns the typed values (NA where empty or invalid) and reports problems.


class _Parsed:
    """A parsed column: typed values (NA where the cell is empty or invalid), ``missing``, ``invalid``.

    The values are kept as an array; the Series view is built only for the few columns a rule
    reads as a Series (a Series costs ~15 us to build, a third of a short column's whole parse).
    """

    __slots__ = ("array", "missing", "invalid", "_series")

    def __init__(self, values: pd.Series | pd.api.extensions.ExtensionArray | np.ndarray,
                 missing: np.ndarray, invalid: np.ndarray) -> None:
        self.array = values.array if isinstance(values, pd.Series) else values
        self._series = values if isinstance(values, pd.Series) else None
        self.missing = missing  # the cell is empty
        self.invalid = invalid  # the cell is present but broke a rule

    @property
    def values(self) -> pd.Series:
        """The typed values as a Series on a 0..n-1 index (the frames' index in ``check_tables``)."""
        if self._series is None:
            self._series = pd.Series(self.array, copy=False)
        return self._series


_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # what ``astype("str")`` gives in pandas 3
_TS_DTYPE = pd.DatetimeTZDtype("us", "UTC")  # TIMESTAMP_DTYPE as an object: no string parsing per call
# OUTPUT_DTYPES as dtype objects: comparing against a dtype string parses the string every time.
_OUTPUT_DTYPE_OBJECTS = {
    "id": _STR_DTYPE, "text": _STR_DTYPE, "choice": _STR_DTYPE, "timestamp": _TS_DTYPE,
    "number": np.dtype("float64"), "flag": pd.BooleanDtype(),
}


def _strings_of(raw: pd.Series) -> pd.arrays.ArrowStringArray | None:
    """The cells as a ``str`` array if every cell is a string or missing (a JSON request), else None.

    One pyarrow conversion instead of ``astype("str")``, which costs ~75 us per column even on a
    one-deal request; the result is the same ``str`` values.
    """
    if raw.dtype != object:
        return None
    try:
        array = pa.array(raw.to_numpy(), type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return pd.arrays.ArrowStringArray(array, dtype=_STR_DTYPE)


def _inferred_cells(raw: pd.Series) -> pa.Array | None:
    """An object column's cells as one pyarrow array of the type they share, or None if mixed.

    A JSON request gives Python floats, bools and None; one conversion finds whether a column is
    all numbers or all booleans (missing allowed) without converting every cell to text first.
    """
    if raw.dtype != object:
        return None
    try:
        return pa.array(raw.to_numpy(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _text_series(cells: np.ndarray | list | pa.Array, index: pd.Index | None = None) -> pd.Series:
    """Strings (None where missing) as a ``str`` Series, built by pyarrow without pandas' inference."""
    array = cells if isinstance(cells, pa.Array) else pa.array(cells, type=pa.large_string(), from_pandas=True)
    return pd.Series(pd.arrays.ArrowStringArray(array, dtype=_STR_DTYPE), index=index, copy=False)


def _text_array(raw: pd.Series) -> pd.api.extensions.ExtensionArray:
    """The cells as a ``str`` array (missing stays missing); numbers become their usual text."""
    if isinstance(raw.dtype, pd.StringDtype) and raw.dtype.na_value is np.nan:
        return raw.array
    strings = _strings_of(raw)
    return strings if strings is not None else raw.astype("str").array


def _as_text(raw: pd.Series) -> pd.Series:
    """The cells as a ``str`` Series (missing stays missing); numbers become their usual text."""
    if isinstance(raw.dtype, pd.StringDtype) and raw.dtype.na_value is np.nan:
        return raw
    return pd.Series(_text_array(raw), index=raw.index, copy=False)


def _empty_mask(text: pd.Series | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """Cells that are missing or blank; a plain loop on short columns avoids pandas' per-call cost."""
    if len(text) <= SMALL_COLUMN:
        return np.fromiter(
            (not isinstance(v, str) or not v.strip() for v in text.to_numpy(dtype=object)), bool, len(text)
        )
    # Missing, empty or all whitespace (what ``.str.strip() == ""`` finds) without copying the strings.
    cells = pa.array(text, type=pa.large_string())
    blank = pc.or_kleene(pc.equal(cells, pa.scalar("", pa.large_string())), pc.utf8_is_space(cells))
    return blank.fill_null(True).to_numpy(zero_copy_only=False)


def _blank_to_missing(text: pd.api.extensions.ExtensionArray, missing: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """``text`` with blank (whitespace-only) cells set missing; untouched when there are none."""
    if not missing.any() or text.isna()[missing].all():
        return text
    return pd.Series(text, copy=False).where(~missing).array


def parse_text_column(raw: pd.Series) -> _Parsed:
    """Parse an ``id`` or ``text`` column: any non-blank string; blank cells are missing."""
    text = _text_array(raw)
    missing = _empty_mask(text)
    return _Parsed(_blank_to_missing(text, missing), missing, np.zeros(len(raw), dtype=bool))


def parse_choice_column(
    raw: pd.Series, table: Table, column: Column, names: Mapping[str, str], section: str | None, out: _Collector,
    frame: pd.DataFrame,
) -> _Parsed:
    """Parse a ``choice`` column: map CRM names to canonical ones, report values still unknown."""
    text = _text_array(raw)
    if len(text) <= SMALL_COLUMN:
        allowed_set = frozenset(column.allowed)
        canonical: dict[str, str] = {}  # each distinct cell normalised once, as map_series does
        renamed = []
        for v in text.tolist():
            if isinstance(v, str) and v.strip():
                if v not in canonical:
                    canonical[v] = names.get(normalize_name(v), v)
                renamed.append(canonical[v])
            else:
                renamed.append(None)
        missing = np.fromiter((v is None for v in renamed), bool, len(renamed))
        invalid = np.fromiter((v is not None and v not in allowed_set for v in renamed), bool, len(renamed))
        mapped = pd.arrays.ArrowStringArray(pa.array(renamed, type=pa.large_string()), dtype=_STR_DTYPE)
    else:
        missing = _empty_mask(text)
        mapped = map_series(pd.Series(_blank_to_missing(text, missing), copy=False), names).array
        invalid = (~missing) & ~mapped.isin(column.allowed)
    if invalid.any():
        allowed = ", ".join(column.allowed)
        hint = (
            f"; add a line '<CRM name>: <canonical {section}>' under '{section}:' in a mapping file "
            "(--mapping) to map it"
            if section
            else ""
        )
        values = _Cells(pd.Series(text, copy=False))
        out.add_rows(
            table, frame, column.name, "unknown_value", invalid,
            lambda pos: [f"unknown {column.name} {_show(values[p])}; allowed: {allowed}{hint}" for p in pos],
        )
        mapped = pd.Series(mapped, copy=False).where(~invalid).array
    return _Parsed(mapped, missing, invalid)


_SIMPLE_ISO = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(?:Z|[+-]00:00)?$"  # RE2: ASCII digits
_ZERO_OFFSET_SUFFIX = r"(?:Z|[+-]00:00)$"


def _parse_simple_iso(stripped: list | pa.Array | pa.ChunkedArray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Parse plain UTC ISO-8601 text (the shape CRMs and requests send) with numpy's C parser.

    ``stripped`` holds the trimmed cells: a list for short columns (Python's cached ``re``), a
    pyarrow array for long ones (RE2). Returns (microseconds since the epoch, NaT where empty or
    invalid; malformed mask), or None when any cell has another shape, so the caller uses
    pandas' ISO-8601 parser instead. The two parsers agree on this shape (year 0 included);
    tests check short and long columns give the same result.
    """
    if not (_matches(stripped, _SIMPLE_ISO) | missing).all():
        return None
    micros = np.full(len(missing), np.iinfo(np.int64).min, dtype=np.int64)  # int64 min is NaT
    malformed = np.zeros(len(missing), dtype=bool)
    present = np.flatnonzero(~missing)
    if len(present) == 0:
        return micros, malformed
    if isinstance(stripped, list):
        suffix = _compiled(_ZERO_OFFSET_SUFFIX)
        wall = np.array([suffix.sub("", stripped[i]) for i in present], dtype=object)
    else:
        # The shape is checked, so 'Z', '+00:00' and '-00:00' can only be the suffix: literal removal
        # (a regex replace costs twice the parse).
        wall = pc.ascii_rtrim(stripped, characters="Z")
        for offset in ("+00:00", "-00:00"):
            if pc.any(pc.ends_with(wall, offset)).as_py():
                wall = pc.replace_substring(wall, offset, "")
        wall = wall.to_numpy(zero_copy_only=False)[present]
    try:  # the whole column in one call; an impossible date (2026-02-30) sends it cell by cell
        micros[present] = wall.astype("datetime64[us]").view(np.int64)
    except ValueError:
        for i, text in zip(present, wall):
            try:
                micros[i] = np.datetime64(text, "us").view(np.int64)
            except ValueError:
                malformed[i] = True
    return micros, malformed


def _parse_timestamp_text(text: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
    """Parse ISO-8601 strings; returns (UTC values, missing, malformed, not_utc).

    Plain UTC text takes numpy's parser (``_parse_simple_iso``); anything else pandas' ISO-8601
    parser with the offset rules. Short columns are handled as lists: no per-call pandas cost.
    """
    if len(text) <= SMALL_COLUMN:
        cells = [v.strip() if isinstance(v, str) else "" for v in text.tolist()]
        missing = np.fromiter((not c for c in cells), bool, len(cells))
        simple = _parse_simple_iso(cells, missing)
    else:
        stripped = text.str.strip()
        missing = (stripped.isna() | (stripped == "")).to_numpy(dtype=bool)
        simple = _parse_simple_iso(pa.array(stripped, type=pa.large_string()), missing)
    if simple is not None:
        micros, malformed = simple
        values = pd.Series(pd.array(micros.view("datetime64[us]"), dtype=_TS_DTYPE), index=text.index, copy=False)
        return values, missing, malformed, np.zeros(len(text), dtype=bool)
    if len(text) <= SMALL_COLUMN:
        present = [c or None for c in cells]
        parsed = pd.Series(
            pd.to_datetime(present, format="ISO8601", utc=True, errors="coerce").astype(TIMESTAMP_DTYPE),
            index=text.index,
        )
    else:
        present = stripped.where(~missing) if missing.any() else stripped
        parsed = pd.to_datetime(present, format="ISO8601", utc=True, errors="coerce").astype(TIMESTAMP_DTYPE)
    with_offset = _matches(present, _OFFSET_PATTERN)
    if with_offset.any():
        zero = _matches(present, _ZERO_OFFSET_PATTERN)
        not_utc = with_offset & ~zero
    else:
        not_utc = with_offset
    malformed = (~missing) & parsed.isna().to_numpy(dtype=bool) & ~not_utc
    return parsed, missing, malformed, not_utc


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


def parse_timestamp_column(raw: pd.Series, table: Table, column: Column, out: _Collector, frame: pd.DataFrame) -> _Parsed:
    """Parse a ``timestamp`` column: ISO-8601, naive taken as UTC, any non-zero offset reported."""
    dtype = raw.dtype
    n = len(raw)
    if isinstance(dtype, pd.DatetimeTZDtype):
        missing = raw.isna().to_numpy(dtype=bool)
        values = raw.dt.tz_convert("UTC").astype(TIMESTAMP_DTYPE)
        wall = raw.dt.tz_localize(None).astype("datetime64[us]").to_numpy()
        not_utc = (~missing) & (wall != values.dt.tz_localize(None).to_numpy())
        malformed = np.zeros(n, dtype=bool)
    elif pd.api.types.is_datetime64_dtype(dtype):
        missing = raw.isna().to_numpy(dtype=bool)
        values = raw.dt.tz_localize("UTC").astype(TIMESTAMP_DTYPE)
        not_utc = malformed = np.zeros(n, dtype=bool)
    elif isinstance(dtype, pd.StringDtype):
        values, missing, malformed, not_utc = _parse_timestamp_text(_as_text(raw))
    elif (strings := _strings_of(raw)) is not None:  # object cells that are all text or missing
        values, missing, malformed, not_utc = _parse_timestamp_text(pd.Series(strings, index=raw.index, copy=False))
    elif dtype == object:
        values, missing, malformed, not_utc = _parse_timestamp_objects(raw)
    else:  # numbers, booleans: not timestamps
        missing = raw.isna().to_numpy(dtype=bool)
        malformed = ~missing
        not_utc = np.zeros(n, dtype=bool)
        values = pd.Series(pd.NaT, index=raw.index, dtype=TIMESTAMP_DTYPE)
    shown = _Cells(raw)
    if malformed.any():
        out.add_rows(
            table, frame, column.name, "bad_timestamp", malformed,
            lambda pos: [
                f"not an ISO-8601 timestamp: {_show(shown[p])} (expected e.g. 2026-03-31T14:05:00Z)" for p in pos
            ],
        )
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
        values = values.where(~invalid)
    return _Parsed(values, missing, invalid)


def _to_float(text: pd.Series) -> pd.Series:
    """Parse number text to float64, NaN where unparseable; pyarrow's cast first, pandas if any cell fails."""
    try:
        cast = pc.cast(pa.array(text, type=pa.large_string()), pa.float64())
        return pd.Series(cast.to_numpy(zero_copy_only=False), index=text.index, dtype="float64", copy=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_numeric(text, errors="coerce").astype("float64")


def parse_number_column(raw: pd.Series, table: Table, column: Column, out: _Collector, frame: pd.DataFrame) -> _Parsed:
    """Parse a ``number`` column: finite, within the column's min/max; NaN text is not a number."""
    cells = _inferred_cells(raw)
    if cells is not None and not (pa.types.is_floating(cells.type) or pa.types.is_integer(cells.type)
                                  or pa.types.is_null(cells.type)):
        cells = None  # text or booleans: parsed as text below, so true is not 1
    if cells is not None:
        numbers = cells.cast(pa.float64()).to_numpy(zero_copy_only=False)
        values = pd.Series(numbers, index=raw.index, copy=False)
        missing = np.isnan(numbers)
        unparsed = np.zeros(len(raw), dtype=bool)
    elif pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = pd.Series(raw.to_numpy(dtype="float64", na_value=np.nan), index=raw.index)
        missing = values.isna().to_numpy(dtype=bool)
        unparsed = np.zeros(len(raw), dtype=bool)
    else:
        text = _as_text(raw).str.strip()
        missing = _empty_mask(text)
        values = _to_float(text.where(~missing) if missing.any() else text)
        unparsed = (~missing) & values.isna().to_numpy(dtype=bool)
    array = values.to_numpy()
    shown = _Cells(raw)
    infinite = np.isinf(array)
    bad = unparsed | infinite
    if bad.any():
        out.add_rows(
            table, frame, column.name, "bad_number", bad,
            lambda pos: [f"not a finite number: {_show(shown[p])}" for p in pos],
        )
    invalid = bad.copy()
    with np.errstate(invalid="ignore"):
        if column.min_value is not None:
            low = (~bad) & (array < column.min_value)
            if low.any():
                out.add_rows(
                    table, frame, column.name, "below_min", low,
                    lambda pos: [f"{_show(shown[p])} is below the minimum {column.min_value:g}" for p in pos],
                )
                invalid |= low
        if column.max_value is not None:
            high = (~bad) & (array > column.max_value)
            if high.any():
                out.add_rows(
                    table, frame, column.name, "above_max", high,
                    lambda pos: [f"{_show(shown[p])} is above the maximum {column.max_value:g}" for p in pos],
                )
                invalid |= high
    if invalid.any():
        values = values.where(~invalid)
    return _Parsed(values, missing, invalid)


def parse_flag_column(raw: pd.Series, table: Table, column: Column, out: _Collector, frame: pd.DataFrame) -> _Parsed:
    """Parse a ``flag`` column: true/false/1/0 (any case), or booleans."""
    cells = _inferred_cells(raw)
    if cells is not None and (pa.types.is_boolean(cells.type) or pa.types.is_null(cells.type)):
        missing = cells.is_null().to_numpy(zero_copy_only=False)
        truth = cells.cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
        values = pd.Series(pd.arrays.BooleanArray(truth, missing), index=raw.index, copy=False)
        invalid = np.zeros(len(raw), dtype=bool)
    elif pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.astype("boolean")
        missing = values.isna().to_numpy(dtype=bool)
        invalid = np.zeros(len(raw), dtype=bool)
    else:
        if pd.api.types.is_numeric_dtype(raw.dtype):
            numbers = raw.to_numpy(dtype="float64", na_value=np.nan)
            missing = np.isnan(numbers)
            is_true, is_false = numbers == 1, numbers == 0
        else:
            text = _as_text(raw)
            words = text.str.strip().str.lower()
            missing = _empty_mask(text)
            is_true = words.isin(_TRUE_WORDS).to_numpy(dtype=bool)
            is_false = words.isin(_FALSE_WORDS).to_numpy(dtype=bool)
        invalid = (~missing) & ~is_true & ~is_false
        values = pd.Series(pd.array(np.where(is_true, True, False), dtype="boolean"), index=raw.index)
        values = values.mask(missing | invalid)
        if invalid.any():
            shown = _Cells(raw)
            out.add_rows(
                table, frame, column.name, "bad_flag", invalid,
                lambda pos: [f"not a flag: {_show(shown[p])} (expected true, false, 1 or 0)" for p in pos],
            )
    return _Parsed(values, missing, invalid)


def parse_column(
    raw: pd.Series, table: Table, column: Column, mapping: NameMapping, out: _Collector, frame: pd.DataFrame
) -> _Parsed:
    """Parse one column by its contract kind and report empty cells in non-nullable columns."""
    if column.kind in ("id", "text"):
        parsed = parse_text_column(raw)
    elif column.kind == "choice":
        section = mapping.for_column(table.name, column.name)
        names = mapping.section(section) if section else {normalize_name(a): a for a in column.allowed}
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


def check_unique_key(table: Table, frame: pd.DataFrame, parsed: dict[str, _Parsed], out: _Collector) -> None:
    """Report rows whose key repeats an earlier row's key (duplicate ids), naming the first row."""
    if not table.unique_key or any(k not in parsed for k in table.key):
        return
    combined = np.zeros(len(frame), dtype=np.int64)
    complete = np.ones(len(frame), dtype=bool)
    for k in table.key:
        codes, uniques = pd.factorize(parsed[k].values)
        combined = combined * (len(uniques) + 1) + codes
        complete &= codes >= 0
    _, first_index, inverse = np.unique(combined, return_index=True, return_inverse=True)
    first = first_index[inverse]
    duplicated = complete & (first != np.arange(len(frame)))
    if not duplicated.any():
        return
    cells = [_Cells(parsed[k].values) for k in table.key]

    def reason(pos: np.ndarray) -> list[str]:
        return [
            f"duplicate {' / '.join(table.key)} "
            f"{' / '.join(_show(c[p]) for c in cells)}; first seen at row {int(first[p]) + 1}"
            for p in pos
        ]

    out.add_rows(table, frame, ", ".join(table.key), "duplicate_key", duplicated, reason)


def check_deals(frame: pd.DataFrame, parsed: dict[str, _Parsed], out: _Collector) -> None:
    """Deal-level rules: closed_at set iff won/lost, stage consistent with outcome, closed after created."""
    table = TABLES["deals"]
    if not {"outcome", "stage", "closed_at", "created_at"} <= parsed.keys():
        return
    outcome = parsed["outcome"].values.to_numpy(dtype=object)
    stage = parsed["stage"].values.to_numpy(dtype=object)
    closed = parsed["closed_at"]
    closed_at_set = ~closed.missing
    is_closed = np.isin(outcome, CLOSED_STAGES)
    is_open = outcome == "open"
    out.add_rows(
        table, frame, "closed_at", "closed_at_missing", is_closed & closed.missing,
        lambda pos: [f"empty closed_at but outcome is {outcome[p]!r}; a won or lost deal needs closed_at" for p in pos],
    )
    out.add_rows(
        table, frame, "closed_at", "closed_at_set_on_open", is_open & closed_at_set,
        lambda pos: ["closed_at is set but outcome is 'open'; an open deal has no closed_at" for _ in pos],
    )
    known = pd.notna(stage) & pd.notna(outcome)
    open_stage = np.isin(stage, OPEN_STAGES)
    mismatch = known & ((is_closed & (stage != outcome)) | (is_open & ~open_stage))
    out.add_rows(
        table, frame, "stage", "stage_outcome_mismatch", mismatch,
        lambda pos: [
            f"stage {stage[p]!r} does not match outcome {outcome[p]!r}; expected "
            + (f"{outcome[p]!r}" if outcome[p] != "open" else f"one of {', '.join(OPEN_STAGES)}")
            for p in pos
        ],
    )
    created = parsed["created_at"].values
    before = (closed.values < created).fillna(False).to_numpy(dtype=bool)
    closed_shown = _Cells(closed.values)
    created_shown = _Cells(created)
    out.add_rows(
        table, frame, "closed_at", "closed_before_created", before,
        lambda pos: [
            f"closed_at {_show(closed_shown[p])} is before created_at {_show(created_shown[p])}" for p in pos
        ],
    )


@dataclass(frozen=True)
class _DealIndex:
    """Lookup of deals by id (first occurrence wins; duplicates are reported separately)."""

    ids: pd.Index
    created_at: np.ndarray
    stage: np.ndarray


def _naive_utc(values: pd.Series | pd.api.extensions.ExtensionArray) -> np.ndarray:
    """UTC timestamps as a plain ``datetime64[us]`` array (fast to compare; NaT where missing)."""
    return values.to_numpy(dtype="datetime64[us]")


def _utc(value: np.datetime64) -> pd.Timestamp:
    return pd.Timestamp(value).tz_localize("UTC")


def index_deals(parsed: dict[str, _Parsed]) -> _DealIndex | None:
    if "deal_id" not in parsed:
        return None
    ids = parsed["deal_id"].values
    keep = ids.notna().to_numpy() & ~ids.duplicated(keep="first").to_numpy()
    created = _naive_utc(parsed["created_at"].array)[keep] if "created_at" in parsed else None
    stage = parsed["stage"].array.to_numpy(dtype=object)[keep] if "stage" in parsed else None
    return _DealIndex(pd.Index(ids[keep]), created, stage)


def check_events(
    table: Table, frame: pd.DataFrame, parsed: dict[str, _Parsed], deals: _DealIndex, out: _Collector
) -> np.ndarray | None:
    """Every event's deal exists and no event precedes its deal's created_at; returns deal positions."""
    if "deal_id" not in parsed:
        return None
    deal_id = parsed["deal_id"].array  # arrays, not Series: no per-table Series on a one-deal request
    where = deals.ids.get_indexer(deal_id)
    unknown = (where < 0) & ~parsed["deal_id"].missing  # an id is NA exactly where it is missing
    ids_shown = _Cells(deal_id)
    out.add_rows(
        table, frame, "deal_id", "unknown_deal", unknown,
        lambda pos: [f"deal_id {_show(ids_shown[p])} is not in deals" for p in pos],
    )
    time_column = table.time_column
    if time_column in parsed and deals.created_at is not None and len(deals.ids):
        created = deals.created_at[np.clip(where, 0, None)]
        event_time = _naive_utc(parsed[time_column].array)
        known = (where >= 0) & ~pd.isna(created) & ~pd.isna(event_time)
        early = np.zeros(len(where), dtype=bool)
        early[known] = event_time[known] < created[known]
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
    stage = parsed["stage"].values.to_numpy(dtype=object)
    time = _naive_utc(parsed["entered_at"].values).view("i8")
    usable = np.flatnonzero((where >= 0) & ~parsed["stage"].invalid & ~parsed["stage"].missing
                            & ~parsed["entered_at"].invalid & ~parsed["entered_at"].missing)
    if len(usable) == 0:
        return
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
    terminal = np.isin(stage[rows], CLOSED_STAGES)
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


def _pairs_in(first: pd.Series, second: pd.Series, first_in: pd.Series, second_in: pd.Series) -> np.ndarray:
    """Whether each (first, second) pair occurs among the (first_in, second_in) pairs; hash-based."""
    a_codes, a_uniques = pd.factorize(pd.concat([first, first_in], ignore_index=True))
    b_codes, b_uniques = pd.factorize(pd.concat([second, second_in], ignore_index=True))
    pairs = a_codes.astype(np.int64) * (len(b_uniques) + 1) + b_codes
    valid = (a_codes >= 0) & (b_codes >= 0)
    n = len(first)
    return np.isin(pairs[:n], pairs[n:][valid[n:]]) & valid[:n]


def check_activity_contacts(
    frame: pd.DataFrame, parsed: dict[str, _Parsed], contacts: dict[str, _Parsed] | None, out: _Collector
) -> None:
    """An activity's contact_id, when set, must be a contact of the same deal."""
    if contacts is None or not {"deal_id", "contact_id"} <= contacts.keys():
        return
    if not {"deal_id", "contact_id"} <= parsed.keys():
        return
    contact_id = parsed["contact_id"].values
    deal_id = parsed["deal_id"].values
    known = ~(parsed["contact_id"].missing | parsed["deal_id"].missing)
    if not known.any():
        return
    if len(deal_id) <= SMALL_COLUMN:
        on_deal = set(zip(contacts["deal_id"].values.tolist(), contacts["contact_id"].values.tolist()))
        pairs = zip(deal_id.tolist(), contact_id.tolist())
        not_on_deal = known & np.fromiter((pair not in on_deal for pair in pairs), bool, len(deal_id))
    else:
        not_on_deal = known & ~_pairs_in(deal_id, contact_id, contacts["deal_id"].values, contacts["contact_id"].values)
    contact_shown = _Cells(contact_id)
    deal_shown = _Cells(deal_id)
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
    tracked = parsed["field"].values.to_numpy(dtype=object)
    for column in ("old_value", "new_value"):
        if column not in parsed:
            continue
        values = parsed[column].values
        cells = values.to_numpy(dtype=object)  # one conversion; the subsets below are numpy takes
        present = ~parsed[column].missing
        shown = _Cells(values)
        is_date = present & (tracked == "expected_close_date")
        if is_date.any():
            _, _, malformed, not_utc = _parse_timestamp_text(_text_series(cells[is_date]))
            bad = np.zeros(len(values), dtype=bool)
            bad[np.flatnonzero(is_date)] = malformed | not_utc
            out.add_rows(
                table, frame, column, "bad_field_value", bad,
                lambda pos: [
                    f"expected_close_date value {_show(shown[p])} is not an ISO-8601 UTC date" for p in pos
                ],
            )
        is_amount = present & (tracked == "amount")
        if is_amount.any():
            stripped = pc.utf8_trim_whitespace(pa.array(cells[is_amount], type=pa.large_string()))  # as .str.strip()
            numbers = _to_float(_text_series(stripped)).to_numpy()
            bad = np.zeros(len(values), dtype=bool)
            bad[np.flatnonzero(is_amount)] = ~np.isfinite(numbers)
            out.add_rows(
                table, frame, column, "bad_field_value", bad,
                lambda pos: [f"amount value {_show(shown[p])} is not a finite number" for p in pos],
            )


# ---------------------------------------------------------------------------------------------
# Composition.


def build_frame(table: Table, parsed: dict[str, _Parsed], n_rows: int) -> pd.DataFrame:
    """Assemble the typed table in contract column order; optional absent columns are all-missing."""
    columns = {}
    for column in table.columns:
        if column.name in parsed:
            values = parsed[column.name].array
            dtype = _OUTPUT_DTYPE_OBJECTS[column.kind]
            columns[column.name] = values if values.dtype == dtype else values.astype(dtype)
        else:
            columns[column.name] = pd.array([None] * n_rows, dtype=OUTPUT_DTYPES[column.kind])
    # Arrays, not Series: skips index alignment, which dominates on a one-deal request.
    return pd.DataFrame(columns, index=pd.RangeIndex(n_rows), copy=False)


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
        parsed[name] = {
            column: parse_column(frame[column], table, table.column(column), mapping, out, frame)
            for column in usable
        }
        check_unique_key(table, frame, parsed[name], out)

    if "deals" in parsed:
        check_deals(frames["deals"], parsed["deals"], out)
        deals = index_deals(parsed["deals"])
        if deals is not None:
            for name in EVENT_TABLES:
                if name not in parsed:
                    continue
                where = check_events(TABLES[name], frames[name], parsed[name], deals, out)
                if name == "stage_history" and where is not None:
                    check_stage_history(frames[name], parsed[name], deals, where, out)
    if "activities" in parsed:
        check_activity_contacts(frames["activities"], parsed["activities"], parsed.get("contacts"), out)
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
