"""How close could any model on our features get to the generator's truth, and what does the export hide?

``bench/truth_gap.py`` measures the shipped model's gap to the truth. This splits that gap in two,
per seed, on the test period's weekly truth points (every weekly point weighing one, as there):

- **feature ceiling**: LightGBM fitted to the truth itself - the true probability as a soft label
  (cross-entropy), on the training deals' weekly truth points, early stopping on the validation
  deals' - from exactly the features the shipped model sees. No won/lost noise and no outcome
  waited for: what a learner could reach if the features were all it had, i.e. what the CRM
  record of a deal shows. Its gap to the truth is the record's share of the model's gap; the
  model's gap minus it is the learning's share (finite won/lost labels).
- **ceiling + hidden part**: the same fit with one part of the simulation's hidden state added
  as a column (``generate_export(hidden_state=True)``; quality, pace, momentum, budget, champion,
  decision-maker and economic-buyer engagement): how much of the record's share that part
  carries. With all of them the fit must come close to the truth, or the method is broken.

Every gap has a 90% deal-bootstrap interval from the same resamples (``training.truth.truth_block``);
the mean over seeds treats them as independent (``truth_gap.mean_with_interval``). Win and slip.

    .venv/bin/python bench/truth_ceiling.py --deals 20000 --seeds 41 42 43 44 45   # 4-7 min a seed on 2 cores
    make bench-truth-ceiling

The exports are ``bench/truth_gap.py``'s (same seeds, same 2,000 random truth moments), with
weekly truth on every mature deal (``--grid-points`` random weekly points each, not one per test
deal), so the training deals have truth points to learn from.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from truth_gap import mean_with_interval

from features.contract.check import check_tables
from features.model.predict import encode_bundle_matrix, predict_matrix_probabilities
from features.pointintime.snapshots import label_snapshots
from generator.export import HIDDEN_STATE_COLUMNS, TRUTH_COLUMNS, generate_export
from training.config import TrainConfig
from training.pipeline import TARGETS, fit_bundle, prepare_training_data
from training.truth import parse_truth, select_truth_points, truth_block

# The distilled fits: small trees, slow learning, stopped on the validation deals' truth points.
DISTIL_PARAMS = {"objective": "cross_entropy", "num_leaves": 15, "learning_rate": 0.03, "min_data_in_leaf": 40,
                 "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 10.0,
                 "seed": 0, "deterministic": True, "force_row_wise": True, "verbosity": -1}
DISTIL_ROUNDS, DISTIL_PATIENCE = 4000, 100
HIDDEN_LABELS = {"quality": "quality", "pace": "pace", "momentum": "momentum", "budget": "budget",
                 "champion": "champion", "dm": "decision maker", "eb": "economic buyer"}
ALL_HIDDEN = "all hidden"
SIDES = ("train", "validation", "test")


def truth_with_hidden_state(generated) -> pd.DataFrame:
    """The parsed truth rows with the hidden state beside them (``parse_truth`` keeps every row in order)."""
    truth = parse_truth(generated.truth[TRUTH_COLUMNS], "generated truth")
    if len(truth) != len(generated.truth):
        raise SystemExit("parse_truth dropped truth rows: the hidden state would not line up")
    return truth.assign(**{column: generated.truth[column].to_numpy(float) for column in HIDDEN_STATE_COLUMNS})


def distil(sets: dict, truth_column: str, extra: tuple[str, ...], names: list[str], categorical: list[str]) -> np.ndarray:
    """Fit the truth's probability on the features (plus ``extra`` hidden columns); predict the test points."""

    def matrix(side: str) -> np.ndarray:
        points, x = sets[side]
        return np.column_stack([x, *(points[c].to_numpy(float) for c in extra)]) if extra else x

    def dataset(side: str, reference=None) -> lgb.Dataset:
        points, _ = sets[side]
        return lgb.Dataset(matrix(side), label=points[truth_column].to_numpy(float), weight=points["week_weight"].to_numpy(float),
                           feature_name=[*names, *extra], categorical_feature=categorical or "auto", reference=reference)

    train = dataset("train")
    booster = lgb.train(DISTIL_PARAMS, train, DISTIL_ROUNDS, valid_sets=[dataset("validation", train)],
                        callbacks=[lgb.early_stopping(DISTIL_PATIENCE, verbose=False)])
    return booster.predict(matrix("test"), num_iteration=booster.best_iteration)


