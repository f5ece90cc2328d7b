"""What features and models need (definitions.INPUTS / Feature.needs / MODEL_NEEDS), what an export
lacks (inputs.find_inputs) and what training therefore leaves out (inputs.plan_skips)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract.schema import Export
from features.pointintime.definitions import CHANGEABLE_FIELDS, FEATURE_NAMES, FEATURES, INPUTS, MODEL_NEEDS
from features.pointintime.inputs import Skips, blank_features, find_inputs, missing_inputs, plan_skips
from features.pointintime.pipeline import build_features
from features.pointintime.snapshots import label_snapshots
from features.pointintime.state import FeatureState, fit_feature_state
from tests.factories import make_export, ts

POINTS = pd.DataFrame({"deal_id": ["D1", "D2", "D3", "D1"],
                       "as_of": ts(["2026-03-01", "2026-02-01", "2026-03-09", "2026-01-22"])})
DEALS_ONLY_COLUMNS = {"expected_close_date": pd.NaT, "segment": None, "region": None, "lead_source": None}


def deals_only() -> Export:
    """The issue's measured export: deals alone, no expected close date, no segment/region/lead source."""
    deals = make_export().deals
    return Export(deals=deals.assign(**{c: pd.Series([v] * len(deals), dtype=deals[c].dtype)
                                        for c, v in DEALS_ONLY_COLUMNS.items()}))


def needing(prefix: str) -> set[str]:
    return {f.name for f in FEATURES if any(need == prefix or need.startswith(prefix + ".") for need in f.needs)}


@pytest.mark.parametrize(("table", "declared"), [
    ("stage_history", needing("stage_history")),
    ("contacts", needing("contacts")),
    ("activities", needing("activities")),
    ("field_history", needing("history:expected_close_date") | needing("history:amount")),
])
def test_declared_needs_are_what_the_pipeline_loses_without_the_table(table, declared):
    state = fit_feature_state(make_export(), "2026-12-31")
    full = build_features(make_export(), POINTS, state)
    partial = build_features(make_export(drop=(table,)), POINTS, state)
    changed = {name for name in FEATURE_NAMES if not partial[name].equals(full[name])}
    assert partial[sorted(declared)].isna().all().all()  # everything that declares the table is missing without it
    assert changed <= declared  # nothing else moves
    # ...and each declared feature really reads it (those never known at these points aside)
    assert declared - changed == {name for name in declared if full[name].isna().all()}


def test_every_need_is_a_known_input_and_every_input_is_checked():
    assert {need for f in FEATURES for need in f.needs} <= set(INPUTS)
    assert set(find_inputs(make_export())) == set(INPUTS)
    assert set(CHANGEABLE_FIELDS.values()) <= set(INPUTS)
    assert {need for needs in MODEL_NEEDS.values() for need in needs} <= set(INPUTS)


def test_the_full_export_lacks_only_the_owner_history():
    missing = missing_inputs(find_inputs(make_export()))
    assert list(missing) == ["history:owner_id"]
    assert missing["history:owner_id"].startswith("the data contract keeps no owner history")
    assert plan_skips(missing).lines() == [
        "owner_id not used for training snapshots: " + missing["history:owner_id"] + "; left out: owner_win_rate, owner_closed_deals"
    ]


def test_a_deals_only_export_skips_the_slip_model_and_says_why_in_one_line():
    skips = plan_skips(missing_inputs(find_inputs(deals_only())))
    lines = skips.lines()
    assert lines[0] == "slip model not trained: deals have no expected_close_date and there is no field_history"
    assert list(skips.models) == ["slip"]
    assert set(skips.fields) == {"stage", "expected_close_date", "amount", "owner_id"}
    assert any(line.startswith("amount not used for training snapshots: there is no field_history, so the deals' "
                               "amount is its value at export time") for line in lines)
    assert any("the engagement family (20 features)" in line and "there is no activities table" in line for line in lines)
    assert "features missing (NaN), not used by the models: segment: deals have no segment" in lines
    # what is left for a win model: deal age, type, product, the account's history and the calendar
    kept = [name for name in FEATURE_NAMES if name not in skips.features]
    assert kept == ["deal_age_days", "deal_type", "product", "account_win_rate", "account_closed_deals",
                    "days_to_quarter_end", "days_to_fiscal_year_end"]
    # each skipped feature is on exactly one line (its first missing input)
    assert len(lines) == len(skips.models) + len(set(skips.features.values()))


