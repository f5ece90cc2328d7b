"""Accuracy vs explanation cost of LightGBM settings on one generated export.

Trains the win model with several (trees, leaves, depth, monotone) settings on the same time
split, calibrates each on the validation period, and prints test AUC / log-loss with the
TreeSHAP cost (``pred_contrib`` microseconds per row) as a ratio to LightGBM's default
(31 leaves, no depth limit, 200 trees). Each setting is also shown blended with the logistic
regression as ``dealrisk train`` ships it (``features.model.linear``; weight chosen on validation),
and the linear model's own explanation cost is printed once.

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
        from generator.export import run_generate

        run_generate(n_deals=deals, seed=seed, out=export, truth=folder / "truth.csv")
    return export


def time_contributions(explain, matrix: np.ndarray, repeats: int = 7) -> float:
    """Best-of-``repeats`` microseconds per row of ``explain(matrix)``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        explain(matrix)
        best = min(best, time.perf_counter() - start)
    return 1e6 * best / len(matrix)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("data/bench/tradeoff"))
    parser.add_argument("--shap-rows", type=int, default=1000)
    args = parser.parse_args()

    from features.contract.load import load_export
    from features.model.matrix import encode_matrix, fit_matrix_spec
    from features.model.predict import raw_probability
    from features.pointintime.definitions import CATEGORICAL_FEATURES
    from training.baselines import fit_linear_model
    from training.calibration import fit_calibration
    from training.config import BoosterConfig, TrainConfig
    from training.fit import choose_blend_weight, fit_booster, monotone_vector
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
    x, y, w = sets["train"]
    linear = fit_linear_model(x, names, spec.to_dict()["categorical"], y, w, monotone=config.linear_monotone())
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
        y_va, w_va = sets["validation"][1], sets["validation"][2]
        metrics = {}
        for kind, blend in (("alone", 0.0), ("blend", None)):
            weight = blend if blend is not None else choose_blend_weight(
                booster.predict(x_va, raw_score=True), linear.logit(x_va), y_va, w_va, config.linear.weight_grid)
            model = replace(linear, weight=weight)
            calibration = fit_calibration(raw_probability(booster, model, x_va), y_va, w_va)
            metrics[kind] = compute_metrics(y_te, calibration.apply(raw_probability(booster, model, x_te)), w_te)
            metrics[kind]["weight"] = weight
        rows.append({
            "setting": label, "trees": booster.num_trees(), "metrics": metrics,
            "fit_s": fit_seconds, "us_per_row": time_contributions(lambda m: booster.predict(m, pred_contrib=True), shap_rows),
        })
    lr_metrics = compute_metrics(y_te, linear.predict(x_te), w_te)
    reference = rows[0]["us_per_row"]
    print(f"win model on {args.deals} generated deals (seed {args.seed}); test period, per-deal weighted; "
          f"pred_contrib timed on {len(shap_rows)} rows; blend = with the logistic regression, its weight chosen on validation")
    print(f"{'setting':58s} {'trees':>5s} {'AUC':>6s} {'logloss':>8s} {'blend AUC':>9s} {'logloss':>8s} {'weight':>6s} "
          f"{'fit s':>6s} {'SHAP us/row':>11s} {'ratio':>6s}")
    for r in rows:
        alone, blend = r["metrics"]["alone"], r["metrics"]["blend"]
        print(f"{r['setting']:58s} {r['trees']:5d} {alone['auc']:6.4f} {alone['log_loss']:8.4f} {blend['auc']:9.4f} "
              f"{blend['log_loss']:8.4f} {blend['weight']:6.1f} {r['fit_s']:6.1f} {r['us_per_row']:11.1f} "
              f"{r['us_per_row'] / reference:6.2f}")
    print(f"{'reference: logistic regression alone (same features)':58s} {'-':>5s} {lr_metrics['auc']:6.4f} "
          f"{lr_metrics['log_loss']:8.4f} {'':>9s} {'':>8s} {'':>6s} {'':>6s} "
          f"{time_contributions(linear.contributions, shap_rows):11.1f}")


if __name__ == "__main__":
    main()
