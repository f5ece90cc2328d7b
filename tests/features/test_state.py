"""Tests for features.pointintime.state: fitting on deals closed before the cutoff only, and the JSON round trip."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.contract.schema import Export
from features.pointintime.state import FeatureState, fit_feature_state
from tests.factories import make_export, random_export


def test_won_stage_days_are_medians_over_won_deals_by_hand():
    state = fit_feature_state(make_export(), "2026-12-31")
    # D1: identify 10, qualify 10 + 7, propose 4 + 14, negotiate 23; D4: identify 10, negotiate 26.
    assert state.won_stage_days == {"identify": 10.0, "qualify": 17.0, "propose": 18.0, "negotiate": 24.5}


def test_only_deals_closed_before_the_cutoff_are_used():
    state = fit_feature_state(make_export(), "2026-03-01")
    # D1 (won 03-10) is after the cutoff: only D4 is a won deal, D2 (lost 02-20) is in the history.
    assert state.won_stage_days == {"identify": 10.0, "negotiate": 26.0}
    history = state.closed_history()
    assert list(history["owner_id"]) == ["O1", "O2"] and list(history["won"]) == [True, False]
    assert (history["closed_at"] < pd.Timestamp("2026-03-01", tz="UTC")).all()


def test_closed_exactly_at_the_cutoff_is_excluded():
    state = fit_feature_state(make_export(), "2026-02-20")
    assert list(state.closed_history()["account_id"]) == ["A3"]


def test_without_stage_history_there_are_no_stage_medians():
    state = fit_feature_state(make_export(drop=("stage_history",)), "2026-12-31")
    assert state.won_stage_days == {} and len(state.closed_at) == 3


def test_to_dict_is_json_safe_and_round_trips():
    state = fit_feature_state(random_export(80, seed=5), "2025-10-01")
    data = json.loads(json.dumps(state.to_dict()))
    assert FeatureState.from_dict(data) == state
    assert len(state.closed_at) > 10


def test_segments_and_first_amounts_of_closed_deals_by_hand():
    state = fit_feature_state(make_export(), "2026-12-31")
    # D4 (ent, 800, never changed), D2 (smb, 500), D1 (smb: 1000 at creation, 1500 after a change).
    history = state.closed_amount_history()
    assert list(history["segment"]) == ["ent", "smb", "smb"]
    assert list(history["first_amount"]) == [800.0, 500.0, 1000.0]
    assert list(history["closed_at"]) == list(state.closed_history()["closed_at"])


def test_without_field_history_first_amounts_are_unknown_and_still_round_trip():
    state = fit_feature_state(make_export(drop=("field_history",)), "2026-12-31")
    assert state.closed_amount_history()["first_amount"].isna().all()
    data = json.loads(json.dumps(state.to_dict()))
    assert data["closed_deals"]["first_amount"] == [None, None, None]
    assert FeatureState.from_dict(data) == state


def test_a_state_saved_without_segments_loads_with_an_empty_amount_history():
    data = fit_feature_state(make_export(), "2026-12-31").to_dict()
    for key in ("segment", "first_amount"):
        data["closed_deals"].pop(key)
    state = FeatureState.from_dict(data)
    assert len(state.closed_history()) == 3 and len(state.closed_amount_history()) == 0


def test_empty_state_round_trips():
    assert FeatureState.from_dict(FeatureState().to_dict()) == FeatureState()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=99), "version must be 1"),
        (lambda d: d.pop("closed_deals"), "missing or malformed field"),
        (lambda d: d["closed_deals"]["won"].append(True), "different lengths"),
        (lambda d: d["won_stage_days"].update(won=3.0), "unknown stages ['won']"),
        (lambda d: d["closed_deals"]["first_amount"].pop(), "one entry per closed deal"),
        (lambda d: d["closed_deals"].update(segment="smb"), "must be lists"),
        (lambda d: d["closed_deals"]["first_amount"].__setitem__(0, "lots"), "first_amount must be numbers or null"),
    ],
)
def test_from_dict_rejects_bad_state_naming_the_field(mutate, message):
    data = fit_feature_state(make_export(), "2026-12-31").to_dict()
    mutate(data)
    with pytest.raises(ValueError) as info:
        FeatureState.from_dict(data)
    assert message in str(info.value)


def test_from_dict_rejects_non_objects():
    with pytest.raises(ValueError, match="must be a JSON object"):
        FeatureState.from_dict([1, 2])


def test_fit_ignores_open_deals_and_naive_cutoffs_are_utc():
    export = make_export()
    state = fit_feature_state(Export(**{**export.tables()}), "2026-12-31 00:00")
    assert state.cutoff == pd.Timestamp("2026-12-31", tz="UTC")
    assert "A2" not in state.closed_account_id  # D3 is open
