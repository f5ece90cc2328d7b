"""The truth comparison's points and weights (training.truth) on a generated export."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract.check import check_tables
from features.pointintime.snapshots import sample_snapshots
from generator.export import generate_export
from training.truth import TruthFileError, parse_truth, read_truth, select_truth_points, truth_block, weekly_points

DEALS, SEED = 500, 21


@pytest.fixture(scope="module")
def generated():
    """Every weekly point of the 200 latest mature deals, one of the 120 latest in a second truth."""
    full = generate_export(DEALS, SEED, truth_snapshots=0, n_paths=40, truth_grid_deals=200, truth_grid_points=60)
    one = generate_export(DEALS, SEED, truth_snapshots=0, n_paths=40, truth_grid_deals=120, truth_grid_points=1)
    return check_tables(full.tables).export, parse_truth(full.truth), parse_truth(one.truth)


def weekly(export, deals) -> pd.DataFrame:
    """The training snapshots of ``deals`` that are weekly points (k = 0, 1, ...)."""
    points = sample_snapshots(export, deal_ids=deals)
    created = points["deal_id"].map(export.deals.set_index("deal_id")["created_at"])
    k = (points["as_of"] - created) / pd.Timedelta(days=7)
    return points.loc[(k == k.round()).to_numpy()]


def test_every_weekly_point_of_a_fully_covered_deal_is_a_truth_point_weighing_one(generated):
    export, full, _ = generated
    deals = pd.Index(full.loc[full["kind"] == "grid", "deal_id"].unique())
    points = select_truth_points(full, export, deals)
    grid = weekly(export, deals)
    key = ["deal_id", "as_of"]
    assert sorted(map(tuple, points[key].astype(str).to_numpy())) == sorted(map(tuple, grid[key].astype(str).to_numpy()))
    assert (points["week_weight"] == 1.0).all()
    per_deal = points.groupby("deal_id")["deal_weight"].sum()
    assert per_deal.to_numpy() == pytest.approx(np.ones(len(per_deal)))
    assert set(points["kind"]) == {"creation", "grid"}


def test_one_sampled_point_stands_for_the_rest_of_its_deal(generated):
    export, _, one = generated
    deals = pd.Index(one.loc[one["kind"] == "grid", "deal_id"].unique())
    points = select_truth_points(one, export, deals)
    counts = weekly(export, deals).groupby("deal_id").size()
    week_sum = points.groupby("deal_id")["week_weight"].sum()
    assert week_sum.to_numpy() == pytest.approx(counts.reindex(week_sum.index).to_numpy())  # K weekly points
    assert points.groupby("deal_id")["deal_weight"].sum().to_numpy() == pytest.approx(1.0)
    assert (points.loc[points["kind"] == "creation", "week_weight"] == 1.0).all()


def test_a_deal_with_only_its_creation_truth_weighs_nothing_unless_creation_is_its_only_point(generated):
    export, _, one = generated
    test_deals = pd.Index(export.deals.loc[export.deals["outcome"] != "open", "deal_id"])
    points = select_truth_points(one, export, test_deals)
    sampled = set(one.loc[one["kind"] == "grid", "deal_id"])
    alone = points.loc[~points["deal_id"].isin(sampled)]
    assert len(alone) > 100 and (alone["kind"] == "creation").all()
    assert ((alone["week_weight"] == 0) == (alone["weeks"] > 1)).all()


def test_weekly_points_counts_as_the_training_snapshots_do(generated):
    export, _, _ = generated
    closed = export.deals.loc[export.deals["outcome"] != "open"]
    counts = weekly(export, closed["deal_id"]).groupby("deal_id").size().reindex(closed["deal_id"]).fillna(0)
    assert weekly_points(closed["created_at"], closed["closed_at"]).tolist() == counts.astype(int).tolist()


def test_older_truth_files_creation_rows_get_created_at(tmp_path, generated):
    export, full, _ = generated
    path = tmp_path / "truth.csv"
    old = full.loc[full["kind"] == "creation"].assign(as_of=None).drop(columns="true_slip_probability")
    old.to_csv(path, index=False)
    truth = read_truth(path)
    assert truth["as_of"].isna().all() and truth["true_slip_probability"].isna().all()
    points = select_truth_points(truth, export, pd.Index(export.deals["deal_id"]))
    created = points["deal_id"].map(export.deals.set_index("deal_id")["created_at"])
    assert len(points) > 100 and (points["as_of"] == created).all()


def test_bad_truth_files_are_named_with_the_reason(tmp_path):
    path = tmp_path / "truth.csv"
    pd.DataFrame({"deal_id": ["D1"], "as_of": ["2026-01-01T00:00:00Z"], "true_win_probability": [0.5], "kind": ["guess"]}).to_csv(path, index=False)
    with pytest.raises(TruthFileError, match=r"truth\.csv: column kind has \['guess'\]"):
        read_truth(path)
    pd.DataFrame({"deal_id": ["D1", "D2"], "as_of": ["2026-01-01T00:00:00Z", None], "true_win_probability": [0.5, 0.4],
                  "kind": ["grid", "grid"]}).to_csv(path, index=False)
    with pytest.raises(TruthFileError, match="row 2: as_of is empty"):
        read_truth(path)


def test_truth_block_measures_the_gap_with_intervals(generated):
    export, full, _ = generated
    deals = pd.Index(full.loc[full["kind"] == "grid", "deal_id"].unique())
    points = select_truth_points(full, export, deals)
    truth = points["true_win_probability"].to_numpy()
    rng = np.random.default_rng(0)
    blurred = np.clip(truth + rng.normal(0, 0.2, len(truth)), 0.01, 0.99)  # knows less than the truth
    block = truth_block(points, points["won"].to_numpy(), {"truth": truth, "model": blurred})
    assert block["model_auc_gap"] > 0 and block["model_auc_gap_ci90_low"] > 0
    assert block["model_auc_gap_ci90_low"] <= block["model_auc_gap"] <= block["model_auc_gap_ci90_high"]
    assert block["model_brier_gap"] == pytest.approx(block["model_brier"] - block["brier"])
    assert block["deals"] == len(deals) and block["points"]["grid"] + block["points"]["creation"] == len(points)
    same = truth_block(points, points["won"].to_numpy(), {"truth": truth, "model": truth})
    assert same["model_auc_gap"] == 0 and same["model_auc_gap_ci90_low"] == 0 == same["model_auc_gap_ci90_high"]
