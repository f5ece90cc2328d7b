"""The contract's timestamp range and how messages quote input.

Every timestamp of the contract lies from ``TIMESTAMP_MIN`` to ``TIMESTAMP_MAX`` (both included);
outside it a cell is an ``out_of_range`` violation naming table, column and row, whatever the
cell's form (CSV text, a JSON request's objects, typed Parquet of any unit), and nothing crashes.
Values echoed in reasons and row labels are cut and their control characters escaped.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract.cells import TIMESTAMP_RANGE, timestamp_in_range
from features.contract.check import check_tables
from features.contract.io import read_table_bytes, write_tables
from features.contract.report import run_validate
from features.contract.schema import TABLES, TIMESTAMP_MAX, TIMESTAMP_MIN
from features.contract.violations import describe_rows, show_value, shown_text
from tests.factories import as_request_objects
from tests.features.test_contract import ACTIVITIES, CONTACTS, DEALS, FIELD_HISTORY, STAGE_HISTORY

OUTSIDE = f"is outside the supported range {TIMESTAMP_RANGE}"


def tiny_raw(*changes: tuple[str, int, str, object]) -> dict[str, pd.DataFrame]:
    """The contract tests' tiny valid export as text frames, with cells changed (rows 0-based)."""
    tables = {"deals": DEALS, "stage_history": STAGE_HISTORY, "field_history": FIELD_HISTORY,
              "contacts": CONTACTS, "activities": ACTIVITIES}
    records = {name: [dict(r) for r in rows] for name, rows in tables.items()}
    for table, row, column, value in changes:
        records[table][row][column] = value
    return {name: pd.DataFrame(rows, dtype="str") for name, rows in records.items()}


def violations(raw: dict[str, pd.DataFrame]) -> list[tuple[str, str, str, str, str]]:
    result = check_tables(raw)
    assert result.export is None, "expected violations"
    return [(v.table, v.column, v.row, v.rule, v.reason) for v in result.violations]


def test_the_range_is_documented_once():
    assert (TIMESTAMP_MIN, TIMESTAMP_MAX) == (pd.Timestamp("1970-01-01", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC"))
    assert TIMESTAMP_RANGE == "1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"
    readme = (Path(__file__).resolve().parents[2] / "docs" / "data-contract.md").read_text()
    assert TIMESTAMP_RANGE in readme


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "0000-01-01", "1677-09-21T00:12:43Z", "1900-01-01",
                                   "1969-12-31T23:59:59.999999Z", "2200-01-01T00:00:00.000001Z",
                                   "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+00:00", "1601-01-01 00:00:00"])
def test_a_created_at_outside_the_range_is_a_violation_naming_the_row(value):
    found = violations(tiny_raw(("deals", 1, "created_at", value)))
    assert ("deals", "created_at", "row 2 (deal_id=D2)", "out_of_range", f"{show_value(value)} {OUTSIDE}") in found


def test_the_range_ends_are_inside():
    raw = tiny_raw(("deals", 0, "created_at", "1970-01-01T00:00:00Z"), ("deals", 0, "closed_at", "2200-01-01"),
                   ("deals", 0, "expected_close_date", "2200-01-01T00:00:00Z"))
    raw["stage_history"] = raw["stage_history"].assign(entered_at="1970-01-01T00:00:00Z").iloc[2:]
    result = check_tables(raw)
    assert [v for v in result.violations if v.rule == "out_of_range"] == []


def test_a_placeholder_in_an_optional_column_is_a_violation_with_a_hint():
    """1900-01-01 in expected_close_date (nullable) is reported, never read as a date nor dropped silently."""
    found = violations(tiny_raw(("deals", 1, "expected_close_date", "1900-01-01")))
    assert found == [("deals", "expected_close_date", "row 2 (deal_id=D2)", "out_of_range",
                      f"'1900-01-01' {OUTSIDE}; leave the cell empty where it stands for no date")]


