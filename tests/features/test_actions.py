"""features.model.actions on hand-built deals and tiny LightGBM models fitted on inline data.

The models are fitted here (no training package): one feature each, with its monotone direction,
so the right answer for a hand-built deal is known: the gain of "engage the economic buyer" on a
deal without an engaged economic buyer is exactly p(engaged) - p(not engaged).
"""

from __future__ import annotations

from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.contract.check import check_tables
from features.contract.schema import TIMESTAMP_DTYPE
from features.model.actions import (
    DEFAULT_ACTIONS,
    GAIN_NOTE,
    MIN_GAIN_POINTS,
    actions_by_deal,
    append_rows,
    evaluate_actions,
    next_best_actions,
    situation_as_of,
)
from features.model.bundle import Calibration, ModelBundle
from features.pointintime.pipeline import build_features, build_features_as_of, subset_export
from features.pointintime.state import fit_feature_state
from tests.factories import frame, make_export, random_export

AS_OF = pd.Timestamp("2026-03-20T12:00:00Z")


def one_feature_bundle(feature: str, direction: int, rates: tuple[float, float], state, share: bool = False) -> ModelBundle:
    """A bundle whose win model reads one feature, fitted on inline rows with its monotone direction.

    A flag (0/1) wins at ``rates[0]`` / ``rates[1]``; a ``share`` (uniform 0..1) at the rate between
    them in proportion. Identity calibrations.
    """
    rng = np.random.default_rng(0)
    x = rng.random(size=(2000, 1)) if share else rng.integers(0, 2, size=(2000, 1)).astype(float)
    y = (rng.random(2000) < rates[0] + (rates[1] - rates[0]) * x[:, 0]).astype(float)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 4, "min_data_in_leaf": 5,
                         "monotone_constraints": [direction]}, lgb.Dataset(x, y), num_boost_round=20)
    identity = Calibration(x=(0.0, 1.0), y=(0.0, 1.0))
    return ModelBundle(win_model=booster, slip_model=booster, win_calibration=identity, slip_calibration=identity,
                       feature_state=state.to_dict(), features={"names": [feature], "categorical": {}})


def hand_export():
    """The factory export plus D5, open since 2026-03-01: one champion (C6), a meeting with them on
    03-10 and their inbound email on 03-15 (the customer had the last word); no economic buyer."""
    export = make_export()
    deal = frame([("D5", "A4", "O2", "2026-03-01", 900.0, "new_business", "web", "smb", "emea", "core", "propose",
                   "2026-04-30", None, "open")], list(export.deals.columns), times=("created_at", "expected_close_date",
                                                                                     "closed_at"))
    contact = frame([("D5", "C6", "champion", "manager", "2026-03-01")], list(export.contacts.columns), times=("added_at",))
    activities = frame([("a10", "D5", "C6", "meeting", "outbound", "2026-03-10", 30.0, np.nan, None),
                        ("a11", "D5", "C6", "email", "inbound", "2026-03-15", np.nan, np.nan, None)],
                       list(export.activities.columns), times=("occurred_at",))
    stages = frame([("D5", "identify", "2026-03-01"), ("D5", "propose", "2026-03-05")], list(export.stage_history.columns),
                   times=("entered_at",))
    grow = {"deals": deal, "contacts": contact, "activities": activities, "stage_history": stages}
    return replace(export, **{name: pd.concat([export.table(name), rows.astype(export.table(name).dtypes.to_dict())],
                                              ignore_index=True) for name, rows in grow.items()})


@pytest.fixture(scope="module")
def export():
    return hand_export()


@pytest.fixture(scope="module")
def state(export):
    return fit_feature_state(export, "2026-12-31")


@pytest.fixture(scope="module")
def eb_bundle(state):
    """Win 0.30 without an engaged economic buyer, 0.70 with one (monotone +1)."""
    return one_feature_bundle("economic_buyer_engaged_30d", 1, (0.3, 0.7), state)


