"""training.explore: the notebook's tables on the hand-checked export, its figures, and the views of a
small real bundle (generated export, training's own fit with a short booster)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.contract.schema import Export
from tests.factories import make_export
from training.explore import (
    at_risk_table,
    overall_win_rate,
    plot_at_risk,
    plot_dependence,
    plot_stage_durations,
    plot_win_rate_by,
    plot_win_rate_by_stage,
    rank_drivers,
    sample_contributions,
    score_open_deals,
    stage_durations,
    win_rate_by,
    win_rate_by_stage_reached,
    with_feature_state,
)
from training.pipeline import TrainingData


def texts(fig) -> list[str]:
    """Every text drawn on a figure's axes (titles excluded)."""
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def training_data(values: list[float], deal_ids: list[str], won: list[float], feature: str = "roles_engaged_30d"):
    rows = pd.DataFrame({"deal_id": deal_ids, "won": won})
    rows["weight"] = 1.0 / rows.groupby("deal_id")["deal_id"].transform("size")
    return TrainingData(plan=None, state=None, rows=rows, features=pd.DataFrame({feature: values}), feature_names=[feature])


# --- the raw export ----------------------------------------------------------------------------


def test_win_rate_by_stage_reached_counts_the_furthest_stage_of_closed_deals():
    # D1 won (reached negotiate, with back-steps), D2 lost (qualify), D4 won (skipped to negotiate); D3 is open.
    table = win_rate_by_stage_reached(make_export())
    assert table["reached"].to_dict() == {"identify": 3, "qualify": 3, "propose": 2, "negotiate": 2, "contract": 0}
    assert table["won"].to_dict() == {"identify": 2, "qualify": 2, "propose": 2, "negotiate": 2, "contract": 0}
    assert table.loc["identify", "win_rate"] == pytest.approx(2 / 3)
    assert np.isnan(table.loc["contract", "win_rate"])


def test_win_rate_by_stage_reached_without_stage_history_is_empty_with_a_note():
    table = win_rate_by_stage_reached(make_export(drop=("stage_history",)))
    assert table.empty
    assert "stage_history" in table.attrs["note"]
    assert any("stage_history" in text for text in texts(plot_win_rate_by_stage(table)))


def test_stage_durations_sum_each_stage_visit_until_the_next_entry():
    days = stage_durations(make_export()).set_index(["deal_id", "stage"])["days"].to_dict()
    assert days == {
        ("D1", "identify"): 10.0, ("D1", "negotiate"): 23.0, ("D1", "propose"): 4.0 + 14.0, ("D1", "qualify"): 10.0 + 7.0,
        ("D2", "identify"): 15.0, ("D2", "qualify"): 31.0,
        ("D4", "identify"): 10.0, ("D4", "negotiate"): 26.0,
    }


def test_stage_durations_end_the_last_open_stage_at_closed_at_when_history_has_no_closing_entry():
    export = make_export()
    history = export.stage_history
    without_lost = history.loc[~((history["deal_id"] == "D2") & (history["stage"] == "lost")).to_numpy()]
    durations = stage_durations(replace(export, stage_history=without_lost))
    assert durations.set_index(["deal_id", "stage"]).loc[("D2", "qualify"), "days"] == 31.0
    assert set(durations["outcome"]) == {"won", "lost"}


def test_stage_durations_without_stage_history_plot_the_note():
    durations = stage_durations(Export(deals=make_export().deals))
    assert durations.empty and "stage_history" in durations.attrs["note"]
    assert any("stage_history" in text for text in texts(plot_stage_durations(durations)))


