"""How far the win and slip models are from the generator's truth, over several seeds.

For each seed: generate an export exactly as ``dealrisk generate`` does (truth on the test
period's weekly grid: one random weekly point per deal of the latest tenth of the deals, plus
creation), train as ``dealrisk train`` does (no MLflow), and compare the model with the truth on
the truth's test points (``training.pipeline.evaluate_truth``): AUC and Brier of both with
90% deal-bootstrap intervals, every weekly point weighing one (the weighting on which the truth is
the best possible prediction; "by deal" repeats the AUC gap with every deal weighing one, as the
report's other tables do). Then the same booster with each calibration method, on the same points,
to show what calibration does to the gap.

    .venv/bin/python bench/truth_gap.py --deals 20000 --seeds 41 42 43 44 45     # ~5 min a seed on 2 cores
    make bench-truth-gap

The mean's interval treats the seeds as independent: mean +- 1.645 x sqrt(sum of each seed's
squared standard error) / seeds, each standard error read off its 90% interval.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from features.contract.check import check_tables
from features.model.predict import predict_probabilities, predict_raw
from features.pointintime.inputs import blank_features
from features.pointintime.pipeline import build_features
from generator.export import generate_export
from training.calibration import FITTERS
from training.config import TrainConfig
from training.metrics import compute_metrics, per_deal_weights
from training.pipeline import TARGETS, evaluate_truth, fit_bundle, prepare_training_data
from training.truth import parse_truth, select_truth_points

Z90 = 1.6449


def run_seed(deals: int, seed: int, grid_points: int, config: TrainConfig, fractions: tuple[float, ...] = (),
             week_weights: bool = False) -> dict:
    """One seed: generate, train, compare with the truth. Returns plain numbers.

    ``fractions``: also train on that share of the training deals (validation and test unchanged),
    a learning curve of the gap. ``week_weights``: also train with every snapshot weighing one
    (the truth comparison's weighting) instead of every deal.
    """
    began = time.perf_counter()
    generated = generate_export(deals, seed, truth_snapshots=2000, truth_grid_deals=deals // 10,
                                truth_grid_points=grid_points)
    generated_at = time.perf_counter()
    checked = check_tables(generated.tables)
    if not checked.ok:
        raise SystemExit(f"seed {seed}: the generated export breaks the contract: {checked.violations[:3]}")
    export, truth = checked.export, parse_truth(generated.truth, f"seed {seed}")
    data = prepare_training_data(export, config)
    bundle = fit_bundle(data, config, {})
    trained_at = time.perf_counter()
    blocks = evaluate_truth(truth, data, bundle, config, export)
    result = {"seed": seed, "truth": blocks, "calibration": bundle.metrics.get("calibration", {})}
    test_rows, test_features = data.side("test")
    result["test_deals"] = int(test_rows["deal_id"].nunique())
    result["training_deals"] = int(data.rows.loc[data.rows["side"] == "train", "deal_id"].nunique())
    result["calibration_variants"] = calibration_variants(data, bundle, truth, export)
    result["variants"] = training_variants(data, config, truth, export, seed, fractions, week_weights)
    probabilities = predict_probabilities(bundle, test_features)
    for target in bundle.targets:
        label, column = TARGETS[target]
        mask = test_rows[label].notna().to_numpy()
        metrics = compute_metrics(test_rows.loc[mask, label].to_numpy(float), probabilities[column].to_numpy()[mask],
                                  per_deal_weights(test_rows.loc[mask, "deal_id"]))
        result[f"{target}_test_auc"], result[f"{target}_test_brier"] = metrics["auc"], metrics["brier"]
    result["seconds"] = {"generate": generated_at - began, "train": trained_at - generated_at,
                         "truth": time.perf_counter() - trained_at}
    return result


def calibration_variants(data, bundle, truth: pd.DataFrame, export) -> dict:
    """Win model: the same blend with each calibration method (fitted on validation), on the truth
    points (gap to the truth, week-weighted) and on all test snapshots (Brier, deal-weighted)."""
    val_rows, val_features = data.side("validation")
    test_rows, test_features = data.side("test")
    points = select_truth_points(truth, export, pd.Index(test_rows["deal_id"].unique()))
    points = points.loc[points["week_weight"] > 0].reset_index(drop=True)
    features = blank_features(build_features(export, points[["deal_id", "as_of"]], data.state), data.skips.features)
    raw = {name: predict_raw(bundle, frame)["win_probability"].to_numpy()
           for name, frame in (("validation", val_features), ("test", test_features), ("points", features))}
    y_val = val_rows["won"].to_numpy(float)
    w_val = per_deal_weights(val_rows["deal_id"])
    y, w = points["won"].to_numpy(float), points["week_weight"].to_numpy(float)
    truth_metrics = compute_metrics(y, points["true_win_probability"].to_numpy(float), w)
    y_test, w_test = test_rows["won"].to_numpy(float), per_deal_weights(test_rows["deal_id"])
    out = {}
    for method, fit in FITTERS.items():
        calibration = fit(raw["validation"], y_val, w_val)
        on_points = compute_metrics(y, calibration.apply(raw["points"]), w)
        on_test = compute_metrics(y_test, calibration.apply(raw["test"]), w_test)
        out[method] = {"auc_gap": truth_metrics["auc"] - on_points["auc"], "brier_gap": on_points["brier"] - truth_metrics["brier"],
                       "test_brier": on_test["brier"], "test_log_loss": on_test["log_loss"]}
    return out


def training_variants(data, config: TrainConfig, truth: pd.DataFrame, export, seed: int,
                      fractions: tuple[float, ...], week_weights: bool) -> list[dict]:
    """The win model's gap to the truth when trained on fewer deals, or with every snapshot weighing one."""
    from training import pipeline

    rng = np.random.default_rng(seed)
    train_deals = data.rows.loc[data.rows["side"] == "train", "deal_id"].unique()
    runs = [(f"{fraction:.0%} of training deals", fraction, False) for fraction in fractions]
    if week_weights:
        runs.append(("every snapshot weighs 1 in training", 1.0, True))
    out = []
    for label, fraction, by_snapshot in runs:
        kept = set(rng.choice(train_deals, size=max(2, round(fraction * len(train_deals))), replace=False))
        keep = ((data.rows["side"] != "train") | data.rows["deal_id"].isin(kept)).to_numpy()
        subset = replace(data, rows=data.rows.loc[keep].reset_index(drop=True),
                         features=data.features.loc[keep].reset_index(drop=True))
        weights = pipeline._weights
        if by_snapshot:
            pipeline._weights = lambda rows: np.ones(len(rows))  # fit_bundle's weights (bench only)
        try:
            bundle = fit_bundle(subset, config, {})
        finally:
            pipeline._weights = weights
        block = evaluate_truth(truth, subset, bundle, config, export)["win"]
        out.append({"variant": label, "training_deals": len(kept), "auc_gap": block["model_auc_gap"],
                    "auc_gap_low": block["model_auc_gap_ci90_low"], "auc_gap_high": block["model_auc_gap_ci90_high"],
                    "brier_gap": block["model_brier_gap"], "by_deal_auc_gap": block["by_deal"]["model_auc_gap"]})
    return out


def variants_table(results: list[dict]) -> Table:
    """Per seed: the shipped model's win gap beside the variants' (same truth points)."""
    table = Table(title="win gap to the truth: the shipped training beside fewer training deals / snapshot weights",
                  title_justify="left")
    for header in ("seed", "training", "training deals", "AUC gap (90%)", "Brier gap", "AUC gap by deal"):
        table.add_column(header, justify="right")
    for r in results:
        b = r["truth"]["win"]
        table.add_row(str(r["seed"]), "shipped (100%, every deal weighs 1)", f"{r['training_deals']:,}",
                      f"{b['model_auc_gap']:+.3f} ({b['model_auc_gap_ci90_low']:+.3f} .. {b['model_auc_gap_ci90_high']:+.3f})",
                      f"{b['model_brier_gap']:+.4f}", f"{b['by_deal']['model_auc_gap']:+.3f}")
        for v in r["variants"]:
            table.add_row(str(r["seed"]), v["variant"], f"{v['training_deals']:,}",
                          f"{v['auc_gap']:+.3f} ({v['auc_gap_low']:+.3f} .. {v['auc_gap_high']:+.3f})",
                          f"{v['brier_gap']:+.4f}", f"{v['by_deal_auc_gap']:+.3f}")
        table.add_section()
    return table


def standard_error(low: float | None, high: float | None) -> float:
    return (high - low) / (2 * Z90) if low is not None and high is not None and math.isfinite(low) and math.isfinite(high) else float("nan")


def mean_with_interval(values: list[float], lows: list[float], highs: list[float]) -> tuple[float, float, float]:
    mean = float(np.mean(values))
    errors = [standard_error(low, high) for low, high in zip(lows, highs)]
    half = Z90 * math.sqrt(sum(e * e for e in errors)) / len(errors)
    return mean, mean - half, mean + half


def gap_table(results: list[dict], target: str) -> Table:
    """Per seed and on average: truth vs model on the truth points."""
    table = Table(title=f"{target}: model vs the generator's truth on its test points (each weekly point weighs 1; 90% deal-bootstrap intervals)",
                  title_justify="left")
    for header in ("seed", "test deals", "truth deals", "points", "truth AUC", "model AUC", "AUC gap (90%)",
                   "truth Brier", "model Brier", "Brier gap (90%)", "AUC gap by deal", "AUC gap at creation"):
        table.add_column(header, justify="right")
    rows = [r for r in results if target in r["truth"] and "auc" in r["truth"][target]]
    for r in rows:
        b = r["truth"][target]
        table.add_row(
            str(r["seed"]), f"{r['test_deals']:,}", f"{b['deals']:,.0f}", f"{b['snapshots']:,.0f}",
            f"{b['auc']:.3f}", f"{b['model_auc']:.3f}",
            f"{b['model_auc_gap']:+.3f} ({b['model_auc_gap_ci90_low']:+.3f} .. {b['model_auc_gap_ci90_high']:+.3f})",
            f"{b['brier']:.4f}", f"{b['model_brier']:.4f}",
            f"{b['model_brier_gap']:+.4f} ({b['model_brier_gap_ci90_low']:+.4f} .. {b['model_brier_gap_ci90_high']:+.4f})",
            f"{b['by_deal']['model_auc_gap']:+.3f}", f"{b['at_creation']['model_auc_gap']:+.3f}",
        )
    if rows:
        blocks = [r["truth"][target] for r in rows]

        def mean_of(key: str) -> tuple[float, float, float]:
            return mean_with_interval([b[key] for b in blocks], [b[f"{key}_ci90_low"] for b in blocks],
                                      [b[f"{key}_ci90_high"] for b in blocks])

        auc, auc_low, auc_high = mean_of("model_auc_gap")
        brier, brier_low, brier_high = mean_of("model_brier_gap")
        table.add_section()
        table.add_row(
            "mean", f"{np.mean([r['test_deals'] for r in rows]):,.0f}", f"{np.mean([b['deals'] for b in blocks]):,.0f}",
            f"{np.mean([b['snapshots'] for b in blocks]):,.0f}", f"{np.mean([b['auc'] for b in blocks]):.3f}",
            f"{np.mean([b['model_auc'] for b in blocks]):.3f}", f"{auc:+.3f} ({auc_low:+.3f} .. {auc_high:+.3f})",
            f"{np.mean([b['brier'] for b in blocks]):.4f}", f"{np.mean([b['model_brier'] for b in blocks]):.4f}",
            f"{brier:+.4f} ({brier_low:+.4f} .. {brier_high:+.4f})",
            f"{np.mean([b['by_deal']['model_auc_gap'] for b in blocks]):+.3f}",
            f"{np.mean([b['at_creation']['model_auc_gap'] for b in blocks]):+.3f}",
        )
    return table


def calibration_table(results: list[dict]) -> Table:
    """Mean over seeds of the win model's gap and test Brier with each calibration method."""
    table = Table(title="win model, the same blend calibrated each way on validation (mean over seeds)", title_justify="left")
    for header in ("calibration", "AUC gap to truth", "Brier gap to truth", "test Brier (by deal)", "test log-loss (by deal)", "chosen by auto"):
        table.add_column(header, justify="right")
    chosen = [r["calibration"].get("win", {}).get("method") for r in results]
    for method in FITTERS:
        values = [r["calibration_variants"][method] for r in results]
        table.add_row(method, *(f"{np.mean([v[k] for v in values]):+.4f}" if k.endswith("gap") else f"{np.mean([v[k] for v in values]):.4f}"
                                for k in ("auc_gap", "brier_gap", "test_brier", "test_log_loss")),
                      f"{chosen.count(method)} of {len(results)}")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=20000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[41, 42, 43, 44, 45])
    parser.add_argument("--grid-points", type=int, default=1, help="weekly truth points per deal (dealrisk generate's default: 1)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--learning-curve", type=float, nargs="*", default=[],
                        help="also train on these shares of the training deals (e.g. 0.25 0.5): is the gap data-limited?")
    parser.add_argument("--week-weights", action="store_true", help="also train with every snapshot weighing one")
    args = parser.parse_args(argv)
    console = Console(width=250)
    config = TrainConfig()
    results = []
    for seed in args.seeds:
        result = run_seed(args.deals, seed, args.grid_points, config, tuple(args.learning_curve), args.week_weights)
        seconds = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
        console.print(f"seed {seed}: {seconds}", highlight=False)
        results.append(result)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=float))
    console.print(f"{args.deals:,} deals per export, seeds {' '.join(map(str, args.seeds))}")
    console.print(gap_table(results, "win"))
    console.print(gap_table(results, "slip"))
    console.print(calibration_table(results))
    if any(r["variants"] for r in results):
        console.print(variants_table(results))


if __name__ == "__main__":
    main()
