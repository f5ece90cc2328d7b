"""How many closed training deals before the win model beats the CRM stage table reliably?

For each export size and seed: generate (as ``dealrisk generate``, no truth needed), train as
``dealrisk train`` does (no MLflow) and compare the model with the stage table on the test period,
with the 90% deal-bootstrap interval of the model's lead (``training.evaluate.evaluate_predictions``).
A lead is "real" when its interval's low end is above 0. ``training.config.MinimumData.reliable_closed``
is read off this table.

    .venv/bin/python bench/minimum_data.py --deals 300 600 1200 2500 --seeds 1 2 3 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from features.contract.check import check_tables
from features.model.predict import encode_bundle_matrix, predict_probabilities
from generator.export import generate_export
from training.baselines import predict_stage_table
from training.config import TrainConfig
from training.evaluate import evaluate_predictions
from training.metrics import per_deal_weights
from training.pipeline import (
    STAGE_FEATURE,
    InsufficientDataError,
    check_minimum_data,
    fit_bundle,
    prepare_training_data,
)
from training.split import SplitError


def run(deals: int, seed: int, config: TrainConfig) -> dict:
    """One export: closed training deals, test deals, the model's lead over the stage table."""
    began = time.perf_counter()
    export = check_tables(generate_export(deals, seed, truth_snapshots=0).tables).export
    row: dict = {"deals": deals, "seed": seed}
    try:
        data = prepare_training_data(export, config)
    except (InsufficientDataError, SplitError) as exc:
        return {**row, "refused": str(exc)[:80]}
    train = data.rows.loc[data.rows["side"] == "train"].drop_duplicates("deal_id")
    row.update(won=int((train["won"] == 1).sum()), lost=int((train["won"] == 0).sum()))
    row["closed"] = row["won"] + row["lost"]
    try:  # dealrisk train would refuse below MinimumData's won / lost floor; measured anyway
        check_minimum_data(data.rows, config.minimum)
        row["floor"] = ""
    except InsufficientDataError:
        row["floor"] = f" (train refuses: under {config.minimum.won} won / {config.minimum.lost} lost)"
    bundle = fit_bundle(data, config, {})
    rows, features = data.side("test")
    y, w = rows["won"].to_numpy(float), per_deal_weights(rows["deal_id"])
    predictions = {
        "model": predict_probabilities(bundle, features)["win_probability"].to_numpy(),
        "stage_table": predict_stage_table(features[STAGE_FEATURE], config.stage_probabilities),
        "logistic_regression": bundle.halves("win")[1].predict(encode_bundle_matrix(bundle, features)),
    }
    metrics = evaluate_predictions(y, w, predictions, config.ece_bins, rows["deal_id"], config.seed)
    lead = metrics["lead_over_stage_table"]
    row.update(
        test_deals=int(rows["deal_id"].nunique()), model_auc=metrics["model"]["auc"], stage_auc=metrics["stage_table"]["auc"],
        lead_auc=lead["auc"], lead_auc_low=lead["auc_ci90_low"], lead_auc_high=lead["auc_ci90_high"],
        lead_brier=lead["brier"], lead_brier_low=lead["brier_ci90_low"], lead_brier_high=lead["brier_ci90_high"],
        seconds=time.perf_counter() - began,
    )
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, nargs="+", default=[300, 600, 1200, 2500])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    args = parser.parse_args(argv)
    config = TrainConfig()
    console = Console(width=200)
    table = Table(title="win model vs the CRM stage table on the test period (90% deal-bootstrap intervals of the model's lead)",
                  title_justify="left")
    for header in ("deals", "seed", "closed training deals (won/lost)", "test deals", "model AUC", "stage AUC",
                   "AUC lead (90%)", "Brier lead (90%)", "lead real?"):
        table.add_column(header, justify="right")
    summary: dict[int, list] = {}
    for deals in args.deals:
        for seed in args.seeds:
            r = run(deals, seed, config)
            if "refused" in r:
                table.add_row(str(deals), str(seed), "refused: " + r["refused"], "", "", "", "", "", "")
                summary.setdefault(deals, []).append(None)
                continue
            real = r["lead_auc_low"] > 0 and r["lead_brier_low"] > 0
            summary.setdefault(deals, []).append((r["closed"], real))
            table.add_row(
                str(deals), str(seed), f"{r['closed']} ({r['won']}/{r['lost']}){r['floor']}", str(r["test_deals"]),
                f"{r['model_auc']:.3f}", f"{r['stage_auc']:.3f}",
                f"{r['lead_auc']:+.3f} ({r['lead_auc_low']:+.3f} .. {r['lead_auc_high']:+.3f})",
                f"{r['lead_brier']:+.4f} ({r['lead_brier_low']:+.4f} .. {r['lead_brier_high']:+.4f})",
                "yes" if real else "no",
            )
            console.print(f"{deals} deals, seed {seed}: {r['seconds']:.0f} s", highlight=False)
        table.add_section()
    console.print(table)
    for deals, results in summary.items():
        trained = [r for r in results if r is not None]
        real = sum(1 for _, ok in trained if ok)
        closed = np.median([c for c, _ in trained]) if trained else float("nan")
        console.print(f"{deals:>6} deals: median {closed:.0f} closed training deals; the lead is real (AUC and Brier) "
                      f"in {real} of {len(results)} exports ({len(results) - len(trained)} refused)", highlight=False)


if __name__ == "__main__":
    main()
