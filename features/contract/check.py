"""Checking a CRM export against the data contract in ``features.contract.schema``.

``check_tables`` takes raw tables (CSV read as text, Parquet typed, or frames built from a JSON
request) and returns either a typed ``Export`` or the full list of violations, each naming the
table, column, row and reason. It does no file I/O, so the serving code calls it on every request;
``features.contract.load`` and ``features.contract.report`` add the reading of export folders at the edge.

Row numbers count data rows from 1, the header not counted (in a spreadsheet that shows the
header as row 1, the same row is one lower). Nothing is silently dropped or coerced: a row either
passes as it is or is reported.

Why this is hand-written and not pandera: ``bench/bench_contract.py`` runs pandera 0.35 schemas of
the whole contract (dtypes, required and nullable columns, allowed values after the mapping as a
``Parser`` + ``isin``, ``ge``/``le``, unique keys, custom checks for the rest) beside this function
on the same tables. On the 100k-deal generated export (4.7M rows; CPU s, 2-core machine):

- per request, where this runs on every call: one deal 2.0-2.6 ms here, 102-122 ms with pandera
  (47-51x); 1000 deals 0.044 s vs 0.32 s (7x). A pandera column costs 1.4-4 ms per call whatever
  its length; each concern alone on one deal's activities is 19-190x slower (allowed values 148x,
  unique key 188x, range 19x, timestamps 58x);
- the whole export: 4.5 s vs 17.4 s (3.8x); on 3.4M activities allowed values and the unique key
  1.3x, ranges 3.1x, timestamps 8.6x (pandera's custom check is ``pd.to_datetime``);
- what is found: on a messy export with a problem planted for every rule both report the same
  rows, except that one unparseable number ('12,5') leaves pandera's column uncoerced, so its range
  and finite checks fail without a row and '-300' and 'inf' in that column go unreported; and
  pandera's datetime coercion converts a '+02:00' offset silently, so the UTC rule is a custom
  check on the text (both pinned in ``tests/features/test_pandera_comparison.py``);
- the reasons: pandera names its check and the failing value; ours the row's key, the rule in
  words and what was expected (allowed values and the mapping line to add, the first row of a
  duplicate, the deal's created_at). A DataFrame check's failure cases leave out the empty cell
  that broke it (an empty ``closed_at``);
- cross-table rules and the required table are plain pandas either way (pandera validates one
  frame and adds the harness, not the logic), and pandera returns no typed ``Export``.

So no concern moved to pandera: those it does as well (allowed values, unique keys) are no faster
on an export and two orders of magnitude slower per request, and one function serves both.
``.venv/bin/python bench/bench_contract.py`` (about 2 minutes) prints the tables.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.internals import create_dataframe_from_blocks

from features.contract.cells import (
    NAT,
    OUTPUT_DTYPE_OBJECTS,
    Parsed,
    frame_columns,
    parse_column,
    parse_text_column,
    string_array,
    timestamps_of,
)
from features.contract.mapping import NameMapping, load_mapping
from features.contract.rules import (
    check_activity_contacts,
    check_columns,
    check_deals,
    check_events,
    check_field_values,
    check_stage_history,
    check_unique_key,
    index_deals,
)
from features.contract.schema import (
    EVENT_TABLES,
    TABLES,
    Export,
    Table,
    context_columns,
)
from features.contract.violations import LARGE_STRING, CheckResult, Collector, Violation, show_value

# ---------------------------------------------------------------------------------------------
# Composition.


def _absent_column(kind: str, n_rows: int) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """An optional column the input did not have: all missing, in the export dtype."""
    if kind == "number":
        return np.full(n_rows, np.nan)
    if kind == "flag":
        return pd.arrays.BooleanArray(np.zeros(n_rows, dtype=bool), np.ones(n_rows, dtype=bool))
    if kind == "timestamp":
        return timestamps_of(np.full(n_rows, NAT, dtype=np.int64))
    return string_array(pa.nulls(n_rows, type=LARGE_STRING))


@functools.lru_cache(maxsize=None)
def _column_index(table_name: str) -> pd.Index:
    """A table's column labels as a pandas Index, built once per process."""
    return pd.Index(TABLES[table_name].column_names)


def build_frame(table: Table, parsed: dict[str, Parsed], n_rows: int) -> pd.DataFrame:
    """Assemble the typed table in contract column order; optional absent columns are all-missing.

    Each column is handed to pandas as its own block, as it is: ``pd.DataFrame(dict)`` infers
    the column labels' dtype and sanitizes every array again, half of a one-deal check's cost.
    """
    blocks = []
    numbers, number_positions = [], []
    for position, column in enumerate(table.columns):
        if column.name in parsed:
            values = parsed[column.name].array
            dtype = OUTPUT_DTYPE_OBJECTS[column.kind]
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
    out = Collector()
    notes: list[str] = []
    for name in raw:
        if name not in TABLES:
            notes.append(f"table {show_value(name)} is not part of the contract and was ignored")
    present = {name: raw[name] for name in TABLES if raw.get(name) is not None}
    for table in TABLES.values():
        if table.required and table.name not in present:
            out.add(
                table.name, "-", "missing_table", "whole table",
                f"required table {table.name} is missing; tables found: {', '.join(present) or '(none)'}",
            )

    frames: dict[str, pd.DataFrame] = {}
    parsed: dict[str, dict[str, Parsed]] = {}
    for name, frame in present.items():
        table = TABLES[name]
        if not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1):
            frame = frame.reset_index(drop=True)
        frames[name] = frame
        usable = check_columns(table, frame, out, notes)
        cells = frame_columns(frame, usable)
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
    built = {name: build_frame(TABLES[name], parsed[name], len(frames[name])) for name in present}
    context = context_columns(frames["deals"].columns)
    if context:
        built["deals"] = with_context(built["deals"], frames["deals"], context)
    return CheckResult(Export(**built), [], {}, notes)


def with_context(deals: pd.DataFrame, raw_deals: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The typed deals with the raw table's static context columns (``context_*``) as nullable text."""
    cells = frame_columns(raw_deals, names)
    return deals.assign(**{name: parse_text_column(cells[name]).array for name in names})


def _ordered(violations: list[Violation]) -> list[Violation]:
    """Order violations by table (contract order), keeping the order found within a table."""
    rank = {name: i for i, name in enumerate(TABLES)}
    return sorted(violations, key=lambda v: rank.get(v.table, -1))


