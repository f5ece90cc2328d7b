"""Tests for features.pointintime.pipeline: hand-computed values per family, and laws that make leaks impossible to miss."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract.schema import (
    ACTIVITY_TYPES,
    OPEN_STAGES,
    ROLES,
    TIMESTAMP_DTYPE,
    TIMESTAMP_MAX,
    TIMESTAMP_MIN,
    Export,
)
from features.pointintime.definitions import FEATURE_NAMES, FEATURES
from features.pointintime.events import (
    FeatureInputError,
    forward_fill_last,
    group_cumcount,
    parse_as_of,
)
from features.pointintime.pipeline import (
    build_features,
    build_features_as_of,
    select_open_deals,
    subset_export,
)
from features.pointintime.state import fit_feature_state
from tests.factories import make_export, random_export, ts

UTC = "UTC"


def points_of(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"deal_id": [d for d, _ in pairs], "as_of": ts([t for _, t in pairs])})


@pytest.fixture
def export() -> Export:
    return make_export()


@pytest.fixture
def state(export):
    return fit_feature_state(export, "2026-12-31")


def features_at(export, state, deal_id, as_of) -> pd.Series:
    return build_features(export, points_of((deal_id, as_of)), state).iloc[0]


# --- shape ------------------------------------------------------------------------------------


def test_columns_are_deal_id_as_of_then_registry_order(export, state):
    frame = build_features(export, points_of(("D1", "2026-02-01"), ("D3", "2026-03-09")), state)
    assert list(frame.columns) == ["deal_id", "as_of", *FEATURE_NAMES]
    assert str(frame["as_of"].dtype) == TIMESTAMP_DTYPE


def test_rows_keep_the_points_order_and_index(export, state):
    points = points_of(("D3", "2026-03-09"), ("D1", "2026-02-01"), ("D3", "2026-02-02")).set_index(
        pd.Index([7, 3, 5])
    )
    frame = build_features(export, points, state)
    assert list(frame.index) == [7, 3, 5]
    assert list(frame["deal_id"]) == ["D3", "D1", "D3"]
    assert list(frame["as_of"]) == list(points["as_of"])


def test_empty_points_give_an_empty_frame_with_all_columns(export, state):
    frame = build_features(export, points_of(), state)
    assert len(frame) == 0 and list(frame.columns) == ["deal_id", "as_of", *FEATURE_NAMES]


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (points_of(("D9", "2026-03-01")), "row 0, column deal_id: deal 'D9' is not in deals"),
        (points_of(("D1", "2026-03-01"), ("D3", "2026-01-15")), "row 1, column as_of: 2026-01-15 00:00:00+00:00 is before deal 'D3' was created"),
        (pd.DataFrame({"deal_id": ["D1"]}), "points: missing column(s) ['as_of']"),
        (pd.DataFrame({"deal_id": ["D1"], "as_of": [None]}), "row 0, column as_of: missing timestamp"),
    ],
)
def test_bad_points_are_rejected_naming_row_and_column(export, state, points, message):
    with pytest.raises(FeatureInputError) as info:
        build_features(export, points, state)
    assert message in str(info.value)


# --- hand-computed values per family (see tests/factories.py for the events) --------------------


def test_stage_family_by_hand(export, state):
    row = features_at(export, state, "D1", "2026-03-01")
    # Entries up to 03-01: identify, qualify, propose, qualify (back), propose, negotiate (02-15).
    assert row["current_stage"] == "negotiate"
    assert row["days_in_stage"] == 14.0
    # Won deals in negotiate: D1 02-15 -> 03-10 = 23 days, D4 01-20 -> 02-15 = 26 days; median 24.5.
    assert row["days_in_stage_vs_won"] == pytest.approx(14 / 24.5)
    assert row["deal_age_days"] == 59.0
    assert row["stage_changes"] == 5.0
    assert row["stage_back_steps"] == 1.0
    # Close date moved 02-28 -> 03-15 on 02-10: 14 days ahead, one push of 15 days.
    assert row["days_to_expected_close"] == 14.0
    assert (row["close_date_pushes"], row["close_date_days_pushed"]) == (1.0, 15.0)
    assert (row["amount"], row["amount_change_ratio"]) == (1500.0, 1.5)


def test_stage_family_before_later_changes_uses_old_values(export, state):
    row = features_at(export, state, "D1", "2026-01-22")
    assert (row["current_stage"], row["days_in_stage"]) == ("propose", 1.0)
    # The close-date change on 02-10 is the future: the value then was its old_value, 02-28.
    assert row["days_to_expected_close"] == 37.0
    assert (row["close_date_pushes"], row["close_date_days_pushed"]) == (0.0, 0.0)
    assert (row["amount"], row["amount_change_ratio"]) == (1000.0, 1.0)


def test_untracked_field_falls_back_to_the_deals_row(export, state):
    row = features_at(export, state, "D2", "2026-02-01")  # D2 has no field_history rows
    assert (row["amount"], row["amount_change_ratio"], row["days_to_expected_close"]) == (500.0, 1.0, 19.0)


def test_decision_chain_family_by_hand(export, state):
    row = features_at(export, state, "D1", "2026-03-01")
    assert (row["contacts_count"], row["roles_present"]) == (3.0, 3.0)
    # Last 30 days: a3, a4 (champion C2) and a5 (technical evaluator C3).
    assert row["roles_engaged_30d"] == 2.0
    assert (row["decision_maker_engaged_30d"], row["days_since_decision_maker_engaged"]) == (0.0, 57.0)
    assert row["economic_buyer_engaged_30d"] == 0.0 and np.isnan(row["days_since_economic_buyer_engaged"])
    assert (row["champion_engaged_30d"], row["days_since_champion_engaged"]) == (1.0, 9.0)
    assert row["max_seniority_engaged_30d"] == 3.0  # director
    # Contact activities a1 (C1), a2-a4 (C2), a5 (C3): 3 people, C2 has 3 of 5.
    assert (row["contacts_engaged"], row["top_contact_share"]) == (3.0, 0.6)


def test_decision_maker_and_economic_buyer_shares_by_hand(export, state):
    points = points_of(("D1", "2026-01-20"), ("D1", "2026-03-01"), ("D3", "2026-03-09"), ("D3", "2026-03-10"),
                       ("D2", "2026-02-01"))
    frame = build_features(export, points, state)
    # D1 on 01-20: a1 (C1, decision maker) and a2 (C2, champion) in (12-21, 01-20]: 1 of 2.
    # D1 on 03-01: a3, a4 (champion), a5 (technical evaluator); a6 has no contact: 0 of 3.
    # D3 on 03-09: a8 (champion) only, a9's economic buyer C5 counts from 03-10; on 03-10: 1 of 2.
    # D2: no contact activity in the window: missing, not zero.
    assert frame["decision_maker_activity_share_30d"].tolist()[:4] == [0.5, 0.0, 0.0, 0.0]
    assert frame["economic_buyer_activity_share_30d"].tolist()[:4] == [0.0, 0.0, 0.0, 0.5]
    assert frame[["decision_maker_activity_share_30d", "economic_buyer_activity_share_30d"]].iloc[4].isna().all()
    assert frame["decision_maker_meetings_30d"].tolist() == [0.0] * 5


def test_decision_maker_meetings_count_the_window_only(export, state):
    meeting = export.activities.iloc[[0]].assign(activity_id="a10", type="meeting", occurred_at=ts(["2026-02-10"]))
    more = Export(**{**export.tables(), "activities": pd.concat([export.activities, meeting], ignore_index=True)})
    frame = build_features(more, points_of(("D1", "2026-02-10"), ("D1", "2026-03-11"), ("D1", "2026-03-12")), state)
    # The meeting with C1 on 02-10 is in (as_of - 30 days, as_of] on 02-10 and 03-11, not on 03-12.
    assert frame["decision_maker_meetings_30d"].tolist() == [1.0, 1.0, 0.0]
    # On 02-10: a2, a3 (champion) and a10 (decision maker) in (01-11, 02-10].
    assert frame["decision_maker_activity_share_30d"].iloc[0] == pytest.approx(1 / 3)


def test_largest_amount_cut_by_hand(export, state):
    cuts = pd.DataFrame({"deal_id": ["D3", "D3", "D3"], "field": "amount", "old_value": ["2000", "1000", "950"],
                         "new_value": ["1000", "950", "1900"], "changed_at": ts(["2026-02-10", "2026-02-20", "2026-03-01"])})
    fields = pd.concat([export.field_history, cuts], ignore_index=True)
    cut = Export(**{**export.tables(), "field_history": fields})
    frame = build_features(cut, points_of(("D3", "2026-02-05"), ("D3", "2026-02-10"), ("D3", "2026-02-25"),
                                          ("D3", "2026-03-05"), ("D1", "2026-03-01"), ("D2", "2026-02-01")), state)
    # D3: halved on 02-10 (0.5), then -5% (0.95), then doubled (1.0 cap): the largest cut stays 0.5.
    # D1's only change is an increase and D2 never changed: no cut (1.0).
    assert frame["largest_amount_cut"].tolist() == [1.0, 0.5, 0.5, 0.5, 1.0, 1.0]
    assert frame["amount"].tolist()[:4] == [2000.0, 1000.0, 950.0, 1900.0]


def test_amount_vs_segment_median_uses_deals_closed_by_as_of(export, state):
    points = points_of(("D1", "2026-02-19"), ("D1", "2026-03-01"), ("D1", "2026-03-10"), ("D3", "2026-03-09"))
    frame = build_features(export, points, state)
    # smb deals closed: D2 on 02-20 (first amount 500), D1 on 03-10 (first amount 1000, before its
    # change to 1500). Nothing yet on 02-19; 1500 / 500 on 03-01; 1500 / median(500, 1000) on 03-10.
    # D3 is "mid": no mid deal has closed.
    values = frame["amount_vs_segment_median"].tolist()
    assert np.isnan(values[0]) and values[1:3] == [3.0, 2.0] and np.isnan(values[3])


def test_amount_vs_segment_median_is_missing_with_an_older_state(export, state):
    data = state.to_dict()
    for key in ("segment", "first_amount"):
        data["closed_deals"].pop(key)
    older = type(state).from_dict(data)  # a bundle saved before segments were kept
    points = points_of(("D1", "2026-03-01"), ("D3", "2026-03-09"))
    frame, before = build_features(export, points, older), build_features(export, points, state)
    by_segment = ["amount_vs_segment_median", "first_amount_vs_segment_median"]
    assert frame[by_segment].isna().all().all() and before[by_segment].notna().any().all()
    others = [c for c in frame.columns if c not in by_segment]
    pd.testing.assert_frame_equal(frame[others], before[others])


def test_role_counts_only_once_the_contact_is_on_the_deal(export, state):
    # a9 (03-08) is with C5, an economic buyer added on 03-10.
    before = features_at(export, state, "D3", "2026-03-09")
    after = features_at(export, state, "D3", "2026-03-10")
    assert (before["contacts_count"], before["economic_buyer_engaged_30d"]) == (1.0, 0.0)
    assert (after["contacts_count"], after["economic_buyer_engaged_30d"]) == (2.0, 1.0)
    assert after["days_since_economic_buyer_engaged"] == 0.0


def test_engagement_family_by_hand(export, state):
    row = features_at(export, state, "D1", "2026-03-01")
    # Window (02-22, 03-01]: a5 demo, a6 email (exactly at as_of: included).
    assert (row["activities_7d"], row["demos_7d"], row["emails_7d"], row["calls_7d"]) == (2.0, 1.0, 1.0, 0.0)
    assert (row["activities_30d"], row["meetings_30d"], row["calls_30d"]) == (4.0, 1.0, 1.0)
    assert row["inbound_share"] == pytest.approx(2 / 6)
    assert (row["days_since_last_activity"], row["days_since_last_inbound"]) == (0.0, 0.0)
    # Last 14 days: a4, a5, a6 (3); the 14 before: a3 (1) -> (3 - 1) / 4.
    assert row["activity_trend_14d"] == 0.5
    assert row["meetings_held"] == 1.0
    assert (row["mean_customer_talk_ratio"], row["next_step_rate"]) == (pytest.approx(0.5), 0.5)


def test_context_family_by_hand(export, state):
    row = features_at(export, state, "D1", "2026-03-01")
    assert (row["deal_type"], row["segment"], row["region"], row["product"], row["lead_source"]) == (
        "new_business", "smb", "emea", "core", "web")
    # Closed by 03-01: D4 won (O1, A3) on 02-15, D2 lost (O2, A1) on 02-20; global rate 0.5.
    assert row["owner_closed_deals"] == 1.0
    assert row["owner_win_rate"] == pytest.approx((1 + 5 * 0.5) / (1 + 5))
    assert row["account_closed_deals"] == 1.0
    assert row["account_win_rate"] == pytest.approx((0 + 5 * 0.5) / (1 + 5))


def test_win_rates_are_missing_until_anything_has_closed(export, state):
    row = features_at(export, state, "D1", "2026-02-01")
    assert row["owner_closed_deals"] == 0.0 and np.isnan(row["owner_win_rate"])


def test_a_deal_without_events_has_zero_counts_and_missing_recency(export, state):
    row = features_at(export, state, "D2", "2026-02-01")
    assert (row["contacts_count"], row["activities_30d"], row["meetings_held"], row["roles_engaged_30d"]) == (0, 0, 0, 0)
    assert np.isnan(row["days_since_last_activity"]) and np.isnan(row["top_contact_share"])
    assert np.isnan(row["inbound_share"]) and np.isnan(row["mean_customer_talk_ratio"])


# --- missing tables: missing, not zero ------------------------------------------------------

ROLE_ENGAGEMENT = ["roles_engaged_30d", "max_seniority_engaged_30d",
                   *[f"{p}{r}_engaged{s}" for r in ("decision_maker", "economic_buyer", "champion")
                     for p, s in (("", "_30d"), ("days_since_", ""))],
                   "decision_maker_activity_share_30d", "economic_buyer_activity_share_30d", "champion_activity_share_30d",
                   "decision_maker_meeting_share", "economic_buyer_meeting_share", "decision_maker_meetings_30d"]
NEEDS_TABLE = {
    "stage_history": ["current_stage", "days_in_stage", "days_in_stage_vs_won", "stage_changes", "stage_back_steps"],
    "field_history": ["days_to_expected_close", "close_date_pushes", "close_date_days_pushed", "amount_change_ratio",
                      "largest_amount_cut", "amount", "amount_vs_segment_median", "planned_days_at_creation",
                      "first_amount_vs_segment_median",
                      "expected_close_in_quarter_last_month", "days_since_close_date_moved"],
    "contacts": ["contacts_count", "roles_present", *ROLE_ENGAGEMENT],
    "activities": [f.name for f in FEATURES if f.family == "engagement"]
    + ["contacts_engaged", "top_contact_share", *ROLE_ENGAGEMENT],
}


@pytest.mark.parametrize("table", list(NEEDS_TABLE))
def test_missing_table_makes_its_features_nan_and_leaves_the_rest(export, state, table):
    points = points_of(("D1", "2026-03-01"), ("D2", "2026-02-01"), ("D3", "2026-03-09"), ("D3", "2026-03-12"))
    full = build_features(export, points, state)
    partial = build_features(make_export(drop=(table,)), points, state)
    needed = NEEDS_TABLE[table]
    assert partial[needed].isna().all().all()
    counted = [c for c in needed if not c.startswith("days_since_")]  # "never happened" is NaN anyway
    assert full[counted].notna().any().all()  # each of them is known when the table is there
    others = [c for c in FEATURE_NAMES if c not in needed]
    pd.testing.assert_frame_equal(partial[others], full[others])


def test_present_but_empty_tables_give_zero_counts(state):
    base = make_export()
    empty = Export(deals=base.deals, **{n: t.iloc[0:0] for n, t in base.tables().items() if n != "deals"})
    row = build_features(empty, points_of(("D1", "2026-03-01")), state).iloc[0]
    assert (row["contacts_count"], row["activities_30d"], row["stage_changes"], row["close_date_pushes"]) == (0, 0, 0, 0)
    assert row["amount"] == 1500.0  # no tracked change at all: the deals row is the value
    assert pd.isna(row["current_stage"])


def test_missing_recorded_call_columns_give_nan(export, state):
    activities = export.activities.drop(columns=["customer_talk_ratio", "next_step_set"])
    frame = build_features(Export(**{**export.tables(), "activities": activities}), points_of(("D1", "2026-03-01")), state)
    assert frame[["mean_customer_talk_ratio", "next_step_rate"]].isna().all().all()
    assert frame["activities_30d"].iloc[0] == 4.0


# --- laws: batch equals single; nothing after as_of matters --------------------------------


def test_batch_features_equal_single_deal_features():
    export = random_export(60, seed=3)
    state = fit_feature_state(export, "2025-09-01")
    as_of = pd.Timestamp("2025-08-01", tz=UTC)
    points = pd.concat([select_open_deals(export, as_of),
                        select_open_deals(export, as_of - pd.Timedelta(days=45))], ignore_index=True)
    batch = build_features(export, points, state)
    for deal_id in points["deal_id"].drop_duplicates().iloc[:12]:
        mask = points["deal_id"] == deal_id
        single = build_features(subset_export(export, [deal_id]), points[mask], state)
        # To the last bit: running sums restart at each deal (events.group_running_sums).
        pd.testing.assert_frame_equal(single, batch[mask], check_exact=True)


def _append_future_events(export: Export, cut: pd.Timestamp, draw) -> Export:
    """Append events strictly after ``cut`` to every event table (field changes kept consistent)."""
    deals = export.deals
    rng = np.random.default_rng(draw["seed"])
    ids = deals["deal_id"].to_numpy()
    pick = ids[rng.integers(0, len(ids), draw["n"])]
    # Log-uniform delays, from a second to ~3 months: just after as_of is where off-by-one leaks live.
    later = ts(cut + pd.to_timedelta(10 ** rng.uniform(-5, 2, draw["n"]), unit="D"))
    stage_history = pd.concat([export.stage_history, pd.DataFrame(
        {"deal_id": pick, "stage": rng.choice(OPEN_STAGES + ("won", "lost"), draw["n"]), "entered_at": later})],
        ignore_index=True)
    contacts = pd.concat([export.contacts, pd.DataFrame({
        "deal_id": pick, "contact_id": [f"X{i}" for i in range(draw["n"])], "role": rng.choice(ROLES, draw["n"]),
        "seniority": rng.choice(["c_level", "vp", "individual"], draw["n"]), "added_at": later})], ignore_index=True)
    # Activities after cut, with new or existing contacts of the deal.
    existing = export.contacts.groupby("deal_id")["contact_id"].first()
    contact = np.where(rng.random(draw["n"]) < 0.5, pd.Series(pick).map(existing).to_numpy(dtype=object),
                       [f"X{i}" for i in range(draw["n"])])
    activities = pd.concat([export.activities, pd.DataFrame({
        "activity_id": [f"F{i}" for i in range(draw["n"])], "deal_id": pick, "contact_id": contact,
        "type": rng.choice(ACTIVITY_TYPES, draw["n"]), "direction": rng.choice(["inbound", "outbound"], draw["n"]),
        "occurred_at": later, "duration_min": 10.0, "customer_talk_ratio": 0.9,
        "next_step_set": pd.array([True] * draw["n"], dtype="boolean")})], ignore_index=True)
    # A later field change starts from the value current before it and becomes the new current value.
    fields = export.field_history
    last_change = fields.groupby("deal_id")["changed_at"].max()
    change_at = np.maximum(later, pd.Series(pick).map(last_change).fillna(cut).astype(TIMESTAMP_DTYPE)) \
        + pd.Timedelta(hours=1)
    new_amount = np.round(rng.uniform(10, 1e5, draw["n"]), 2)
    new_rows, current = [], deals.set_index("deal_id")["amount"].copy()
    for i in np.argsort(change_at.to_numpy(), kind="stable"):  # test-side loop: chain old -> new in time order
        deal_id = pick[i]
        new_rows.append((deal_id, "amount", str(current[deal_id]), str(new_amount[i]), change_at.iloc[i]))
        current[deal_id] = new_amount[i]
    field_history = pd.concat([fields, pd.DataFrame(new_rows, columns=fields.columns).astype(
        {"changed_at": TIMESTAMP_DTYPE})], ignore_index=True)
    new_deals = deals.assign(amount=deals["deal_id"].map(current).to_numpy(dtype=float))
    return Export(deals=new_deals, stage_history=stage_history, field_history=field_history, contacts=contacts,
                  activities=activities)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
    cut_day=st.integers(20, 330),
)
def test_events_after_as_of_never_change_the_features(seed, n, cut_day):
    export = random_export(15, seed=seed % 7)
    cut = pd.Timestamp("2025-01-01", tz=UTC) + pd.Timedelta(days=cut_day, hours=seed % 24)
    points = select_open_deals(export, cut)
    earlier = export.deals.loc[export.deals["created_at"] <= cut - pd.Timedelta(days=10), "deal_id"]
    points = pd.concat([points, pd.DataFrame({"deal_id": earlier.to_numpy(), "as_of": ts([cut - pd.Timedelta(days=10)] * len(earlier))})], ignore_index=True)
    state = fit_feature_state(export, cut)
    before = build_features(export, points, state)
    after = build_features(_append_future_events(export, cut, {"seed": seed, "n": n}), points, state)
    pd.testing.assert_frame_equal(before, after)


def test_scrambling_outcome_and_everything_after_as_of_changes_nothing():
    export = random_export(40, seed=11)
    cut = pd.Timestamp("2025-06-01", tz=UTC)
    points = select_open_deals(export, cut)
    assert len(points) > 5
    state = fit_feature_state(export, cut)
    before = build_features(export, points, state)
    rng = np.random.default_rng(0)
    deals, n = export.deals, len(export.deals)
    fields = export.field_history.sort_values(["deal_id", "changed_at"])
    after_cut = fields["changed_at"] > cut
    first_after = after_cut & ~fields.assign(a=after_cut).groupby(["deal_id", "field"])["a"].shift(1, fill_value=False)
    has_before = fields.assign(b=~after_cut).groupby(["deal_id", "field"])["b"].transform("any")
    # old_value of a deal's first change after the cut is the value at the cut unless an earlier change exists.
    keep_old = first_after & ~has_before
    noise = pd.Series(rng.uniform(1, 9e5, len(fields)).round(2).astype(str), index=fields.index)
    fields = fields.assign(
        new_value=fields["new_value"].where(~after_cut, noise),
        old_value=fields["old_value"].where(~after_cut | keep_old, noise),
    )
    changed_later = set(fields.loc[after_cut & (fields["field"] == "amount"), "deal_id"])
    changed_close_later = set(fields.loc[after_cut & (fields["field"] == "expected_close_date"), "deal_id"])
    scrambled_deals = deals.assign(
        outcome=rng.choice(["won", "lost", "open"], n),
        stage=rng.choice(OPEN_STAGES + ("won", "lost"), n),
        closed_at=ts(cut + pd.to_timedelta(rng.uniform(1, 300, n), unit="D")),
        amount=np.where(deals["deal_id"].isin(changed_later), rng.uniform(1, 1e6, n), deals["amount"]),
        expected_close_date=deals["expected_close_date"].where(
            ~deals["deal_id"].isin(changed_close_later), ts(cut + pd.to_timedelta(rng.uniform(1, 300, n), unit="D"))),
    )

    def scramble_after(table: pd.DataFrame, time_column: str, column: str, choices) -> pd.DataFrame:
        late = table[time_column] > cut
        values = table[column].astype(object).where(~late, rng.choice(choices, len(table)))
        shifted = table[time_column].where(~late, table[time_column] + pd.Timedelta(days=3))
        return table.assign(**{column: values, time_column: shifted})

    scrambled = Export(
        deals=scrambled_deals,
        stage_history=scramble_after(export.stage_history, "entered_at", "stage", OPEN_STAGES),
        field_history=fields,
        contacts=scramble_after(export.contacts, "added_at", "role", ROLES),
        activities=scramble_after(export.activities, "occurred_at", "type", ACTIVITY_TYPES),
    )
    after = build_features(scrambled, points, state)
    pd.testing.assert_frame_equal(before, after)
    # ...and the test can fail: scrambling something known at the cut does change features.
    leaked = Export(**{**scrambled.tables(), "activities": scramble_after(
        export.activities.assign(occurred_at=export.activities["occurred_at"] - pd.Timedelta(days=400)),
        "occurred_at", "type", ACTIVITY_TYPES)})
    assert not build_features(leaked, points, state).equals(before)


def test_state_fitted_later_does_not_change_win_rates_before_as_of(export):
    points = points_of(("D1", "2026-03-01"), ("D3", "2026-02-10"))
    early = build_features(export, points, fit_feature_state(export, "2026-03-02"))
    late = build_features(export, points, fit_feature_state(export, "2026-12-31"))
    rates = ["owner_win_rate", "owner_closed_deals", "account_win_rate", "account_closed_deals",
             "amount_vs_segment_median"]
    pd.testing.assert_frame_equal(early[rates], late[rates])


# --- helpers ---------------------------------------------------------------------------------


def test_group_cumcount_and_forward_fill_handle_empty_input():
    assert group_cumcount(np.zeros(0, dtype=int)).tolist() == []
    assert forward_fill_last(np.zeros(0, dtype=bool), np.zeros(0, dtype=int)).tolist() == []


def test_select_open_deals_excludes_closed_and_not_yet_created(export):
    points = select_open_deals(export, "2026-02-20")
    # D2 closed exactly at 02-20 (closed at or before: excluded); D4 closed 02-15; D1, D3 open.
    assert sorted(points["deal_id"]) == ["D1", "D3"]
    assert list(select_open_deals(export, "2026-01-03")["deal_id"]) == ["D1"]


def test_registry_features_all_produced_with_declared_kinds(export, state):
    frame = build_features(export, points_of(("D1", "2026-03-01")), state)
    for feature in FEATURES:
        value = frame[feature.name].iloc[0]
        if feature.kind == "categorical":
            assert isinstance(value, str), feature.name
        else:
            assert isinstance(value, (float, np.floating)), feature.name
            if feature.kind == "flag":
                assert value in (0.0, 1.0), feature.name


def test_state_from_json_gives_identical_features(export, state):
    restored = type(state).from_dict(json.loads(json.dumps(state.to_dict())))
    points = points_of(("D1", "2026-03-01"), ("D3", "2026-03-09"))
    pd.testing.assert_frame_equal(build_features(export, points, state), build_features(export, points, restored))


# --- run_features: the `dealrisk features` command -------------------------------------------


@pytest.fixture
def export_folder(tmp_path):
    from features.contract.io import write_tables

    tables = {name: table for name, table in make_export().tables().items() if table is not None}
    return write_tables(tables, tmp_path / "export")


def test_features_command_writes_open_deals_as_known_then(export_folder, tmp_path):
    from typer.testing import CliRunner

    from dealrisk.cli import app
    from features.contract.load import load_export

    out = tmp_path / "out" / "features.parquet"
    result = CliRunner().invoke(app, ["features", "--data", str(export_folder), "--as-of", "2026-03-01T00:00:00Z",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(out)
    export = load_export(export_folder)
    as_of = pd.Timestamp("2026-03-01", tz=UTC)
    expected = build_features(export, select_open_deals(export, as_of), fit_feature_state(export, as_of))
    assert list(written["deal_id"]) == ["D1", "D3"]
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    # The state was fitted on deals closed before as_of: D1 (won 03-10) is not in the stage medians.
    assert written["days_in_stage_vs_won"].iloc[0] == pytest.approx(14 / 26)


def test_features_command_reports_a_bad_as_of(export_folder, tmp_path):
    from features.commands import run_features

    with pytest.raises(FeatureInputError, match="as_of: 'not a date' is not a timestamp"):
        run_features(export_folder, "not a date", tmp_path / "f.csv")
    from typer.testing import CliRunner

    from dealrisk.cli import app

    result = CliRunner().invoke(app, ["features", "--data", str(export_folder), "--as-of", "soon",
                                      "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 1 and "as_of: 'soon' is not a timestamp" in result.output
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.parametrize("as_of", ["2026-" * 20_000, "\x00" + "9" * 100, "0001-01-01" + " " * 100_000])
def test_a_bad_as_of_is_echoed_cut_and_escaped(as_of):
    with pytest.raises(FeatureInputError) as info:
        parse_as_of(as_of)
    message = str(info.value)
    assert message.startswith("as_of: '") and "…" in message and len(message) < 200 and "\x00" not in message


@pytest.mark.parametrize("as_of", ["0001-01-01", "1969-12-31T23:59:59Z", "2200-01-01T00:00:01Z", "2999-06-30"])
def test_an_as_of_outside_the_contracts_range_is_refused_not_an_empty_file(export_folder, tmp_path, as_of):
    # Year 1 used to select no open deal and write a header-only file with exit 0.
    from typer.testing import CliRunner

    from dealrisk.cli import app

    with pytest.raises(FeatureInputError, match="outside the supported range 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z"):
        parse_as_of(as_of)
    result = CliRunner().invoke(app, ["features", "--data", str(export_folder), "--as-of", as_of, "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 1 and "is outside the supported range" in result.output
    assert not (tmp_path / "f.csv").exists()
    assert parse_as_of("1970-01-01T00:00:00Z") == TIMESTAMP_MIN and parse_as_of("2200-01-01") == TIMESTAMP_MAX


def test_codebook_small_and_large_paths_agree():
    from features.pointintime.events import Codebook

    values = [f"D{i}" for i in range(5000)]  # above the dict-lookup size: the pd.Index path
    queries = pd.Series(["D4999", None, "nope", "D0", "D4999"], dtype="str")
    assert Codebook(values).encode(queries).tolist() == [4999, -1, -1, 0, 4999]
    assert Codebook(values[:10]).encode(queries).tolist() == [-1, -1, -1, 0, -1]


def test_features_as_of_equal_features_of_every_deal_at_that_time():
    export = random_export(30, seed=5)
    as_of = pd.Timestamp("2026-01-15", tz=UTC)
    created = export.deals[export.deals["created_at"] <= as_of]
    request = subset_export(export, created["deal_id"])  # a request: its deals, all created by as_of
    state = fit_feature_state(export, as_of)
    points = pd.DataFrame({"deal_id": request.deals["deal_id"], "as_of": ts([as_of] * len(request.deals))},
                          index=request.deals.index)
    pd.testing.assert_frame_equal(build_features_as_of(request, as_of, state), build_features(request, points, state))
    later = export.deals["created_at"].idxmax()
    with pytest.raises(FeatureInputError, match=rf"row {later}, column as_of: .* is before deal"):
        build_features_as_of(export, export.deals["created_at"].max() - pd.Timedelta(seconds=1), state)
