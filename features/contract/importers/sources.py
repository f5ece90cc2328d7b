"""What both importers share: source files read as text, dates and numbers in a CRM's formats,
where each output row came from, and the last step (the contract check with every problem named
by source file, column and row, then one atomic write).

Rows are numbered as everywhere in the contract: data rows from 1, the header not counted, so a
problem at ``Opportunity.csv row 5`` is the fifth opportunity under the header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract.check import check_tables
from features.contract.mapping import MAPPING_FILE_WHERE, NameMapping
from features.contract.schema import TABLES, TIMESTAMP_DTYPE, Export
from features.contract.violations import DETAIL_LIMIT, Collector, Violation, format_report, show_value, shown_text

_TS = pd.DatetimeTZDtype("us", "UTC")


class SourceError(ValueError):
    """The source itself is unusable (a folder or file missing, unreadable, a required column absent)."""


# ---------------------------------------------------------------------------------------------
# Reading source files.


def read_source_csv(path: Path, encoding: str = "utf-8", delimiter: str = ",") -> pd.DataFrame:
    """One source file as text: every cell a string, empty cells missing, nothing coerced.

    ``SourceError`` names the file and the reason when it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    try:
        # utf-8-sig strips the byte-order mark spreadsheets put before the first header.
        enc = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding=enc, sep=delimiter)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path.name}: not {encoding} text ({exc.reason} at byte {exc.start}); "
                          "pass the file's encoding (e.g. --encoding cp1252)") from None
    except (ValueError, OSError) as exc:  # pandas' parser errors are ValueErrors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"{path.name}: not a readable CSV file: {reason[:300]}") from None


def find_header(frame: pd.DataFrame, name: str) -> str | None:
    """The frame's header for ``name``, matched ignoring case and surrounding spaces (Data Loader
    writes API names in capitals: ``STAGENAME``), or None."""
    wanted = name.strip().casefold()
    for header in frame.columns:
        if str(header).replace("\ufeff", "").strip().casefold() == wanted:
            return header
    return None


