"""Tests for ``dealrisk import table``: a deals-only spreadsheet with its own column names, and the
mapping file's checks.

tests/features/importers/spreadsheet/ holds a hand-written export of another CRM (semicolons,
German dates and numbers, a "Won?" column, no history) and its mapping: the worked example of
docs/importers.md.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from dealrisk.cli import app
from features.contract.importers.run import run_import_table
from features.contract.importers.table import SpecError, parse_spec
from features.contract.load import load_export

FIXTURES = Path(__file__).parent / "importers" / "spreadsheet"
SPEC = yaml.safe_load((FIXTURES / "mapping.yaml").read_text())


@pytest.fixture
def spreadsheet(tmp_path):
    """Factory: the spreadsheet folder and a mapping file, each edited by a function if given."""

    def make(edit_rows=None, edit_spec=None) -> tuple[Path, Path]:
        folder = tmp_path / "crm"
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(FIXTURES, folder)
        if edit_rows is not None:
            frame = pd.read_csv(folder / "deals.csv", sep=";", dtype=str, keep_default_na=False)
            edit_rows(frame).to_csv(folder / "deals.csv", sep=";", index=False)
        spec = copy.deepcopy(SPEC)
        if edit_spec is not None:
            edit_spec(spec)
        path = tmp_path / "mapping.yaml"
        path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))
        return folder, path

    return make


def run(src: Path, mapping: Path, out: Path) -> tuple[int, str]:
    lines: list[str] = []
    code = run_import_table(src, mapping, out, echo=lines.append)
    return code, "\n".join(lines)


def test_a_deals_only_spreadsheet_becomes_a_contract_export(spreadsheet, tmp_path):
    src, mapping = spreadsheet()
    code, output = run(src, mapping, tmp_path / "export")
    assert code == 0, output
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["deals.csv"]
    export = load_export(tmp_path / "export")
    assert export.stage_history is None and export.activities is None
    deals = export.deals.set_index("deal_id")
    assert list(deals.index) == ["Acme renewal 2025", "Acme analytics add-on", "Bäckerei Huber pilot",
                                 "Nordlicht Logistik", "Café Sol", "Stadtwerke Süd"]
    assert deals["outcome"].tolist() == ["won", "open", "lost", "open", "lost", "open"]
    # A closed deal's stage is its outcome; an open one's is its mapped stage.
    assert deals["stage"].tolist() == ["won", "negotiate", "lost", "qualify", "lost", "propose"]
    assert deals["amount"].tolist() == [48000.0, 12500.0, 2400.0, 85000.0, 900.0, 120000.0]
    assert deals.loc["Acme renewal 2025", "created_at"] == pd.Timestamp("2025-02-03T00:00:00Z")
    assert deals.loc["Acme renewal 2025", "closed_at"] == pd.Timestamp("2025-03-21T00:00:00Z")
    assert deals["closed_at"].isna().tolist() == [False, True, False, True, False, True]
    assert deals["expected_close_date"].isna().all()  # not in the spreadsheet: missing, not made up
    assert (deals["deal_type"] == "new_business").all()
    assert deals.loc["Bäckerei Huber pilot", "account_id"] == "Bäckerei Huber"
    assert deals["product"].tolist()[:2] == ["Platform", "Analytics"]
    assert deals.loc["Nordlicht Logistik", "lead_source"] == "Event"
    assert deals["context_industry"].tolist()[:3] == ["Manufacturing", "Manufacturing", "Food"]
    assert deals["context_employees"].tolist()[-1] == "2300"
    assert "static context kept in deals: context_industry, context_employees" in output


def test_an_unmapped_stage_is_named_by_file_column_and_row(spreadsheet, tmp_path):
    src, mapping = spreadsheet(edit_rows=lambda f: f.assign(Stage=f["Stage"].where(f.index != 3, "Qualified Lead")))
    code, output = run(src, mapping, tmp_path / "export")
    assert code == 1 and not (tmp_path / "export").exists()
    line = next(line for line in output.splitlines() if "Qualified Lead" in line)
    assert [cell.strip() for cell in line.split("|")][:3] == ["deals.csv", "Stage", "row 4 (Deal Name=Nordlicht Logistik)"]
    assert line.endswith(f"unknown stage 'Qualified Lead'; allowed: identify, qualify, propose, negotiate, contract, "
                         f"won, lost; add a line '<CRM name>: <canonical stage>' under 'names:' > 'stage:' in {mapping} "
                         "to map it")


def test_a_value_in_the_wrong_format_is_named(spreadsheet, tmp_path):
    def edit(frame):
        frame.loc[0, "Created"] = "2025-02-30"
        frame.loc[1, "Value (EUR)"] = "zwölf"
        return frame

    src, mapping = spreadsheet(edit_rows=edit)
    code, output = run(src, mapping, tmp_path / "export")
    assert code == 1
    assert ("deals.csv | Created     | row 1 (Deal Name=Acme renewal 2025)     | '2025-02-30' is not a date or time "
            "in a format read here (%d.%m.%Y, ISO-8601") in output
    assert "deals.csv | Value (EUR) | row 2 (Deal Name=Acme analytics add-on) | 'zwölf' is not a number" in output


def test_won_without_a_close_date_is_a_contract_problem_at_its_source_row(spreadsheet, tmp_path):
    src, mapping = spreadsheet(edit_rows=lambda f: f.assign(Closed=f["Closed"].where(f.index != 0, "")))
    code, output = run(src, mapping, tmp_path / "export")
    assert code == 1
    assert ("deals.csv | Closed | row 1 (Deal Name=Acme renewal 2025) | empty closed_at but outcome is 'won'; a won or "
            "lost deal needs closed_at") in output


def test_outcome_follows_the_stage_when_not_mapped(spreadsheet, tmp_path):
    def edit_rows(frame):
        return frame.assign(Stage=["Won", "Proposal Made", "Lost", "Contact Made", "Lost", "Proposal Made"])

    def edit_spec(spec):
        del spec["tables"]["deals"]["columns"]["outcome"]

    src, mapping = spreadsheet(edit_rows, edit_spec)
    code, output = run(src, mapping, tmp_path / "export")
    assert code == 0, output
    assert load_export(tmp_path / "export").deals["outcome"].tolist() == ["won", "open", "lost", "open", "lost", "open"]
    assert "note: deals: outcome taken from the stage" in output


def test_a_single_file_source_and_other_tables(tmp_path):
    """SRC may be the one file; the mapping may build history tables from other files too."""
    deals = tmp_path / "opps.csv"
    deals.write_text("ID,Acct,Rep,Opened,Value,Kind,Status\nX1,A,R,2025-01-02 09:00,100,Upsell,Won\n")
    spec = tmp_path / "m.yaml"
    spec.write_text(yaml.safe_dump({"tables": {"deals": {"columns": {
        "deal_id": "ID", "account_id": "Acct", "owner_id": "Rep", "created_at": "Opened", "amount": "Value",
        "deal_type": "Kind", "stage": "Status", "closed_at": "Opened"}}}}))
    code, output = run(deals, spec, tmp_path / "export")
    assert code == 0, output
    deal = load_export(tmp_path / "export").deals.iloc[0]
    assert (deal["deal_type"], deal["stage"], deal["outcome"]) == ("expansion", "won", "won")

    folder = tmp_path / "crm"
    folder.mkdir()
    (folder / "deals.csv").write_text("ID,Acct,Rep,Opened,Value,Status\nX1,A,R,2025-01-02,100,Negotiation\n")
    (folder / "changes.csv").write_text(
        "Deal,What,From,To,When\nX1,Close Date,01/03/2025,15/03/2025,2025-01-20\nX1,Value,100,120,2025-01-21\n")
    spec.write_text(yaml.safe_dump({"tables": {
        "deals": {"file": "deals.csv", "columns": {
            "deal_id": "ID", "account_id": "Acct", "owner_id": "Rep", "created_at": "Opened", "amount": "Value",
            "deal_type": {"value": "renewal"}, "stage": "Status"}},
        "field_history": {"file": "changes.csv", "columns": {
            "deal_id": "Deal", "field": {"column": "What", "values": {"Close Date": "expected_close_date",
                                                                     "Value": "amount"}},
            "old_value": {"column": "From", "format": "%d/%m/%Y"}, "new_value": {"column": "To", "format": "%d/%m/%Y"},
            "changed_at": "When"}},
    }}))
    code, output = run(folder, spec, tmp_path / "export2")
    assert code == 0, output
    history = load_export(tmp_path / "export2").field_history
    assert history[["field", "old_value", "new_value"]].values.tolist() == [
        ["expected_close_date", "2025-03-01", "2025-03-15"], ["amount", "100", "120"]]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a YAML mapping with 'tables:'"),
        ({"tables": {"deal": {}}}, "tables.deal: not a contract table (did you mean 'deals'?)"),
        ({"tables": {"deals": {"columns": {"deal_id": "X"}}}},
         "tables.deals.columns: account_id, owner_id, created_at, amount, deal_type, stage must be mapped"),
        ({"tables": {"deals": {"colums": {}}}}, "tables.deals.colums: unknown key (did you mean 'columns'?)"),
        ({"tables": {"deals": {"columns": {"created": "C"}}}},
         "tables.deals.columns.created: not a column of deals (did you mean 'created_at'?)"),
        ({"tables": {"deals": {"columns": {"created_at": {"column": "C", "format": "dd.mm.yyyy"}}}}},
         "tables.deals.columns.created_at.format: 'dd.mm.yyyy' is not a strftime pattern"),
        ({"tables": {"deals": {"columns": {"amount": {"column": "A", "value": "1"}}}}},
         "give exactly one of 'column' (a source column) and 'value' (a constant)"),
        ({"timezone": "Berlin", "tables": {"deals": {}}}, "timezone: unknown timezone 'Berlin'"),
        ({"tables": {"deals": {"columns": {}, "context": {"Industry": "I"}}}},
         "tables.deals.context.Industry: a context name is lower-case letters"),
        ({"names": {"stage": {"Demo": "demo"}}, "tables": {"deals": {}}},
         "'Demo' maps to 'demo', which is not a canonical stage"),
    ],
)
def test_an_unusable_mapping_file_is_named(document, message):
    with pytest.raises(SpecError) as error:
        parse_spec(document, "m.yaml")
    assert message in str(error.value)
    assert str(error.value).startswith("m.yaml")


def test_a_mapped_column_missing_from_the_file_is_named_with_a_look_alike(spreadsheet, tmp_path):
    src, mapping = spreadsheet(edit_spec=lambda s: s["tables"]["deals"]["columns"].update(owner_id="Owners"))
    code, output = run(src, mapping, tmp_path / "export")
    assert code == 1
    assert "error: deals.csv: no column 'Owners' (mapped to owner_id) (did you mean 'Owner'?)" in output


def test_the_cli_command(spreadsheet, tmp_path):
    src, mapping = spreadsheet()
    result = CliRunner().invoke(app, ["import", "table", str(src), "--mapping", str(mapping), "--out",
                                      str(tmp_path / "export")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert len(load_export(tmp_path / "export").deals) == 6
    bad = CliRunner().invoke(app, ["import", "table", str(src), "--mapping", str(tmp_path / "none.yaml"), "--out",
                                   str(tmp_path / "x")])
    assert bad.exit_code == 2 and "mapping file" in bad.output and "does not exist" in bad.output


def test_contacts_and_activities_with_titles_and_value_maps(tmp_path):
    folder = tmp_path / "crm"
    folder.mkdir()
    (folder / "deals.csv").write_text("ID,Acct,Rep,Opened,Value,Status\nX1,A,R,2025-01-02,100,Qualified\n")
    (folder / "people.csv").write_text("Deal,Person,Part,Job Title,Added\nX1,P1,Budget Holder,CFO,2025-01-03\n"
                                       "X1,P2,User,Data Analyst,2025-01-04\n")
    (folder / "log.csv").write_text("Ref,Deal,Who,Kind,Way,At,Minutes\nL1,X1,P1,Phone,in,2025-01-05 10:00,12\n"
                                    "L2,X1,,Mail,out,2025-01-06 11:00,\n")
    spec = tmp_path / "m.yaml"
    spec.write_text(yaml.safe_dump({"tables": {
        "deals": {"file": "deals.csv", "columns": {
            "deal_id": "ID", "account_id": "Acct", "owner_id": "Rep", "created_at": "Opened", "amount": "Value",
            "deal_type": {"value": "new_business"}, "stage": "Status"}},
        "contacts": {"file": "people.csv", "columns": {
            "deal_id": "Deal", "contact_id": "Person", "role": {"column": "Part", "values": {"user": "business_user"}},
            "seniority": {"column": "Job Title", "from_title": True}, "added_at": "Added"}},
        "activities": {"file": "log.csv", "columns": {
            "activity_id": "Ref", "deal_id": "Deal", "contact_id": "Who",
            "type": {"column": "Kind", "values": {"phone": "call", "mail": "email"}},
            "direction": {"column": "Way", "values": {"in": "inbound", "out": "outbound"}},
            "occurred_at": "At", "duration_min": "Minutes"}},
    }, "names": {"role": {"Budget Holder": "economic_buyer"}}}))
    code, output = run(folder, spec, tmp_path / "export")
    assert code == 0, output
    export = load_export(tmp_path / "export")
    assert export.contacts[["role", "seniority"]].values.tolist() == [["economic_buyer", "c_level"],
                                                                     ["business_user", "individual"]]
    assert export.activities[["type", "direction", "duration_min"]].values.tolist()[0] == ["call", "inbound", 12.0]
    assert export.activities["occurred_at"].tolist()[1] == pd.Timestamp("2025-01-06T11:00:00Z")
