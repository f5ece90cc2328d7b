"""Tests for features.contract: one test per rule with the exact report text, built from tiny frames."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract.check import check_tables
from features.contract.io import write_tables
from features.contract.load import load_export
from features.contract.report import run_validate
from features.contract.schema import TABLES, TIMESTAMP_DTYPE
from features.contract.violations import (
    DETAIL_LIMIT,
    CheckResult,
    ContractError,
    Violation,
    format_report,
)
from tests.factories import as_request_objects, make_export, random_export

DEALS = [
    {"deal_id": "D1", "account_id": "A1", "owner_id": "O1", "created_at": "2026-01-01T00:00:00Z",
     "amount": "1500", "deal_type": "new_business", "lead_source": "web", "segment": "smb", "region": "emea",
     "product": "core", "stage": "Closed Won", "expected_close_date": "2026-02-15", "closed_at": "2026-02-01T09:00:00Z",
     "outcome": "won"},
    {"deal_id": "D2", "account_id": "A2", "owner_id": "O2", "created_at": "2026-01-05 08:30:00",
     "amount": "250.5", "deal_type": "renewal", "lead_source": None, "segment": None, "region": None,
     "product": None, "stage": "Negotiation/Review", "expected_close_date": "2026-03-15T00:00:00+00:00",
     "closed_at": None, "outcome": "open"},
]
STAGE_HISTORY = [
    {"deal_id": "D1", "stage": "Prospecting", "entered_at": "2026-01-01T00:00:00Z"},
    {"deal_id": "D1", "stage": "Closed Won", "entered_at": "2026-02-01T09:00:00Z"},
    {"deal_id": "D2", "stage": "Qualification", "entered_at": "2026-01-05T08:30:00Z"},
    {"deal_id": "D2", "stage": "Negotiation/Review", "entered_at": "2026-01-20T00:00:00Z"},
]
FIELD_HISTORY = [
    {"deal_id": "D2", "field": "expected_close_date", "old_value": "2026-03-01", "new_value": "2026-03-15",
     "changed_at": "2026-01-12T00:00:00Z"},
    {"deal_id": "D1", "field": "amount", "old_value": "1000", "new_value": "1500", "changed_at": "2026-01-02T00:00:00Z"},
]
CONTACTS = [
    {"deal_id": "D1", "contact_id": "C1", "role": "Decision Maker", "seniority": "VP", "added_at": "2026-01-01T00:00:00Z"},
    {"deal_id": "D2", "contact_id": "C2", "role": "Economic Buyer", "seniority": None, "added_at": "2026-01-06T00:00:00Z"},
]
ACTIVITIES = [
    {"activity_id": "X1", "deal_id": "D1", "contact_id": "C1", "type": "Call", "direction": "outbound",
     "occurred_at": "2026-01-02T10:00:00Z", "duration_min": "30", "customer_talk_ratio": "0.4", "next_step_set": "true"},
    {"activity_id": "X2", "deal_id": "D2", "contact_id": None, "type": "email", "direction": "Inbound",
     "occurred_at": "2026-01-07T10:00:00Z", "duration_min": None, "customer_talk_ratio": None, "next_step_set": None},
]


@pytest.fixture
def make_raw():
    """Factory: the tiny valid export as text frames (as CSV reading gives), with cells overridden.

    ``make_raw(("deals", 0, "stage", "Discovery"), drop=("contacts",))``: row positions are 0-based.
    """

    def make(*changes: tuple[str, int, str, object], drop: tuple[str, ...] = ()) -> dict[str, pd.DataFrame]:
        rows = {
            "deals": DEALS, "stage_history": STAGE_HISTORY, "field_history": FIELD_HISTORY,
            "contacts": CONTACTS, "activities": ACTIVITIES,
        }
        tables = {name: [dict(r) for r in records] for name, records in rows.items() if name not in drop}
        for table, row, column, value in changes:
            if row >= len(tables[table]):
                tables[table].append(dict(tables[table][-1]))
            tables[table][row][column] = value
        return {name: pd.DataFrame(records, dtype="str") for name, records in tables.items()}

    return make


def squeeze(report: str) -> str:
    """The report without column padding, so assertions do not depend on widths."""
    return re.sub(r" +\|", " |", report)


def found(raw: dict[str, pd.DataFrame]) -> list[tuple[str, str, str, str]]:
    result = check_tables(raw)
    assert result.export is None, "expected violations"
    return [(v.table, v.column, v.row, v.reason) for v in result.violations]


# --- a valid export passes --------------------------------------------------------------------


def test_valid_tiny_export_passes_typed(make_raw):
    result = check_tables(make_raw())
    assert result.violations == []
    export = result.export
    assert export.deals["stage"].tolist() == ["won", "negotiate"]
    assert export.deals["created_at"].dtype == TIMESTAMP_DTYPE
    assert export.deals["created_at"].iloc[1] == pd.Timestamp("2026-01-05 08:30", tz="UTC")
    assert export.deals["amount"].dtype == "float64"
    assert export.activities["next_step_set"].dtype == "boolean"
    assert export.activities["next_step_set"].tolist()[0] is True
    assert export.activities["type"].tolist() == ["call", "email"]
    assert export.contacts["seniority"].tolist()[0] == "vp"
    assert export.deals["lead_source"].isna().tolist() == [False, True]
    assert list(export.deals.columns) == TABLES["deals"].column_names


def test_optional_tables_absent_are_none(make_raw):
    result = check_tables(make_raw(drop=("contacts", "activities", "field_history", "stage_history")))
    assert result.export is not None
    assert result.export.activities is None and result.export.contacts is None


def test_optional_columns_absent_are_all_missing(make_raw):
    raw = make_raw()
    raw["activities"] = raw["activities"].drop(columns=["customer_talk_ratio", "next_step_set"])
    export = check_tables(raw).export
    assert export.activities["customer_talk_ratio"].isna().all()
    assert export.activities["next_step_set"].dtype == "boolean"


def test_typed_export_passes_unchanged():
    export = make_export()
    result = check_tables({name: frame for name, frame in export.tables().items() if frame is not None})
    assert result.violations == []
    pd.testing.assert_frame_equal(result.export.deals, export.deals, check_dtype=False)


def test_extra_columns_are_a_note_not_a_violation(make_raw):
    raw = make_raw()
    raw["deals"] = raw["deals"].assign(probability="10")
    result = check_tables(raw)
    assert result.violations == []
    assert result.notes == ["deals: extra columns ignored: probability"]
    assert "probability" not in result.export.deals.columns


# --- one test per rule ------------------------------------------------------------------------


def test_required_table_missing(make_raw):
    assert found(make_raw(drop=("deals",))) == [
        ("deals", "-", "whole table",
         "required table deals is missing; tables found: stage_history, field_history, contacts, activities"),
    ]


def test_required_column_missing_shows_expected_and_found(make_raw):
    raw = make_raw(drop=("stage_history", "field_history", "contacts", "activities"))
    raw["deals"] = raw["deals"].drop(columns=["amount", "segment"])
    assert found(raw) == [
        ("deals", "amount, segment", "whole table",
         "required columns missing: amount, segment; expected: deal_id, account_id, owner_id, created_at, amount, "
         "deal_type, lead_source, segment, region, product, stage, expected_close_date, closed_at, outcome; "
         "found: deal_id, account_id, owner_id, created_at, deal_type, lead_source, region, product, stage, "
         "expected_close_date, closed_at, outcome"),
    ]


def test_empty_id(make_raw):
    assert found(make_raw(("contacts", 1, "contact_id", "  "))) == [
        ("contacts", "contact_id", "row 2 (deal_id=D2, contact_id=  )",
         "empty contact_id; this column must have a value"),
    ]


def test_empty_required_value(make_raw):
    assert found(make_raw(("activities", 0, "direction", None))) == [
        ("activities", "direction", "row 1 (activity_id=X1)", "empty direction; this column must have a value"),
    ]


def test_malformed_timestamp(make_raw):
    assert found(make_raw(("deals", 1, "created_at", "05/01/2026"))) == [
        ("deals", "created_at", "row 2 (deal_id=D2)",
         "not an ISO-8601 timestamp: '05/01/2026' (expected e.g. 2026-03-31T14:05:00Z)"),
    ]


def test_non_utc_offset(make_raw):
    assert found(make_raw(("activities", 1, "occurred_at", "2026-01-07T10:00:00+02:00"))) == [
        ("activities", "occurred_at", "row 2 (activity_id=X2)",
         "not UTC: '2026-01-07T10:00:00+02:00' has a non-zero offset; send UTC ('Z', '+00:00' or no offset)"),
    ]


@pytest.mark.parametrize("value", ["2026-01-07T10:00:00Z", "2026-01-07T10:00:00+00:00", "2026-01-07 10:00:00",
                                   "2026-01-07T10:00:00.123-00:00", "2026-01-07"])
def test_utc_spellings_pass(make_raw, value):
    assert check_tables(make_raw(("activities", 1, "occurred_at", value))).violations == []


def test_number_not_parseable(make_raw):
    assert found(make_raw(("deals", 0, "amount", "1,500"))) == [
        ("deals", "amount", "row 1 (deal_id=D1)", "not a finite number: '1,500'"),
    ]


def test_number_not_finite(make_raw):
    assert found(make_raw(("deals", 0, "amount", "inf"))) == [
        ("deals", "amount", "row 1 (deal_id=D1)", "not a finite number: 'inf'"),
    ]


def test_number_out_of_range(make_raw):
    assert found(make_raw(("deals", 0, "amount", "-5"), ("activities", 0, "customer_talk_ratio", "1.5"))) == [
        ("deals", "amount", "row 1 (deal_id=D1)", "'-5' is below the minimum 0"),
        ("activities", "customer_talk_ratio", "row 1 (activity_id=X1)", "'1.5' is above the maximum 1"),
    ]


def test_bad_flag(make_raw):
    assert found(make_raw(("activities", 0, "next_step_set", "yes"))) == [
        ("activities", "next_step_set", "row 1 (activity_id=X1)",
         "not a flag: 'yes' (expected true, false, 1 or 0)"),
    ]


def test_unknown_stage_suggests_the_mapping(make_raw):
    assert found(make_raw(("deals", 1, "stage", "Discovery"))) == [
        ("deals", "stage", "row 2 (deal_id=D2)",
         "unknown stage 'Discovery'; allowed: identify, qualify, propose, negotiate, contract, won, lost; "
         "add a line '<CRM name>: <canonical stage>' under 'stage:' in a mapping file (--mapping on the command line, DEALRISK_MAPPING for the service) to map it"),
    ]


def test_unknown_role(make_raw):
    assert found(make_raw(("contacts", 0, "role", "Gatekeeper"))) == [
        ("contacts", "role", "row 1 (deal_id=D1, contact_id=C1)",
         "unknown role 'Gatekeeper'; allowed: decision_maker, economic_buyer, champion, technical_evaluator, "
         "influencer, business_user, procurement, other; add a line '<CRM name>: <canonical role>' under "
         "'role:' in a mapping file (--mapping on the command line, DEALRISK_MAPPING for the service) to map it"),
    ]


def test_unknown_unmapped_choice_has_no_mapping_hint(make_raw):
    assert found(make_raw(("deals", 0, "outcome", "pending"))) == [
        ("deals", "outcome", "row 1 (deal_id=D1)", "unknown outcome 'pending'; allowed: open, won, lost"),
    ]


def test_deal_types_are_mapped_like_stages(make_raw):
    raw = make_raw(("deals", 0, "deal_type", "Existing Customer - Upgrade"), ("deals", 1, "deal_type", "New Customer"))
    assert check_tables(raw).export.deals["deal_type"].tolist() == ["expansion", "new_business"]
    assert found(make_raw(("deals", 0, "deal_type", "Pilot"))) == [
        ("deals", "deal_type", "row 1 (deal_id=D1)",
         "unknown deal_type 'Pilot'; allowed: new_business, expansion, renewal; add a line '<CRM name>: <canonical "
         "deal_type>' under 'deal_type:' in a mapping file (--mapping on the command line, DEALRISK_MAPPING for the "
         "service) to map it"),
    ]


def test_duplicate_ids(make_raw):
    raw = make_raw(("activities", 2, "activity_id", "X1"), ("activities", 2, "deal_id", "D1"))
    assert found(raw) == [
        ("activities", "activity_id", "row 3 (activity_id=X1)", "duplicate activity_id 'X1'; first seen at row 1"),
    ]


def test_duplicate_composite_key(make_raw):
    assert found(make_raw(("contacts", 2, "contact_id", "C2"))) == [
        ("contacts", "deal_id, contact_id", "row 3 (deal_id=D2, contact_id=C2)",
         "duplicate deal_id / contact_id 'D2' / 'C2'; first seen at row 2"),
    ]


def test_event_of_unknown_deal(make_raw):
    assert found(make_raw(("field_history", 2, "deal_id", "D9"))) == [
        ("field_history", "deal_id", "row 3 (deal_id=D9, field=amount, changed_at=2026-01-02T00:00:00Z)",
         "deal_id 'D9' is not in deals"),
    ]


def test_event_before_deal_created(make_raw):
    assert found(make_raw(("activities", 1, "occurred_at", "2026-01-04T23:59:59Z"))) == [
        ("activities", "occurred_at", "row 2 (activity_id=X2)",
         "occurred_at '2026-01-04T23:59:59+00:00' is before the deal's created_at '2026-01-05T08:30:00+00:00'"),
    ]


def test_closed_at_missing_on_closed_deal(make_raw):
    assert found(make_raw(("deals", 0, "closed_at", None))) == [
        ("deals", "closed_at", "row 1 (deal_id=D1)",
         "empty closed_at but outcome is 'won'; a won or lost deal needs closed_at"),
    ]


def test_closed_at_set_on_open_deal(make_raw):
    assert found(make_raw(("deals", 1, "closed_at", "2026-02-01T00:00:00Z"))) == [
        ("deals", "closed_at", "row 2 (deal_id=D2)",
         "closed_at is set but outcome is 'open'; an open deal has no closed_at"),
    ]


def test_stage_inconsistent_with_outcome(make_raw):
    raw = make_raw(("deals", 0, "outcome", "lost"))
    assert found(raw) == [
        ("deals", "stage", "row 1 (deal_id=D1)", "stage 'won' does not match outcome 'lost'; expected 'lost'"),
    ]
    raw = make_raw(("deals", 1, "stage", "won"), ("stage_history", 3, "stage", "won"))
    assert found(raw) == [
        ("deals", "stage", "row 2 (deal_id=D2)",
         "stage 'won' does not match outcome 'open'; expected one of identify, qualify, propose, negotiate, contract"),
    ]


def test_closed_before_created(make_raw):
    raw = make_raw(("deals", 0, "closed_at", "2025-12-31T00:00:00Z"))
    assert ("deals", "closed_at", "row 1 (deal_id=D1)",
            "closed_at '2025-12-31T00:00:00+00:00' is before created_at '2026-01-01T00:00:00+00:00'") in found(raw)


def test_stage_history_same_time(make_raw):
    raw = make_raw(("stage_history", 4, "stage", "Qualification"), ("stage_history", 4, "entered_at", "2026-01-05T08:30:00Z"))
    assert found(raw) == [
        ("stage_history", "entered_at", "row 5 (deal_id=D2, entered_at=2026-01-05T08:30:00Z, stage=Qualification)",
         "two stage entries of this deal at the same time (also row 3); the order is ambiguous"),
    ]


def test_stage_history_entered_at_creation_is_allowed(make_raw):
    assert check_tables(make_raw(("stage_history", 2, "entered_at", "2026-01-05T08:30:00Z"))).violations == []


def test_stage_history_last_entry_is_current_stage(make_raw):
    assert found(make_raw(("stage_history", 3, "stage", "Proposal/Price Quote"))) == [
        ("stage_history", "stage", "row 4 (deal_id=D2, entered_at=2026-01-20T00:00:00Z, stage=Proposal/Price Quote)",
         "the deal's last stage entry is 'propose' but its current stage in deals is 'negotiate'"),
    ]


def test_stage_history_nothing_after_won_or_lost(make_raw):
    raw = make_raw(("stage_history", 4, "stage", "won"), ("stage_history", 4, "entered_at", "2026-01-10T00:00:00Z"),
                   ("stage_history", 5, "stage", "won"), ("stage_history", 5, "entered_at", "2026-01-11T00:00:00Z"))
    raw = {**raw, "stage_history": raw["stage_history"].assign(deal_id=["D1", "D1", "D2", "D2", "D1", "D1"])}
    assert found(raw) == [
        ("stage_history", "entered_at", "row 2 (deal_id=D1, entered_at=2026-02-01T09:00:00Z, stage=Closed Won)",
         "stage entry after the deal was closed (won/lost entered at '2026-01-10T00:00:00+00:00')"),
        ("stage_history", "entered_at", "row 6 (deal_id=D1, entered_at=2026-01-11T00:00:00Z, stage=won)",
         "stage entry after the deal was closed (won/lost entered at '2026-01-10T00:00:00+00:00')"),
    ]


def test_activity_contact_not_on_deal(make_raw):
    assert found(make_raw(("activities", 1, "contact_id", "C1"))) == [
        ("activities", "contact_id", "row 2 (activity_id=X2)", "contact_id 'C1' is not a contact of deal 'D2' in contacts"),
    ]


def test_activity_contact_not_checked_without_contacts_table(make_raw):
    assert check_tables(make_raw(("activities", 1, "contact_id", "C1"), drop=("contacts",))).violations == []


def test_field_history_values_parse(make_raw):
    raw = make_raw(("field_history", 0, "new_value", "next month"), ("field_history", 1, "old_value", "lots"))
    assert found(raw) == [
        ("field_history", "old_value", "row 2 (deal_id=D1, field=amount, changed_at=2026-01-02T00:00:00Z)",
         "amount value 'lots' is not a finite number"),
        ("field_history", "new_value", "row 1 (deal_id=D2, field=expected_close_date, changed_at=2026-01-12T00:00:00Z)",
         "expected_close_date value 'next month' is not an ISO-8601 UTC date"),
    ]


# --- reporting: every violation, the cap, the report --------------------------------------------


def test_all_violations_are_reported_not_just_the_first(make_raw):
    raw = make_raw(
        ("deals", 0, "amount", "x"), ("deals", 1, "stage", "Discovery"), ("contacts", 0, "role", "Boss"),
        ("activities", 0, "occurred_at", "yesterday"), ("activities", 1, "occurred_at", "2026-01-07T10:00:00-05:00"),
    )
    rules = {(v.table, v.column, v.rule) for v in check_tables(raw).violations}
    assert rules == {
        ("deals", "amount", "bad_number"), ("deals", "stage", "unknown_value"), ("contacts", "role", "unknown_value"),
        ("activities", "occurred_at", "bad_timestamp"), ("activities", "occurred_at", "not_utc"),
    }


def test_report_caps_each_rule_but_keeps_the_full_count():
    n = DETAIL_LIMIT + 5
    deals = pd.DataFrame({c: ["x"] * n for c in TABLES["deals"].column_names}).assign(
        deal_id=[f"D{i}" for i in range(n)], created_at="2026-01-01", amount="1", deal_type="renewal",
        stage="Discovery", expected_close_date=None, closed_at=None, outcome="open",
    )
    result = check_tables({"deals": deals})
    assert result.counts == {("deals", "stage", "unknown_value"): n}
    assert len(result.violations) == DETAIL_LIMIT
    report = format_report(result.violations, 3, counts=result.counts)
    lines = report.splitlines()
    assert lines[0] == f"{n} contract violations (deals {n}):"
    assert lines[1].split(" | ") [:3] == ["table", "column", "row".ljust(len(lines[3].split(" | ")[2]))]
    assert sum("unknown stage 'Discovery'" in line for line in lines) == 3
    assert lines[-1].split(" | ")[2].strip() == f"... and {n - 3} more (unknown_value)"


def test_format_report_counts_per_table():
    violations = [Violation("deals", "amount", f"row {i}", "bad", "bad_number") for i in range(1, 4)]
    violations.append(Violation("contacts", "role", "row 1", "unknown", "unknown_value"))
    report = format_report(violations, 2)
    assert report.splitlines()[0] == "4 contract violations (deals 3, contacts 1):"
    assert "\ndeals | amount | ... and 1 more (bad_number)\n" in squeeze(report)


def test_check_result_total_and_ok(make_raw):
    result = check_tables(make_raw(("deals", 0, "amount", "x"), ("deals", 1, "amount", "y")))
    assert isinstance(result, CheckResult)
    assert (result.ok, result.total) == (False, 2)


# --- the other input shapes: Parquet types and JSON request values ------------------------------


def test_json_request_values(make_raw):
    """Python values as a JSON request gives them: numbers, booleans, None, datetime objects."""
    raw = make_raw()
    raw["deals"] = raw["deals"].astype(object).assign(
        amount=[1500, 250.5], created_at=[dt.datetime(2026, 1, 1), "2026-01-05T08:30:00Z"],
    )
    raw["activities"] = raw["activities"].astype(object).assign(
        duration_min=[30, None], customer_talk_ratio=[0.4, None], next_step_set=[True, None],
    )
    result = check_tables(raw)
    assert result.violations == []
    assert result.export.activities["next_step_set"].tolist()[0] is True
    assert result.export.deals["amount"].tolist() == [1500.0, 250.5]


def test_json_request_bad_values(make_raw):
    raw = make_raw()
    berlin = dt.timezone(dt.timedelta(hours=1))
    raw["deals"] = raw["deals"].astype(object).assign(
        amount=[True, "12"], created_at=[dt.datetime(2026, 1, 1, tzinfo=berlin), 17],
    )
    assert found(raw) == [
        ("deals", "created_at", "row 2 (deal_id=D2)", "not an ISO-8601 timestamp: '17' (expected e.g. 2026-03-31T14:05:00Z)"),
        ("deals", "created_at", "row 1 (deal_id=D1)",
         "not UTC: '2026-01-01T00:00:00+01:00' has a non-zero offset; send UTC ('Z', '+00:00' or no offset)"),
        ("deals", "amount", "row 1 (deal_id=D1)", "not a finite number: 'True'"),
    ]


def test_parquet_timezone_other_than_utc_is_reported(make_raw):
    raw = make_raw()
    created = pd.to_datetime(raw["deals"]["created_at"], format="ISO8601", utc=True)
    raw["deals"] = raw["deals"].assign(created_at=created.dt.tz_convert("America/New_York"))
    assert [v.rule for v in check_tables(raw).violations] == ["not_utc", "not_utc"]
    raw["deals"] = raw["deals"].assign(created_at=created.dt.tz_localize(None))
    assert check_tables(raw).violations == []


@pytest.mark.parametrize("unit", ["ns", "us", "ms"])
def test_typed_utc_times_give_the_same_export_as_text(make_raw, unit):
    raw = make_raw()
    by_text = check_tables(raw).export
    typed = {
        name: frame.assign(**{
            c.name: pd.to_datetime(frame[c.name], format="ISO8601", utc=True).dt.as_unit(unit)
            for c in TABLES[name].columns if c.kind == "timestamp" and c.name in frame.columns
        })
        for name, frame in raw.items()
    }
    assert typed["deals"]["closed_at"].isna().any()  # missing times stay missing
    result = check_tables(typed)
    assert result.violations == []
    for name, frame in by_text.tables().items():
        if frame is not None:
            pd.testing.assert_frame_equal(result.export.table(name), frame)
    before = typed["deals"]["created_at"].copy()
    result.export.deals.loc[0, "created_at"] = pd.Timestamp("2000-01-01", tz="UTC")
    pd.testing.assert_series_equal(typed["deals"]["created_at"], before)  # the export owns its memory


def test_batch_equals_per_deal():
    """A deal checks the same alone as inside the whole export (the serving path is the batch path)."""
    export = random_export(12, seed=3)
    tables = {name: frame for name, frame in export.tables().items() if frame is not None}
    whole = check_tables(tables).export
    for deal_id in whole.deals["deal_id"]:
        one = {name: frame[frame["deal_id"] == deal_id] for name, frame in tables.items()}
        alone = check_tables(one).export
        for name, frame in alone.tables().items():
            if frame is None:
                continue
            expected = whole.table(name)
            expected = expected[expected["deal_id"] == deal_id].reset_index(drop=True)
            pd.testing.assert_frame_equal(frame, expected)


# --- folders and the CLI -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_load_export_reads_csv_and_parquet(make_raw, tmp_path, fmt):
    folder = write_tables(make_raw(), tmp_path / "export", fmt=fmt)
    export = load_export(folder)
    assert export.deals["stage"].tolist() == ["won", "negotiate"]
    assert len(export.activities) == 2


def test_load_export_typed_parquet(tmp_path):
    export = make_export()
    folder = write_tables({n: f for n, f in export.tables().items() if f is not None}, tmp_path / "e", fmt="parquet")
    assert len(load_export(folder).stage_history) == len(export.stage_history)


def test_load_export_raises_with_full_report(make_raw, tmp_path):
    folder = write_tables(make_raw(("deals", 1, "stage", "Discovery")), tmp_path / "export")
    with pytest.raises(ContractError) as error:
        load_export(folder)
    assert error.value.violations[0].row == "row 2 (deal_id=D2)"
    assert "\ndeals | stage | row 2 (deal_id=D2) | unknown stage 'Discovery'; allowed:" in squeeze(str(error.value))


def test_load_export_missing_folder(tmp_path):
    with pytest.raises(ContractError, match="does not exist or is not a folder"):
        load_export(tmp_path / "nowhere")


def test_run_validate_exit_codes(make_raw, tmp_path, capsys):
    good = write_tables(make_raw(), tmp_path / "good")
    assert run_validate(good) == 0
    assert capsys.readouterr().out.startswith(f"OK: {good} passes the data contract (deals 2 rows, stage_history 4 rows")
    bad = write_tables(make_raw(("deals", 0, "amount", "x")), tmp_path / "bad")
    assert run_validate(bad) == 1
    assert "deals | amount | row 1 (deal_id=D1) | not a finite number: 'x'" in squeeze(capsys.readouterr().out)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    assert run_validate(empty) == 1
    assert "no contract tables found; expected deals.csv or deals.parquet" in capsys.readouterr().out
    bad_mapping = tmp_path / "m.yaml"
    bad_mapping.write_text("stage: [unclosed\n")
    assert run_validate(good, mapping=bad_mapping) == 2
    assert "is not valid YAML" in capsys.readouterr().out


def test_cli_validate_with_user_mapping(make_raw, tmp_path):
    from dealrisk.cli import app

    folder = write_tables(make_raw(("deals", 1, "stage", "Discovery"), ("stage_history", 3, "stage", "Discovery")),
                          tmp_path / "export")
    runner = CliRunner()
    failed = runner.invoke(app, ["validate", str(folder)])
    assert failed.exit_code == 1, failed.output
    assert "unknown stage 'Discovery'" in failed.output
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("stage:\n  discovery: qualify\n")
    passed = runner.invoke(app, ["validate", str(folder), "--mapping", str(mapping)])
    assert passed.exit_code == 0, passed.output
    assert passed.output.startswith("OK:")


def test_cli_validate_subprocess_missing_folder(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "dealrisk.cli", "validate", str(tmp_path / "missing")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "does not exist or is not a folder" in done.stdout


def test_many_rows_are_checked_vectorised():
    """A few thousand rows with a scattered problem: every bad row found, none of the good ones."""
    n = 3000
    rng = np.random.default_rng(0)
    deals = pd.DataFrame({
        "deal_id": [f"D{i}" for i in range(n)], "account_id": "A", "owner_id": "O",
        "created_at": "2026-01-01T00:00:00Z", "amount": "10", "deal_type": "renewal", "lead_source": None,
        "segment": None, "region": None, "product": None, "stage": "qualify", "expected_close_date": None,
        "closed_at": None, "outcome": "open",
    }, dtype="str")
    bad = np.sort(rng.choice(n, 40, replace=False))
    deals.loc[bad, "created_at"] = "2026-01-01T00:00:00+01:00"
    result = check_tables({"deals": deals})
    assert [v.row for v in result.violations] == [f"row {i + 1} (deal_id=D{i})" for i in bad]


def test_docs_describe_every_table_and_column():
    text = (Path(__file__).resolve().parents[2] / "docs" / "data-contract.md").read_text()
    for table in TABLES.values():
        assert f"### {table.name}" in text
        for column in table.columns:
            assert f"| {column.name} |" in text, f"{table.name}.{column.name} is not documented"


def test_parquet_types(make_raw):
    """Typed columns as Parquet gives them: integer ids, booleans, dates, integer flags."""
    raw = make_raw()
    raw["deals"] = raw["deals"].assign(
        account_id=[11, 12], amount=[1500, 250], expected_close_date=[dt.date(2026, 2, 15), None],
    )
    raw["activities"] = raw["activities"].assign(next_step_set=pd.array([1, None], dtype="Int64"),
                                                 duration_min=[30.0, np.nan])
    result = check_tables(raw)
    assert result.violations == []
    assert result.export.deals["account_id"].tolist() == ["11", "12"]
    assert result.export.deals["expected_close_date"].iloc[0] == pd.Timestamp("2026-02-15", tz="UTC")
    assert result.export.activities["next_step_set"].tolist()[0] is True
    raw["activities"] = raw["activities"].assign(next_step_set=[2, 0])
    assert found(raw) == [
        ("activities", "next_step_set", "row 1 (activity_id=X1)", "not a flag: '2' (expected true, false, 1 or 0)"),
    ]


def test_missing_column_names_a_look_alike(make_raw):
    raw = make_raw(drop=("stage_history", "field_history", "contacts", "activities"))
    raw["deals"] = raw["deals"].rename(columns={"deal_id": "\ufeffDeal_ID "})
    [(table, column, row, reason)] = found(raw)
    assert (table, column, row) == ("deals", "deal_id", "whole table")
    assert reason.endswith("; probably renamed: '\\ufeffDeal_ID ' is deal_id? (rename the header, or map it with "
                           "'dealrisk import table')")


def test_renamed_headers_get_a_hint_naming_the_contract_column(make_raw):
    raw = make_raw(drop=("stage_history", "field_history", "contacts", "activities"))
    raw["deals"] = raw["deals"].rename(columns={"created_at": "created", "expected_close_date": "CloseDate",
                                                "amount": "Ammount", "owner_id": "Notes"})
    [(_, column, _, reason)] = found(raw)
    assert column == "owner_id, created_at, amount, expected_close_date"
    assert reason.endswith("; probably renamed: 'created' is created_at?, 'Ammount' is amount?, 'CloseDate' is "
                           "expected_close_date? (rename the header, or map it with 'dealrisk import table')")


def test_salesforce_headers_point_to_the_importer(make_raw):
    raw = make_raw(drop=("stage_history", "field_history", "contacts", "activities"))
    raw["deals"] = raw["deals"].rename(columns={"stage": "StageName", "deal_id": "Id", "account_id": "AccountId"})
    [(_, _, _, reason)] = found(raw)
    assert "'Id' is deal_id?" in reason and "'AccountId' is account_id?" in reason and "'StageName' is stage?" in reason
    assert reason.endswith("; these are Salesforce Opportunity fields: 'dealrisk import salesforce' converts a "
                           "Salesforce export")


def test_an_extra_header_like_an_optional_column_is_named_in_the_note(make_raw):
    raw = make_raw()
    raw["activities"] = raw["activities"].drop(columns=["customer_talk_ratio"]).assign(talk_ratio="0.5")
    assert check_tables(raw).notes == ["activities: extra columns ignored: talk_ratio (probably customer_talk_ratio?)"]


def test_static_context_columns_pass_through_as_text(make_raw):
    raw = make_raw()
    raw["deals"] = raw["deals"].assign(context_industry=["Banking", None], context_=["x", "y"])
    result = check_tables(raw)
    assert result.notes == ["deals: extra columns ignored: context_"]
    deals = result.export.deals
    assert deals.columns[-1] == "context_industry" and deals["context_industry"].tolist()[0] == "Banking"
    assert deals["context_industry"].isna().tolist() == [False, True]
    assert "context_industry" not in check_tables(make_raw()).export.deals.columns


def test_load_export_bad_mapping_file_is_a_contract_error(make_raw, tmp_path):
    folder = write_tables(make_raw(), tmp_path / "export")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("stage:\n  Discovery: found\n")
    with pytest.raises(ContractError, match="'Discovery' maps to 'found', which is not a canonical stage"):
        load_export(folder, mapping=mapping)


def test_contract_error_survives_pickling():
    import pickle

    error = ContractError([Violation("deals", "amount", "row 1 (deal_id=D1)", "not a finite number: 'x'", "bad_number")])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.violations == error.violations and str(copy) == str(error)


TRICKY_TIMESTAMPS = [
    "2026-01-05", "2026-01-05T10:00", "2026-01-05T10:00:00", "2026-01-05 10:00:00.123456", "2026-01-05T10:00:00Z",
    "2026-01-05T10:00:00+00:00", "2026-01-05T10:00:00-00:00", "2026-02-30T10:00:00Z", "2026-13-01", "2026-01-05T24:00:00",
    "2026-01-05T10:00:00+02:00", "2026-01-05T10:00:00+0000", "20260105", "05/01/2026", "next week", "", "  ",
    " 2026-01-05T10:00:00Z ", "2026-01-05T10:00:00.5Z", "0001-01-01", "2026-1-5", "2026-01-05T10:00:00.1234567Z",
    "0000-01-01", "2026-01-05T23:59:60", "2024-02-29T00:00:00Z", "2025-02-29",
]


@pytest.mark.parametrize("value", TRICKY_TIMESTAMPS)
def test_one_deal_and_batch_parse_timestamps_alike(value):
    """Short columns take a fast path; it must agree with the batch parser cell for cell."""
    from features.contract.cells import _parse_timestamp_text
    from features.contract.violations import SMALL_COLUMN

    simple = ["2026-03-01T00:00:00Z"]
    short = pd.Series([value, *simple], dtype="str")
    long = pd.Series([value, *simple * (SMALL_COLUMN + 1)], dtype="str")
    one, batch = _parse_timestamp_text(short), _parse_timestamp_text(long)
    assert one[0].iloc[0] is batch[0].iloc[0] or one[0].iloc[0] == batch[0].iloc[0]
    assert [flags[0] for flags in one[1:]] == [flags[0] for flags in batch[1:]]


def test_batch_equals_per_deal_on_csv_text(tmp_path):
    """The same law on text as read from CSV, where short columns take the fast paths."""
    from features.contract.io import read_raw_tables
    from features.contract.violations import SMALL_COLUMN

    export = random_export(40, seed=5)
    folder = write_tables({n: f for n, f in export.tables().items() if f is not None}, tmp_path / "e")
    raw = read_raw_tables(folder)
    assert max(len(f) for f in raw.values()) > SMALL_COLUMN, "the whole export must take the batch paths"
    whole = check_tables(raw).export
    for deal_id in whole.deals["deal_id"].iloc[:10]:
        alone = check_tables({n: f[f["deal_id"] == deal_id] for n, f in raw.items()}).export
        for name, frame in alone.tables().items():
            expected = whole.table(name)
            expected = expected[expected["deal_id"] == deal_id].reset_index(drop=True)
            pd.testing.assert_frame_equal(frame, expected)


def test_request_objects_check_like_csv_text(tmp_path):
    """Object columns (a JSON request) are converted by pyarrow in one call; the result must equal
    the text path's, for a whole export (batch paths) and for one deal (short-column paths)."""
    from features.contract.io import read_raw_tables
    from features.contract.violations import SMALL_COLUMN

    export = random_export(30, seed=11)
    folder = write_tables({n: f for n, f in export.tables().items() if f is not None}, tmp_path / "e")
    text = read_raw_tables(folder)
    assert max(len(f) for f in text.values()) > SMALL_COLUMN, "the whole export must take the batch paths"
    deal_id = text["deals"]["deal_id"].iloc[0]
    one_text = {n: f[f["deal_id"] == deal_id] for n, f in text.items()}
    for tables in (text, one_text):
        expected = check_tables(tables)
        got = check_tables(as_request_objects(tables))
        assert expected.ok and got.ok
        for name, frame in got.export.tables().items():
            pd.testing.assert_frame_equal(frame, expected.export.table(name))


def test_request_objects_report_like_csv_text(make_raw):
    """Bad cells of a request report the same rows and reasons as the same cells read from CSV."""
    text = make_raw(
        ("deals", 0, "amount", "-5.5"), ("deals", 1, "created_at", "2026-02-30T00:00:00Z"),
        ("activities", 0, "duration_min", "-1.5"), ("activities", 1, "type", "fax"),
        ("contacts", 1, "contact_id", "  "),
    )
    objects = as_request_objects(text)
    assert isinstance(objects["activities"]["duration_min"].iloc[0], float)
    assert found(objects) == found(text) and len(found(text)) == 5


@pytest.mark.parametrize("value", ["x", " x ", "", " ", "\t\n", "\u00a0", "\u2003", None])
def test_one_deal_and_batch_find_blank_cells_alike(value):
    """Short columns find blank cells with a Python loop, long ones with pyarrow; they must agree."""
    from features.contract.cells import _empty_mask
    from features.contract.violations import SMALL_COLUMN

    short = pd.Series([value, "y"], dtype="str")
    long = pd.Series([value, *["y"] * (SMALL_COLUMN + 1)], dtype="str")
    assert _empty_mask(short)[0] == _empty_mask(long)[0] == (value is None or not value.strip())
