"""features.model.explain on synthetic SHAP matrices and tiny feature frames (no model, no MLflow)."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.model.contributions import compute_contributions, select_top_factors
from features.model.explain import explain_frame
from features.model.grades import (
    ExplainConfig,
    WarningThresholds,
    grade_from_probability,
    risk_level_from,
    score_from_probability,
    value_at_risk_from,
    value_at_risk_ratio_from,
)
from features.model.risk_warnings import WARNING_CODES, describe_warnings, flag_warnings
from features.model.sentences import describe_factor


def make_features(**columns) -> pd.DataFrame:
    """A feature frame of quiet, healthy deals; keyword columns override (lists, one per deal)."""
    n = len(next(iter(columns.values()))) if columns else 1
    base = {
        "deal_id": [f"D{i}" for i in range(n)],
        "current_stage": ["negotiate"] * n,
        "days_in_stage": [10.0] * n,
        "days_in_stage_vs_won": [0.8] * n,
        "deal_age_days": [60.0] * n,
        "close_date_pushes": [0.0] * n,
        "contacts_count": [4.0] * n,
        "contacts_engaged": [3.0] * n,
        "top_contact_share": [0.4] * n,
        "decision_maker_engaged_30d": [1.0] * n,
        "days_since_decision_maker_engaged": [5.0] * n,
        "days_since_economic_buyer_engaged": [np.nan] * n,
        "activities_30d": [8.0] * n,
        "days_since_last_activity": [2.0] * n,
        "days_since_last_inbound": [3.0] * n,
        "amount": [1000.0] * n,
    }
    return pd.DataFrame({**base, **columns})


def test_score_grade_risk_and_value_at_risk_cutoffs():
    p = np.array([0.0001, 0.199, 0.2, 0.399, 0.4, 0.599, 0.6, 0.9999])
    assert score_from_probability(p).tolist() == [1, 20, 20, 40, 40, 60, 60, 99]
    assert grade_from_probability(p).tolist() == ["D", "D", "C", "C", "B", "B", "A", "A"]
    assert value_at_risk_from(np.array([200.0]), np.array([0.25])).tolist() == [150.0]


def test_risk_level_cutoffs_on_win_and_value_at_risk_in_typical_deals():
    win = np.array([0.299, 0.299, 0.30, 0.499, 0.499, 0.50, 0.05, 0.05, 0.9])
    ratio = np.array([1.0, 0.999, 5.0, 0.5, 0.499, 9.0, 0.2, np.nan, np.nan])  # NaN: cannot be sized
    assert risk_level_from(win, ratio).tolist() == [
        "high", "medium", "medium", "medium", "low", "low", "low", "high", "low"
    ]
    # A deal twice the segment's typical amount at win 0.25 puts 1.5 typical deals at risk: high.
    assert value_at_risk_ratio_from(np.array([2.0]), np.array([0.25])).tolist() == [1.5]
    assert risk_level_from(np.array([0.25]), value_at_risk_ratio_from(np.array([2.0]), np.array([0.25]))).tolist() == [
        "high"
    ]
    # Slip takes no part: the same deal is high whatever its slip (ExplainConfig says why).
    config = ExplainConfig(high_risk_win_below=0.1, medium_risk_win_below=0.2)
    assert risk_level_from(np.array([0.15, 0.15]), np.array([1.0, 0.3]), config).tolist() == ["medium", "low"]


def test_custom_grade_cutoffs_are_used():
    config = ExplainConfig(grade_cutoffs=(("A", 0.9), ("B", 0.5), ("C", 0.1)))
    assert grade_from_probability(np.array([0.8, 0.05]), config).tolist() == ["B", "D"]


def test_select_top_factors_orders_and_pads():
    contributions = np.array([
        [0.3, -0.1, 0.5, -0.7, 0.0, 0.2, 0.1],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.2],
    ])
    up, down = select_top_factors(contributions, k=5)
    assert up.tolist() == [[2, 0, 5, 6, -1], [-1, -1, -1, -1, -1]]
    assert down.tolist() == [[3, 1, -1, -1, -1], [6, -1, -1, -1, -1]]


def test_select_top_factors_with_fewer_features_than_k():
    up, down = select_top_factors(np.array([[1.0, -1.0]]), k=5)
    assert up.shape == down.shape == (1, 5)
    assert up[0].tolist() == [0, -1, -1, -1, -1]


def test_explain_frame_on_a_synthetic_shap_matrix():
    names = ["days_in_stage_vs_won", "decision_maker_engaged_30d", "amount", "current_stage"]
    features = make_features(
        days_in_stage_vs_won=[2.3, 0.5], days_in_stage=[41.0, 5.0], decision_maker_engaged_30d=[0.0, 1.0],
        amount=[1000.0, 500.0],
    )
    contributions = np.array([[-0.9, -0.4, 0.2, 0.0], [0.1, 0.6, -0.3, 0.05]])
    out = explain_frame(features, contributions, names, np.array([0.31, 0.72]), np.array([0.5, 0.1]))
    assert out.index.equals(features.index)
    first = out.iloc[0]
    assert (first["score"], first["grade"], first["risk_level"]) == (31, "C", "medium")
    assert first["value_at_risk"] == pytest.approx(690.0)
    assert [f["feature"] for f in first["factors_down"]] == ["days_in_stage_vs_won", "decision_maker_engaged_30d"]
    assert first["factors_down"][0] == {
        "feature": "days_in_stage_vs_won", "value": 2.3, "contribution": -0.9,
        "sentence": "In negotiate for 41 days, 2.3x what won deals take",
    }
    assert first["factors_down"][1]["sentence"] == "No decision maker engaged in the last 30 days"
    assert [f["feature"] for f in first["factors_up"]] == ["amount"]
    second = out.iloc[1]
    assert [f["feature"] for f in second["factors_up"]] == ["decision_maker_engaged_30d", "days_in_stage_vs_won",
                                                            "current_stage"]
    assert second["factors_up"][2]["value"] == "negotiate"
    assert (second["grade"], second["risk_level"]) == ("A", "low")


def test_explain_frame_levels_risk_by_the_value_at_risk_in_typical_deals():
    features = make_features(amount=[4000.0, 500.0, 4000.0], amount_vs_segment_median=[2.0, 0.25, 2.0])
    out = explain_frame(features, np.zeros((3, 1)), ["amount"], np.array([0.2, 0.2, 0.6]), np.array([0.99, 0.99, 0.99]))
    # 0.8 x 2.0 = 1.6 typical deals at risk; 0.8 x 0.25 = 0.2; a likely win: low whatever the slip.
    assert out["risk_level"].tolist() == ["high", "low", "low"]
    assert out["value_at_risk"].tolist() == pytest.approx([3200.0, 400.0, 1600.0])


def test_a_passed_close_date_is_a_warning_not_a_level():
    features = make_features(days_to_expected_close=[-0.4, 3.0], amount_vs_segment_median=[1.0, 1.0])
    out = explain_frame(features, np.zeros((2, 1)), ["amount"], np.array([0.7, 0.7]), np.array([0.95, 0.95]))
    assert out["warnings"].tolist() == [[{"code": "close_date_passed", "message": "Expected close date passed today"}], []]
    assert out["risk_level"].tolist() == ["low", "low"]


def test_explain_frame_rejects_a_misshapen_matrix():
    with pytest.raises(ValueError, match=r"contributions have shape \(1, 2\), expected \(1, 3\)"):
        explain_frame(make_features(), np.zeros((1, 2)), ["a", "b", "c"], np.array([0.5]), np.array([0.5]))


def test_missing_values_become_null_not_nan():
    features = make_features(days_since_last_activity=[np.nan])
    out = explain_frame(features, np.array([[-0.5]]), ["days_since_last_activity"], np.array([0.5]), np.array([0.5]))
    factor = out.iloc[0]["factors_down"][0]
    assert factor["value"] is None
    assert factor["sentence"] == "No activity yet"


def test_describe_factor_falls_back_for_unknown_features():
    assert describe_factor("not_a_feature", 3, {}) == "not_a_feature = 3"


@pytest.mark.parametrize(
    ("code", "columns", "message"),
    [
        ("no_activity", {"days_since_last_activity": [20.0]}, "No activity for 20 days"),
        ("ghosted", {"days_since_last_inbound": [30.0], "activities_30d": [5.0]},
         "Customer silent for 30 days despite 5 touches in the last 30 days"),
        ("single_threaded", {"contacts_engaged": [1.0], "top_contact_share": [1.0]},
         "Single-threaded: 1 contact(s) engaged, 100% of contact activity with one person"),
        ("no_decision_maker", {"decision_maker_engaged_30d": [0.0], "days_since_decision_maker_engaged": [45.0]},
         "No decision maker or economic buyer engaged in the last 30 days"),
        ("stalled_in_stage", {"days_in_stage_vs_won": [2.5], "days_in_stage": [50.0]},
         "Stalled in negotiate: 50 days, 2.5x what won deals take"),
        ("close_date_pushed", {"close_date_pushes": [3.0]}, "Close date pushed 3 times"),
        ("close_date_passed", {"days_to_expected_close": [-12.3]}, "Expected close date passed 12 days ago"),
    ],
)
def test_each_warning_fires_alone_with_its_message(code, columns, message):
    features = make_features(**columns)
    flags = flag_warnings(features)
    assert flags.columns.tolist() == list(WARNING_CODES)
    assert flags.iloc[0][flags.iloc[0]].index.tolist() == [code]
    assert describe_warnings(flags, features) == [[{"code": code, "message": message}]]


def test_healthy_deal_has_no_warning():
    assert not flag_warnings(make_features()).to_numpy().any()


def test_missing_tables_do_not_fire_warnings():
    missing = make_features(
        days_since_last_activity=[np.nan], activities_30d=[np.nan], days_since_last_inbound=[np.nan],
        top_contact_share=[np.nan], contacts_engaged=[np.nan], decision_maker_engaged_30d=[np.nan],
        days_since_decision_maker_engaged=[np.nan], days_in_stage_vs_won=[np.nan], close_date_pushes=[np.nan],
    )
    assert not flag_warnings(missing).to_numpy().any()
    assert not flag_warnings(pd.DataFrame(index=[0])).to_numpy().any()


def test_never_any_activity_on_an_old_deal_is_no_activity():
    features = make_features(days_since_last_activity=[np.nan], activities_30d=[0.0], deal_age_days=[40.0])
    assert describe_warnings(flag_warnings(features), features)[0][0] == {
        "code": "no_activity", "message": "No activity logged since the deal was created"
    }


def test_thresholds_are_configurable():
    features = make_features(days_since_last_activity=[10.0])
    assert not flag_warnings(features)["no_activity"].iloc[0]
    assert flag_warnings(features, WarningThresholds(no_activity_days=7))["no_activity"].iloc[0]
    assert WarningThresholds.from_dict({"no_activity_days": "7"}).no_activity_days == 7.0
    with pytest.raises(ValueError, match="unknown warning thresholds"):
        WarningThresholds.from_dict({"no_activty_days": 7})


def test_compute_contributions_sum_to_the_raw_score():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=200) > 0).astype(float)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 4},
                        lgb.Dataset(x, y), num_boost_round=10)
    contributions = compute_contributions(booster, x[:5])
    raw = booster.predict(x[:5], raw_score=True)
    bias = booster.predict(x[:5], pred_contrib=True)[:, -1]
    assert contributions.shape == (5, 3)
    np.testing.assert_allclose(contributions.sum(axis=1) + bias, raw, rtol=1e-6)
    assert compute_contributions(booster, x[:0]).shape == (0, 3)


def _blended_bundle(weight: float = 0.4):
    """A bundle whose models blend a small booster with a linear model (identity calibrations)."""
    from features.model.bundle import Calibration, ModelBundle
    from features.model.linear import CategoricalTerm, LinearModel, NumericTerm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    x[:, 2] = rng.integers(0, 2, size=200)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=200) > 0).astype(float)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1, "num_leaves": 4},
                        lgb.Dataset(x, y), num_boost_round=10)
    linear = LinearModel(names=("a", "b", "c"), base=-0.2, weight=weight,
                         numeric=(NumericTerm(0, 0.0, 0.1, 0.9, 0.0, 0.0), NumericTerm(1, 0.0, -0.1, 0.4, 0.0, 0.0)),
                         categorical=(CategoricalTerm(2, (0.2, -0.2), 0.0),))
    identity = Calibration(x=(0.0, 1.0), y=(0.0, 1.0))
    bundle = ModelBundle(win_model=booster, slip_model=booster, win_calibration=identity, slip_calibration=identity,
                         feature_state={}, features={"names": ["a", "b", "c"], "categorical": {"c": ["no", "yes"]}},
                         win_linear=linear, slip_linear=linear)
    return bundle, x


def test_blended_contributions_sum_to_the_blended_score():
    from features.model.contributions import model_contributions
    from features.model.predict import predict_raw_matrix

    bundle, x = _blended_bundle(weight=0.4)
    contributions = model_contributions(bundle, x[:5])
    bias = 0.6 * bundle.win_model.predict(x[:5], pred_contrib=True)[:, -1] + 0.4 * bundle.win_linear.base
    logit = 0.6 * bundle.win_model.predict(x[:5], raw_score=True) + 0.4 * bundle.win_linear.logit(x[:5])
    np.testing.assert_allclose(contributions.sum(axis=1) + bias, logit, rtol=1e-9)
    raw = predict_raw_matrix(bundle, x[:5])["win_probability"].to_numpy()
    np.testing.assert_allclose(raw, 1 / (1 + np.exp(-logit)), rtol=1e-9)
    # Weight 0: the booster alone, exactly as before the blend existed.
    from dataclasses import replace

    bundle.win_linear = replace(bundle.win_linear, weight=0.0)
    np.testing.assert_array_equal(model_contributions(bundle, x[:5]), compute_contributions(bundle.win_model, x[:5]))
    alone = predict_raw_matrix(bundle, x[:5])["win_probability"].to_numpy()
    np.testing.assert_array_equal(alone, bundle.win_model.predict(x[:5]))


def test_bundle_folder_keeps_the_linear_half_and_reads_older_bundles(tmp_path):
    from features.model.bundle import BundleError, load_bundle_dir, save_bundle_dir
    from features.model.predict import predict_raw_matrix

    bundle, x = _blended_bundle()
    again = load_bundle_dir(save_bundle_dir(bundle, tmp_path / "b"))
    np.testing.assert_allclose(predict_raw_matrix(again, x).to_numpy(), predict_raw_matrix(bundle, x).to_numpy(), rtol=1e-12)
    (tmp_path / "b" / "linear_slip.json").unlink()  # a bundle from before the blend: booster alone
    assert load_bundle_dir(tmp_path / "b").slip_linear is None
    (tmp_path / "b" / "linear_win.json").write_text(json.dumps({**bundle.win_linear.to_dict(), "names": ["a", "b", "c", "d"]}))
    with pytest.raises(BundleError, match="linear_win.json.*other features"):
        load_bundle_dir(tmp_path / "b")


def test_warning_rules_read_features_that_exist():
    import inspect
    import re

    from features.model import risk_warnings
    from features.pointintime.definitions import FEATURE_NAMES

    used = set(re.findall(r'feature_column\(features, "(\w+)"\)', inspect.getsource(risk_warnings)))
    used |= set(risk_warnings.WARNING_COLUMNS)
    assert used and used <= set(FEATURE_NAMES), sorted(used - set(FEATURE_NAMES))


@pytest.mark.parametrize("seed", range(4))
def test_select_top_factors_on_a_batch_equals_a_stable_sort(seed):
    # Batches large enough for the partition path; many exact ties (zeros, repeated values).
    rng = np.random.default_rng(seed)
    c = rng.integers(-3, 4, (300, 40)).astype(float) if seed % 2 else rng.normal(size=(300, 40))
    c[rng.random(c.shape) < 0.5] = 0.0
    up, down = select_top_factors(c, k=5)
    order_up, order_down = np.argsort(-c, axis=1, kind="stable")[:, :5], np.argsort(c, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(up, np.where(np.take_along_axis(c, order_up, axis=1) > 0, order_up, -1))
    np.testing.assert_array_equal(down, np.where(np.take_along_axis(c, order_down, axis=1) < 0, order_down, -1))


def test_explain_frame_has_the_dtypes_of_a_plain_frame():
    features = make_features(days_since_last_activity=[30.0, 1.0, np.nan])
    names = ["days_since_last_activity", "current_stage"]
    explained = explain_frame(features, np.array([[0.5, -0.2], [-0.1, 0.0], [0.0, 0.3]]), names,
                              np.array([0.7, 0.3, 0.1]), np.array([0.2, 0.5, 0.9]))
    plain = pd.DataFrame({name: explained[name].tolist() for name in explained.columns}, index=features.index)
    pd.testing.assert_frame_equal(explained, plain)
    assert explained["factors_up"].iloc[1] == [] and explained["warnings"].iloc[0][0]["code"] == "no_activity"
