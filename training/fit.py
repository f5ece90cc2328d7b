"""LightGBM fitting with early stopping on the validation period: in this process (``fit_booster``)
or on a Dask cluster through LightGBM's own Dask interface (``fit_booster_dask``)."""

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


# LightGBM's binary_logloss clips probabilities at this epsilon (kEpsilon in its metric code).
LOG_LOSS_EPSILON = 1e-15
# Trees per leaf-index call when replaying early stopping (rows x block integers at a time).
REPLAY_BLOCK = 100


def early_stopping_point(booster: lgb.Booster, validation: tuple[np.ndarray, np.ndarray, np.ndarray],
                         rounds: int) -> tuple[int, bool]:
    """Where ``lgb.early_stopping(rounds)`` on ``validation`` would have stopped ``booster``: the best
    iteration (1-based) and whether the rule stopped within the booster's trees.

    LightGBM's rule replayed tree by tree on the weighted validation log-loss: the best iteration
    is the first with the lowest loss so far, and training stops ``rounds`` iterations after it
    without a strictly lower loss.
    """
    x, y, w = validation
    y, w = np.asarray(y, dtype=float), np.asarray(w, dtype=float)
    raw = np.zeros(len(y))
    best, best_loss = 0, np.inf
    for start in range(0, booster.current_iteration(), REPLAY_BLOCK):
        # One leaf-index call per block of trees (a predict call per tree is slow on busy cores).
        leaves = np.atleast_2d(booster.predict(x, pred_leaf=True, start_iteration=start, num_iteration=REPLAY_BLOCK))
        leaves = leaves.reshape(len(y), -1)
        for offset in range(leaves.shape[1]):
            iteration = start + offset
            outputs = np.array([booster.get_leaf_output(iteration, leaf) for leaf in range(int(leaves[:, offset].max()) + 1)])
            raw += outputs[leaves[:, offset]]
            p = sigmoid(raw)
            loss = -np.where(y > 0, np.log(np.maximum(p, LOG_LOSS_EPSILON)), np.log(np.maximum(1.0 - p, LOG_LOSS_EPSILON)))
            value = float((w * loss).sum() / w.sum())
            if iteration == 0 or value < best_loss:
                best, best_loss = iteration, value
            elif iteration - best >= rounds:
                return best + 1, True
    return best + 1, False


def replay_early_stopping(booster: lgb.Booster, validation: tuple[np.ndarray, np.ndarray, np.ndarray], rounds: int) -> lgb.Booster:
    """``booster`` cut at ``early_stopping_point``'s best iteration, with ``best_iteration`` set, as
    ``lgb.train`` with the early-stopping callback leaves it."""
    best, _ = early_stopping_point(booster, validation, rounds)
    cut = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    cut.best_iteration = best
    return cut


def fit_booster_dask(
    client,
    train: tuple,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: BoosterConfig,
    feature_names: list[str],
    n_rows: int,
    categorical: list[str] | None = None,
    monotone: list[int] | None = None,
    early_stopping: bool = True,
) -> lgb.Booster:
    """``fit_booster`` on a Dask cluster: ``lightgbm.dask.DaskLGBMClassifier`` with the same parameters.

    ``train`` is (X, y, weight) as Dask collections on ``client``'s cluster (X a Dask DataFrame with
    the ``feature_names`` columns, float64 as ``features.model.matrix.encode_matrix`` gives them);
    ``validation`` is (X, y, weight) in this process; ``n_rows``: training rows (the leaf minimum
    scales with them, as in ``booster_params``). Each worker trains on the partitions it holds and
    LightGBM's data-parallel learner joins their histograms, so leaf sizes and splits count every
    row. What differs from ``fit_booster`` comes from LightGBM:

    - ``lightgbm.dask`` has no early stopping (each worker would judge its own share of the
      validation rows and they would disagree), so the rounds are fitted in blocks of
      ``dask_block_rounds(config)``, each continuing the last (``init_model``, the seed moved on by
      one so that bagging draws new rows), and LightGBM's rule is replayed on the whole validation
      period here after each block (``early_stopping_point``); fitting stops when the rule would
      have, and the booster is cut at its best iteration;
    - monotone constraints use the ``basic`` method (LightGBM refuses ``advanced`` in distributed
      learning and would fall back to ``basic`` itself).
    """
    import warnings

    from lightgbm.dask import DaskLGBMClassifier  # dask and distributed, ~1 s: only the Dask engine loads them

    x_train, y_train, w_train = train
    params = booster_params(config, monotone, n_rows=n_rows)
    params.pop("num_threads", None)  # lightgbm.dask gives each worker its own thread count
    if "monotone_constraints_method" in params:
        params["monotone_constraints_method"] = "basic"
    cat = [c for c in (categorical or []) if c in feature_names]
    block = dask_block_rounds(config) if early_stopping else config.num_boost_round
    booster = None
    for index, done in enumerate(range(0, config.num_boost_round, block)):
        model = DaskLGBMClassifier(client=client, n_estimators=min(block, config.num_boost_round - done),
                                   **{**params, "seed": config.seed + index})
        # as_current: lightgbm.dask waits on its futures through distributed's current client.
        with warnings.catch_warnings(), client.as_current():
            # the scikit-learn wrapper always carries n_jobs; lightgbm.dask drops it with a warning
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored", category=UserWarning)
            model.fit(x_train, y_train, sample_weight=w_train, feature_name=feature_names,
                      categorical_feature=cat or "auto", init_model=booster)
        booster = model.to_local().booster_
        if early_stopping and early_stopping_point(booster, validation, config.early_stopping_rounds)[1]:
            break
    return replay_early_stopping(booster, validation, config.early_stopping_rounds) if early_stopping else booster


def dask_block_rounds(config: BoosterConfig) -> int:
    """Rounds per ``fit_booster_dask`` block: enough that most fits end in one or two (early
    stopping on the generated exports ended at 40-400 rounds), few enough not to fit far past the stop.

    >>> dask_block_rounds(BoosterConfig(early_stopping_rounds=50))
    250
    """
    return max(5 * config.early_stopping_rounds, 50)


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
