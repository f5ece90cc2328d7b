"""The generator's truth (its true win and slip probabilities) against the model on the same test points.

Generated data only (``dealrisk train --truth FILE``): the truth file holds, per deal, the
probability at creation (``kind = creation``, ``as_of`` = ``created_at``), at weekly points of the
training snapshots' grid (``grid``: ``created_at + 7k days``, k >= 1, usually one random k per
deal of the test period) and at random midnights (``snapshot``). ``select_truth_points`` keeps
those of test deals while they were open; ``truth_block`` compares the truth, the model and the
baselines there with deal-bootstrap intervals.

Weights. A deal's weekly points are k = 0 (creation) .. K - 1 (the last before its close). The
truth file has k = 0 and a sample of the rest, so each point stands for part of that grid:
- ``week`` weighting (the default for the truth comparison): every weekly point counts once,
  creation 1, the sampled points (K - 1) shared. Which points exist depends only on the past (is
  the deal still open this week?), so the true probability is the best prediction there: the
  truth is calibrated on these points, and it is the ceiling the gap is measured against.
- ``deal`` weighting (the report's other tables): every deal counts once, creation 1 / K, the rest
  (K - 1) / K. K is known only once the deal has closed, so this weighting looks ahead: on it
  even the truth is off (a deal that will close soon weighs more per point), and a model
  trained with the same weights can look closer to the truth than it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.pointintime.events import DAY_US, to_micros
from features.pointintime.snapshots import SnapshotConfig
from training.metrics import INTERVAL_METRICS, LEAD_SIGN, bootstrap_intervals, compute_metrics

TRUTH_KINDS: tuple[str, ...] = ("creation", "grid", "snapshot")
WEIGHTINGS: tuple[str, ...] = ("week", "deal")
TRUTH_NAME = "truth"


class TruthFileError(ValueError):
    """The generator's truth file is missing or malformed."""


def read_truth(path: Path) -> pd.DataFrame:
    """The truth file's rows: deal_id, as_of (UTC; NaT for creation rows of older files, whose
    as_of was left empty), kind, true_win_probability and true_slip_probability (NaN in older files)."""
    try:
        truth = pd.read_csv(path, dtype={"deal_id": "str", "kind": "str", "as_of": "str"})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TruthFileError(f"truth file {path}: cannot be read ({exc})") from exc
    return parse_truth(truth, str(path))


