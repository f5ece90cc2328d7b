"""Tests for the CRM export generator (generator.export): contract shape, marginals, truth."""

from __future__ import annotations

import pandas as pd
import pytest

from features.contract.check import check_tables
from features.contract.schema import (
    ACTIVITY_TYPES,
    DEAL_TYPES,
    OPEN_STAGES,
    ROLES,
    SENIORITIES,
    STAGE_ORDER,
    STAGES,
    TABLES,
)
from generator.export import (
    TRUTH_COLUMNS,
    generate_export,
    resolve_truth_path,
    run_generate,
    summarize_export,
)

ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
EXPORT_DATE = pd.Timestamp("2026-07-01T00:00:00Z")


@pytest.fixture(scope="module")
def generated():
    """One small export shared by the read-only tests (a few hundred deals, fast)."""
    return generate_export(600, seed=11, truth_snapshots=400, n_paths=120)


@pytest.fixture(scope="module")
def parsed(generated):
    """Deals and events with parsed timestamps, for the checks that compare times."""
    t = generated.tables
    ts = lambda s: pd.to_datetime(s, utc=True, format="ISO8601")  # noqa: E731
    deals = t["deals"].assign(created=lambda d: ts(d.created_at), closed=lambda d: ts(d.closed_at))
    return {
        "deals": deals,
        "stage_history": t["stage_history"].assign(at=lambda d: ts(d.entered_at)),
        "contacts": t["contacts"].assign(at=lambda d: ts(d.added_at)),
        "activities": t["activities"].assign(at=lambda d: ts(d.occurred_at)),
        "field_history": t["field_history"].assign(at=lambda d: ts(d.changed_at)),
    }


def test_generate_export_is_deterministic_for_a_seed():
    first = generate_export(120, seed=5, truth_snapshots=40, n_paths=30)
    again = generate_export(120, seed=5, truth_snapshots=40, n_paths=30)
    other = generate_export(120, seed=6, truth_snapshots=40, n_paths=30)
    for name in TABLES:
        pd.testing.assert_frame_equal(first.tables[name], again.tables[name])
    pd.testing.assert_frame_equal(first.truth, again.truth)
    assert not first.tables["activities"].equals(other.tables["activities"])


def test_generate_export_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_deals"):
        generate_export(0, seed=1)
    with pytest.raises(ValueError, match="span_days"):
        generate_export(10, seed=1, span_days=0)


def test_export_has_exactly_the_contract_columns_and_no_hidden_state(generated):
    hidden = {"quality", "pace", "momentum", "budget", "champion", "dm", "eb", "health", "fit", "true_win_probability"}
    for name, frame in generated.tables.items():
        assert list(frame.columns) == TABLES[name].column_names, name
        assert not hidden & set(frame.columns), name


def test_names_and_timestamps_are_canonical(generated):
    t = generated.tables
    assert set(t["deals"]["stage"]) <= set(STAGES)
    assert set(t["stage_history"]["stage"]) <= set(STAGES)
    assert set(t["contacts"]["role"]) <= set(ROLES)
    assert set(t["contacts"]["seniority"].dropna()) <= set(SENIORITIES)
    assert set(t["activities"]["type"]) == set(ACTIVITY_TYPES)
    for name, table in TABLES.items():
        for column in table.columns:
            if column.kind == "timestamp":
                values = t[name][column.name].dropna()
                assert values.str.match(ISO_UTC).all(), f"{name}.{column.name}"


def test_marginals_are_in_range(generated, parsed):
    summary = summarize_export(generated.tables)
    assert 0.20 <= summary["closed_win_rate"] <= 0.35
    assert summary["median_cycle_days_won"] < summary["median_cycle_days_lost"]
    assert summary["open_deals"] > 0.1 * len(generated.tables["deals"])  # right-censored: recent deals open
    assert set(generated.tables["deals"]["deal_type"]) == set(DEAL_TYPES)
    per_deal = generated.tables["contacts"].groupby("deal_id").size()
    assert len(per_deal) == len(generated.tables["deals"])
    assert per_deal.min() >= 1 and per_deal.max() <= 10 and per_deal.max() >= 6


