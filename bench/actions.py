"""Benchmark next best actions against plain scoring: cost per open deal, in the same run.

On a generated export's deals open at its end, each as one batch (what ``dealrisk score`` and a
large ``/score`` request do), then deal by deal (a one-deal request), the median of a few
repeats of:

- ``features + predict``: ``build_features_as_of`` and the calibrated probabilities only;
- ``plain scoring``: features, probabilities and explanations (``explain_scores``): what
  ``POST /score`` computes today, the baseline of the ratio column;
- ``next best actions``: ``features.model.actions.next_best_actions`` from the export alone
  (its own build of the deals as they are, then one build over every (deal x action) variant);
- ``... given the features``: the same with the deals' features handed in (``base_features``), as
  ``/score`` with ``next_best_actions`` and ``dealrisk score`` call it: the cost the option adds.

The model is a bundle folder (``--bundle``, e.g. a training run's ``bundle/`` artifact) or, by
default, one fitted here by training's own code with the default booster capped at 200 rounds
per model (the shipped one stops at ~250-400 on 5k-20k deals); fitting is not measured.

    .venv/bin/python bench/actions.py                          # about 1 min on 2 cores
    .venv/bin/python bench/actions.py --deals 20000 --bundle mlartifacts/<run>/artifacts/bundle
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from bench_common import fit_quick_bundle, make_export  # this folder is on sys.path when run as a script

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # as dealrisk serve does: one core per worker







def median_seconds(repeats: int, run, *args) -> float:
    """Median wall time of ``run(*args)`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=4000, help="deals in the generated export (about a fifth are open at its end)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bundle", type=Path, help="a bundle folder to score with (default: fit one here)")
    parser.add_argument("--rounds", type=int, default=200, help="boosting rounds of the model fitted here")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=30, help="deals timed one by one (one-deal requests)")
    args = parser.parse_args()

    from features.model.actions import DEFAULT_ACTIONS, evaluate_actions, next_best_actions
    from features.model.bundle import load_bundle_dir
    from features.model.explain import explain_scores
    from features.model.predict import predict_probabilities
    from features.pointintime.pipeline import build_features_as_of, select_open_deals, subset_export
    from features.pointintime.snapshots import export_end
    from features.pointintime.state import FeatureState

    started = time.perf_counter()
    export = make_export(args.deals, args.seed)
    bundle = load_bundle_dir(args.bundle) if args.bundle else fit_quick_bundle(export, args.rounds)
    state = FeatureState.from_dict(bundle.feature_state)
    as_of = export_end(export)
    open_ids = select_open_deals(export, as_of)["deal_id"].astype(str).tolist()
    batch = subset_export(export, open_ids)
    n = len(open_ids)
    trees = bundle.win_model.num_trees() + bundle.slip_model.num_trees()
    print(f"{args.deals} deals, {n} open at {as_of.isoformat()}; model: {trees} trees (win + slip), "
          f"{len(DEFAULT_ACTIONS)} actions; setup {time.perf_counter() - started:.0f} s")

    features = build_features_as_of(batch, as_of, state)
    tried = evaluate_actions(bundle, batch, as_of, state=state, base_features=features)
    shown = next_best_actions(bundle, batch, as_of, state=state, base_features=features)
    print(f"variants scored: {len(tried)} ({len(tried) / n:.2f} per deal); deals with a recommended action: "
          f"{shown['deal_id'].nunique()} ({shown['deal_id'].nunique() / n:.0%}); "
          f"not recommended (gain < 0.5 points): {(~tried['recommended']).mean():.0%} of variants, "
          f"negative: {(tried['gain_points'] < 0).mean():.1%}")

    # Each run scores one export of deals; the last also gets those deals' features.
    runs = {
        "features + predict": lambda d, f: predict_probabilities(bundle, build_features_as_of(d, as_of, state)),
        "plain scoring (features + explain)": lambda d, f: explain_scores(bundle, build_features_as_of(d, as_of, state)),
        "next best actions": lambda d, f: next_best_actions(bundle, d, as_of, state=state),
        "... given the features": lambda d, f: next_best_actions(bundle, d, as_of, state=state, base_features=f),
    }
    rows = [(name, median_seconds(args.repeats, run, batch, features)) for name, run in runs.items()]

    rng = np.random.default_rng(0)
    sample = rng.choice(open_ids, size=min(args.single, n), replace=False).tolist()
    singles: dict[str, list[float]] = {name: [] for name in runs}
    for deal in sample:
        one = subset_export(export, [deal])
        one_features = build_features_as_of(one, as_of, state)
        for name, run in runs.items():
            singles[name].append(median_seconds(1, run, one, one_features))

    base = dict(rows)["plain scoring (features + explain)"]
    base_single = statistics.median(singles["plain scoring (features + explain)"])
    print()
    print(f"{'':38s} {'batch ms/deal':>14s} {'x plain':>8s} {'one-deal ms (median)':>21s} {'x plain':>8s}")
    for name, seconds in rows:
        single = statistics.median(singles[name])
        print(f"{name:38s} {1000 * seconds / n:14.3f} {seconds / base:8.2f} {1000 * single:21.2f} {single / base_single:8.2f}")
    print(f"\nbatch: {n} open deals, median of {args.repeats}; one-deal: median over {len(sample)} deals. "
          f"Total {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
