"""Tests for ``dealrisk import salesforce`` on small hand-written Salesforce exports.

The files in tests/features/importers/salesforce/ are written by hand in the shape Data Loader
and the weekly data export give (standard API field names, ISO-8601 times, 15- and
18-character ids mixed), not produced by our generator. Each test copies them and changes what
it is about.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from dealrisk.cli import app
from features.contract.importers.run import run_import_salesforce
from features.contract.importers.salesforce import SalesforceOptions, import_salesforce
from features.contract.importers.sources import TimeFormats, check_import
from features.contract.importers.titles import seniority_of_title
from features.contract.load import load_export
from features.contract.mapping import load_mapping

FIXTURES = Path(__file__).parent / "importers" / "salesforce"
OPP_A, OPP_B, OPP_C, OPP_D, OPP_E = (f"006A000000{c * 5}AAA" for c in "abcde")


@pytest.fixture
def source(tmp_path):
    """Factory: a copy of the hand-written export, with ``{file: function(frame) -> frame}`` edits
    (``None`` removes the file)."""

    def make(edits: dict | None = None) -> Path:
        folder = tmp_path / "salesforce"
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(FIXTURES, folder)
        for name, edit in (edits or {}).items():
            path = folder / name
            if edit is None:
                path.unlink()
                continue
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            edit(frame).to_csv(path, index=False)
        return folder

    return make


def run(src: Path, out: Path, **options) -> tuple[int, str]:
    lines: list[str] = []
    code = run_import_salesforce(src, out, echo=lines.append, **options)
    return code, "\n".join(lines)


def set_cell(file_frame: pd.DataFrame, row: int, column: str, value: str) -> pd.DataFrame:
    """``row`` counts data rows from 1, as the messages do."""
    frame = file_frame.copy()
    frame.loc[row - 1, column] = value
    return frame


# --- every mapped field -------------------------------------------------------------------------


def test_import_maps_every_field_and_loads_through_the_contract(source, tmp_path):
    code, output = run(source(), tmp_path / "out" / "export")
    assert code == 0, output
    export = load_export(tmp_path / "out" / "export")
    deals = export.deals.set_index("deal_id")
    assert list(deals.index) == [OPP_A, OPP_B, OPP_C, OPP_D, OPP_E]  # the deleted opportunity left out
    a = deals.loc[OPP_A]
    assert (a["account_id"], a["owner_id"], a["amount"], a["lead_source"]) == (
        "001A000000aaaaaAAA", "005A000000rep01AAA", 12000.0, "Web")
    assert a["created_at"] == pd.Timestamp("2026-01-05T09:00:00Z")
    assert (a["deal_type"], a["stage"], a["outcome"]) == ("new_business", "won", "won")
    assert a["closed_at"] == pd.Timestamp("2026-02-20T15:00:00Z")  # the Closed Won entry, not CloseDate's midnight
    assert a["expected_close_date"] == pd.Timestamp("2026-02-20T00:00:00Z")
    assert (a["segment"], a["region"], a["context_industry"]) == ("enterprise", "Germany", "Banking")
    assert pd.isna(a["product"])  # Opportunity has no product field; line items are not read
    assert deals["deal_type"].tolist() == ["new_business", "expansion", "renewal", "new_business", "new_business"]
    assert deals["outcome"].tolist() == ["won", "lost", "open", "open", "lost"]
    assert deals["stage"].tolist() == ["won", "lost", "negotiate", "identify", "lost"]
    assert deals["segment"].tolist() == ["enterprise", "mid_market", "enterprise", "smb", "mid_market"]
    assert deals.loc[OPP_B, "lead_source"] == "Partner Referral" and pd.isna(deals.loc[OPP_C, "lead_source"])

    history = export.stage_history
    a_stages = history.loc[history["deal_id"] == OPP_A, ["stage", "entered_at"]]
    # Qualification -> Needs Analysis is one canonical stage (qualify): one entry, not a stage change.
    assert a_stages["stage"].tolist() == ["identify", "qualify", "propose", "won"]
    assert a_stages["entered_at"].tolist()[1] == pd.Timestamp("2026-01-12T11:00:00Z")
    assert len(history) == 12

    changes = export.field_history.sort_values(["deal_id", "changed_at"])
    assert changes[["deal_id", "field", "old_value", "new_value"]].values.tolist() == [
        [OPP_A, "amount", "10000", "12000"],  # from OpportunityHistory's snapshots
        [OPP_A, "expected_close_date", "2026-02-28", "2026-02-20"],
        [OPP_B, "expected_close_date", "2026-02-15", "2026-03-01"],
        [OPP_C, "expected_close_date", "2026-04-15", "2026-04-30"],  # from OpportunityFieldHistory
    ]

    contacts = export.contacts.set_index("contact_id")
    assert contacts["role"].tolist() == ["decision_maker", "technical_evaluator", "economic_buyer", "champion", "other"]
    assert contacts["seniority"].tolist()[:4] == ["c_level", "manager", "vp", "director"]
    assert pd.isna(contacts["seniority"].iloc[4])  # a blank title
    assert contacts.loc["003A000000ppppp", "added_at"] == pd.Timestamp("2026-01-06T10:00:00Z")

    activities = export.activities.set_index("activity_id")
    assert list(activities.index) == [
        "00TA000000t0001AAA", "00TA000000t0002AAA", "00TA000000t0003AAA", "00TA000000t0008AAA",
        "00TA000000t0009AAA", "00UA000000e0001AAA", "00UA000000e0002AAA", "00UA000000e0005AAA",
    ]
    call = activities.loc["00TA000000t0001AAA"]
    assert (call["type"], call["direction"], call["duration_min"], call["contact_id"]) == (
        "call", "outbound", 30.0, "003A000000ppppp")  # WhoId's 18-character id meets the role's 15-character one
    assert call["occurred_at"] == pd.Timestamp("2026-01-15T14:00:00Z")  # CompletedDateTime
    assert activities.loc["00TA000000t0003AAA", "direction"] == "inbound"
    assert activities.loc["00TA000000t0002AAA", "occurred_at"] == pd.Timestamp("2026-01-20T00:00:00Z")  # ActivityDate
    assert pd.isna(activities.loc["00TA000000t0008AAA", "contact_id"])  # WhoId is a lead
    assert activities.loc["00TA000000t0009AAA", "type"] == "meeting"  # TaskSubtype Task, Type Meeting


def test_task_and_event_are_told_apart(source, tmp_path):
    code, output = run(source(), tmp_path / "out" / "export")
    assert code == 0, output
    activities = load_export(tmp_path / "out" / "export").activities.set_index("activity_id")
    meeting, demo, all_day = (activities.loc[f"00UA000000e000{i}AAA"] for i in (1, 2, 5))
    assert (meeting["type"], meeting["direction"], meeting["duration_min"]) == ("meeting", "outbound", 60.0)
    assert meeting["occurred_at"] == pd.Timestamp("2026-01-22T10:00:00Z")  # ActivityDateTime
    assert (demo["type"], demo["duration_min"]) == ("demo", 45.0)  # Type Demo; no DurationInMinutes: End - Start
    # An all-day event on the day the deal was created: a date, taken at the creation time, not before it.
    assert all_day["occurred_at"] == pd.Timestamp("2026-01-10T10:30:00Z")
    assert all_day["type"] == "meeting"  # an Event with no Type is a meeting
    skipped = [line for line in output.splitlines() if "| row " in line]
    expected = {
        ("Task.csv", "row 4", "a to-do, not a call, email, meeting or demo (TaskSubtype 'Task', Type (blank))"),
        ("Task.csv", "row 5", "not done yet (IsClosed is false): an open task"),
        ("Task.csv", "row 6", "not on an opportunity in the export"),
        ("Task.csv", "row 7", "an internal call, not with the customer"),
        ("Event.csv", "row 3", "a copy of a group event for another invitee (IsChild is true)"),
        ("Event.csv", "row 4", "after the export: it has not happened yet"),
    }
    for file, row, reason in expected:
        assert any(line.startswith(file) and f"| {row} (" in line and reason in line for line in skipped), (file, row)
    assert "9 skipped rows (Opportunity.csv 1, OpportunityHistory.csv 1, OpportunityContactRole.csv 1, Task.csv 4, " \
           "Event.csv 2):" in output


def test_probability_is_kept_beside_the_export_never_in_it(source, tmp_path):
    out = tmp_path / "out" / "export"
    code, output = run(source(), out)
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == [
        "activities.csv", "contacts.csv", "deals.csv", "field_history.csv", "stage_history.csv"]
    assert "probability" not in " ".join(pd.read_csv(out / "deals.csv").columns).lower()
    comparison = pd.read_csv(tmp_path / "out" / "crm_probability.csv")
    assert comparison.set_index("deal_id")["crm_probability"].to_dict() == {
        OPP_A: 1.0, OPP_B: 0.0, OPP_C: 0.9, OPP_D: 0.1, OPP_E: 0.0}
    assert comparison["exported_at"].unique().tolist() == ["2026-03-31T17:00:00Z"]
    code, output = run(source(), tmp_path / "elsewhere", comparison=tmp_path / "elsewhere" / "p.csv")
    assert code == 2 and "inside the export folder" in output


def test_data_loader_headers_in_capitals_read_the_same(source, tmp_path):
    upper = {name: (lambda frame: frame.rename(columns=str.upper)) for name in
             ("Opportunity.csv", "OpportunityHistory.csv", "Task.csv", "Event.csv", "OpportunityContactRole.csv")}
    assert run(source(), tmp_path / "a")[0] == 0
    assert run(source(upper), tmp_path / "b")[0] == 0
    for name in ("deals", "stage_history", "activities", "contacts"):
        assert (tmp_path / "a" / f"{name}.csv").read_text() == (tmp_path / "b" / f"{name}.csv").read_text()


def test_custom_closed_stage_is_taken_from_salesforces_flags(source, tmp_path):
    code, output = run(source(), tmp_path / "out")
    assert code == 0
    assert ("note: Opportunity.csv: stage 'Closed - Duplicate' taken as lost: Salesforce marks it closed and not won "
            "on the one opportunity with it") in output
    history = load_export(tmp_path / "out").stage_history
    assert history.loc[history["deal_id"] == OPP_E, "stage"].tolist() == ["identify", "lost"]


# --- what cannot be mapped is reported, nothing is written ---------------------------------------


def test_unmapped_stage_is_reported_at_its_source_row(source, tmp_path):
    src = source({"Opportunity.csv": lambda f: set_cell(f, 3, "StageName", "Discovery"),
                  "OpportunityHistory.csv": lambda f: set_cell(f, 10, "StageName", "Discovery")})
    out = tmp_path / "out" / "export"
    code, output = run(src, out)
    assert code == 1
    assert not out.exists() and not (tmp_path / "out" / "crm_probability.csv").exists()
    assert f"nothing written to {out}" in output
    lines = output.splitlines()
    opp = next(line for line in lines if line.startswith("Opportunity.csv") and "Discovery" in line)
    assert [cell.strip() for cell in opp.split("|")] == [
        "Opportunity.csv", "StageName", f"row 3 (Id={OPP_C})",
        ("unknown stage 'Discovery'; allowed: identify, qualify, propose, negotiate, contract, won, lost; add a line "
         "'<CRM name>: <canonical stage>' under 'stage:' in a mapping file (--mapping on the command line, "
         "DEALRISK_MAPPING for the service) to map it")]
    history = next(line for line in lines if line.startswith("OpportunityHistory.csv") and "Discovery" in line)
    assert f"| row 10 (OpportunityId={OPP_C}) |" in history
    mapping = tmp_path / "mine.yaml"
    mapping.write_text("stage:\n  Discovery: negotiate\n")
    code, output = run(src, out, mapping=mapping)
    assert code == 0, output
    assert load_export(out).deals.set_index("deal_id").loc[OPP_C, "stage"] == "negotiate"


def test_unmapped_role_is_reported_at_its_source_row(source, tmp_path):
    src = source({"OpportunityContactRole.csv": lambda f: set_cell(f, 2, "Role", "Budget Holder")})
    code, output = run(src, tmp_path / "out")
    assert code == 1
    line = next(line for line in output.splitlines() if "Budget Holder" in line)
    assert [cell.strip() for cell in line.split("|")][:3] == [
        "OpportunityContactRole.csv", "Role", "row 2 (Id=00KA000000r0002AAA)"]
    assert "unknown role 'Budget Holder'; allowed: decision_maker" in line and "under 'role:'" in line


def test_a_blank_type_is_a_problem_unless_a_deal_type_is_given(source, tmp_path):
    src = source({"Opportunity.csv": lambda f: set_cell(f, 4, "Type", "")})
    code, output = run(src, tmp_path / "out")
    assert code == 1
    assert f"Opportunity.csv | Type   | row 4 (Id={OPP_D}) | blank Type: the contract needs a deal type" in output
    code, output = run(src, tmp_path / "out", deal_type="new_business")
    assert code == 0, output
    assert load_export(tmp_path / "out").deals.set_index("deal_id").loc[OPP_D, "deal_type"] == "new_business"


@pytest.mark.parametrize(
    ("row", "changes", "column", "reason"),
    [
        (1, {"StageName": "Closed Lost"}, "IsWon, StageName", "IsWon is true but StageName 'Closed Lost' is a lost stage"),
        (2, {"StageName": "Closed Won"}, "IsWon, StageName", "IsWon is false but StageName 'Closed Won' is a won stage"),
        (3, {"IsClosed": "true"}, "IsClosed, StageName",
         "IsClosed is true but StageName 'Negotiation/Review' is an open stage (negotiate)"),
        (4, {"StageName": "Closed Won", "IsWon": "true"}, "IsWon, IsClosed",
         "IsWon is true but IsClosed is false: a won deal is closed"),
        (3, {"StageName": "Closed Lost"}, "IsClosed, StageName",
         "IsClosed is false but StageName 'Closed Lost' is a closed stage (lost)"),
    ],
)
def test_records_that_contradict_themselves_are_problems(source, tmp_path, row, changes, column, reason):
    def edit(frame):
        for name, value in changes.items():
            frame = set_cell(frame, row, name, value)
        return frame

    code, output = run(source({"Opportunity.csv": edit}), tmp_path / "out")
    assert code == 1
    line = next(line for line in output.splitlines() if reason in line)
    deal = [OPP_A, OPP_B, OPP_C, OPP_D][row - 1]
    assert [cell.strip() for cell in line.split("|")][:3] == ["Opportunity.csv", column, f"row {row} (Id={deal})"]


def test_an_open_deal_with_a_past_close_date_is_a_warning_not_a_problem(source, tmp_path):
    code, output = run(source(), tmp_path / "out")
    assert code == 0
    assert "1 warning (Opportunity.csv 1):" in output
    assert (f"Opportunity.csv | CloseDate | row 4 (Id={OPP_D}) | open, but CloseDate 2026-03-15 is before the export "
            "(2026-03-31): the close date was not kept up to date; kept as it is") in output
    code, output = run(source(), tmp_path / "out2", as_of="2026-03-10T00:00:00Z")
    assert "warning" not in output


def test_a_stage_entry_after_the_close_is_named_in_opportunity_history(source, tmp_path):
    reopened = pd.DataFrame([{"OpportunityId": OPP_B, "CreatedDate": "2026-03-05T09:00:00.000Z",
                              "StageName": "Prospecting", "IsDeleted": "false"}])
    src = source({"OpportunityHistory.csv": lambda f: pd.concat([f, reopened], ignore_index=True)})
    code, output = run(src, tmp_path / "out")
    assert code == 1
    assert (f"OpportunityHistory.csv | CreatedDate | row 15 (OpportunityId={OPP_B}) | stage entry after the deal was "
            "closed (won/lost entered at '2026-03-01T11:00:00+00:00')") in output


def test_a_duplicate_id_names_both_source_rows(source, tmp_path):
    src = source({"Task.csv": lambda f: set_cell(f, 3, "Id", "00TA000000t0001AAA")})
    code, output = run(src, tmp_path / "out")
    assert code == 1
    assert ("Task.csv | Id     | row 3 (Id=00TA000000t0001AAA) | duplicate activity_id '00TA000000t0001AAA'; first "
            "seen at row 1") in output


def test_a_missing_required_field_names_the_file(source, tmp_path):
    code, output = run(source({"Opportunity.csv": lambda f: f.drop(columns=["StageName"])}), tmp_path / "out")
    assert code == 1
    assert "error: Opportunity.csv: required field missing: StageName; found: Id, IsDeleted, AccountId" in output
    code, output = run(source({"Opportunity.csv": None}), tmp_path / "out")
    assert code == 1 and "no Opportunity.csv among the files" in output


# --- dates and times -----------------------------------------------------------------------------


def test_report_exports_need_the_timezone_of_their_local_times(source, tmp_path):
    src = source({"Opportunity.csv": lambda f: set_cell(f, 1, "CreatedDate", "1/5/2026 10:00 AM")})
    code, output = run(src, tmp_path / "out")
    assert code == 1
    assert (f"Opportunity.csv | CreatedDate | row 1 (Id={OPP_A}) | '1/5/2026 10:00 AM' is a local time and no timezone "
            "was given; pass the zone the export was written in (e.g. --timezone Europe/Berlin)") in output
    code, output = run(src, tmp_path / "out", timezone="Europe/Berlin")
    assert code == 0, output
    assert load_export(tmp_path / "out").deals.loc[0, "created_at"] == pd.Timestamp("2026-01-05T09:00:00Z")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-31T14:05:00.000Z", "2026-03-31T14:05:00Z"),  # Data Loader, weekly export
        ("2026-03-31T14:05:00.000+0000", "2026-03-31T14:05:00Z"),  # the REST API
        ("2026-03-31T16:05:00+02:00", "2026-03-31T14:05:00Z"),  # an offset is an instant: converted
        ("2026-03-31 16:05:00", "2026-03-31T14:05:00Z"),  # no offset: in --timezone (UTC without one)
        ("2026-03-31", "2026-03-31T00:00:00Z"),  # a date
        ("3/31/2026 4:05 PM", "2026-03-31T14:05:00Z"),  # report export, --timezone Europe/Berlin
        ("3/31/2026 16:05", "2026-03-31T14:05:00Z"),
        ("3/31/2026", "2026-03-31T00:00:00Z"),  # a report date: no timezone needed
        ("31.03.2026 16:05", "2026-03-31T14:05:00Z"),  # --date-format '%d.%m.%Y %H:%M'
    ],
)
def test_accepted_date_formats(text, expected):
    from features.contract.importers.sources import parse_times

    formats = TimeFormats(formats=("%d.%m.%Y %H:%M",), local_formats=("%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M", "%m/%d/%Y"),
                          timezone="Europe/Berlin")
    parsed = parse_times(pd.Series([text]), formats)
    assert not parsed.bad.any(), parsed.reasons
    assert parsed.values.iloc[0] == pd.Timestamp(expected)


def test_times_without_an_offset_are_utc_without_a_timezone():
    from features.contract.importers.sources import parse_times

    parsed = parse_times(pd.Series(["2026-03-31 14:05:00", "2026-03-29 02:30", "3/31/2026"]), TimeFormats(
        local_formats=("%m/%d/%Y",)))
    assert [str(v) for v in parsed.values] == ["2026-03-31 14:05:00+00:00", "2026-03-29 02:30:00+00:00",
                                               "2026-03-31 00:00:00+00:00"]
    # 02:30 on the night clocks go forward does not exist in Berlin: named, not guessed.
    berlin = parse_times(pd.Series(["2026-03-29 02:30"]), TimeFormats(timezone="Europe/Berlin"))
    assert berlin.bad.tolist() == [True]
    assert berlin.reasons[0] == ("'2026-03-29 02:30' is not a single moment in Europe/Berlin (a daylight-saving "
                                 "change); write it with an offset")


def test_an_unreadable_date_is_named_with_the_formats_read(source, tmp_path):
    src = source({"OpportunityContactRole.csv": lambda f: set_cell(f, 1, "CreatedDate", "next Tuesday")})
    code, output = run(src, tmp_path / "out")
    assert code == 1
    line = next(line for line in output.splitlines() if "next Tuesday" in line)
    assert line.startswith("OpportunityContactRole.csv | CreatedDate | row 1 (Id=00KA000000r0001AAA) | 'next Tuesday' "
                           "is not a date or time in a format read here (ISO-8601")
    assert sum("| row 1 (Id=00KA000000r0001AAA)" in x for x in output.splitlines()) == 1  # not again as an empty cell


# --- the rest --------------------------------------------------------------------------------------


def test_seniority_rule_on_titles():
    titles = {
        "Chief Executive Officer": "c_level", "CTO": "c_level", "Co-Founder": "c_level", "Managing Director": "c_level",
        "Vice President, Procurement": "vp", "SVP Operations": "vp", "Director of Finance": "director",
        "Head of IT": "director", "Procurement Manager": "manager", "Team Lead": "manager",
        "Buyer": "individual", "Software Engineer": "individual",
    }
    assert {title: seniority_of_title(title) for title in titles} == titles
    assert seniority_of_title("Head of", load_mapping().section("seniority")) == "director"  # a mapping line first


def test_without_history_objects_only_the_deals_table_is_written(source, tmp_path):
    src = source({name: None for name in ("OpportunityHistory.csv", "OpportunityFieldHistory.csv",
                                          "OpportunityContactRole.csv", "Contact.csv", "Task.csv", "Event.csv")})
    code, output = run(src, tmp_path / "out")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["deals.csv"]
    deals = load_export(tmp_path / "out").deals.set_index("deal_id")
    assert deals.loc[OPP_A, "closed_at"] == pd.Timestamp("2026-02-20T00:00:00Z")  # CloseDate without history


def test_stage_entries_from_field_history_when_opportunity_history_is_absent(source, tmp_path):
    code, output = run(source({"OpportunityHistory.csv": None}), tmp_path / "out")
    assert code == 0, output
    history = load_export(tmp_path / "out").stage_history
    c = history.loc[history["deal_id"] == OPP_C]
    assert c["stage"].tolist() == ["identify", "negotiate"]
    assert c["entered_at"].tolist() == [pd.Timestamp("2026-02-01T08:00:00Z"), pd.Timestamp("2026-02-15T10:00:00Z")]


def test_refuses_an_output_folder_that_overlaps_the_source_or_holds_other_files(source, tmp_path):
    src = source()
    assert run(src, src)[0] == 2
    assert run(src, src / "export")[0] == 2
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    code, output = run(src, busy)
    assert code == 2 and "holds other files (notes.txt)" in output
    assert (busy / "notes.txt").read_text() == "keep me"


def test_a_failed_import_leaves_an_earlier_export_as_it_was(source, tmp_path):
    out = tmp_path / "export"
    assert run(source(), out)[0] == 0
    before = {p.name: p.read_text() for p in out.iterdir()}
    src = source({"Opportunity.csv": lambda f: set_cell(f, 1, "Amount", "lots")})
    code, output = run(src, out)
    assert code == 1 and f"Opportunity.csv | Amount | row 1 (Id={OPP_A}) | Amount 'lots' is not a number" in output
    assert {p.name: p.read_text() for p in out.iterdir()} == before


def test_the_cli_command(source, tmp_path):
    result = CliRunner().invoke(app, ["import", "salesforce", str(source()), "--out", str(tmp_path / "export"),
                                      "--format", "parquet"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "export" / "deals.parquet").exists()
    assert len(load_export(tmp_path / "export").deals) == 5


def test_importer_is_pure_on_frames():
    files = {path.name: pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
             for path in FIXTURES.glob("*.csv")}
    first = import_salesforce(files, load_mapping(), SalesforceOptions())
    again = import_salesforce(files, load_mapping(), SalesforceOptions())
    assert check_import(first)[0] is not None
    for name in first.tables:
        pd.testing.assert_frame_equal(first.tables[name], again.tables[name])
