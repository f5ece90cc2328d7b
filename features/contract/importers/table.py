"""Any CRM's table-shaped export -> the contract's tables, by a YAML mapping (``dealrisk import table``).

The mapping says, for each contract table, which source file holds it and which source column
(or constant) fills each contract column, with the date formats, number formats and value maps
the source needs; which extra deal columns are static context; and the CRM's own stage, role, ...
names (the sections of a ``--mapping`` file). docs/importers.md has the reference and a worked
example on a deals-only spreadsheet. An example::

    timezone: Europe/Berlin
    tables:
      deals:
        file: deals.csv
        columns:
          deal_id: Deal Name
          created_at: {column: Created, format: "%d.%m.%Y"}
          amount: {column: "Value (EUR)", decimal: ",", thousands: "."}
          outcome: {column: "Won?", values: {"yes": won, "no": lost, "": open}}
          deal_type: {value: new_business}
        context:
          industry: Industry
    names:
      stage:
        Demo scheduled: propose

Rules the mapping cannot override (they are the contract's): a deal whose outcome is won or lost
has that as its stage (a closed deal's contract stage is its outcome; the CRM's stage of a closed
deal is where it stood when it closed, known only then); without an ``outcome`` column the outcome
follows the stage.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from features.contract.importers.sources import (
    Imported,
    Lines,
    Origin,
    SourceError,
    TimeFormats,
    find_header,
    parse_numbers,
    parse_times,
    report_rows,
    report_times,
    text_column,
)
from features.contract.importers.titles import seniority_of_titles
from features.contract.mapping import (
    MappingError,
    NameMapping,
    load_default_sections,
    merge_sections,
    normalize_name,
    parse_mapping,
    read_yaml_file,
)
from features.contract.schema import CLOSED_STAGES, CONTEXT_PREFIX, OPEN_STAGES, TABLES, Column
from features.contract.violations import Collector, show_value

TOP_KEYS = ("tables", "names", "timezone", "encoding", "delimiter")
TABLE_KEYS = ("file", "columns", "context", "encoding", "delimiter")
COLUMN_KEYS = ("column", "value", "values", "format", "timezone", "decimal", "thousands", "from_title")
CONTEXT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Deals columns the importer can derive when the mapping leaves them out.
DERIVED = {("deals", "outcome"): "the stage (won, lost, or open for an open stage)"}


class SpecError(ValueError):
    """The mapping file is unusable: the message names the file, the key and the reason."""


@dataclass(frozen=True)
class ColumnSpec:
    """How one contract column is filled: a source column (with formats and a value map) or a constant."""

    column: str | None = None
    value: str | None = None
    values: Mapping[str, str | None] = field(default_factory=dict)  # normalised source value -> value
    formats: tuple[str, ...] = ()
    timezone: str | None = None
    decimal: str = "."
    thousands: str | None = None
    from_title: bool = False

    @property
    def source(self) -> str:
        return self.column if self.column is not None else f"(value {self.value!r})"


@dataclass(frozen=True)
class TableSpec:
    name: str
    file: str | None
    columns: Mapping[str, ColumnSpec]
    context: Mapping[str, ColumnSpec]
    encoding: str
    delimiter: str


@dataclass(frozen=True)
class ImportSpec:
    """A parsed mapping file: tables to build, default timezone, the CRM's names."""

    tables: Mapping[str, TableSpec]
    timezone: str | None
    names: dict[str, dict[str, str]]
    source: str

    def mapping(self) -> NameMapping:
        """The names to check with: the shipped default, then this file's ``names``."""
        return merge_sections(load_default_sections(), self.names)


def _fail(source: str, key: str, reason: str) -> SpecError:
    return SpecError(f"{source}: {key}: {reason}")