def win_of(bundle, value: float) -> float:
    return float(bundle.win_model.predict(np.array([[value]]))[0])


def test_engaging_the_economic_buyer_gains_exactly_what_the_model_says(export, eb_bundle):
    """D5 has no economic buyer: the action adds one and a meeting, the flag goes 0 -> 1. D3's
    economic buyer was emailed 12 days ago (engaged): nothing moves the flag, so no action shows."""
    actions = next_best_actions(eb_bundle, export, AS_OF)
    expected = (win_of(eb_bundle, 1.0) - win_of(eb_bundle, 0.0)) * 100
    assert expected > 30
    assert actions["deal_id"].tolist() == ["D5"]
    best = actions.iloc[0]
    assert (best["rank"], best["action"]) == (1, "engage_economic_buyer")
    assert best["gain_points"] == pytest.approx(expected, abs=1e-5)
    assert best["win_probability"] == pytest.approx(win_of(eb_bundle, 0.0))
    assert best["sentence"] == f"Engage the economic buyer: +{round(expected)} points"


def test_every_applicable_action_is_evaluated_and_the_rest_is_not_recommended(export, eb_bundle):
    tried = evaluate_actions(eb_bundle, export, AS_OF)
    d5 = tried[tried["deal_id"] == "D5"].set_index("action")
    # D5: one contact engaged (second contact applies), the last activity inbound (reply applies),
    # a close date ahead (confirm applies).
    assert d5.index.tolist() == [a.key for a in DEFAULT_ACTIONS]
    assert d5.loc["engage_economic_buyer", "recommended"]
    assert not d5.drop(index="engage_economic_buyer")["recommended"].any()
    assert (d5.drop(index="engage_economic_buyer")["gain_points"] == 0).all()
    d3 = tried[tried["deal_id"] == "D3"]
    # D3: two contacts engaged and an outbound email last: no second contact, no reply.
    assert d3["action"].tolist() == ["engage_economic_buyer", "engage_decision_maker", "meeting", "confirm_close_date"]
    assert (d3["gain_points"] == 0).all() and not d3["recommended"].any()


def test_a_step_the_model_says_lowers_the_score_is_not_recommended(export, state):
    """A model that rewards the inbound share: every outbound touch lowers it, so the gains are
    negative; they are kept in evaluate_actions and never shown."""
    bundle = one_feature_bundle("inbound_share", 1, (0.2, 0.6), state, share=True)
    tried = evaluate_actions(bundle, export, "2026-03-16T00:00:00Z", deal_ids=["D5"])
    # D5 as of 03-16: one outbound meeting, one inbound email -> share 0.5; one more outbound -> 1/3.
    assert (tried.set_index("action").loc[["meeting", "reply"], "gain_points"] < 0).all()
    assert not tried["recommended"].any()
    assert next_best_actions(bundle, export, "2026-03-16T00:00:00Z", deal_ids=["D5"]).empty


def test_confirming_the_close_date_changes_no_feature(export, state):
    """Logged unchanged, the close date moves nothing the model reads: never a push, never a gain."""
    features = build_features_as_of(subset_export(export, ["D3", "D5"]), AS_OF, state)
    situation = situation_as_of(export, ["D3", "D5"], AS_OF, features)
    rows = dict(DEFAULT_ACTIONS_BY_KEY["confirm_close_date"].rows(situation))
    assert rows["field_history"]["deal_id"].tolist() == ["D3", "D5"]
    assert (rows["field_history"]["old_value"] == rows["field_history"]["new_value"]).all()
    confirmed = build_features_as_of(subset_export(append_rows(export, rows), ["D3", "D5"]), AS_OF, state)
    pd.testing.assert_frame_equal(confirmed, features)