def test_field_history_without_amount_changes_leaves_the_amount_out():
    export = make_export()
    fields = export.field_history
    no_amount = Export(**{**export.tables(), "field_history": fields[fields["field"] != "amount"].reset_index(drop=True)})
    found = find_inputs(no_amount)
    assert found["history:expected_close_date"] is None
    assert found["history:amount"] == ("field_history has no amount changes, so the deals' amount is its value at "
                                       "export time, the future of every training snapshot")
    skips = plan_skips(missing_inputs(found))
    assert {"amount", "amount_change_ratio", "largest_amount_cut", "amount_vs_segment_median"} <= set(skips.features)
    assert "slip" not in skips.models
    # The pipeline's own rule reads the deals row for a deal without a change: D1's final 1500 as of
    # 2026-01-22, a month before its amount changed. That is why training leaves the feature out.
    state = fit_feature_state(no_amount, "2026-12-31")
    row = build_features(no_amount, POINTS, state).iloc[3]
    assert row["amount"] == 1500.0
    assert np.isnan(state.closed_first_amount).all()  # the state keeps no export-time amounts either
    assert pd.isna(blank_features(build_features(no_amount, POINTS, state), skips.features)["amount"]).all()


def test_an_input_that_starts_after_the_cutoff_counts_as_missing():
    found = find_inputs(make_export(), before="2026-01-02")  # D1's first contact was added on 01-02
    assert found["contacts"] == "the contacts table has no rows before the training cutoff"
    assert found["history:expected_close_date"] == "field_history has no expected_close_date changes before the training cutoff, " \
        "so the deals' expected_close_date is its value at export time, the future of every training snapshot"
    assert found["stage_history"] is None  # D1 entered identify on 01-01


def test_missing_columns_of_recorded_calls_are_named():
    export = make_export()
    found = find_inputs(Export(**{**export.tables(), "activities": export.activities.drop(columns=["customer_talk_ratio"])}))
    assert found["activities.customer_talk_ratio"] == "activities have no customer_talk_ratio column"
    features = plan_skips(missing_inputs(found)).features
    assert {k: v for k, v in features.items() if v != "history:owner_id"} == {
        "mean_customer_talk_ratio": "activities.customer_talk_ratio", "customer_talk_ratio_30d": "activities.customer_talk_ratio"}


def test_slip_labels_are_missing_without_close_date_history():
    export = make_export()
    labelled = label_snapshots(export, POINTS)
    assert labelled["slipped"].notna().sum() == 3  # D3 is open
    missing = {"history:expected_close_date": "field_history has no expected_close_date changes"}
    assert label_snapshots(export, POINTS, missing)["slipped"].isna().all()
    assert label_snapshots(export, POINTS, missing)["won"].equals(labelled["won"])


def test_state_keeps_missing_inputs_and_fiscal_month_through_json():
    state = fit_feature_state(deals_only(), "2026-12-31", fiscal_year_start_month=4)
    again = FeatureState.from_dict(state.to_dict())
    assert again == state and again.fiscal_year_start_month == 4
    assert again.missing_inputs["stage_history"] == "there is no stage_history table"
    older = {k: v for k, v in state.to_dict().items() if k not in ("missing_inputs", "fiscal_year_start_month")}
    assert FeatureState.from_dict(older).missing_inputs is None  # a state saved before: nothing known missing
    assert FeatureState.from_dict(older).fiscal_year_start_month == 1
    with pytest.raises(ValueError, match="fiscal_year_start_month must be a month number 1-12, got 13"):
        FeatureState.from_dict({**state.to_dict(), "fiscal_year_start_month": 13})
    with pytest.raises(ValueError, match="missing_inputs names unknown inputs"):
        FeatureState.from_dict({**state.to_dict(), "missing_inputs": {"phone_log": "none"}})


def test_skips_round_trip_and_blanking_keeps_the_frame():
    skips = plan_skips(missing_inputs(find_inputs(deals_only())))
    assert Skips.from_dict(skips.to_dict()) == skips
    assert Skips.from_dict(None) == Skips() and Skips().lines() == []
    frame = build_features(deals_only(), POINTS, fit_feature_state(deals_only(), "2026-12-31"))
    blanked = blank_features(frame, skips.features)
    assert list(blanked.columns) == list(frame.columns) and blanked.dtypes.equals(frame.dtypes)
    assert blanked[list(skips.features)].isna().all().all()
    kept = [n for n in FEATURE_NAMES if n not in skips.features]
    pd.testing.assert_frame_equal(blanked[kept], frame[kept])
