import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.model.linear import LinearModel
from training.baselines import fit_linear_model, predict_stage_table
from training.config import SALESFORCE_STAGE_PROBABILITIES, MinimumData
from training.pipeline import InsufficientDataError, check_minimum_data


def test_stage_table_follows_salesforce_defaults():
    p = predict_stage_table(pd.Series(["identify", "negotiate", np.nan], dtype="object"), SALESFORCE_STAGE_PROBABILITIES)
    assert p.tolist() == [0.10, 0.80, 0.10]


def _data(n: int = 400, seed: int = 0):
    """x raises the odds, z lowers them, x has missing values, segment (codes 0-2, NaN) matters."""
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    segment = rng.choice([0.0, 1.0, 2.0], size=n)
    logit = 1.2 * x - 0.8 * z + np.array([0.5, -0.5, 0.0])[segment.astype(int)]
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(float)
    matrix = np.column_stack([np.where(rng.uniform(size=n) < 0.1, np.nan, x), z, segment])
    return matrix, y, ["x", "z", "segment"], {"segment": ["ent", "mid", "smb"]}


def test_linear_model_matches_scikit_learn_logistic_regression():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    matrix, y, names, categorical = _data()
    model = fit_linear_model(matrix, names, categorical, y, np.ones(len(y)), max_iter=2000, clip_quantiles=(0.0, 1.0))
    reference = Pipeline([
        ("columns", ColumnTransformer([
            ("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), [0, 1]),
            ("categorical", OneHotEncoder(), [2]),
        ])),
        ("model", LogisticRegression(C=1.0, max_iter=2000, tol=1e-8)),
    ]).fit(matrix, y)
    np.testing.assert_allclose(model.predict(matrix), reference.predict_proba(matrix)[:, 1], atol=2e-3)
    slopes = {names[t.column]: t.slope for t in model.numeric}
    assert slopes["x"] > 0 > slopes["z"]


def test_linear_contributions_are_exact_and_centred_on_the_training_data():
    matrix, y, names, categorical = _data()
    w = np.random.default_rng(1).uniform(0.2, 1.0, size=len(y))
    model = fit_linear_model(matrix, names, categorical, y, w)
    contributions = model.contributions(matrix)
    np.testing.assert_allclose(contributions.sum(axis=1) + model.base, model.logit(matrix))
    # Background = the weighted training data: every feature's mean contribution is zero there.
    np.testing.assert_allclose(w @ contributions / w.sum(), 0.0, atol=1e-9)


def test_linear_model_does_not_extrapolate_outliers():
    matrix, y, names, categorical = _data()
    model = fit_linear_model(matrix, names, categorical, y, np.ones(len(y)))
    x = next(t for t in model.numeric if names[t.column] == "x")
    assert x.high == pytest.approx(np.nanquantile(matrix[:, 0], 0.99))
    probe = np.array([[x.high, 0.0, 0.0], [1000.0, 0.0, 0.0], [-1000.0, 0.0, 0.0], [x.low, 0.0, 0.0]])
    contributions = model.contributions(probe)[:, 0]
    assert contributions[1] == contributions[0] and contributions[2] == contributions[3]
    again = LinearModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(again.contributions(probe), model.contributions(probe))


def test_linear_model_sends_unknown_and_rare_levels_to_other():
    matrix, y, names, categorical = _data()
    matrix[:3, 2] = 3.0  # a fourth level seen only three times: rare
    model = fit_linear_model(matrix, names, {"segment": ["ent", "mid", "smb", "new"]}, y, np.ones(len(y)))
    term = model.categorical[0]
    assert term.levels[3] == term.other
    probe = np.array([[0.0, 0.0, np.nan], [0.0, 0.0, 7.0], [0.0, 0.0, 3.0]])
    assert len(set(model.contributions(probe)[:, 2].tolist())) == 1


def test_linear_model_respects_monotone_directions():
    matrix, y, names, categorical = _data()
    free = fit_linear_model(matrix, names, categorical, y, np.ones(len(y)))
    held = fit_linear_model(matrix, names, categorical, y, np.ones(len(y)), monotone={"z": 1, "x": 1})
    slope = lambda m, name: next(t.slope for t in m.numeric if names[t.column] == name)
    assert slope(free, "z") < 0 and slope(held, "z") == 0.0  # z lowers the odds: dropped, not reversed
    assert slope(held, "x") > 0


def test_linear_model_round_trips_and_refuses_bad_files():
    matrix, y, names, categorical = _data()
    model = replace(fit_linear_model(matrix, names, categorical, y, np.ones(len(y))), weight=0.3)
    again = LinearModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(again.contributions(matrix), model.contributions(matrix))
    assert again.weight == 0.3
    data = model.to_dict()
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        LinearModel.from_dict({**data, "numeric": [{**data["numeric"][0], "feature": "nope"}]})
    with pytest.raises(ValueError, match="base is not a finite number"):
        LinearModel.from_dict({**data, "base": float("nan")})
    with pytest.raises(ValueError, match="outside"):
        LinearModel.from_dict({**data, "weight": 1.5})


def rows(won: int, lost: int) -> pd.DataFrame:
    return pd.DataFrame({"side": "train", "deal_id": [f"D{i}" for i in range(won + lost)], "won": [1] * won + [0] * lost})


def test_minimum_data_refuses_with_counts():
    with pytest.raises(InsufficientDataError, match="39 won and 50 lost"):
        check_minimum_data(rows(39, 50), MinimumData())


def test_extreme_win_rate_warns():
    assert "win rate" in check_minimum_data(rows(40, 1000), MinimumData())[0]
    assert check_minimum_data(rows(40, 40), MinimumData()) == []