def run_seed(deals: int, seed: int, grid_points: int, config: TrainConfig, parts: bool) -> dict:
    """One seed: generate with the hidden state, train as ``dealrisk train`` does, distil, compare."""
    began = time.perf_counter()
    generated = generate_export(deals, seed, truth_snapshots=2000, truth_grid_deals=deals, truth_grid_points=grid_points,
                                hidden_state=True)
    checked = check_tables(generated.tables)
    if not checked.ok:
        raise SystemExit(f"seed {seed}: the generated export breaks the contract: {checked.violations[:3]}")
    export, truth = checked.export, truth_with_hidden_state(generated)
    data = prepare_training_data(export, config)
    bundle = fit_bundle(data, config, {})
    trained_at = time.perf_counter()
    side_of = data.rows.drop_duplicates("deal_id").set_index("deal_id")["side"]
    sets = {}
    for side in SIDES:
        points = select_truth_points(truth, export, side_of.index[side_of == side])
        points = points.loc[points["week_weight"] > 0].reset_index(drop=True)
        sets[side] = (points, encode_bundle_matrix(bundle, data.features_at(export, points[["deal_id", "as_of"]])))
    names = list(bundle.features["names"])
    categorical = [c for c in bundle.features["categorical"] if c in names]
    test_points, test_matrix = sets["test"]
    labels = label_snapshots(export, test_points[["deal_id", "as_of"]])
    model = predict_matrix_probabilities(bundle, test_matrix, test_points.index)
    result = {"seed": seed, "points": {side: len(sets[side][0]) for side in SIDES},
              "deals": {side: int(sets[side][0]["deal_id"].nunique()) for side in SIDES}}
    extras = [(HIDDEN_LABELS[c], (c,)) for c in HIDDEN_STATE_COLUMNS] if parts else []
    extras.append((ALL_HIDDEN, tuple(HIDDEN_STATE_COLUMNS)))
    for target in bundle.targets:
        label, column = TARGETS[target]
        truth_column = f"true_{target}_probability"
        keep = labels[label].notna().to_numpy() & test_points[truth_column].notna().to_numpy()
        predictions = {"truth": test_points[truth_column].to_numpy(float), "model": model[column].to_numpy(),
                       "ceiling": distil(sets, truth_column, (), names, categorical)}
        for name, extra in extras:
            predictions[f"+{name}"] = distil(sets, truth_column, extra, names, categorical)
        block = truth_block(test_points.loc[keep].reset_index(drop=True), labels[label].to_numpy(float)[keep],
                            {k: v[keep] for k, v in predictions.items()}, "week", config.ece_bins, config.seed)
        result[target] = {"truth_auc": block["auc"], "truth_brier": block["brier"], "deals": block["deals"],
                          "points": block["snapshots"]}
        for name in predictions:
            if name != "truth":
                result[target][name] = {k: block[f"{name}_{k}"] for k in ("auc", "auc_gap", "auc_gap_ci90_low", "auc_gap_ci90_high",
                                                                        "brier", "brier_gap", "brier_gap_ci90_low", "brier_gap_ci90_high")}
    result["seconds"] = {"generate + train": trained_at - began, "distil": time.perf_counter() - trained_at}
    return result


def _gap(entry: dict, metric: str = "auc") -> str:
    digits = 3 if metric == "auc" else 4
    return (f"{entry[f'{metric}_gap']:+.{digits}f} ({entry[f'{metric}_gap_ci90_low']:+.{digits}f} .. "
            f"{entry[f'{metric}_gap_ci90_high']:+.{digits}f})")


