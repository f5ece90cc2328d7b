"""The generator's truth on the training snapshots' weekly grid (generator.export: ``truth_grid_*``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.contract.check import check_tables
from features.contract.schema import TABLES
from features.pointintime.snapshots import sample_snapshots, select_mature_deals
from generator.export import HIDDEN_STATE_COLUMNS, TRUTH_COLUMNS, generate_export
from generator.simulation import SimulationParams

DEALS, SEED = 700, 13


@pytest.fixture(scope="module")
def gridded():
    """Every weekly point (50 per deal is more than any deal has) of the 250 latest mature deals."""
    return generate_export(DEALS, SEED, truth_snapshots=0, n_paths=60, truth_grid_deals=250, truth_grid_points=50)


@pytest.fixture(scope="module")
def export(gridded):
    return check_tables(gridded.tables).export


def keys(frame: pd.DataFrame) -> pd.Series:
    return frame["deal_id"] + "|" + pd.to_datetime(frame["as_of"], utc=True).dt.strftime("%Y-%m-%dT%H:%M")


def test_the_grid_changes_no_table_and_no_other_truth_row(gridded):
    plain = generate_export(DEALS, SEED, truth_snapshots=0, n_paths=60)
    for name in TABLES:
        pd.testing.assert_frame_equal(plain.tables[name], gridded.tables[name])
    creation = gridded.truth[gridded.truth["kind"] == "creation"].reset_index(drop=True)
    pd.testing.assert_frame_equal(plain.truth, creation)


def test_grid_rows_are_exactly_the_training_snapshots_weekly_points(gridded, export):
    grid = gridded.truth[gridded.truth["kind"] == "grid"]
    assert len(grid) > 1000
    weekly = sample_snapshots(export, deal_ids=grid["deal_id"].unique())
    created = export.deals.set_index("deal_id")["created_at"]
    weeks = (weekly["as_of"] - weekly["deal_id"].map(created)) / pd.Timedelta(days=7)
    # every point of these deals that is a whole number of weeks (k >= 1) after creation, and only those
    on_grid = weekly.loc[(weeks > 0).to_numpy() & (weeks == weeks.round()).to_numpy()]
    assert sorted(keys(grid)) == sorted(keys(on_grid))


def test_grid_deals_are_the_latest_mature_closed_deals(gridded, export):
    grid_deals = pd.Index(gridded.truth.loc[gridded.truth["kind"] == "grid", "deal_id"].unique())
    deals = export.deals.set_index("deal_id")
    assert deals.loc[grid_deals, "outcome"].isin(["won", "lost"]).all()
    mature = select_mature_deals(export)
    # the latest mature deals are all there (deals too short-lived for a k >= 1 point have none)
    latest = deals.loc[mature].sort_values("created_at").index[-150:]
    long_lived = latest[(deals.loc[latest, "closed_at"] - deals.loc[latest, "created_at"]) > pd.Timedelta(days=7)]
    assert long_lived.isin(grid_deals).all()
    assert deals.loc[grid_deals, "created_at"].min() > deals.loc[mature, "created_at"].min()


def test_creation_rows_sit_at_created_at_for_every_deal(gridded):
    creation = gridded.truth[gridded.truth["kind"] == "creation"]
    created = gridded.tables["deals"].set_index("deal_id")["created_at"]
    assert len(creation) == DEALS
    assert (creation["as_of"].to_numpy() == creation["deal_id"].map(created).to_numpy()).all()


def test_truth_on_the_grid_knows_more_than_at_creation_and_is_calibrated(gridded, export):
    won = export.deals.set_index("deal_id")["outcome"].eq("won")
    truth = gridded.truth.assign(won=lambda t: t["deal_id"].map(won).astype(float))
    grid = truth[truth["kind"] == "grid"]
    creation = truth[(truth["kind"] == "creation") & truth["deal_id"].isin(grid["deal_id"])]
    grid_auc = roc_auc_score(grid["won"], grid["true_win_probability"])
    creation_auc = roc_auc_score(creation["won"], creation["true_win_probability"])
    assert grid_auc > creation_auc + 0.02  # other deals' states would score near 0.5
    assert abs(grid["true_win_probability"].mean() - grid["won"].mean()) < 0.05


def test_one_point_per_deal_by_default_and_none_without_grid_deals():
    one = generate_export(300, 3, truth_snapshots=0, n_paths=20, truth_grid_deals=40)
    grid = one.truth[one.truth["kind"] == "grid"]
    assert 30 <= grid["deal_id"].nunique() <= 40 and grid["deal_id"].is_unique
    none = generate_export(300, 3, truth_snapshots=0, n_paths=20, truth_grid_deals=0, truth_grid_points=5)
    assert set(none.truth["kind"]) == {"creation"}
    with pytest.raises(ValueError, match="truth_grid_points"):
        generate_export(10, 1, truth_grid_points=-1)
    assert np.isfinite(one.truth["true_win_probability"]).all()


def test_slip_truth_counts_never_winning_and_tracks_the_slip_label(gridded, export):
    from features.pointintime.snapshots import label_snapshots

    truth = gridded.truth
    # not won by the close date includes never won: slip >= 1 - win on every row (same paths)
    assert (truth["true_slip_probability"] >= 1 - truth["true_win_probability"] - 1e-4).all()
    grid = truth[truth["kind"] == "grid"].reset_index(drop=True)
    points = pd.DataFrame({"deal_id": grid["deal_id"], "as_of": pd.to_datetime(grid["as_of"], utc=True).astype("datetime64[us, UTC]")})
    slipped = label_snapshots(export, points)["slipped"].to_numpy()
    known = ~np.isnan(slipped)
    assert known.mean() > 0.95
    assert roc_auc_score(slipped[known], grid["true_slip_probability"][known]) > 0.85
    assert abs(grid["true_slip_probability"][known].mean() - slipped[known].mean()) < 0.05


def test_hidden_state_rides_along_each_truth_row_and_changes_nothing_else(gridded):
    hidden = generate_export(DEALS, SEED, truth_snapshots=40, n_paths=60, truth_grid_deals=250, truth_grid_points=50,
                             hidden_state=True)
    plain = generate_export(DEALS, SEED, truth_snapshots=40, n_paths=60, truth_grid_deals=250, truth_grid_points=50)
    for name in TABLES:
        pd.testing.assert_frame_equal(plain.tables[name], hidden.tables[name])
    pd.testing.assert_frame_equal(hidden.truth[TRUTH_COLUMNS], plain.truth)
    state = hidden.truth[HIDDEN_STATE_COLUMNS]
    assert state.notna().all().all()
    creation = hidden.truth["kind"] == "creation"
    assert (state.loc[creation, ["momentum", "budget", "champion", "dm", "eb"]] == 0).all().all()  # nothing has happened yet
    assert state.loc[~creation, "dm"].gt(0).any() and state["pace"].gt(0).all()
    # Each row's state is its own: the day's health read off it ranks that row's true win probability.
    weights = SimulationParams().health_weights
    later = hidden.truth.loc[~creation]
    health = later["quality"] + sum(w * later[c] for w, c in zip(weights, ("momentum", "budget", "champion", "dm", "eb")))
    assert health.corr(later["true_win_probability"], method="spearman") > 0.6
    shuffled = health.sample(frac=1.0, random_state=0).to_numpy()
    assert abs(np.corrcoef(shuffled, later["true_win_probability"])[0, 1]) < 0.2
