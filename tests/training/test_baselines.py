import numpy as np
import pandas as pd
import pytest

from training.baselines import fit_logistic_regression, predict_logistic_regression, predict_stage_table
from training.config import SALESFORCE_STAGE_PROBABILITIES
from training.pipeline import InsufficientDataError, check_minimum_data
from training.config import MinimumData


def test_stage_table_follows_salesforce_defaults():
    p = predict_stage_table(pd.Series(["identify", "negotiate", np.nan], dtype="object"), SALESFORCE_STAGE_PROBABILITIES)
    assert p.tolist() == [0.10, 0.80, 0.10]


def test_logistic_regression_handles_missing_numbers_and_categories():
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=n)
    frame = pd.DataFrame({
        "x": np.where(rng.uniform(size=n) < 0.1, np.nan, x),
        "segment": pd.Series(rng.choice(["smb", "ent", None], size=n), dtype="object"),
    })
    y = (x + rng.normal(scale=0.5, size=n) > 0).astype(float)
    model, numeric, categorical = fit_logistic_regression(frame, ["x", "segment"], y, np.ones(n), categorical_names=("segment",))
    p = predict_logistic_regression(model, frame, numeric, categorical)
    assert categorical == ["segment"] and p.shape == (n,)
    assert np.corrcoef(p, y)[0, 1] > 0.5


def rows(won: int, lost: int) -> pd.DataFrame:
    return pd.DataFrame({"side": "train", "deal_id": [f"D{i}" for i in range(won + lost)], "won": [1] * won + [0] * lost})


def test_minimum_data_refuses_with_counts():
    with pytest.raises(InsufficientDataError, match="39 won and 50 lost"):
        check_minimum_data(rows(39, 50), MinimumData())


def test_extreme_win_rate_warns():
    assert "win rate" in check_minimum_data(rows(40, 1000), MinimumData())[0]
    assert check_minimum_data(rows(40, 40), MinimumData()) == []
