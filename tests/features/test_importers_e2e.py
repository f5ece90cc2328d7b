"""End to end: both importers' output trains (``dealrisk train``), and a Salesforce-shaped copy of
a generated export comes back through ``dealrisk import salesforce`` as the same export.

The generated export is written out the way Salesforce would hold it (Opportunity with its
picklist names, OpportunityHistory, OpportunityFieldHistory, OpportunityContactRole, Contact
titles, Account, Task and Event), and as a deals-only spreadsheet of another CRM. Slow tier:
each trains a model into a temporary MLflow store.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from dealrisk.cli import app
from features.contract.load import load_export
from generator.export import generate_export

pytestmark = pytest.mark.slow
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

N_DEALS = 1500
SEED = 21
STAGE_NAMES = {"identify": "Prospecting", "qualify": "Qualification", "propose": "Proposal/Price Quote",
               "negotiate": "Negotiation/Review", "contract": "Contracting", "won": "Closed Won", "lost": "Closed Lost"}
ROLE_NAMES = {"decision_maker": "Decision Maker", "economic_buyer": "Economic Buyer", "champion": "Executive Sponsor",
              "technical_evaluator": "Technical Buyer", "influencer": "Influencer", "business_user": "Business User",
              "procurement": "Procurement", "other": "Other"}
TITLES = {"c_level": "Chief Operating Officer", "vp": "VP Operations", "director": "Director of IT",
          "manager": "Procurement Manager", "individual": "Analyst"}
TYPE_NAMES = {"new_business": "New Customer", "expansion": "Existing Customer - Upgrade", "renewal": "Renewal"}
EMPLOYEES = {"smb": "40", "mid_market": "400", "enterprise": "4000"}


def salesforce_time(iso: pd.Series) -> pd.Series:
    """Contract time text as Data Loader writes it: 2026-03-31T14:05:00.000Z."""
    return pd.to_datetime(iso, utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.000Z").where(iso.notna(), "")


def salesforce_date(iso: pd.Series) -> pd.Series:
    return pd.to_datetime(iso, utc=True, format="ISO8601").dt.strftime("%Y-%m-%d").where(iso.notna(), "")


def to_salesforce(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A generated export in the shape of a Salesforce weekly data export."""
    deals, history, changes = tables["deals"], tables["stage_history"], tables["field_history"]
    contacts, activities = tables["contacts"], tables["activities"]
    closed = deals["outcome"].isin(["won", "lost"])
    close_date = salesforce_date(deals["closed_at"].where(closed, deals["expected_close_date"]))
    opportunity = pd.DataFrame({
        "Id": deals["deal_id"], "IsDeleted": "false", "AccountId": deals["account_id"], "OwnerId": deals["owner_id"],
        "CreatedDate": salesforce_time(deals["created_at"]), "Amount": deals["amount"].map(lambda v: f"{v:.2f}"),
        "StageName": deals["stage"].map(STAGE_NAMES), "CloseDate": close_date, "Type": deals["deal_type"].map(TYPE_NAMES),
        "LeadSource": deals["lead_source"], "IsClosed": np.where(closed, "true", "false"),
        "IsWon": np.where(deals["outcome"] == "won", "true", "false"),
        "Probability": deals["stage"].map({"identify": "10", "qualify": "20", "propose": "75", "negotiate": "90",
                                           "contract": "90", "won": "100", "lost": "0"}),
        "ForecastCategoryName": "Pipeline",
    })
    opportunity_history = pd.DataFrame({
        "OpportunityId": history["deal_id"], "CreatedDate": salesforce_time(history["entered_at"]),
        "StageName": history["stage"].map(STAGE_NAMES), "IsDeleted": "false",
    })
    is_date = changes["field"] == "expected_close_date"
    field_history = pd.DataFrame({
        "OpportunityId": changes["deal_id"], "CreatedDate": salesforce_time(changes["changed_at"]),
        "Field": np.where(is_date, "CloseDate", "Amount"),
        "OldValue": changes["old_value"].where(~is_date, salesforce_date(changes["old_value"].where(is_date))),
        "NewValue": changes["new_value"].where(~is_date, salesforce_date(changes["new_value"].where(is_date))),
    })
    roles = pd.DataFrame({
        "Id": [f"00K{i:012d}" for i in range(len(contacts))], "OpportunityId": contacts["deal_id"],
        "ContactId": contacts["contact_id"], "Role": contacts["role"].map(ROLE_NAMES),
        "CreatedDate": salesforce_time(contacts["added_at"]),
    })
    people = contacts.drop_duplicates("contact_id")
    contact = pd.DataFrame({"Id": people["contact_id"], "Title": people["seniority"].map(TITLES).fillna("")})
    accounts = deals.drop_duplicates("account_id")
    account = pd.DataFrame({"Id": accounts["account_id"], "Industry": "Software",
                            "NumberOfEmployees": accounts["segment"].map(EMPLOYEES), "BillingCountry": accounts["region"]})
    is_task = activities["type"].isin(["call", "email"])
    tasks, events = activities.loc[is_task], activities.loc[~is_task]
    task = pd.DataFrame({
        "Id": tasks["activity_id"], "WhatId": tasks["deal_id"], "WhoId": tasks["contact_id"], "IsClosed": "true",
        "TaskSubtype": tasks["type"].map({"call": "Call", "email": "Email"}),
        "CallType": np.where(tasks["type"] == "call", tasks["direction"].str.capitalize(), ""),
        "CallDurationInSeconds": (tasks["duration_min"] * 60).map(lambda v: "" if pd.isna(v) else f"{v:.0f}"),
        "CompletedDateTime": salesforce_time(tasks["occurred_at"]), "CreatedDate": salesforce_time(tasks["occurred_at"]),
    })
    event = pd.DataFrame({
        "Id": events["activity_id"], "WhatId": events["deal_id"], "WhoId": events["contact_id"],
        "Type": events["type"].map({"meeting": "Meeting", "demo": "Demo"}), "IsChild": "false",
        "ActivityDateTime": salesforce_time(events["occurred_at"]),
        "DurationInMinutes": events["duration_min"].map(lambda v: "" if pd.isna(v) else f"{v:.0f}"),
        "CreatedDate": salesforce_time(events["occurred_at"]),
    })
    return {"Opportunity.csv": opportunity, "OpportunityHistory.csv": opportunity_history,
            "OpportunityFieldHistory.csv": field_history, "OpportunityContactRole.csv": roles, "Contact.csv": contact,
            "Account.csv": account, "Task.csv": task, "Event.csv": event}