def test_event_times_outside_the_range_are_violations():
    found = violations(tiny_raw(("activities", 1, "occurred_at", "0001-01-01T00:00:00Z"),
                                ("contacts", 0, "added_at", "2999-01-01")))
    rules = {(t, c, row, rule) for t, c, row, rule, _ in found}
    assert ("activities", "occurred_at", "row 2 (activity_id=X2)", "out_of_range") in rules
    assert ("contacts", "added_at", "row 1 (deal_id=D1, contact_id=C1)", "out_of_range") in rules
    assert not any(rule == "before_created" for *_, rule, _ in found), "an out-of-range time is compared with nothing"


def test_a_close_date_change_outside_the_range_is_a_violation():
    found = violations(tiny_raw(("field_history", 0, "new_value", "0001-01-01")))
    row = "row 1 (deal_id=D2, field=expected_close_date, changed_at=2026-01-12T00:00:00Z)"
    assert found == [("field_history", "new_value", row, "bad_field_value", f"expected_close_date value '0001-01-01' {OUTSIDE}")]


def test_request_objects_outside_the_range_are_violations():
    """A JSON request's Python objects (and a Parquet date64 column's dates) take the object path."""
    raw = as_request_objects(tiny_raw())
    deals = raw["deals"].astype(object)
    deals.loc[0, "created_at"] = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
    deals.loc[1, "created_at"] = dt.date(1900, 1, 1)
    raw["deals"] = deals
    found = violations(raw)
    assert [(c, row, rule) for _, c, row, rule, _ in found if rule == "out_of_range"] == [
        ("created_at", "row 1 (deal_id=D1)", "out_of_range"), ("created_at", "row 2 (deal_id=D2)", "out_of_range")]


def _parquet_deals(column: pa.Array) -> pd.DataFrame:
    deals = tiny_raw()["deals"]
    table = pa.Table.from_pandas(deals, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("created_at"), "created_at", column)
    table = table.replace_schema_metadata(None)  # pandas' metadata would turn the column back into text
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return read_table_bytes(buffer.getvalue())


@pytest.mark.parametrize("arrow_type", [pa.timestamp("s", tz="UTC"), pa.timestamp("ms"),
                                        pa.timestamp("ms", tz="Europe/Berlin"), pa.timestamp("us", tz="UTC")])
def test_typed_times_of_any_unit_outside_the_range_are_violations_not_crashes(arrow_type):
    """A Parquet time far beyond the range (year 35 million in seconds) overflowed microseconds: a traceback."""
    unit_per_second = {"s": 1, "ms": 1000, "us": 1_000_000}[arrow_type.unit]
    seconds = [2**50 if arrow_type.unit != "us" else 2**42, -(2**35)]
    column = pa.array([s * unit_per_second for s in seconds], pa.int64()).cast(arrow_type)
    found = violations({**tiny_raw(), "deals": _parquet_deals(column)})
    assert [(c, row, rule) for _, c, row, rule, _ in found if c == "created_at"] == [
        ("created_at", "row 1 (deal_id=D1)", "out_of_range"), ("created_at", "row 2 (deal_id=D2)", "out_of_range")]


def test_validate_reports_a_year_one_date_by_table_row_and_column(tmp_path, capsys):
    folder = write_tables(tiny_raw(("activities", 0, "occurred_at", "0001-01-01T00:00:00Z")), tmp_path / "export")
    assert run_validate(folder) == 1
    report = re.sub(r" +\|", " |", capsys.readouterr().out)
    assert (f"activities | occurred_at | row 1 (activity_id=X1) | '0001-01-01T00:00:00Z' {OUTSIDE}") in report


def test_a_salesforce_placeholder_close_date_is_reported_by_source_row(tmp_path):
    """CRMs write 1900-01-01 for 'no date': the importer names the source file, row and column."""
    from features.contract.importers.run import run_import_salesforce

    source = tmp_path / "salesforce"
    shutil.copytree(Path(__file__).parent / "importers" / "salesforce", source)
    opportunities = pd.read_csv(source / "Opportunity.csv", dtype=str, keep_default_na=False)
    opportunities.loc[1, "CloseDate"] = "1900-01-01"
    opportunities.loc[2, "CreatedDate"] = "0001-01-01T00:00:00.000Z"
    opportunities.to_csv(source / "Opportunity.csv", index=False)
    lines: list[str] = []
    code = run_import_salesforce(source, tmp_path / "out", echo=lines.append)
    output = re.sub(r" +\|", " |", "\n".join(lines))
    assert code == 1, output
    assert "Opportunity.csv | CloseDate | row 2" in output and "'1900-01-01T00:00:00+00:00' is outside" in output
    assert "Opportunity.csv | CreatedDate | row 3" in output
    assert not (tmp_path / "out").exists()


