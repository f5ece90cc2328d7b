"""LightGBM fitting with early stopping on the validation period."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from features.model.linear import sigmoid
from training.config import BoosterConfig


def monotone_vector(feature_names: list[str], directions: dict[str, int], sign: int = 1) -> list[int]:
    """LightGBM ``monotone_constraints``: one entry per matrix column, 0 where no direction is known.

    >>> monotone_vector(["a", "b"], {"b": 1}, sign=-1)
    [0, -1]
    """
    return [sign * int(directions.get(name, 0)) for name in feature_names]


def booster_params(config: BoosterConfig, monotone: list[int] | None = None, n_rows: int = 0) -> dict:
    """LightGBM parameter dict for a binary model from the config (``n_rows``: training rows).

    >>> booster_params(BoosterConfig(min_data_in_leaf=50, min_leaf_share=0.02), n_rows=10_000)["min_data_in_leaf"]
    200
    """
    params = {
        "objective": "binary",
        "metric": "binary_logloss",
        "num_leaves": config.num_leaves,
        "max_depth": config.max_depth,
        "learning_rate": config.learning_rate,
        "min_data_in_leaf": max(config.min_data_in_leaf, int(config.min_leaf_share * n_rows)),
        "feature_fraction": config.feature_fraction,
        "bagging_fraction": config.bagging_fraction,
        "bagging_freq": config.bagging_freq,
        "lambda_l2": config.lambda_l2,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }
    if config.num_threads:
        params["num_threads"] = config.num_threads
    if monotone and any(monotone):
        params["monotone_constraints"] = monotone
        params["monotone_constraints_method"] = "advanced"
    return params


def fit_booster(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: BoosterConfig,
    feature_names: list[str],
    categorical: list[str] | None = None,
    monotone: list[int] | None = None,
    early_stopping: bool = True,
) -> lgb.Booster:
    """Train a binary booster on (X, y, weight) with early stopping on the validation triple.

    ``early_stopping=False`` trains all ``num_boost_round`` trees (benchmarks' reference).
    """
    x_train, y_train, w_train = train
    x_val, y_val, w_val = validation
    cat = [c for c in (categorical or []) if c in feature_names]
    train_set = lgb.Dataset(
        x_train, label=y_train, weight=w_train, feature_name=feature_names,
        categorical_feature=cat or "auto", free_raw_data=False,
    )
    val_set = lgb.Dataset(x_val, label=y_val, weight=w_val, reference=train_set)
    return lgb.train(
        booster_params(config, monotone, n_rows=len(y_train)),
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[val_set],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)] if early_stopping else [],
    )


def choose_blend_weight(
    booster_logit: np.ndarray, linear_logit: np.ndarray, y: np.ndarray, w: np.ndarray, grid: tuple[float, ...]
) -> float:
    """The linear model's share of the blended log-odds with the lowest weighted log-loss on (y, w).

    Ties go to the smaller share (the booster alone when the linear model adds nothing).

    >>> y = np.array([0.0, 1.0, 0.0, 1.0])
    >>> choose_blend_weight(np.array([-1.0, 1.0, 1.0, -1.0]), np.array([-2.0, 2.0, -2.0, 2.0]), y, np.ones(4), (0.0, 0.5, 1.0))
    1.0
    """
    def loss(share: float) -> float:
        p = np.clip(sigmoid((1.0 - share) * booster_logit + share * linear_logit), 1e-12, 1 - 1e-12)
        return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())

    losses = [loss(float(share)) for share in grid]
    return float(grid[int(np.argmin(losses))])
