"""Tests for features.contract.mapping: the shipped default, user overrides and malformed files."""

from __future__ import annotations

import pandas as pd
import pytest

from features.contract.check import check_tables
from features.contract.mapping import (
    MappingError,
    apply_mapping,
    load_mapping,
    map_series,
    normalize_name,
)

SALESFORCE_STAGES = {
    "Prospecting": "identify",
    "Qualification": "qualify",
    "Needs Analysis": "qualify",
    "Value Proposition": "propose",
    "Id. Decision Makers": "propose",
    "Perception Analysis": "propose",
    "Proposal/Price Quote": "propose",
    "Negotiation/Review": "negotiate",
    "Closed Won": "won",
    "Closed Lost": "lost",
}
SALESFORCE_ROLES = {
    "Business User": "business_user",
    "Decision Maker": "decision_maker",
    "Economic Buyer": "economic_buyer",
    "Economic Decision Maker": "economic_buyer",
    "Evaluator": "technical_evaluator",
    "Executive Sponsor": "champion",
    "Influencer": "influencer",
    "Technical Buyer": "technical_evaluator",
    "Other": "other",
}


def test_salesforce_names_map_to_canonical():
    mapping = load_mapping()
    assert {name: mapping.canonical("stage", name) for name in SALESFORCE_STAGES} == SALESFORCE_STAGES
    assert {name: mapping.canonical("role", name) for name in SALESFORCE_ROLES} == SALESFORCE_ROLES


def test_canonical_names_map_to_themselves_case_insensitively():
    mapping = load_mapping()
    assert mapping.canonical("stage", "NEGOTIATE") == "negotiate"
    assert mapping.canonical("role", " Decision_Maker ") == "decision_maker"
    assert mapping.canonical("direction", "Inbound") == "inbound"


def test_matching_ignores_case_and_whitespace():
    mapping = load_mapping()
    assert mapping.canonical("stage", "  closed    WON\t") == "won"
    assert normalize_name(" Id.  Decision\tMakers ") == "id. decision makers"
    assert mapping.canonical("stage", "Discovery") is None


def test_apply_mapping_renames_known_names_and_keeps_unknown_ones():
    raw = {
        "deals": pd.DataFrame({"stage": ["Closed Won", "discovery", None]}, dtype="str"),
        "contacts": pd.DataFrame({"role": ["Technical Buyer"], "seniority": ["Vice President"]}, dtype="str"),
    }
    mapped = apply_mapping(raw, load_mapping())
    stage = mapped["deals"]["stage"]
    assert stage.iloc[:2].tolist() == ["won", "discovery"] and pd.isna(stage.iloc[2])
    assert mapped["contacts"].iloc[0].tolist() == ["technical_evaluator", "vp"]
    assert raw["deals"]["stage"].iloc[0] == "Closed Won", "the input is not changed"


def test_map_series_of_empty_column():
    assert map_series(pd.Series([], dtype="str"), {"a": "b"}).tolist() == []


def test_user_file_extends_and_overrides_the_default(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("stage:\n  Discovery: qualify\n  Proposal/Price Quote: negotiate\nrole:\n  Budget Holder: economic_buyer\n")
    mapping = load_mapping(path)
    assert mapping.canonical("stage", "discovery") == "qualify"
    assert mapping.canonical("stage", "Proposal/Price Quote") == "negotiate"
    assert mapping.canonical("stage", "Prospecting") == "identify", "default lines are kept"
    assert mapping.canonical("role", "BUDGET HOLDER") == "economic_buyer"


def test_user_mapping_makes_an_unknown_stage_pass(tmp_path):
    deals = pd.DataFrame({
        "deal_id": ["D1"], "account_id": ["A"], "owner_id": ["O"], "created_at": ["2026-01-01"], "amount": ["1"],
        "deal_type": ["renewal"], "lead_source": [None], "segment": [None], "region": [None], "product": [None],
        "stage": ["Discovery"], "expected_close_date": [None], "closed_at": [None], "outcome": ["open"],
    }, dtype="str")
    unknown = check_tables({"deals": deals})
    assert [v.reason.split(";")[0] for v in unknown.violations] == ["unknown stage 'Discovery'"]
    assert "mapping file (--mapping on the command line, DEALRISK_MAPPING for the service)" in unknown.violations[0].reason
    path = tmp_path / "mapping.yaml"
    path.write_text("stage:\n  Discovery: qualify\n")
    assert check_tables({"deals": deals}, load_mapping(path)).export.deals["stage"].tolist() == ["qualify"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stage: [unclosed\n", "is not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping of sections (stage, role, seniority, activity_type, direction, deal_type), got list"),
        ("stages:\n  Prospecting: identify\n", "unknown section 'stages'; sections are: stage, role, seniority"),
        ("stage:\n  - Prospecting\n", "section 'stage' must map CRM names to canonical names"),
        ("stage:\n  Discovery: discovery\n", "section 'stage': 'Discovery' maps to 'discovery', which is not a canonical "
         "stage; use one of: identify, qualify, propose, negotiate, contract, won, lost"),
        ("role:\n  Boss: 3\n", "section 'role': 'Boss' maps to 3, which is not a canonical role"),
        ("stage:\n  Demo: propose\n  demo: qualify\n", "'Demo' and 'demo' are the same name (matching ignores case "
         "and spaces) but map to 'propose' and 'qualify'"),
    ],
)
def test_malformed_mapping_file_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(MappingError) as error:
        load_mapping(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match="does not exist"):
        load_mapping(tmp_path / "nope.yaml")


def test_empty_mapping_file_is_the_default(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    assert load_mapping(path) == load_mapping()