def to_spreadsheet(deals: pd.DataFrame) -> pd.DataFrame:
    """The deals alone, as another CRM's spreadsheet export writes them (no history at all)."""
    closed = deals["outcome"].isin(["won", "lost"])
    return pd.DataFrame({
        "Deal Name": deals["deal_id"], "Company": deals["account_id"], "Owner": deals["owner_id"],
        "Product": deals["product"], "Source": deals["lead_source"],
        "Stage": deals["stage"].map({"identify": "Lead In", "qualify": "Contact Made", "propose": "Proposal Made",
                                     "negotiate": "Negotiations Started", "contract": "Contract Sent",
                                     "won": "Contract Sent", "lost": "Proposal Made"}),
        "Created": pd.to_datetime(deals["created_at"], utc=True).dt.strftime("%d.%m.%Y %H:%M"),
        "Closed": pd.to_datetime(deals["closed_at"], utc=True).dt.strftime("%d.%m.%Y %H:%M").where(closed, ""),
        "Won?": np.where(deals["outcome"] == "won", "Yes", np.where(deals["outcome"] == "lost", "No", "")),
        "Value (EUR)": deals["amount"].map(lambda v: f"{v:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")),
        "Industry": deals["segment"].map({"smb": "Retail", "mid_market": "Logistics", "enterprise": "Banking"}),
    })