def test_history_has_back_steps_pushes_and_amount_changes(generated, parsed):
    history = parsed["stage_history"].sort_values(["deal_id", "at"], kind="stable")
    order = history["stage"].map(STAGE_ORDER)
    previous = order.groupby(history["deal_id"]).shift()
    assert (order < previous).sum() >= 5  # back-steps
    fields = generated.tables["field_history"]
    dates = fields[fields["field"] == "expected_close_date"]
    pushes = pd.to_datetime(dates["new_value"]) > pd.to_datetime(dates["old_value"])
    assert pushes.sum() >= 20
    amounts = fields[fields["field"] == "amount"]
    assert len(amounts) >= 5 and amounts["new_value"].astype(float).notna().all()


def test_stage_history_matches_deals(parsed):
    deals = parsed["deals"].set_index("deal_id")
    history = parsed["stage_history"]
    assert history.groupby("deal_id")["at"].apply(lambda s: s.is_monotonic_increasing).all()
    first = history.groupby("deal_id").first()
    last = history.groupby("deal_id").last()
    assert (first["stage"] == "identify").all()
    assert (first["at"] == deals.loc[first.index, "created"]).all()
    assert (last["stage"] == deals.loc[last.index, "stage"]).all()
    closed = deals["outcome"] != "open"
    assert deals.loc[closed, "closed"].notna().all() and deals.loc[~closed, "closed"].isna().all()
    assert (deals.loc[closed, "stage"] == deals.loc[closed, "outcome"]).all()
    assert deals.loc[~closed, "stage"].isin(OPEN_STAGES).all()


def test_events_lie_between_creation_and_export_date(parsed):
    created = parsed["deals"].set_index("deal_id")["created"]
    for name in ("stage_history", "contacts", "activities", "field_history"):
        frame = parsed[name]
        assert (frame["at"] >= created.loc[frame["deal_id"]].to_numpy()).all(), name
        assert (frame["at"] < EXPORT_DATE).all(), name


def test_activities_reference_contacts_of_their_deal(generated):
    activities = generated.tables["activities"]
    contacts = generated.tables["contacts"]
    with_contact = activities.dropna(subset=["contact_id"])
    assert len(with_contact) > 0.8 * len(activities)  # contact_id mostly set
    pairs = set(zip(contacts["deal_id"], contacts["contact_id"]))
    assert all(pair in pairs for pair in zip(with_contact["deal_id"], with_contact["contact_id"]))
    recorded = activities["customer_talk_ratio"].notna()
    assert activities.loc[recorded, "type"].isin(["call", "meeting"]).all()
    assert activities["customer_talk_ratio"].dropna().between(0, 1).all()
    assert set(activities["direction"]) == {"inbound", "outbound"}


def test_truth_has_a_creation_row_per_deal_and_snapshots_of_open_deals(generated, parsed):
    truth = generated.truth
    assert list(truth.columns) == TRUTH_COLUMNS
    creation = truth[truth["kind"] == "creation"]
    assert sorted(creation["deal_id"]) == sorted(generated.tables["deals"]["deal_id"])
    created_at = creation["deal_id"].map(generated.tables["deals"].set_index("deal_id")["created_at"])
    assert creation["as_of"].tolist() == created_at.tolist()  # the k = 0 point of the weekly grid
    snaps = truth[truth["kind"] == "snapshot"].merge(parsed["deals"], on="deal_id")
    assert len(snaps) > 300
    as_of = pd.to_datetime(snaps["as_of"], utc=True)
    assert (snaps["created"] <= as_of).all()
    assert (snaps["closed"].isna() | (snaps["closed"] > as_of)).all()
    assert snaps["outcome"].eq("open").any() and snaps["outcome"].ne("open").any()
    assert truth["true_win_probability"].between(0, 1).all()