def test_timestamp_in_range_compares_without_converting():
    east = dt.timezone(dt.timedelta(hours=14))
    assert not timestamp_in_range(dt.datetime(1, 1, 1, tzinfo=east))
    assert not timestamp_in_range(dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-14))))
    assert timestamp_in_range(dt.datetime(1970, 1, 1, 14, tzinfo=east)) and timestamp_in_range(TIMESTAMP_MAX)
    assert not timestamp_in_range(dt.datetime(1970, 1, 1, 13, 59, tzinfo=east))


# --- quoting input in messages --------------------------------------------------------------------

FORMULA = "=cmd|' /C calc'!A0"


def test_a_quoted_value_is_cut_and_its_control_characters_escaped():
    value = FORMULA + "\x00\n\t\x1b\u202e" + "z" * 500
    shown = show_value(value)
    assert shown == repr(value[:60]) + "…"
    assert shown.startswith('"=cmd|\' /C calc\'!A0\\x00\\n\\t\\x1b\\u202e')
    assert not any(c in shown for c in "\x00\n\t\x1b\u202e") and len(shown) < 90
    assert show_value("Closed Won") == "'Closed Won'" and show_value("é" * 60) == repr("é" * 60)


def test_a_contract_reason_quotes_a_hostile_cell_safely():
    value = FORMULA + "\x00\n" + "z" * 300
    found = violations(tiny_raw(("deals", 1, "stage", value)))
    reason = next(reason for table, column, _, rule, reason in found if (column, rule) == ("stage", "unknown_value"))
    assert reason.startswith(f'unknown stage "{FORMULA}\\x00\\n' + "z" * 40) and "z" * 60 not in reason
    assert "\x00" not in reason and "\n" not in reason


def test_row_labels_show_keys_escaped_and_cut():
    frame = pd.DataFrame({"deal_id": ["D\n1\x00" + "9" * 100], "contact_id": ["C1"]})
    label, = describe_rows(frame, TABLES["contacts"], np.array([0]))
    assert label == "row 1 (deal_id=" + shown_text("D\n1\x00" + "9" * 100) + ", contact_id=C1)"
    assert "\n" not in label and "\x00" not in label and label.count("9") == 56 and "…" in label


def test_headers_in_a_missing_column_report_are_escaped_and_cut():
    raw = tiny_raw()
    deals = raw["deals"].drop(columns=["amount"])
    deals.columns = [*deals.columns[:-1], "x\r\n" * 50]
    raw["deals"] = deals
    reason = next(v.reason for v in check_tables(raw).violations if v.rule == "missing_column")
    assert "\r" not in reason and "\n" not in reason and "x\\r\\n" in reason and "…" in reason


def test_an_importer_reason_quotes_a_source_cell_safely(tmp_path):
    """The importers quote source cells with the same helper (an Amount, a key in the row label)."""
    from features.contract.importers.run import run_import_salesforce

    source = tmp_path / "salesforce"
    shutil.copytree(Path(__file__).parent / "importers" / "salesforce", source)
    opportunities = pd.read_csv(source / "Opportunity.csv", dtype=str, keep_default_na=False)
    opportunities.loc[0, "Amount"] = FORMULA + "\x1b[2J" + "5" * 200
    opportunities.to_csv(source / "Opportunity.csv", index=False)
    lines: list[str] = []
    assert run_import_salesforce(source, tmp_path / "out", echo=lines.append) == 1
    output = "\n".join(lines)
    assert f"Amount {show_value(FORMULA + chr(27) + '[2J' + '5' * 200)} is not a number" in output
    assert "\x1b" not in output and "5" * 61 not in output