SPREADSHEET_MAPPING = {
    "delimiter": ";",
    "tables": {"deals": {"file": "deals.csv", "columns": {
        "deal_id": "Deal Name", "account_id": "Company", "owner_id": "Owner", "product": "Product",
        "lead_source": "Source", "stage": "Stage",
        "created_at": {"column": "Created", "format": "%d.%m.%Y %H:%M"},
        "closed_at": {"column": "Closed", "format": "%d.%m.%Y %H:%M"},
        "outcome": {"column": "Won?", "values": {"yes": "won", "no": "lost", "": "open"}},
        "amount": {"column": "Value (EUR)", "decimal": ",", "thousands": "."},
        "deal_type": {"value": "new_business"},
    }, "context": {"industry": "Industry"}}},
    "names": {"stage": {"Lead In": "identify", "Contact Made": "qualify", "Proposal Made": "propose",
                        "Negotiations Started": "negotiate", "Contract Sent": "contract"}},
}


@pytest.fixture(scope="module")
def generated():
    return generate_export(N_DEALS, SEED, truth_snapshots=0, n_paths=1).tables


def invoke(*args: str, env: dict | None = None):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def train(export, tmp_path) -> dict:
    report = tmp_path / "report.json"
    output = invoke("train", "--data", str(export), "--report", str(report),
                    env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert "Traceback" not in output
    return json.loads(report.read_text())


def test_a_salesforce_export_comes_back_as_the_same_export_and_trains(generated, tmp_path):
    source = tmp_path / "salesforce"
    source.mkdir()
    for name, frame in to_salesforce(generated).items():
        frame.to_csv(source / name, index=False)
    output = invoke("import", "salesforce", str(source), "--out", str(tmp_path / "export"))
    assert "it passes the data contract" in output
    export = load_export(tmp_path / "export")
    deals = export.deals.set_index("deal_id")
    original = generated["deals"].set_index("deal_id")
    assert list(deals.index) == list(original.index)
    for column in ("account_id", "owner_id", "deal_type", "lead_source", "segment", "region", "stage", "outcome"):
        assert deals[column].tolist() == original[column].tolist(), column
    assert deals["amount"].tolist() == original["amount"].tolist()
    assert (deals["created_at"] == pd.to_datetime(original["created_at"], utc=True)).all()
    closed = original["outcome"] != "open"
    assert (deals.loc[closed, "closed_at"] == pd.to_datetime(original.loc[closed, "closed_at"], utc=True)).all()
    history = export.stage_history
    assert history[["deal_id", "stage"]].values.tolist() == generated["stage_history"][["deal_id", "stage"]].values.tolist()
    assert len(export.field_history) == len(generated["field_history"])
    contacts = export.contacts
    assert contacts[["deal_id", "contact_id", "role", "seniority"]].values.tolist() == \
        generated["contacts"][["deal_id", "contact_id", "role", "seniority"]].values.tolist()
    activities = export.activities.set_index("activity_id")
    original_activities = generated["activities"].set_index("activity_id")
    assert sorted(activities.index) == sorted(original_activities.index)
    calls = original_activities["type"] == "call"
    assert (activities.loc[calls[calls].index, "direction"] == original_activities.loc[calls, "direction"]).all()
    report = train(tmp_path / "export", tmp_path)
    assert report["registered"]["deal-win"] and report["registered"]["deal-slip"]  # every table: both models


def test_a_deals_only_spreadsheet_trains_a_win_model(generated, tmp_path):
    source = tmp_path / "crm"
    source.mkdir()
    to_spreadsheet(generated["deals"]).to_csv(source / "deals.csv", sep=";", index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(SPREADSHEET_MAPPING, sort_keys=False))
    invoke("import", "table", str(source), "--mapping", str(mapping), "--out", str(tmp_path / "export"))
    export = load_export(tmp_path / "export")
    assert export.stage_history is None and len(export.deals) == N_DEALS
    assert export.deals["outcome"].tolist() == generated["deals"]["outcome"].tolist()
    report = train(tmp_path / "export", tmp_path)
    # A win model, no slip model (no expected close date, no history), and the CRM's export-time
    # amount kept out of the training snapshots (no amount history).
    assert report["registered"]["deal-win"] and report["registered"]["deal-slip"] is None
    assert "amount" in report["skipped"]["fields"]
