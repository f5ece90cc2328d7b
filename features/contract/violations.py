"""What the contract reports: a violation names the table, column, row and reason; how rows and values are shown."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract.schema import (
    TIMESTAMP_DTYPE,
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

OFFSET_PATTERN = r"[T ]\d{1,2}(?::?\d{2}){0,2}(?:[.,]\d+)?\s*[+-]\d{2}(?::?\d{2})?$"
ZERO_OFFSET_PATTERN = r"[+-]00(?::?00)?$"
TRUE_WORDS = ("true", "1")
FALSE_WORDS = ("false", "0")


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


class Collector:
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

    >>> from features.contract.schema import TABLES
    >>> t = TABLES["contacts"]
    >>> describe_rows(pd.DataFrame({"deal_id": ["D1"], "contact_id": ["C9"]}), t, np.array([0]))
    ['row 1 (deal_id=D1, contact_id=C9)']
    """
    keys = [k for k in table.key if k in frame.columns]
    columns = [frame[k].iloc[positions].tolist() for k in keys]
    labels = []
    for i, pos in enumerate(positions):
        parts = ", ".join(f"{k}={shown_text(columns[j][i])}" for j, k in enumerate(keys))
        labels.append(f"row {pos + 1} ({parts})" if parts else f"row {pos + 1}")
    return labels


def _show_key(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT or value is pd.NA:
        return "(empty)"
    if isinstance(value, pd.Timestamp | dt.datetime):
        stamp = pd.Timestamp(value)
        try:
            return stamp.isoformat()
        except (ValueError, OverflowError, NotImplementedError):  # beyond Python's years 1-9999
            return np.datetime_as_string(stamp.asm8) + ("+00:00" if stamp.tz is not None else "")
    if isinstance(value, np.datetime64):
        return np.datetime_as_string(value)
    return str(value)


# User input shown in a message (a cell, an id, a name) is cut to this many characters, then "…".
SHOWN_CHARACTERS = 60


def escape_text(text: str) -> str:
    r"""``text`` with each character that is not printable (NUL, newlines, escapes, bidi controls)
    written as ``repr`` writes it; printable text, letters of any script included, unchanged.

    >>> print(escape_text("D-1\x00\n\u202eé"))
    D-1\x00\n\u202eé
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown_text(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    r"""User input as it appears unquoted in a message (a key in a row label, a name, a reader's
    reason): its first ``limit`` characters, control characters escaped (``escape_text``), "…"
    when cut.

    >>> print(shown_text("D-1"), shown_text("\x00" * 3 + "x" * 80, limit=5))
    D-1 \x00\x00\x00xx…
    """
    text = _show_key(value)
    return escape_text(text) if len(text) <= limit else escape_text(text[:limit]) + "…"


def show_value(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    r"""A value quoted in a message, the one way contract and request reasons echo input: as
    ``repr`` writes it (quoted; NUL, newlines and other control characters escaped), its first
    ``limit`` characters only, with "…" after the closing quote when cut.

    >>> print(show_value("Closed Won"), show_value("=cmd|' /C calc'!A0\x00\n"), show_value("y" * 99, limit=5))
    'Closed Won' "=cmd|' /C calc'!A0\x00\n" 'yyyyy'…
    """
    text = _show_key(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def show_names(names: Sequence[object], most: int = 20, show: Callable[[object], str] | None = None) -> str:
    """Names from the input (headers, tables) listed in a message: each as ``show`` writes it
    (default ``shown_text``), at most ``most`` of them, then how many more.

    >>> show_names(["deal_id", "Amount\\n"]), show_names(list("abcd"), most=2)
    ('deal_id, Amount\\\\n', 'a, b and 2 more')
    """
    shown = ", ".join((show or shown_text)(name) for name in names[:most])
    return f"{shown} and {len(names) - most} more" if len(names) > most else shown


class Cells:
    """Cell values fetched only when a reason is written: reasons are few, converting columns is not."""

    def __init__(self, series: pd.Series | pd.api.extensions.ExtensionArray | np.ndarray | pa.Array | list) -> None:
        self.series = series

    def __getitem__(self, position: int) -> object:
        if isinstance(self.series, pd.Series):
            try:
                return self.series.iloc[int(position)]
            except (ValueError, OverflowError, NotImplementedError):
                # A time pandas cannot give as a Timestamp in its zone (year 10^7 of a Parquet
                # column): its UTC value as numpy holds it.
                array = self.series.array
                return np.datetime64(int(array.asi8[int(position)]), array.unit)
        if isinstance(self.series, pa.Array | pa.ChunkedArray):
            return self.series[int(position)].as_py()
        return self.series[int(position)]


@functools.lru_cache(maxsize=32)
def compiled_pattern(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def matches_pattern(text: pd.Series | list | pa.Array | pa.ChunkedArray, pattern: str) -> np.ndarray:
    """Where ``text`` matches the regular expression (RE2 via pyarrow; missing cells never match).

    Short columns use Python's ``re`` (compiled once): pyarrow compiles the pattern on every call.
    """
    if isinstance(text, list) or len(text) <= SMALL_COLUMN:
        compiled = compiled_pattern(pattern)
        cells = text if isinstance(text, list) else text.to_pylist() if isinstance(
            text, pa.Array | pa.ChunkedArray) else text.tolist()
        return np.fromiter(
            (isinstance(v, str) and compiled.search(v) is not None for v in cells), bool, len(cells)
        )
    array = text if isinstance(text, pa.Array | pa.ChunkedArray) else pa.array(text, type=LARGE_STRING)
    found = pc.match_substring_regex(array, pattern)
    return found.fill_null(False).to_numpy(zero_copy_only=False)


LARGE_STRING = pa.large_string()
# ---------------------------------------------------------------------------------------------
# Reporting and the edge: folders and the CLI.


def format_report(
    violations: Sequence[Violation],
    max_per_rule: int = DEFAULT_MAX_PER_RULE,
    counts: dict[tuple[str, str, str], int] | None = None,
    noun: str = "contract violation",
    header: tuple[str, str, str, str] = ("table", "column", "row", "reason"),
) -> str:
    """Render violations as a ``table | column | row | reason`` report with per-table counts.

    At most ``max_per_rule`` lines per (table, column, rule); the rest are summarised as
    ``... and N more``, using ``counts`` (exact totals) when given. ``noun`` and ``header`` let the
    importers report source files the same way (``file | column | row | reason``).
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
        f"{total} {noun}{'s' if total != 1 else ''} ({summary}):",
        line(header),
        "-+-".join("-" * w for w in [*widths, 6]),
        *(line(r) for r in rows),
    ]
    return "\n".join(lines)