def _near(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_keys(source: str, where: str, given: Mapping, allowed: tuple[str, ...]) -> None:
    for key in given:
        if key not in allowed:
            raise _fail(source, f"{where}.{key}" if where else str(key),
                        f"unknown key{_near(key, allowed)}; expected one of {', '.join(allowed)}")


def _timezone(source: str, key: str, value) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise _fail(source, key, f"unknown timezone {value!r}; use an IANA name such as Europe/Berlin or UTC") from None
    return str(value)


def _column_spec(source: str, key: str, raw, kind: str) -> ColumnSpec:
    if isinstance(raw, str):
        return ColumnSpec(column=raw)
    if not isinstance(raw, dict):
        raise _fail(source, key, f"expected a source column name or a mapping ({', '.join(COLUMN_KEYS)}), got {raw!r}")
    _unknown_keys(source, key, raw, COLUMN_KEYS)
    if ("column" in raw) == ("value" in raw):
        raise _fail(source, key, "give exactly one of 'column' (a source column) and 'value' (a constant)")
    values = raw.get("values") or {}
    if not isinstance(values, dict):
        raise _fail(source, f"{key}.values", "expected a mapping of source values to contract values")
    formats = raw.get("format") or ()
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    if formats and kind != "timestamp" and not key.endswith(("old_value", "new_value")):
        raise _fail(source, f"{key}.format", f"a date format is for time columns; this column holds a {kind}")
    for pattern in formats:
        if not isinstance(pattern, str) or "%" not in pattern:
            raise _fail(source, f"{key}.format", f"{pattern!r} is not a strftime pattern such as '%d.%m.%Y %H:%M'")
    return ColumnSpec(
        column=None if raw.get("column") is None else str(raw["column"]),
        value=None if raw.get("value") is None else str(raw["value"]),
        values={normalize_name("" if k is None else str(k)): (None if v is None or v == "" else str(v))
                for k, v in values.items()},
        formats=formats,
        timezone=_timezone(source, f"{key}.timezone", raw.get("timezone")),
        decimal=str(raw.get("decimal", ".")),
        thousands=None if raw.get("thousands") is None else str(raw["thousands"]),
        from_title=bool(raw.get("from_title", False)),
    )


def parse_spec(document, source: str) -> ImportSpec:
    """Check a parsed mapping document and return it as an ``ImportSpec``; ``SpecError`` names what is wrong."""
    if not isinstance(document, dict):
        raise SpecError(f"{source}: expected a YAML mapping with 'tables:' (and optionally names:, timezone:), "
                        f"got {type(document).__name__}")
    _unknown_keys(source, "", document, TOP_KEYS)
    raw_tables = document.get("tables")
    if not isinstance(raw_tables, dict) or not raw_tables:
        raise _fail(source, "tables", "expected the contract tables to build (deals: ..., and optionally "
                    "stage_history, field_history, contacts, activities)")
    for name in raw_tables:
        if name not in TABLES:
            raise _fail(source, f"tables.{name}", f"not a contract table{_near(name, TABLES)}; tables are "
                        f"{', '.join(TABLES)}")
    if "deals" not in raw_tables:
        raise _fail(source, "tables", "the deals table is required")
    try:
        parsed_names = parse_mapping(document.get("names"), f"{source}: names")
    except MappingError as exc:
        raise SpecError(str(exc)) from None
    timezone = _timezone(source, "timezone", document.get("timezone"))
    encoding = str(document.get("encoding", "utf-8"))
    delimiter = str(document.get("delimiter", ","))
    tables: dict[str, TableSpec] = {}
    for name, raw in raw_tables.items():
        if not isinstance(raw, dict):
            raise _fail(source, f"tables.{name}", "expected file:, columns: (and for deals context:)")
        _unknown_keys(source, f"tables.{name}", raw, TABLE_KEYS)
        table = TABLES[name]
        raw_columns = raw.get("columns") or {}
        if not isinstance(raw_columns, dict):
            raise _fail(source, f"tables.{name}.columns", "expected 'contract column: source column' lines")
        columns: dict[str, ColumnSpec] = {}
        for column, spec in raw_columns.items():
            if column not in table.column_names:
                raise _fail(source, f"tables.{name}.columns.{column}",
                            f"not a column of {name}{_near(column, table.column_names)}; columns are "
                            f"{', '.join(table.column_names)}")
            columns[column] = _column_spec(source, f"tables.{name}.columns.{column}", spec, table.column(column).kind)
        context: dict[str, ColumnSpec] = {}
        raw_context = raw.get("context") or {}
        if raw_context and name != "deals":
            raise _fail(source, f"tables.{name}.context", "static context is for deals only")
        if not isinstance(raw_context, dict):
            raise _fail(source, f"tables.{name}.context", "expected 'name: source column' lines")
        for key, spec in raw_context.items():
            if not isinstance(key, str) or not CONTEXT_NAME.match(key) or key in table.column_names:
                raise _fail(source, f"tables.{name}.context.{key}", "a context name is lower-case letters, digits "
                            "and _, starting with a letter, and not a deals column (map those under columns:)")
            context[key] = _column_spec(source, f"tables.{name}.context.{key}", spec, "text")
        needed = [c.name for c in table.columns if c.required and not c.nullable and c.name not in columns
                  and (name, c.name) not in DERIVED]
        if needed:
            raise _fail(source, f"tables.{name}.columns",
                        f"{', '.join(needed)} must be mapped (a source column, or value: for a constant)")
        tables[name] = TableSpec(
            name=name, file=None if raw.get("file") is None else str(raw["file"]), columns=columns, context=context,
            encoding=str(raw.get("encoding", encoding)), delimiter=str(raw.get("delimiter", delimiter)),
        )
    return ImportSpec(tables=tables, timezone=timezone, names=parsed_names, source=source)


def read_spec(path: Path) -> ImportSpec:
    """Read and check a mapping file."""
    return parse_spec(read_yaml_file(path, SpecError), str(path))


def source_files(spec: ImportSpec, src: Path) -> dict[str, Path]:
    """The file of each table: ``file:`` inside the folder ``src``, or ``src`` itself when it is a
    file and the mapping builds one table from it."""
    src = Path(src)
    out: dict[str, Path] = {}
    for name, table in spec.tables.items():
        if src.is_dir():
            if table.file is None:
                raise SourceError(f"{spec.source}: tables.{name}.file: needed when the source is a folder ({src})")
            out[name] = src / table.file
        elif src.is_file():
            if table.file is not None and Path(table.file).name != src.name:
                raise SourceError(f"{spec.source}: tables.{name}.file is {table.file!r} but the source is the file "
                                  f"{src.name}; pass the folder that holds the files")
            out[name] = src
        else:
            raise SourceError(f"{src}: no such file or folder")
    return out


# ---------------------------------------------------------------------------------------------
# Building the tables.


def _header(frame: pd.DataFrame, spec: ColumnSpec, file: str, key: str) -> str:
    header = find_header(frame, spec.column)
    if header is None:
        raise SourceError(f"{file}: no column {spec.column!r} (mapped to {key}){_near(spec.column, frame.columns)}; "
                          f"columns: {', '.join(str(c) for c in frame.columns)}")
    return header


def _mapped_text(frame: pd.DataFrame, spec: ColumnSpec) -> pd.Series:
    """A source column's text (or the constant), through the spec's value map; unmapped values as they are."""
    if spec.column is None:
        return pd.Series([spec.value] * len(frame), index=frame.index, dtype=object)
    text = text_column(frame, spec.column)
    if not spec.values:
        return text
    keys = text.map(lambda v: normalize_name(v) if isinstance(v, str) else "")
    mapped = keys.map(lambda k: spec.values.get(k, _KEEP))
    return mapped.where(mapped.map(lambda v: v is not _KEEP), text).astype(object)


_KEEP = object()


def _times(frame: pd.DataFrame, spec: ColumnSpec, default_zone: str | None, lines: Lines, column: str,
           problems: Collector):
    parsed = parse_times(_mapped_text(frame, spec), TimeFormats(formats=spec.formats,
                                                               timezone=spec.timezone or default_zone))
    report_times(problems, lines, column, parsed)
    return parsed


def _numbers(frame: pd.DataFrame, spec: ColumnSpec, lines: Lines, column: str, problems: Collector) -> np.ndarray:
    text = _mapped_text(frame, spec)
    numbers, bad = parse_numbers(text, spec.decimal, spec.thousands)
    shown = text.tolist()
    hint = "" if spec.decimal != "." or spec.thousands else " (for 1.250,50 map it with decimal: ',' and thousands: '.')"
    report_rows(problems, lines, column, bad, lambda p: f"{show_value(shown[p])} is not a number{hint}", "bad_number")
    return numbers


def _date_text(values: pd.Series) -> list[str | None]:
    return [None if pd.isna(v) else (v.strftime("%Y-%m-%d") if v == v.normalize() else v.strftime("%Y-%m-%dT%H:%M:%SZ"))
            for v in values.tolist()]


def _build_table(table: TableSpec, frame: pd.DataFrame, file: str, spec: ImportSpec, mapping: NameMapping,
                 problems: Collector) -> tuple[pd.DataFrame, Origin]:
    contract = TABLES[table.name]
    key_spec = table.columns.get(contract.key[0])
    key_header = _header(frame, key_spec, file, contract.key[0]) if key_spec and key_spec.column else None
    lines = Lines.of(file, frame, key_header)
    for name, column_spec in {**table.columns, **{f"{CONTEXT_PREFIX}{k}": v for k, v in table.context.items()}}.items():
        if column_spec.column is not None:
            _header(frame, column_spec, file, name)
    out: dict[str, object] = {}
    sources: dict[str, str] = {}
    for column in contract.columns:
        column_spec = table.columns.get(column.name)
        if column_spec is None:
            if column.required:
                out[column.name] = np.full(len(frame), None, dtype=object)
                sources[column.name] = "(not mapped)"
            continue
        sources[column.name] = column_spec.source
        label = column_spec.source
        out[column.name] = _cell_values(frame, column, column_spec, spec, mapping, lines, label, problems)
    for name, column_spec in table.context.items():
        out[f"{CONTEXT_PREFIX}{name}"] = _mapped_text(frame, column_spec).to_numpy(dtype=object)
        sources[f"{CONTEXT_PREFIX}{name}"] = column_spec.source
    built = pd.DataFrame(out, index=range(len(frame)))
    if table.name == "field_history":
        built = _field_values(built, frame, table, spec, lines, problems)
    if table.name == "deals":
        built, derived = _deal_outcomes(built, table, mapping)
        sources.update(derived)
    return built, Origin.of_lines(lines, sources)


def _cell_values(frame: pd.DataFrame, column: Column, spec: ColumnSpec, import_spec: ImportSpec,
                 mapping: NameMapping, lines: Lines, label: str, problems: Collector):
    if column.kind == "timestamp":
        return _times(frame, spec, import_spec.timezone, lines, label, problems).values.array
    if column.kind == "number":
        return _numbers(frame, spec, lines, label, problems)
    if spec.from_title:
        return seniority_of_titles(_mapped_text(frame, spec), mapping.section("seniority")).to_numpy(dtype=object)
    return _mapped_text(frame, spec).to_numpy(dtype=object)


def _field_values(built: pd.DataFrame, frame: pd.DataFrame, table: TableSpec, spec: ImportSpec, lines: Lines,
                  problems: Collector) -> pd.DataFrame:
    """field_history's old and new values in the contract's text: ISO dates for the close date (read
    with the column's ``format``), plain numbers for the amount (with its ``decimal``/``thousands``)."""
    tracked = built["field"].map(lambda v: v if v in ("amount", "expected_close_date") else None)
    updates = {}
    for name in ("old_value", "new_value"):
        column_spec = table.columns.get(name)
        if column_spec is None:
            continue
        values = built[name].astype(object).copy()
        for field_name in ("expected_close_date", "amount"):
            mask = (tracked == field_name).to_numpy()
            if not mask.any():
                continue
            sub_frame = frame.iloc[np.flatnonzero(mask)]
            sub_lines = lines.subset(mask)
            if field_name == "amount":
                numbers = _numbers(sub_frame, column_spec, sub_lines, column_spec.source, problems)
                values[mask] = [None if not np.isfinite(v) else np.format_float_positional(v, trim="-") for v in numbers]
            else:
                parsed = _times(sub_frame, column_spec, spec.timezone, sub_lines, column_spec.source, problems)
                values[mask] = _date_text(parsed.values)
        updates[name] = values
    return built.assign(**updates)


def _deal_outcomes(built: pd.DataFrame, table: TableSpec, mapping: NameMapping) -> tuple[pd.DataFrame, dict[str, str]]:
    """The outcome from the stage where it is not mapped; a won or lost deal's stage is its outcome."""
    section = mapping.section("stage")
    canonical = built["stage"].map(lambda v: section.get(normalize_name(v)) if isinstance(v, str) else None)
    if "outcome" not in table.columns:
        outcome = np.where(canonical.isin(CLOSED_STAGES), canonical,
                           np.where(canonical.isin(OPEN_STAGES), "open", None))
        return built.assign(outcome=outcome), {"outcome": f"{table.columns['stage'].source} (outcome from the stage)"}
    outcomes = mapping_outcome(built["outcome"])
    closed = outcomes.isin(CLOSED_STAGES).to_numpy()
    stage = np.where(closed, outcomes.to_numpy(dtype=object), built["stage"].to_numpy(dtype=object))
    return built.assign(stage=stage), {}


def mapping_outcome(values: pd.Series) -> pd.Series:
    """Outcome cells in canonical form where they are one (any case and spacing), else as they are."""
    canonical = {"open": "open", "won": "won", "lost": "lost"}
    return values.map(lambda v: canonical.get(normalize_name(v), v) if isinstance(v, str) else v)


def import_table(spec: ImportSpec, files: Mapping[str, pd.DataFrame], file_names: Mapping[str, str]) -> Imported:
    """Build the contract's tables from source frames (table -> the text frame of its file)."""
    mapping = spec.mapping()
    problems = Collector()
    tables: dict[str, pd.DataFrame] = {}
    origins: dict[str, Origin] = {}
    notes = []
    for name, table in spec.tables.items():
        frame = files[name]
        tables[name], origins[name] = _build_table(table, frame, file_names[name], spec, mapping, problems)
        used = {c.column.casefold() for c in [*table.columns.values(), *table.context.values()] if c.column}
        unused = [str(c) for c in frame.columns if str(c).strip().casefold() not in used]
        if unused:
            notes.append(f"{file_names[name]}: columns not mapped, left out: {', '.join(unused)}")
    if "outcome" not in spec.tables["deals"].columns:
        notes.append("deals: outcome taken from the stage (won, lost, or open for an open stage)")
    return Imported(tables=tables, origins=origins, mapping=mapping, problems=problems, notes=notes,
                    names_file=spec.source)

