"""Tests for features.pointintime.definitions: the ordered feature list, phrasing, and docs/features.md in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from features.pointintime.definitions import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    Feature,
    describe_feature,
    get_feature,
    render_docs,
)

ROOT = Path(__file__).resolve().parents[2]


def test_names_are_unique_and_self_explaining():
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
    assert all(name.isidentifier() and name.islower() for name in FEATURE_NAMES)
    assert set(CATEGORICAL_FEATURES) == {"current_stage", "deal_type", "segment", "region", "product", "lead_source"}


def test_every_feature_has_a_description_unit_and_missing_phrase():
    for feature in FEATURES:
        assert feature.description and feature.unit, feature.name
        if feature.name not in ("deal_age_days", "owner_closed_deals", "account_closed_deals",
                                "days_to_quarter_end", "days_to_fiscal_year_end"):  # never missing
            assert "missing" in feature.phrases, feature.name


def test_docs_file_is_in_sync_with_the_registry():
    committed = (ROOT / "docs" / "features.md").read_text()
    assert committed == render_docs() + "\n", "run: python -m features.pointintime.definitions > docs/features.md"


def test_module_main_prints_the_docs():
    printed = subprocess.run([sys.executable, "-m", "features.pointintime.definitions"], capture_output=True, text=True, check=True,
                             cwd=ROOT).stdout
    assert printed == render_docs() + "\n"
    assert f"## The features ({len(FEATURES)}, in model order)" in printed


@pytest.mark.parametrize(
    ("name", "value", "row", "expected"),
    [
        ("decision_maker_engaged_30d", 0.0, None, "No decision maker engaged in the last 30 days"),
        ("champion_engaged_30d", 1.0, None, "Champion engaged in the last 30 days"),
        ("days_in_stage_vs_won", 2.345, {"current_stage": "negotiate", "days_in_stage": 41.0},
         "In negotiate for 41 days, 2.3x what won deals take"),
        ("close_date_pushes", 0.0, None, "Close date never pushed"),
        ("close_date_pushes", 3.0, None, "Close date pushed 3 times"),
        ("top_contact_share", 0.8, None, "80% of contact activities go to one person"),
        ("days_since_last_activity", float("nan"), None, "No activity yet"),
        ("segment", "smb", None, "Segment smb"),
        ("decision_maker_activity_share_30d", 0.4, None, "Decision maker in 40% of contacted activities in the last 30 days"),
        ("economic_buyer_activity_share_30d", 0.0, None,
         "Economic buyer in none of the contacted activities in the last 30 days"),
        ("decision_maker_activity_share_30d", float("nan"), None, "No activity with a known contact in the last 30 days"),
        ("decision_maker_meetings_30d", 1.0, None, "1 meeting with a decision maker in the last 30 days"),
        ("largest_amount_cut", 0.6, None, "Amount once cut to 60% of its previous value in one change"),
        ("largest_amount_cut", 1.0, None, "Amount never cut"),
        ("amount_vs_segment_median", 2.345, {"segment": "enterprise"}, "Amount is 2.3x the typical enterprise deal"),
        ("segment", None, None, "Segment unknown"),
    ],
)
def test_describe_feature_phrases(name, value, row, expected):
    assert describe_feature(name, value, row) == expected


def test_describe_feature_falls_back_when_the_row_lacks_a_template_field():
    assert describe_feature("days_in_stage_vs_won", 2.0, {}) == "days_in_stage_vs_won = 2.0"


def test_unknown_feature_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown feature 'f7'; known features: current_stage"):
        get_feature("f7")


def test_feature_rejects_unknown_family_or_kind():
    with pytest.raises(ValueError, match="family must be one of"):
        Feature("x", "misc", "d", "u")
    with pytest.raises(ValueError, match="kind must be one of"):
        Feature("x", "stage", "d", "u", kind="text")


@pytest.mark.parametrize("module", ["features.pointintime.definitions", "features.pointintime.pipeline", "features.pointintime.state",
                                    "features.pointintime.snapshots", "features.model.matrix"])
def test_docstring_examples_hold(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