def test_a_stale_close_date_is_not_confirmed(export, state):
    """As of 05-20 D3's close date (04-30) is past: confirming it would need a new date, a push."""
    late = pd.Timestamp("2026-05-20T00:00:00Z")
    features = build_features_as_of(subset_export(export, ["D3", "D5"]), late, state)
    rows = DEFAULT_ACTIONS_BY_KEY["confirm_close_date"].rows(situation_as_of(export, ["D3", "D5"], late, features))
    assert rows["field_history"].empty


DEFAULT_ACTIONS_BY_KEY = {action.key: action for action in DEFAULT_ACTIONS}


def test_appended_rows_pass_the_contract_with_new_unique_ids(export, state):
    """Each action's rows, appended to the whole export, pass check_tables; ids already taken get a suffix."""
    taken = frame([("nba-meeting-D5", "D5", "C6", "call", "outbound", "2026-03-11", 5.0, np.nan, None)],
                  list(export.activities.columns), times=("occurred_at",))
    export = append_rows(export, {"activities": taken})
    features = build_features_as_of(subset_export(export, ["D3", "D5"]), AS_OF, state)
    situation = situation_as_of(export, ["D3", "D5"], AS_OF, features)
    for action in DEFAULT_ACTIONS:
        rows = action.rows(situation)
        assert rows, action.key
        result = check_tables(append_rows(export, rows).tables())
        assert not result.violations, (action.key, result.violations[:3])
        for name, table in rows.items():
            times = table[{"activities": "occurred_at", "contacts": "added_at", "field_history": "changed_at"}[name]]
            assert (times == AS_OF).all(), (action.key, name)
    meeting = DEFAULT_ACTIONS_BY_KEY["meeting"].rows(situation)["activities"].set_index("deal_id")
    assert meeting.loc["D5", "activity_id"] == "nba-meeting-D5-2"
    assert meeting.loc["D5", "contact_id"] == "C6"  # the contact last spoken to
    assert meeting.loc["D3", "contact_id"] == "C5"
    engage = DEFAULT_ACTIONS_BY_KEY["engage_economic_buyer"].rows(situation)
    assert engage["contacts"][["deal_id", "role"]].values.tolist() == [["D5", "economic_buyer"]]  # D3 has one: C5
    assert engage["activities"].set_index("deal_id")["contact_id"].to_dict() == {
        "D3": "C5", "D5": engage["contacts"]["contact_id"].iloc[0]}
    reply = DEFAULT_ACTIONS_BY_KEY["reply"].rows(situation)["activities"]
    assert reply[["deal_id", "contact_id", "type", "direction"]].values.tolist() == [["D5", "C6", "email", "outbound"]]


def test_nothing_after_as_of_changes_the_actions(export, eb_bundle):
    """Events after as_of (an economic buyer met, a reply sent, a new close date) are invisible."""
    later = {
        "contacts": frame([("D5", "C7", "economic_buyer", "vp", "2026-03-25")], list(export.contacts.columns),
                          times=("added_at",)),
        "activities": frame([("a12", "D5", "C7", "meeting", "outbound", "2026-03-26", 30.0, np.nan, None),
                             ("a13", "D5", "C6", "email", "outbound", "2026-03-21", np.nan, np.nan, None)],
                            list(export.activities.columns), times=("occurred_at",)),
        "field_history": frame([("D5", "expected_close_date", "2026-04-30", "2026-06-30", "2026-03-27")],
                               list(export.field_history.columns), times=("changed_at",)),
    }
    grown = append_rows(export, later)
    pd.testing.assert_frame_equal(evaluate_actions(eb_bundle, grown, AS_OF), evaluate_actions(eb_bundle, export, AS_OF))
    # ... and they do count once as_of is after them: the economic buyer is engaged by then.
    assert next_best_actions(eb_bundle, grown, "2026-03-28T00:00:00Z").empty


def test_actions_write_only_to_tables_the_export_has(export, eb_bundle, state):
    without_contacts = replace(export, contacts=None)
    tried = evaluate_actions(eb_bundle, without_contacts, AS_OF)
    assert set(tried["action"]) == {"meeting", "reply", "confirm_close_date"}
    assert (tried["gain_points"] == 0).all()  # the flag stays missing: nothing a step could earn
    only_deals = replace(export, contacts=None, activities=None, field_history=None)
    assert evaluate_actions(eb_bundle, only_deals, AS_OF).empty