def test_plot_stage_durations_draws_a_box_per_stage_and_outcome():
    fig = plot_stage_durations(stage_durations(make_export()))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["identify", "qualify", "propose", "negotiate"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["won", "lost"]


def test_win_rate_by_weighs_each_deal_once_and_pools_and_keeps_missing():
    # Deal a: four snapshots at 1 role, won; deal b: one snapshot at 1 role, lost. Per deal: 50%, not 80%.
    data = training_data([1, 1, 1, 1, 1, 5, np.nan], ["a", "a", "a", "a", "b", "c", "d"], [1, 1, 1, 1, 0, 1, 0])
    table = win_rate_by(data, "roles_engaged_30d", cap=3)
    assert table["roles_engaged_30d"].tolist() == ["1", "3+", "missing"]
    assert table["deals"].tolist() == [2, 1, 1]
    assert table["snapshots"].tolist() == [5, 1, 1]
    assert table["win_rate"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert overall_win_rate(data) == pytest.approx(2 / 4)


def test_win_rate_by_leaves_out_unlabelled_snapshots_and_names_an_unknown_feature():
    data = training_data([0, 2], ["a", "b"], [np.nan, 1.0])
    assert win_rate_by(data, "roles_engaged_30d")["roles_engaged_30d"].tolist() == ["2"]
    unknown = win_rate_by(data, "no_such_feature")
    assert unknown.empty and "no_such_feature" in unknown.attrs["note"]


def test_plot_win_rate_by_draws_one_panel_per_table_with_the_overall_line():
    data = training_data([0, 1, 2], ["a", "b", "c"], [0, 1, 1])
    tables = {"roles_engaged_30d": win_rate_by(data, "roles_engaged_30d"), "roles_present": win_rate_by(data, "roles_present")}
    fig = plot_win_rate_by(tables, overall=overall_win_rate(data))
    assert [ax.get_title() for ax in fig.axes] == ["Win rate by roles_engaged_30d", "Win rate by roles_present"]
    assert "roles_present" in texts(fig)[-1]  # the second table is empty: its panel says why
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["all deals 67%"]


# --- explanations ------------------------------------------------------------------------------


def test_rank_drivers_orders_by_mean_absolute_contribution():
    ranked = rank_drivers(np.array([[0.0, -3.0, 1.0], [0.0, 1.0, -1.0]]), ["a", "b", "c"], top=2)
    assert ranked["feature"].tolist() == ["b", "c"]
    assert ranked["mean_abs_contribution"].tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="2 names"):
        rank_drivers(np.zeros((2, 3)), ["a", "b"])


def test_plot_dependence_draws_a_panel_per_feature_with_missing_values_apart():
    matrix = np.array([[1.0, 0.0], [2.0, 1.0], [np.nan, 1.0], [4.0, np.nan]])
    contributions = np.array([[0.1, -0.2], [0.2, 0.3], [-0.5, 0.3], [0.4, 0.0]])
    fig = plot_dependence(contributions, matrix, ["days_in_stage", "segment"], ["days_in_stage", "segment"],
                          {"segment": ["ent", "smb"]})
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["days_in_stage", "segment"]
    assert texts(fig) == ["missing", "missing"]
    assert [t.get_text() for t in visible[1].get_xticklabels()] == ["ent", "smb"]
    with pytest.raises(ValueError, match="region"):
        plot_dependence(contributions, matrix, ["days_in_stage", "segment"], ["region"])


def explained(**columns) -> pd.DataFrame:
    n = len(columns["risk_level"])
    base = {"deal_id": [f"D{i}" for i in range(n)], "amount": [100.0] * n, "win_probability": [0.5] * n,
            "slip_probability": [0.5] * n, "grade": ["B"] * n, "value_at_risk": [50.0] * n,
            "factors_down": [[{"sentence": f"reason {i}"}] for i in range(n)], "warnings": [[] for _ in range(n)]}
    return pd.DataFrame({**base, **columns})


def test_at_risk_table_puts_high_risk_first_then_the_largest_value_at_risk():
    table = at_risk_table(explained(risk_level=["low", "high", "medium", "high"], value_at_risk=[900.0, 10.0, 500.0, 20.0],
                                    warnings=[[], [{"code": "no_activity"}, {"code": "ghosted"}], [], []]), top=3)
    assert table["deal_id"].tolist() == ["D3", "D1", "D2"]
    assert table["main_risk"].tolist() == ["reason 3", "reason 1", "reason 2"]
    assert table["warnings"].tolist() == ["", "no_activity, ghosted", ""]


def test_plot_at_risk_colours_bars_by_risk_level():
    fig = plot_at_risk(at_risk_table(explained(risk_level=["high", "medium"], value_at_risk=[10.0, 5.0])))
    (ax,) = fig.axes
    colours = [tuple(round(c, 3) for c in bar.get_facecolor()) for bar in ax.patches]
    assert len(set(colours)) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["high", "medium", "low"]


@pytest.fixture(scope="module")
def small_model():
    """A generated export, its training data and a bundle fitted by training's own code (short booster)."""
    from features.contract.check import check_tables
    from generator.export import generate_export
    from training.config import BoosterConfig, MinimumData, TrainConfig
    from training.pipeline import fit_bundle, prepare_training_data

    export = check_tables(generate_export(n_deals=600, seed=3, truth_snapshots=0).tables).export
    config = replace(TrainConfig(), booster=replace(BoosterConfig(), num_boost_round=40, early_stopping_rounds=10, num_threads=1),
                     minimum=replace(MinimumData(), won=10, lost=10))
    data = prepare_training_data(export, config)
    return export, data, fit_bundle(data, config, {"trained_at": "2026-01-01T00:00:00+00:00"})


def test_with_feature_state_of_the_fitted_state_rebuilds_the_same_features(small_model):
    export, data, _ = small_model
    rebuilt = with_feature_state(export, data, data.state)
    pd.testing.assert_frame_equal(rebuilt.features, data.features)
    assert rebuilt.rows is data.rows


def test_with_feature_state_keeps_the_features_training_left_out_missing(small_model):
    export, data, _ = small_model
    without_amount = replace(data, feature_names=[n for n in data.feature_names if n != "amount"],
                             features=data.features.assign(amount=np.nan))
    rebuilt = with_feature_state(export, without_amount, data.state)
    assert rebuilt.features["amount"].isna().all() and data.features["amount"].notna().any()
    pd.testing.assert_frame_equal(rebuilt.features.drop(columns="amount"), data.features.drop(columns="amount"))


def test_sample_contributions_explain_a_sample_of_one_side(small_model):
    _, data, bundle = small_model
    contributions, matrix, names = sample_contributions(bundle, data, size=50, seed=1)
    assert contributions.shape == matrix.shape == (50, len(names))
    assert names == list(bundle.features["names"])
    with pytest.raises(ValueError, match="no nowhere snapshots"):
        sample_contributions(bundle, data, side="nowhere")


def test_score_open_deals_scores_every_deal_open_at_the_export_end(small_model):
    export, _, bundle = small_model
    scored = score_open_deals(export, bundle)
    open_ids = set(export.deals.loc[export.deals["outcome"] == "open", "deal_id"])
    assert set(scored["deal_id"]) == open_ids and len(scored) == len(open_ids) > 0
    assert scored["win_probability"].between(0, 1).all()
    table = at_risk_table(scored, top=5)
    assert len(table) == 5 and table["deal_id"].isin(open_ids).all()