def ceiling_table(results: list[dict], target: str) -> Table:
    """Per seed and on average: the model's gap, the feature ceiling's, and the learning's share."""
    table = Table(title=f"{target}: AUC gap to the truth on the test deals' weekly points (90% deal-bootstrap intervals)",
                  title_justify="left")
    for header in ("seed", "test deals", "points", "truth AUC", "model gap", "feature ceiling gap", "learning's share",
                   "model Brier gap", "ceiling Brier gap"):
        table.add_column(header, justify="right")
    rows = [r for r in results if target in r]
    for r in rows:
        b = r[target]
        table.add_row(str(r["seed"]), f"{b['deals']:,.0f}", f"{b['points']:,.0f}", f"{b['truth_auc']:.3f}",
                      _gap(b["model"]), _gap(b["ceiling"]), f"{b['model']['auc_gap'] - b['ceiling']['auc_gap']:+.3f}",
                      _gap(b["model"], "brier"), _gap(b["ceiling"], "brier"))
    if rows:
        def mean(name: str, metric: str = "auc") -> dict:
            entries = [r[target][name] for r in rows]
            value, low, high = mean_with_interval([e[f"{metric}_gap"] for e in entries], [e[f"{metric}_gap_ci90_low"] for e in entries],
                                                  [e[f"{metric}_gap_ci90_high"] for e in entries])
            return {f"{metric}_gap": value, f"{metric}_gap_ci90_low": low, f"{metric}_gap_ci90_high": high}

        table.add_section()
        table.add_row("mean", f"{np.mean([r[target]['deals'] for r in rows]):,.0f}", f"{np.mean([r[target]['points'] for r in rows]):,.0f}",
                      f"{np.mean([r[target]['truth_auc'] for r in rows]):.3f}", _gap(mean("model")), _gap(mean("ceiling")),
                      f"{np.mean([r[target]['model']['auc_gap'] - r[target]['ceiling']['auc_gap'] for r in rows]):+.3f}",
                      _gap(mean("model", "brier"), "brier"), _gap(mean("ceiling", "brier"), "brier"))
    return table


def parts_table(results: list[dict], target: str) -> Table:
    """Mean over seeds: the feature ceiling's AUC gap with each hidden part added, and what that part closes."""
    table = Table(title=f"{target}: the feature ceiling given one hidden part of the simulation as well (mean over seeds)",
                  title_justify="left")
    for header in ("added", "AUC gap to the truth", "closes of the ceiling's gap"):
        table.add_column(header, justify="right")
    rows = [r for r in results if target in r]
    base = np.mean([r[target]["ceiling"]["auc_gap"] for r in rows])
    table.add_row("nothing (feature ceiling)", f"{base:+.4f}", "")
    for name in [k for k in rows[0][target] if k.startswith("+")]:
        gap = np.mean([r[target][name]["auc_gap"] for r in rows])
        table.add_row(name[1:], f"{gap:+.4f}", f"{base - gap:+.4f}")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=20000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[41, 42, 43, 44, 45])
    parser.add_argument("--grid-points", type=int, default=6,
                        help="random weekly truth points per mature deal (the ceiling needs many: on seed 42, 2 / 6 / 12 gave +0.025 / +0.016 / +0.019)")
    parser.add_argument("--no-parts", action="store_true", help="skip the fits with one hidden part added (all of them still runs)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    if args.grid_points < 1 or args.deals < 1:
        parser.error("--grid-points and --deals must be at least 1: the ceiling is fitted on the training deals' weekly truth points")
    console = Console(width=220)
    config = TrainConfig()
    results = []
    for seed in args.seeds:
        result = run_seed(args.deals, seed, args.grid_points, config, not args.no_parts)
        seconds = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
        console.print(f"seed {seed}: {seconds}; truth points train/validation/test "
                      f"{result['points']['train']:,} / {result['points']['validation']:,} / {result['points']['test']:,}", highlight=False)
        results.append(result)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=float))
    console.print(f"{args.deals:,} deals per export, seeds {' '.join(map(str, args.seeds))}")
    for target in ("win", "slip"):
        if any(target in r for r in results):
            console.print(ceiling_table(results, target))
            console.print(parts_table(results, target))


if __name__ == "__main__":
    main()
