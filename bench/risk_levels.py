"""Share of open deals at each risk level, before and after the levels were redefined (issue 16).

Scores the deals open at an export's end with the champion models of an MLflow store, in process
(``serving.loader.load_champion`` -> ``build_features`` -> ``explain_scores``: the service's own
path), and prints how many land in each level under the previous rule (``high``: win < 0.20 or
slip >= 0.70; ``medium``: win < 0.40 or slip >= 0.40) and under the current one
(``features.model.grades.ExplainConfig``: win probability and value at risk in typical deals of
the segment). A level that separates puts a short list in ``high``.

It also shows that the levels rank: the deals open ``--back-days`` before the end are scored the
same way, and their outcomes by the end (in the same export) give each level's realised win rate
and its share of the amount later lost. Those deals fall in the training period of a model
trained on the whole export, so this shows the ordering, not out-of-sample accuracy.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db .venv/bin/python bench/risk_levels.py --data data/demo/export
    .venv/bin/python bench/risk_levels.py --case demo data/demo/export sqlite:///mlflow.db \
        --case g20k data/g20k/export sqlite:////tmp/g20k/mlflow.db
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

LEVELS = ("high", "medium", "low")


def previous_risk_levels(win: np.ndarray, slip: np.ndarray) -> np.ndarray:
    """The rule before issue 16: high when win < 0.20 or slip >= 0.70; medium when win < 0.40 or slip >= 0.40."""
    high = (win < 0.20) | (slip >= 0.70)
    medium = (win < 0.40) | (slip >= 0.40)
    return np.select([high, medium], ["high", "medium"], default="low")


def score_open_deals(export, loaded, as_of: pd.Timestamp) -> pd.DataFrame:
    """Explained scores of the deals open at ``as_of`` with both levels and the features the rules read."""
    from features.model.explain import explain_scores
    from features.pointintime.pipeline import build_features, select_open_deals

    features = build_features(export, select_open_deals(export, as_of), loaded.state)
    explained = explain_scores(loaded.bundle, features)
    win = explained["win_probability"].to_numpy(dtype=float)
    slip = explained["slip_probability"].to_numpy(dtype=float)
    codes = [{w["code"] for w in warnings} for warnings in explained["warnings"]]
    return pd.DataFrame({
        "deal_id": explained["deal_id"].to_numpy(dtype=object),
        "win": win, "slip": slip, "amount": explained["amount"].to_numpy(dtype=float),
        "value_at_risk": explained["value_at_risk"].to_numpy(dtype=float),
        "before": previous_risk_levels(win, slip),
        "after": explained["risk_level"].astype(str).to_numpy(dtype=object),
        "days_to_expected_close": features["days_to_expected_close"].to_numpy(dtype=float),
        "close_date_passed": ["close_date_passed" in c for c in codes],
        "sized": np.isfinite(features["amount_vs_segment_median"].to_numpy(dtype=float)),
    })


def level_shares(scored: pd.DataFrame, column: str) -> dict[str, tuple[int, float, float]]:
    """Per level: deals, share of deals, share of the value at risk."""
    total_var = scored["value_at_risk"].sum()
    out = {}
    for level in LEVELS:
        picked = scored[column] == level
        out[level] = (int(picked.sum()), float(picked.mean()) if len(scored) else float("nan"),
                      float(scored.loc[picked, "value_at_risk"].sum() / total_var) if total_var else float("nan"))
    return out


def realised(scored: pd.DataFrame, deals: pd.DataFrame, column: str) -> dict[str, tuple[int, float, float]]:
    """Per level, over the deals closed since: closed deals, realised win rate, share of the amount lost."""
    outcome = deals.set_index("deal_id")["outcome"].reindex(scored["deal_id"]).to_numpy()
    closed = np.isin(outcome, ("won", "lost"))
    lost_amount = np.where(outcome == "lost", np.nan_to_num(scored["amount"].to_numpy()), 0.0)
    total_lost = lost_amount[closed].sum()
    out = {}
    for level in LEVELS:
        picked = closed & (scored[column].to_numpy() == level)
        out[level] = (int(picked.sum()), float((outcome[picked] == "won").mean()) if picked.any() else float("nan"),
                      float(lost_amount[picked].sum() / total_lost) if total_lost else float("nan"))
    return out


def run_case(name: str, data: Path, tracking_uri: str, back_days: int) -> None:
    from features.contract.load import load_export
    from features.pointintime.snapshots import export_end
    from serving.config import ServingConfig
    from serving.loader import load_champion
    from serving.scoring import load_model

    export = load_export(data)
    loaded = load_model(load_champion(replace(ServingConfig.from_env(), tracking_uri=tracking_uri)))
    end = export_end(export)
    now = score_open_deals(export, loaded, end)
    print(f"\n== {name}: {data}, {len(export.deals):,} deals, {len(now):,} open at {end:%Y-%m-%d %H:%M} UTC "
          f"(models v{loaded.versions['win']}/v{loaded.versions['slip']})")
    print(f"median win {np.median(now['win']):.3f}, median slip {np.median(now['slip']):.3f}; "
          f"slip >= 0.70: {np.mean(now['slip'] >= 0.70):.1%}; expected close date passed: "
          f"{np.mean(now['days_to_expected_close'] < 0):.1%} (close_date_passed warning on {np.mean(now['close_date_passed']):.1%}); "
          f"value at risk sized by segment: {np.mean(now['sized']):.1%}")
    before, after = level_shares(now, "before"), level_shares(now, "after")
    print(f"{'level':8} {'before: deals':>14} {'share':>7} {'VaR share':>10} | {'after: deals':>13} {'share':>7} {'VaR share':>10}")
    for level in LEVELS:
        b, a = before[level], after[level]
        print(f"{level:8} {b[0]:>14,} {b[1]:>7.1%} {b[2]:>10.1%} | {a[0]:>13,} {a[1]:>7.1%} {a[2]:>10.1%}")
    then = end - pd.Timedelta(days=back_days)
    earlier = score_open_deals(export, loaded, then)
    before, after = realised(earlier, export.deals, "before"), realised(earlier, export.deals, "after")
    closed = sum(v[0] for v in after.values())
    print(f"ranking check: {len(earlier):,} deals open {back_days} days before the end, {closed:,} closed since "
          "(in-sample for this model: ordering only)")
    print(f"{'level':8} {'before: closed':>15} {'win rate':>9} {'lost amt':>9} | {'after: closed':>14} {'win rate':>9} {'lost amt':>9}")
    for level in LEVELS:
        b, a = before[level], after[level]
        print(f"{level:8} {b[0]:>15,} {b[1]:>9.1%} {b[2]:>9.1%} | {a[0]:>14,} {a[1]:>9.1%} {a[2]:>9.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="one export folder, scored with MLFLOW_TRACKING_URI's champion")
    parser.add_argument("--case", nargs=3, action="append", default=[], metavar=("NAME", "EXPORT", "TRACKING_URI"),
                        help="an export and the MLflow store holding its champion (repeatable)")
    parser.add_argument("--back-days", type=int, default=180, help="how long before the end the ranking check scores")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cases = [(name, Path(folder), uri) for name, folder, uri in args.case]
    if args.data is not None:
        cases.insert(0, (args.data.name, args.data, os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")))
    if not cases:
        parser.error("give --data DIR or at least one --case NAME DIR URI")
    for name, folder, uri in cases:
        run_case(name, folder, uri, args.back_days)


if __name__ == "__main__":
    main()