def random_bundle(export, state) -> ModelBundle:
    """A small model on several features the actions move, fitted on the export's own feature rows."""
    names = ["economic_buyer_engaged_30d", "decision_maker_engaged_30d", "meetings_30d", "contacts_engaged",
             "inbound_share", "days_since_last_activity"]
    created = export.deals["created_at"]
    points = pd.DataFrame({"deal_id": export.deals["deal_id"], "as_of": (created + pd.Timedelta(days=20)).astype(TIMESTAMP_DTYPE)})
    x = build_features(export, points, state)[names].to_numpy(dtype=float)
    rng = np.random.default_rng(1)
    logit = 1.2 * np.nan_to_num(x[:, 0]) + 0.8 * np.nan_to_num(x[:, 1]) + 0.3 * np.nan_to_num(x[:, 2]) - 1.0
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(float)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 4, "min_data_in_leaf": 3,
                         "monotone_constraints": [1, 1, 1, 1, 1, -1]}, lgb.Dataset(x, y), num_boost_round=30)
    identity = Calibration(x=(0.0, 1.0), y=(0.0, 1.0))
    return ModelBundle(win_model=booster, slip_model=booster, win_calibration=identity, slip_calibration=identity,
                       feature_state=state.to_dict(), features={"names": names, "categorical": {}})


def test_batch_equals_per_deal():
    """All open deals in one call give what each deal alone gives (its one-deal export)."""
    export = random_export(120, seed=4)
    as_of = pd.Timestamp("2025-10-01T00:00:00Z")
    state = fit_feature_state(export, as_of)
    bundle = random_bundle(export, state)
    batch = next_best_actions(bundle, export, as_of, state=state)
    assert batch["deal_id"].nunique() >= 5 and set(batch["action"]) >= {"engage_economic_buyer", "engage_decision_maker"}
    alone = pd.concat([next_best_actions(bundle, subset_export(export, [deal]), as_of, state=state)
                       for deal in pd.unique(evaluate_actions(bundle, export, as_of, state=state)["deal_id"])],
                      ignore_index=True)
    pd.testing.assert_frame_equal(batch.drop(columns=["gain_points", "win_probability_after"]),
                                  alone.drop(columns=["gain_points", "win_probability_after"]))
    np.testing.assert_allclose(batch["gain_points"], alone["gain_points"], atol=1e-5)
    assert (batch["gain_points"] >= MIN_GAIN_POINTS).all()
    assert (batch.groupby("deal_id")["gain_points"].apply(lambda g: g.is_monotonic_decreasing)).all()
    assert batch.groupby("deal_id")["rank"].max().max() <= 3
    grouped = actions_by_deal(batch)
    first = batch["deal_id"].iloc[0]
    assert [a["sentence"] for a in grouped[first]] == batch.loc[batch["deal_id"] == first, "sentence"].tolist()


def test_top_and_deal_ids_are_checked(export, eb_bundle):
    with pytest.raises(ValueError, match="top: expected at least 1"):
        next_best_actions(eb_bundle, export, AS_OF, top=0)
    with pytest.raises(ValueError, match="deal_ids: 'D9' is not a deal_id"):
        evaluate_actions(eb_bundle, export, AS_OF, deal_ids=["D5", "D9"])
    with pytest.raises(ValueError, match="may only append to tables it has"):
        append_rows(replace(export, contacts=None), {"contacts": export.contacts.head(1)})
    assert next_best_actions(eb_bundle, export, AS_OF, top=1, deal_ids=[]).empty


def test_the_note_says_the_gain_is_an_estimate_not_a_cause():
    assert "estimate" in GAIN_NOTE and "not a promise" in GAIN_NOTE