def parse_truth(truth: pd.DataFrame, path: str = "truth") -> pd.DataFrame:
    """``read_truth`` on a frame already in memory (``generator.export.generate_export(...).truth``)."""
    missing = {"deal_id", "as_of", "kind", "true_win_probability"} - set(truth.columns)
    if missing:
        raise TruthFileError(
            f"truth file {path}: missing columns {sorted(missing)}; expected deal_id, as_of, kind, true_win_probability"
        )
    unknown = sorted(set(truth["kind"].dropna()) - set(TRUTH_KINDS))
    if unknown:
        raise TruthFileError(f"truth file {path}: column kind has {unknown}; expected one of {', '.join(TRUTH_KINDS)}")
    truth = truth.loc[truth["kind"].isin(TRUTH_KINDS)]
    try:
        as_of = pd.to_datetime(truth["as_of"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        win = pd.to_numeric(truth["true_win_probability"]).astype(float)
        slip = pd.to_numeric(truth.get("true_slip_probability", pd.Series(np.nan, index=truth.index))).astype(float)
    except (ValueError, TypeError) as exc:
        raise TruthFileError(f"truth file {path}: column as_of or a probability unparseable ({exc})") from exc
    if as_of[truth["kind"] != "creation"].isna().any():
        row = int(np.flatnonzero(as_of.isna().to_numpy() & (truth["kind"] != "creation").to_numpy())[0]) + 1
        raise TruthFileError(f"truth file {path}: row {row}: as_of is empty; only creation rows may leave it empty")
    return pd.DataFrame({
        "deal_id": truth["deal_id"], "as_of": as_of, "kind": truth["kind"],
        "true_win_probability": win, "true_slip_probability": slip,
    }).reset_index(drop=True)


def weekly_points(created_at: pd.Series, closed_at: pd.Series) -> np.ndarray:
    """K: how many weekly points (created_at + 7k days, strictly before closed_at) a deal has, as
    ``features.pointintime.snapshots.sample_snapshots`` counts them.

    >>> created = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-01"], utc=True))
    >>> weekly_points(created, created + pd.to_timedelta([7, 7.5], unit="D")).tolist()
    [1, 2]
    """
    step = int(round(SnapshotConfig().every_days * DAY_US))  # the training snapshots' step, so the weights match
    return np.maximum(-((to_micros(created_at) - to_micros(closed_at)) // step), 0)


def select_truth_points(truth: pd.DataFrame, export, test_deals: pd.Index) -> pd.DataFrame:
    """Truth rows of test deals with a known outcome, taken while the deal was open, with their weights.

    Creation rows without ``as_of`` (older truth files) get the deal's ``created_at``. Columns
    added: ``won``, ``weeks`` (K), ``week_weight`` and ``deal_weight`` (see the module docstring;
    a deal whose only truth is at creation weighs 0 unless creation is its one weekly point:
    otherwise its later life would be missing from the sample).
    """
    deals = export.deals.set_index("deal_id")
    points = truth.loc[truth["deal_id"].isin(test_deals)].reset_index(drop=True)
    created_at = points["deal_id"].map(deals["created_at"])
    closed_at = points["deal_id"].map(deals["closed_at"])
    as_of = points["as_of"].where(points["as_of"].notna(), created_at)
    points = points.assign(as_of=as_of.astype("datetime64[us, UTC]"))
    outcome = points["deal_id"].map(deals["outcome"])
    keep = (points["as_of"] >= created_at) & (points["as_of"] < closed_at) & outcome.isin(["won", "lost"])
    points = points.loc[keep.to_numpy()].drop_duplicates(["deal_id", "as_of"]).reset_index(drop=True)
    weeks = weekly_points(points["deal_id"].map(deals["created_at"]), points["deal_id"].map(deals["closed_at"]))
    is_creation = (points["kind"] == "creation").to_numpy()
    later = pd.Series(~is_creation, dtype=float).groupby(points["deal_id"].to_numpy()).transform("sum").to_numpy()
    share = np.where(later > 0, 1.0 / np.maximum(later, 1.0), 0.0)
    week_weight = np.where(is_creation, np.where((later > 0) | (weeks <= 1), 1.0, 0.0), (weeks - 1) * share)
    return points.assign(
        won=points["deal_id"].map(deals["outcome"]).eq("won").astype(float).to_numpy(),
        weeks=weeks, week_weight=week_weight, deal_weight=week_weight / np.maximum(weeks, 1),
    )


def truth_block(
    points: pd.DataFrame,
    y: np.ndarray,
    predictions: dict[str, np.ndarray],
    weighting: str = "week",
    bins: int = 10,
    seed: int = 0,
) -> dict:
    """The truth and each prediction on the same points, with 90% deal-bootstrap intervals.

    ``predictions`` holds ``truth`` (the generator's probability) and the model and baselines.
    Keys: the truth's own metrics flat (``auc``, ``brier``, ...), each other prediction's as
    ``{name}_{metric}``, every interval as ``..._ci90_low`` / ``..._ci90_high``, and the gaps
    ``model_{auc,brier,log_loss,ece}_gap`` = how far the model is behind the truth (truth's AUC -
    model's; model's Brier - truth's), each with its interval from the same resamples.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    w = points[f"{weighting}_weight"].to_numpy(float)
    others = [name for name in predictions if name != TRUTH_NAME]
    intervals = bootstrap_intervals(points["deal_id"], y, w, predictions, tuple((TRUTH_NAME, name) for name in others),
                                    seed=seed, bins=bins)
    block: dict = {"weighting": weighting}
    for name, p in predictions.items():
        prefix = "" if name == TRUTH_NAME else f"{name}_"
        metrics = compute_metrics(y, p, w, bins)
        if name != TRUTH_NAME:
            metrics = {k: v for k, v in metrics.items() if k not in ("deals", "snapshots")}
        block.update({f"{prefix}{k}": v for k, v in metrics.items()})
        for metric in INTERVAL_METRICS:
            low, high = intervals[name][metric]
            block[f"{prefix}{metric}_ci90_low"], block[f"{prefix}{metric}_ci90_high"] = low, high
    for name in others:
        for metric in INTERVAL_METRICS:
            sign = LEAD_SIGN[metric]
            block[f"{name}_{metric}_gap"] = sign * (block[metric] - block[f"{name}_{metric}"])
            low, high = intervals[f"{TRUTH_NAME}-{name}"][metric]
            block[f"{name}_{metric}_gap_ci90_low"], block[f"{name}_{metric}_gap_ci90_high"] = low, high
    block["deals"] = float(points["deal_id"].nunique())
    block["snapshots"] = float(len(points))
    block["points"] = {kind: int((points["kind"] == kind).sum()) for kind in TRUTH_KINDS}
    return block
