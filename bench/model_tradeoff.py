"""Accuracy vs explanation cost of LightGBM settings on one generated export.

Trains the win model with several (trees, leaves, depth, monotone) settings on the same time
split, calibrates each on the validation period, and prints test AUC / log-loss with the
TreeSHAP cost (``pred_contrib`` microseconds per row) as a ratio to LightGBM's default
(31 leaves, no depth limit, 200 trees).

    .venv/bin/python bench/model_tradeoff.py --deals 20000 --seed 3
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def ensure_export(deals: int, seed: int, folder: Path) -> Path:
    """Generate the export once; reuse it on later runs."""
    export = folder / "export"
    if not export.exists():
        from features.generator import run_generate

        run_generate(n_deals=deals, seed=seed, out=export, truth=folder / "truth.csv")
    return export


def time_contributions(booster, matrix: np.ndarray, repeats: int = 7) -> float:
    """Best-of-``repeats`` microseconds per row of ``pred_contrib`` (TreeSHAP)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        booster.predict(matrix, pred_contrib=True)
        best = min(best, time.perf_counter() - start)
    return 1e6 * best / len(matrix)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("data/bench/tradeoff"))
    parser.add_argument("--shap-rows", type=int, default=1000)
    args = parser.parse_args()

    from features.contract import load_export
    from features.matrix import encode_matrix, fit_matrix_spec
    from features.registry import CATEGORICAL_FEATURES
    from training.calibration import fit_calibration
    from training.config import BoosterConfig, TrainConfig
    from training.fit import fit_booster, monotone_vector
    from training.metrics import compute_metrics, per_deal_weights
    from training.pipeline import prepare_training_data

    folder = args.folder / f"{args.deals}-{args.seed}"
    export = load_export(ensure_export(args.deals, args.seed, folder))
    config = TrainConfig()
    data = prepare_training_data(export, config)
    (tr, trf), (va, vaf), (te, tef) = data.side("train"), data.side("validation"), data.side("test")
    spec = fit_matrix_spec(trf)
    names = list(spec.names)
    x_tr, x_va, x_te = (encode_matrix(f, spec) for f in (trf, vaf, tef))
    sets = {
        "train": (x_tr, tr["won"].to_numpy(float), per_deal_weights(tr["deal_id"])),
        "validation": (x_va, va["won"].to_numpy(float), per_deal_weights(va["deal_id"])),
    }
    y_te, w_te = te["won"].to_numpy(float), per_deal_weights(te["deal_id"])
    shap_rows = x_te[np.random.default_rng(0).choice(len(x_te), size=min(args.shap_rows, len(x_te)), replace=False)]

    base = BoosterConfig()
    lgb_default = replace(base, num_leaves=31, max_depth=-1, learning_rate=0.1, min_data_in_leaf=20, min_leaf_share=0.0,
                          lambda_l2=0.0, feature_fraction=1.0, bagging_fraction=1.0, bagging_freq=0, monotone_win={})
    settings = {
        "lightgbm defaults: 200 trees, 31 leaves, no depth limit": (replace(lgb_default, num_boost_round=200), {}),
        "31 leaves, no depth limit, early stopping": (lgb_default, {}),
        "63 leaves, depth 8, early stopping": (replace(base, num_leaves=63, max_depth=8), {}),
        "15 leaves, depth 5, early stopping, monotone": (replace(base, num_leaves=15, max_depth=5), base.monotone_win),
        "7 leaves, depth 3, early stopping, no monotone": (base, {}),
        "7 leaves, depth 3, early stopping, monotone (default)": (base, base.monotone_win),
        "4 leaves, depth 2, early stopping, monotone": (replace(base, num_leaves=4, max_depth=2), base.monotone_win),
    }
    rows = []
    for label, (booster_config, monotone) in settings.items():
        start = time.perf_counter()
        booster = fit_booster(
            sets["train"], sets["validation"], booster_config, names,
            categorical=[c for c in CATEGORICAL_FEATURES if c in names],
            monotone=monotone_vector(names, monotone, 1),
            early_stopping=not label.startswith("lightgbm defaults"),
        )
        fit_seconds = time.perf_counter() - start
        raw_val = booster.predict(x_va, num_iteration=booster.best_iteration)
        calibration = fit_calibration(raw_val, sets["validation"][1], sets["validation"][2])
        metrics = compute_metrics(y_te, calibration.apply(booster.predict(x_te, num_iteration=booster.best_iteration)), w_te)
        rows.append({
            "setting": label, "trees": booster.num_trees(), "auc": metrics["auc"], "log_loss": metrics["log_loss"],
            "fit_s": fit_seconds, "us_per_row": time_contributions(booster, shap_rows),
        })
    from training.baselines import fit_logistic_regression, predict_logistic_regression

    lr, numeric, categorical = fit_logistic_regression(
        trf[data.feature_names], data.feature_names, sets["train"][1], sets["train"][2], categorical_names=CATEGORICAL_FEATURES
    )
    lr_metrics = compute_metrics(y_te, predict_logistic_regression(lr, tef, numeric, categorical), w_te)
    reference = rows[0]["us_per_row"]
    print(f"win model on {args.deals} generated deals (seed {args.seed}); test period, per-deal weighted; "
          f"pred_contrib timed on {len(shap_rows)} rows")
    print(f"{'setting':58s} {'trees':>5s} {'AUC':>6s} {'logloss':>8s} {'fit s':>6s} {'SHAP us/row':>11s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['setting']:58s} {r['trees']:5d} {r['auc']:6.4f} {r['log_loss']:8.4f} {r['fit_s']:6.1f} "
              f"{r['us_per_row']:11.1f} {r['us_per_row'] / reference:6.2f}")
    print(f"{'reference: logistic regression (same features)':58s} {'-':>5s} {lr_metrics['auc']:6.4f} {lr_metrics['log_loss']:8.4f}")


if __name__ == "__main__":
    main()