def test_truth_at_creation_is_calibrated_on_deals_that_had_time_to_close(generated, parsed):
    creation = generated.truth[generated.truth["kind"] == "creation"].merge(parsed["deals"], on="deal_id")
    early = creation[creation["created"] < EXPORT_DATE - pd.Timedelta(days=400)]
    assert early["outcome"].ne("open").mean() > 0.97
    assert abs(early["outcome"].eq("won").mean() - early["true_win_probability"].mean()) < 0.06


def test_truth_carries_the_decision_maker_signal_but_is_not_deterministic(generated, parsed):
    snaps = generated.truth[generated.truth["kind"] == "snapshot"].assign(
        as_of_ts=lambda d: pd.to_datetime(d["as_of"], utc=True)
    )
    dm_contacts = generated.tables["contacts"].query("role == 'decision_maker'")[["deal_id", "contact_id"]]
    dm_activities = parsed["activities"].merge(dm_contacts, on=["deal_id", "contact_id"])[["deal_id", "at"]]
    joined = snaps.merge(dm_activities, on="deal_id", how="left")
    recent = (joined["at"] <= joined["as_of_ts"]) & (joined["at"] > joined["as_of_ts"] - pd.Timedelta(days=30))
    engaged = recent.groupby([joined["deal_id"], joined["as_of"]]).any()
    p = snaps.set_index(["deal_id", "as_of"])["true_win_probability"]
    engaged = engaged.reindex(p.index)
    assert engaged.sum() >= 20 and (~engaged).sum() >= 20
    assert p[engaged].mean() - p[~engaged].mean() > 0.15
    inside = p.between(0.05, 0.95, inclusive="neither")
    assert inside.mean() > 0.6  # no export determines the outcome


def test_messy_export_lists_every_planted_problem():
    messy = generate_export(150, seed=2, truth_snapshots=10, n_paths=20, messy=True)
    planted = messy.planted
    assert set(planted["kind"]) == {
        "duplicate_id", "unknown_stage", "missing_value", "non_utc_timestamp", "malformed_timestamp",
        "before_deal_created",
    }
    for row in planted.itertuples():
        cell = messy.tables[row.table].iloc[row.row - 1][row.column]  # rows count from 1, as the contract's
        assert (pd.isna(cell) and row.value == "") or str(cell) == row.value
    clean = generate_export(150, seed=2, truth_snapshots=10, n_paths=20)
    assert clean.planted is None and len(messy.tables["deals"]) > len(clean.tables["deals"])


def test_truth_file_is_written_beside_never_inside_the_export(tmp_path):
    out = tmp_path / "export"
    run_generate(n_deals=60, seed=1, out=out, truth=None, span_days=200, truth_snapshots=20)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.csv" for name in TABLES)
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert list(truth.columns) == TRUTH_COLUMNS and len(truth) >= 60
    with pytest.raises(ValueError, match="must not be inside"):
        resolve_truth_path(out, out / "truth.csv")
    with pytest.raises(ValueError, match="must not be inside"):
        run_generate(n_deals=10, seed=1, out=out, truth=out / "sub" / "t.csv", span_days=50, truth_snapshots=5)


def test_generated_export_passes_the_contract(generated):
    result = check_tables(generated.tables)
    assert result.violations == [] and result.ok


def test_contract_reports_every_planted_problem():
    messy = generate_export(200, seed=4, truth_snapshots=10, n_paths=20, messy=True)
    result = check_tables(messy.tables)
    reported = {(v.table, v.column, v.row.split(" (")[0]) for v in result.violations}
    missed = [
        (p.table, p.column, p.row_key, p.kind)
        for p in messy.planted.itertuples()
        if (p.table, p.column, f"row {p.row}") not in reported
    ]
    assert missed == []