def text_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column as stripped text, None where blank or where the column is absent."""
    header = find_header(frame, name)
    if header is None:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    values = frame[header].astype(object)
    stripped = values.where(values.isna(), values.astype(str).str.strip())
    return stripped.where(stripped.notna() & (stripped != ""), None)


def flag_column(frame: pd.DataFrame, name: str) -> tuple[pd.Series, np.ndarray]:
    """A true/false column (``true``, ``false``, ``1``, ``0``, any case) as object True/False/None,
    and where a present cell is none of those."""
    text = text_column(frame, name).str.lower()
    truth = text.map({"true": True, "1": True, "false": False, "0": False})
    bad = (text.notna() & truth.isna()).to_numpy()
    return truth.astype(object).where(truth.notna(), None), bad


# ---------------------------------------------------------------------------------------------
# Dates and times.

ISO_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
ISO_DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
OFFSET_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")
_TIME_DIRECTIVES = ("%H", "%I", "%M", "%S", "%p", "%X", "%c", "%T", "%R")


def has_time_of_day(pattern: str) -> bool:
    """Whether a strftime pattern writes a time of day (else it is a date).

    >>> has_time_of_day("%d.%m.%Y"), has_time_of_day("%m/%d/%Y %I:%M %p")
    (False, True)
    """
    return any(d in pattern for d in _TIME_DIRECTIVES)


@dataclass(frozen=True)
class TimeFormats:
    """How a source writes its dates and times.

    ``formats``: strftime patterns tried first, in order (a user's ``format:`` or ``--date-format``).
    ``local_formats``: fixed layouts that are always local times (Salesforce's report exports:
    ``3/31/2026 2:05 PM``). ``timezone``: the IANA zone of times without an offset; None means UTC
    for ISO-8601 text and ``formats`` (as the contract reads them), and an error for a
    ``local_formats`` time of day (whose zone is the exporting user's and unknown here).
    ISO-8601 with ``Z`` or an offset (``+0000``, ``+02:00``) is an instant and converted to UTC.
    """

    formats: tuple[str, ...] = ()
    local_formats: tuple[str, ...] = ()
    timezone: str | None = None
    iso: bool = True


@dataclass(frozen=True)
class ParsedTimes:
    """Parsed times: UTC values (NaT where missing or bad), which were dates without a time of
    day, which were bad, and why (per bad row)."""

    values: pd.Series
    date_only: np.ndarray
    bad: np.ndarray
    reasons: dict[int, str]


def _localize(naive: pd.Series, timezone: str | None) -> tuple[pd.Series, np.ndarray]:
    """Naive wall times in ``timezone`` (None: UTC) as UTC; also where the wall time does not
    exist or is ambiguous there (a daylight-saving change), which are NaT."""
    if timezone is None:
        return naive.dt.tz_localize("UTC").astype(_TS), np.zeros(len(naive), dtype=bool)
    local = naive.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    unclear = (local.isna() & naive.notna()).to_numpy()
    return local.dt.tz_convert("UTC").astype(_TS), unclear


def parse_times(cells: pd.Series, formats: TimeFormats) -> ParsedTimes:
    """Parse a column of date/time text by ``formats``; every cell that cannot be read is named.

    >>> p = parse_times(pd.Series(["2026-03-31T14:05:00.000Z", "2026-03-31", "3/31/2026 2:05 PM", None]),
    ...                 TimeFormats(local_formats=("%m/%d/%Y %I:%M %p",), timezone="America/New_York"))
    >>> [str(v) for v in p.values], p.date_only.tolist(), p.bad.tolist()
    (['2026-03-31 14:05:00+00:00', '2026-03-31 00:00:00+00:00', '2026-03-31 18:05:00+00:00', 'NaT'], [False, True, False, False], [False, False, False, False])
    """
    n = len(cells)
    text = pd.Series(cells.to_numpy(dtype=object), dtype=object)
    text = text.where(text.isna(), text.astype(str).str.strip())
    present = (text.notna() & (text != "")).to_numpy()
    values = pd.Series(pd.NaT, index=range(n), dtype=_TS)
    date_only = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    todo = present.copy()
    zone = formats.timezone or "UTC"

    def settle(where: np.ndarray, parsed: pd.Series, dates: bool, local: bool) -> None:
        """Store the parsed rows at ``where`` (positions), localised; report unclear local times."""
        if local:
            utc, unclear = _localize(parsed, None if dates else formats.timezone)
            for i in where[unclear]:
                reasons[int(i)] = (f"{show_value(text[i])} is not a single moment in {zone} (a daylight-saving change); "
                                   "write it with an offset")
                bad[i] = True
        else:
            utc = parsed
        values.iloc[where] = utc.to_numpy()
        date_only[where] = dates
        todo[where] = False

    for pattern in formats.formats:
        if not todo.any():
            break
        where = np.flatnonzero(todo)
        parsed = pd.to_datetime(text.iloc[where], format=pattern, errors="coerce")
        ok = parsed.notna().to_numpy()
        if ok.any():
            hit = parsed[ok]
            aware = hit.dt.tz is not None
            settle(where[ok], hit.dt.tz_convert("UTC").astype(_TS) if aware else hit.astype("datetime64[us]"),
                   not has_time_of_day(pattern), local=not aware)
    if formats.iso and todo.any():
        where = np.flatnonzero(todo)
        sub = text.iloc[where].astype(str)
        iso = sub.str.match(ISO_PATTERN.pattern).to_numpy()
        with_offset = iso & sub.str.contains(OFFSET_SUFFIX.pattern).to_numpy()
        dates = iso & sub.str.match(ISO_DATE_PATTERN.pattern).to_numpy()
        if with_offset.any():
            parsed = pd.to_datetime(sub[with_offset], format="ISO8601", utc=True, errors="coerce").astype(_TS)
            ok = parsed.notna().to_numpy()
            settle(where[with_offset][ok], parsed[ok], False, local=False)
        for group, is_date in ((iso & ~with_offset & dates, True), (iso & ~with_offset & ~dates, False)):
            if group.any():
                parsed = pd.to_datetime(sub[group], format="ISO8601", errors="coerce").astype("datetime64[us]")
                ok = parsed.notna().to_numpy()
                settle(where[group][ok], parsed[ok], is_date, local=True)
    for pattern in formats.local_formats:
        if not todo.any():
            break
        where = np.flatnonzero(todo)
        parsed = pd.to_datetime(text.iloc[where], format=pattern, errors="coerce")
        ok = parsed.notna().to_numpy()
        if not ok.any():
            continue
        is_date = not has_time_of_day(pattern)
        if not is_date and formats.timezone is None:
            for i in where[ok]:
                reasons[int(i)] = (f"{show_value(text[i])} is a local time and no timezone was given; pass the zone the "
                                   "export was written in (e.g. --timezone Europe/Berlin)")
                bad[i] = True
                todo[i] = False
            continue
        settle(where[ok], parsed[ok].astype("datetime64[us]"), is_date, local=True)
    for i in np.flatnonzero(todo):
        bad[i] = True
        expected = ", ".join([*formats.formats, *(["ISO-8601 (2026-03-31, 2026-03-31T14:05:00Z)"] if formats.iso else []),
                              *formats.local_formats])
        reasons[int(i)] = f"{show_value(text[i])} is not a date or time in a format read here ({expected})"
    values = values.where(~pd.Series(bad), pd.NaT).astype(_TS)
    values.index = cells.index
    return ParsedTimes(values, date_only, bad, reasons)


def not_before(times: pd.Series, date_only: np.ndarray, floor: pd.Series) -> pd.Series:
    """Dates without a time of day, taken at 00:00 UTC, moved to ``floor`` (the deal's created_at)
    when they fall on the same UTC day just before it: the event happened that day, not before
    the deal existed. Earlier days are left as they are (the contract reports them).

    >>> t = pd.Series(pd.to_datetime(["2026-03-31", "2026-03-30", "2026-04-02"], utc=True))
    >>> f = pd.Series(pd.to_datetime(["2026-03-31T14:05Z"] * 3, utc=True))
    >>> [str(x) for x in not_before(t, np.array([True, True, True]), f)]
    ['2026-03-31 14:05:00+00:00', '2026-03-30 00:00:00+00:00', '2026-04-02 00:00:00+00:00']
    """
    times = times.reset_index(drop=True)
    floor = floor.reset_index(drop=True)
    same_day = (times.dt.floor("D") == floor.dt.floor("D")).fillna(False).to_numpy(dtype=bool)
    earlier = (times < floor).fillna(False).to_numpy(dtype=bool)
    move = np.asarray(date_only, dtype=bool) & same_day & earlier
    return times.where(~pd.Series(move), floor).astype(_TS)


# ---------------------------------------------------------------------------------------------
# Numbers.


def parse_numbers(cells: pd.Series, decimal: str = ".", thousands: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse number text (``12500.00``; with ``decimal=","`` and ``thousands="."``: ``12.500,00``);
    returns (float64, NaN where missing or bad; bad).

    >>> parse_numbers(pd.Series(["1.250,50", "", "12,5x"]), decimal=",", thousands=".")[0].tolist()
    [1250.5, nan, nan]
    """
    text = pd.Series(cells.to_numpy(dtype=object), dtype=object)
    present = text.notna() & (text.astype(str).str.strip() != "")
    clean = text.where(present, None).astype(object)
    clean = clean.where(clean.isna(), clean.astype(str).str.strip())
    if thousands:
        clean = clean.where(clean.isna(), clean.astype(str).str.replace(thousands, "", regex=False))
    if decimal != ".":
        clean = clean.where(clean.isna(), clean.astype(str).str.replace(decimal, ".", regex=False))
    numbers = pd.to_numeric(clean, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = present.to_numpy() & ~np.isfinite(numbers)
    return np.where(bad, np.nan, numbers), bad


# ---------------------------------------------------------------------------------------------
# Where output rows came from, and what the importer found.


@dataclass(frozen=True)
class Origin:
    """Where each row of one output table came from: source file, row (from 1) and key, and per
    file which source column stands for each contract column."""

    file: np.ndarray
    row: np.ndarray
    key: np.ndarray
    columns: Mapping[str, Mapping[str, str]]

    @classmethod
    def of(cls, file: str, rows: np.ndarray, keys: Sequence[str], columns: Mapping[str, str]) -> Origin:
        rows = np.asarray(rows, dtype=np.int64)
        return cls(np.full(len(rows), file, dtype=object), rows, np.asarray(list(keys), dtype=object), {file: dict(columns)})

    @classmethod
    def of_lines(cls, lines: Lines, columns: Mapping[str, str]) -> Origin:
        return cls.of(lines.file, lines.rows, lines.keys, columns)

    @classmethod
    def concat(cls, parts: Sequence[Origin]) -> Origin:
        columns: dict[str, dict[str, str]] = {}
        for part in parts:
            for file, names in part.columns.items():
                columns.setdefault(file, {}).update(names)
        if not parts:
            return cls(np.array([], dtype=object), np.array([], dtype=np.int64), np.array([], dtype=object), columns)
        return cls(np.concatenate([p.file for p in parts]), np.concatenate([p.row for p in parts]),
                   np.concatenate([p.key for p in parts]), columns)

    def take(self, positions: np.ndarray) -> Origin:
        return Origin(self.file[positions], self.row[positions], self.key[positions], self.columns)

    def label(self, position: int) -> str:
        key = self.key[position]
        return f"row {int(self.row[position])}" + (f" ({key})" if key else "")


@dataclass(frozen=True)
class Lines:
    """The rows of one source frame as messages name them: file, row number (from 1, kept through
    filtering: the frame's index is its position in the file) and key (``Id=006...``)."""

    file: str
    rows: np.ndarray
    keys: list[str]

    @classmethod
    def of(cls, file: str, frame: pd.DataFrame, key: str | None) -> Lines:
        keys = row_keys(key, text_column(frame, key)) if key and find_header(frame, key) is not None else [""] * len(frame)
        return cls(file, frame.index.to_numpy(dtype=np.int64) + 1, keys)

    def subset(self, mask: np.ndarray) -> Lines:
        return Lines(self.file, self.rows[mask], [k for k, m in zip(self.keys, mask) if m])

    def label(self, position: int) -> str:
        key = self.keys[position]
        return f"row {int(self.rows[position])}" + (f" ({key})" if key else "")


def report_rows(bucket: Collector, lines: Lines, column: str, mask: np.ndarray, reason, rule: str) -> None:
    """One entry per row where ``mask`` holds (counted exactly, detailed up to the contract's limit);
    ``reason`` is text or a function of the row's position in ``lines``."""
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))
    if len(positions) == 0:
        return
    key = (lines.file, column, rule)
    already = bucket.counts.get(key, 0)
    bucket.counts[key] = already + len(positions)
    for position in positions[: max(0, DETAIL_LIMIT - already)]:
        text = reason(int(position)) if callable(reason) else reason
        bucket.violations.append(Violation(lines.file, column, lines.label(int(position)), text, rule))


def report_times(bucket: Collector, lines: Lines, column: str, parsed: ParsedTimes) -> None:
    """Every cell of a time column that could not be read, with the reason."""
    if parsed.reasons:
        mask = np.zeros(len(lines.rows), dtype=bool)
        mask[list(parsed.reasons)] = True
        report_rows(bucket, lines, column, mask, lambda p: parsed.reasons[p], "bad_time")


def row_keys(name: str, values: pd.Series) -> list[str]:
    """``Id=006...`` labels for a key column (empty where the key is blank)."""
    return [f"{name}={shown_text(v)}" if isinstance(v, str) and v else "" for v in values.tolist()]


@dataclass
class Imported:
    """What an importer built: the contract's raw tables and where each row came from, problems
    that stop the import, rows left out on purpose, warnings, notes and the names to check with.

    ``comparison``: columns kept beside the export for comparison only (Salesforce's own
    Probability), never features; None when there are none.
    """

    tables: dict[str, pd.DataFrame]
    origins: dict[str, Origin]
    mapping: NameMapping
    problems: Collector = field(default_factory=Collector)
    skipped: Collector = field(default_factory=Collector)
    warnings: Collector = field(default_factory=Collector)
    notes: list[str] = field(default_factory=list)
    comparison: pd.DataFrame | None = None
    names_file: str | None = None  # where the CRM's names are written, when not a --mapping file

    def hint(self, reason: str) -> str:
        """A reason whose mapping hint points to where this import's names go (``names:`` of its mapping)."""
        if self.names_file is None:
            return reason
        return _MAPPING_HINT.sub(lambda m: f"under 'names:' > '{m.group(1)}:' in {self.names_file}", reason)


_MAPPING_HINT = re.compile(r"under '(\w+):' in a mapping file \(" + re.escape(MAPPING_FILE_WHERE) + r"\)")
_ROW = re.compile(r"^row (\d+)")
_ROW_IN_REASON = re.compile(r"\brow (\d+)\b")


def locate(violations: Sequence[Violation], origins: Mapping[str, Origin]) -> list[Violation]:
    """Contract violations of the built tables, named by the source file, column and row they came from.

    Row numbers inside a reason ("first seen at row 3") are translated the same way.
    """
    out = []
    for v in violations:
        origin = origins.get(v.table)
        match = _ROW.match(v.row)
        if origin is None or match is None or int(match.group(1)) > len(origin.row):
            out.append(Violation(f"{v.table} (built)", v.column, v.row, v.reason, v.rule))
            continue
        position = int(match.group(1)) - 1
        file = str(origin.file[position])
        names = origin.columns.get(file, {})
        column = ", ".join(names.get(c.strip(), f"({c.strip()})") for c in v.column.split(","))

        def other_row(m: re.Match, origin: Origin = origin, file: str = file) -> str:
            k = int(m.group(1)) - 1
            if not 0 <= k < len(origin.row):
                return m.group(0)
            other = str(origin.file[k])
            return f"row {int(origin.row[k])}" if other == file else f"{other} row {int(origin.row[k])}"

        out.append(Violation(file, column, origin.label(position), _ROW_IN_REASON.sub(other_row, v.reason), v.rule))
    return out


def check_import(imported: Imported) -> tuple[Export | None, Collector]:
    """Run the contract on the built tables; return the checked export, or every problem by source.

    Problems the importer found itself come first; a contract violation on a source cell already
    reported (a date it could not read is also an empty required cell) is not repeated.
    """
    result = check_tables(imported.tables, imported.mapping)
    problems = Collector()
    problems.violations = list(imported.problems.violations)
    problems.counts = dict(imported.problems.counts)
    seen = {(p.table, p.row, p.column) for p in problems.violations}
    located = locate(result.violations, imported.origins)
    for v in located:
        if (v.table, v.row, v.column) not in seen:
            seen.add((v.table, v.row, v.column))
            problems.add(v.table, v.column, v.rule, v.row, imported.hint(v.reason))
    # Beyond the detail limit the contract only counted: those counts go to the file of the table.
    shown: dict[tuple[str, str, str], int] = {}
    for v in result.violations:
        shown[(v.table, v.column, v.rule)] = shown.get((v.table, v.column, v.rule), 0) + 1
    for (table, column, rule), count in result.counts.items():
        beyond = count - shown.get((table, column, rule), 0)
        if beyond > 0:
            problems.counts[(f"{table} (built)", column, rule)] = beyond
    if problems.counts:
        return None, problems
    return result.export, problems


def export_frames(export: Export) -> dict[str, pd.DataFrame]:
    """The checked export's tables as written: canonical names, timestamps in UTC."""
    return {name: frame for name, frame in export.tables().items() if frame is not None}


def empty_table(name: str) -> pd.DataFrame:
    """A contract table with its columns and no rows (a source object present but empty)."""
    kinds = {"timestamp": TIMESTAMP_DTYPE, "number": "float64", "flag": "boolean"}
    return pd.DataFrame({c.name: pd.Series([], dtype=kinds.get(c.kind, object)) for c in TABLES[name].columns})


def format_issues(issues: Sequence[Violation], max_per_rule: int, noun: str,
                  counts: Mapping[tuple[str, str, str], int] | None = None) -> str:
    """Source problems as ``file | column | row | reason`` lines, grouped like the contract's report."""
    return format_report(issues, max_per_rule, counts=dict(counts or {}), noun=noun,
                         header=("file", "column", "row", "reason"))
