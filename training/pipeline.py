"""``dealrisk train``: export -> time split -> features -> win/slip models (LightGBM blended with a
logistic regression) -> calibration -> evaluation against baselines (and the generator's truth)
-> MLflow -> registry.

``run_train`` is the wiring; the steps are the functions above it, each pure apart from
``load_export`` at the start and ``log_training_run`` at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract.load import load_export
from features.model.bundle import ModelBundle
from features.model.contributions import model_contributions
from features.model.matrix import encode_matrix, fit_matrix_spec
from features.model.predict import (
    apply_calibration,
    encode_bundle_matrix,
    predict_matrix_probabilities,
    predict_raw,
    raw_probability,
)
from features.pointintime.definitions import CATEGORICAL_FEATURES, FEATURE_NAMES
from features.pointintime.inputs import Skips, blank_features, plan_skips
from features.pointintime.pipeline import build_features, subset_export
from features.pointintime.snapshots import (
    SnapshotConfig,
    export_end,
    label_snapshots,
    maturity_days,
    sample_snapshots,
)
from features.pointintime.state import fit_feature_state
from training.baselines import fit_linear_model, predict_stage_table
from training.calibration import choose_calibration
from training.config import ConfigFile, MinimumData, TrainConfig
from training.evaluate import (
    clean_for_json,
    evaluate_forecast,
    evaluate_predictions,
    evaluate_slices,
    flatten_metrics,
    leak_alarms,
    single_feature_aucs,
)
from training.fit import choose_blend_weight, fit_booster, monotone_vector
from training.gate import PROMOTABLE_PARAM
from training.metrics import compute_metrics, per_deal_weights
from training.plots import plot_calibration, plot_forecast, plot_lift, plot_shap_summary
from training.split import SIDES, SplitError, SplitPlan, assign_sides, attach_sides, plan_split
from training.tracking import (
    describe_export,
    fingerprint_files,
    log_training_run,
    setup_mlflow,
)
from training.truth import TruthFileError, read_truth, select_truth_points, truth_block  # noqa: F401 - commands imports TruthFileError here

STAGE_FEATURE = "current_stage"
SLICE_FEATURES: tuple[str, ...] = ("current_stage", "segment", "deal_type")
TARGETS: dict[str, tuple[str, str]] = {"win": ("won", "win_probability"), "slip": ("slipped", "slip_probability")}


class InsufficientDataError(ValueError):
    """Too few won or lost deals in the training period to train a trustworthy model."""


@dataclass
class TrainingData:
    """Labelled snapshot rows and their point-in-time features, aligned row by row.

    ``rows``: deal_id, as_of, won, slipped, side, weight (1/snapshots of the deal within its
    side), closed_at and amount of the deal (evaluation only; never features).
    ``features`` holds every registry feature; those in ``skips.features`` are missing (NaN) in
    every row and left out of ``feature_names``, the features the models use.
    Above ``TrainConfig.max_rows_per_side`` a side's rows are those of a stable sample of its deals
    (``side_sample``): validation and test here, the training side too on the Dask engine, where
    ``distributed`` holds the whole training side as it stays on the cluster.
    """

    plan: SplitPlan
    state: object  # features.pointintime.state.FeatureState
    rows: pd.DataFrame
    features: pd.DataFrame
    feature_names: list[str]
    skips: Skips = field(default_factory=Skips)
    distributed: object | None = None  # training.distributed.DistributedTraining
    all_counts: dict | None = None  # side_counts of every row when ``rows`` holds samples (None: of ``rows``)

    @property
    def targets(self) -> list[str]:
        """The models this data trains ("win" always; "slip" unless skipped)."""
        return [target for target in TARGETS if target not in self.skips.models]

    def side(self, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        mask = (self.rows["side"] == name).to_numpy()
        return self.rows.loc[mask].reset_index(drop=True), self.features.loc[mask].reset_index(drop=True)

    def label_rows(self) -> pd.DataFrame:
        """Rows enough to count labels and closed training deals (``label_summary`` of every side)."""
        return self.rows if self.distributed is None else self.distributed.labels

    def counts(self) -> dict[str, dict[str, int]]:
        """Deals and snapshots per side, of all rows (``side_counts``), sampled or not."""
        return side_counts(self.rows) if self.all_counts is None else self.all_counts

    def level_rows(self) -> pd.DataFrame:
        """Training features holding every categorical level seen in training (``fit_matrix_spec`` reads them)."""
        return self.side("train")[1] if self.distributed is None else self.distributed.level_rows

    def features_at(self, export, points: pd.DataFrame) -> pd.DataFrame:
        """``build_features`` at ``points`` with this data's state, blanked as the training rows are;
        in this process, or on the cluster for the Dask engine (in ``points``' order and index)."""
        if self.distributed is None:
            built = build_features(export, points, self.state)
        else:
            built = self.distributed.features_at(points, self.state)
        return blank_features(built, self.skips.features)


def label_points(export, sides: pd.Series, missing_inputs: dict | None = None) -> pd.DataFrame:
    """Labelled snapshots (features.pointintime.snapshots) of the deals that have a side, one side each."""
    points = sample_snapshots(export, deal_ids=sides.index)
    # The types fixed: a partition may have no labelled snapshot, and its empty frame must look like the rest.
    points = attach_sides(label_snapshots(export, points, missing_inputs), sides).astype({"deal_id": "str", "side": "str"})
    deals = export.deals.set_index("deal_id")
    return points.assign(
        closed_at=deals["closed_at"].reindex(points["deal_id"]).array,
        deal_amount=deals["amount"].reindex(points["deal_id"]).to_numpy(dtype=float),
    )


def balance_cutoff(created: pd.Series, horizon_days: float, gap_days: int, mature_by: pd.Timestamp, train_share: float):
    """Cutoff giving the training cohort (created <= cutoff - horizon) ``train_share`` of the deals
    used by either side (the others: created in [cutoff + gap, mature_by]).

    >>> created = pd.Series(pd.date_range("2025-01-01", periods=300, freq="D", tz="UTC"))
    >>> balance_cutoff(created, 30, 0, created.iloc[-1], 0.5).date()
    datetime.date(2025, 6, 14)
    """
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    times = np.sort(((created.loc[created <= mature_by] - epoch) / pd.Timedelta(days=1)).to_numpy(dtype=float))
    train = np.searchsorted(times, times - horizon_days, side="right")
    post = len(times) - np.searchsorted(times, times + gap_days, side="left")
    share = train / np.maximum(train + post, 1)
    best = times[int(np.argmin(np.abs(share - train_share)))]
    return (epoch + pd.Timedelta(days=float(best))).floor("s")


def plan_periods(export, config: TrainConfig, end: pd.Timestamp | None = None) -> SplitPlan:
    """The split plan: maturity at the export end from ``features.pointintime.snapshots``' horizon rule.

    With ``train_mature_at_cutoff`` the training horizon is measured on deals closed before the
    cutoff only, and the default cutoff balances the two cohorts (``balance_cutoff``) instead of
    taking a plain quantile, so the horizon does not starve training. ``end``: the export's end
    when ``export`` holds only some of its tables (the Dask engine's global tables), else
    ``export_end(export)``.
    """
    quantile = SnapshotConfig().maturity_quantile
    horizon = maturity_days(export, quantile)
    if np.isnan(horizon):
        raise SplitError("deals: no won or lost deal; nothing to train on")
    mature_by = (export_end(export) if end is None else end) - pd.Timedelta(days=horizon)
    split = config.split
    deals = export.deals
    if split.train_mature_at_cutoff and split.cutoff is None:
        closed = deals.loc[deals["outcome"].isin(["won", "lost"]) & deals["closed_at"].notna(), "created_at"]
        if closed.empty:
            raise SplitError("deals: no won or lost deal with a closed_at; nothing to train on")
        split = replace(split, cutoff=balance_cutoff(closed, horizon, split.gap_days, mature_by, split.train_share).isoformat())
    plan = plan_split(deals, split, mature_by)
    if split.train_mature_at_cutoff:
        before = deals.loc[(deals["closed_at"] < plan.cutoff).to_numpy(), "deal_id"]
        train_horizon = maturity_days(subset_export(export, before), quantile)
        horizon_before = pd.Timedelta(days=0 if np.isnan(train_horizon) else train_horizon)
        plan = replace(plan, train_created_by=(plan.cutoff - horizon_before).floor("s"))
    return plan


def add_weights(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-deal weight within each side: 1 / snapshots of the deal."""
    return rows.assign(weight=per_deal_weights(rows["deal_id"]))


# The steps below read one deal's rows only (with the plan and the fitted state, which are the
# whole export's), so they give the same rows on a whole export and on each partition of it:
# the Dask engine (training.distributed) runs them per partition, the local one on the export.


def label_training_rows(export, plan: SplitPlan, state) -> pd.DataFrame:
    """The labelled, weighted snapshot rows of the export's deals that have a side."""
    return add_weights(label_points(export, assign_sides(export.deals, plan), state.missing_inputs))


def training_features(export, rows: pd.DataFrame, state, skips: Skips) -> pd.DataFrame:
    """Features of the rows' points, those in ``skips.features`` missing in every row (one row each, rows' index)."""
    return blank_features(build_features(export, rows[["deal_id", "as_of"]], state), skips.features)


def training_frame(export, plan: SplitPlan, state, skips: Skips) -> pd.DataFrame:
    """``label_training_rows`` and their ``training_features`` side by side: one frame per partition."""
    rows = label_training_rows(export, plan, state)
    return rows.join(training_features(export, rows, state, skips).drop(columns=["deal_id", "as_of"]))


def side_counts(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Deals and snapshots per side (a deal is on one side, so partitions' counts add up).

    >>> side_counts(pd.DataFrame({"deal_id": ["a", "a", "b"], "side": ["train", "train", "test"]}))["train"]
    {'deals': 1, 'snapshots': 2}
    """
    return {side: {"deals": int(rows.loc[rows["side"] == side, "deal_id"].nunique()),
                   "snapshots": int((rows["side"] == side).sum())}
            for side in ("train", "validation", "test")}


def label_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """The distinct (deal, side, labels) of the rows: all ``check_labels``, ``check_minimum_data`` and
    ``small_data_check`` read of them, at most two rows a deal (its slip label may change)."""
    return rows[["deal_id", "side", "won", "slipped"]].drop_duplicates().reset_index(drop=True)


def distinct_level_rows(features: pd.DataFrame) -> pd.DataFrame:
    """The rows where some categorical feature shows a value for the first time: every level, few rows.

    ``fit_matrix_spec`` of these rows equals that of all of them (it keeps each feature's levels).

    >>> frame = pd.DataFrame({"segment": ["smb", "smb", "ent"], "deal_type": ["new", "new", "new"], "amount": [1.0, 2.0, 3.0]})
    >>> distinct_level_rows(frame)["amount"].tolist()
    [1.0, 3.0]
    """
    columns = [name for name in CATEGORICAL_FEATURES if name in features.columns]
    first = np.zeros(len(features), dtype=bool)
    for name in columns:
        first |= ~features[name].duplicated().to_numpy()
    return features.loc[first]


# A stable key (16 bytes, as pandas' hash wants it), apart from the partitioning's: a deal's place in the sample.
SAMPLE_HASH_KEY = "dealrisk.sample1"


def deal_sample(deal_ids: pd.Series, max_rows: int | None, total_rows: int) -> np.ndarray:
    """Mask of the rows whose deal is in a stable sample of deals holding about ``max_rows`` of
    ``total_rows`` rows; all rows when there are no more than that (or ``max_rows`` is None).

    A deal is in when a keyed hash of its id, as a share of 2**64, is below ``max_rows / total_rows``:
    the same deals on every machine, for a whole export and per partition, and the sample of a
    sample is itself (the Dask engine collects it per partition; ``fit_bundle`` applies it again).

    >>> deal_sample(pd.Series(["a", "b"]), None, 10).tolist()
    [True, True]
    >>> int(deal_sample(pd.Series([f"D{i}" for i in range(10_000)]), 1_000, 10_000).sum())
    978
    """
    if max_rows is None or total_rows <= max_rows:
        return np.ones(len(deal_ids), dtype=bool)
    share = pd.util.hash_array(np.asarray(deal_ids, dtype=object), hash_key=SAMPLE_HASH_KEY) / 2.0**64
    return share < max_rows / total_rows


def side_sample(rows: pd.DataFrame, max_rows: int | None, counts: dict, sides=SIDES) -> np.ndarray:
    """Mask of the rows the training process keeps: each of ``sides``' ``deal_sample`` against that
    side's total (``counts``, ``side_counts`` of all rows); rows of the other sides all."""
    keep = np.ones(len(rows), dtype=bool)
    for side in sides:
        on = (rows["side"] == side).to_numpy()
        if on.any():
            keep[on] = deal_sample(rows.loc[on, "deal_id"], max_rows, counts[side]["snapshots"])
    return keep


def prepare_training_data(export, config: TrainConfig) -> TrainingData:
    """Split by close date, fit the feature state on the training period, build the features.

    What the export lacks before the cutoff (the state's ``missing_inputs``) decides what is left
    out (``features.pointintime.inputs.plan_skips``): features that need a missing table or an
    untracked field are missing (NaN) in every row, whatever the deals row holds at export time,
    and not used; a model without its label is not trained (``check_labels``). The Dask engine
    (``training.distributed.prepare_training_data_dask``) runs the same steps, the per-deal ones
    on each partition.
    """
    plan = plan_periods(export, config)
    state = fit_feature_state(export, plan.cutoff, config.features.fiscal_year_start_month)
    skips = plan_skips(state.missing_inputs or {})
    rows = label_training_rows(export, plan, state)
    features = training_features(export, rows, state, skips).reset_index(drop=True)
    counts, labelled = side_counts(rows), check_labels(rows, skips)
    keep = side_sample(rows, config.max_rows_per_side, counts, ("validation", "test"))  # training: every row, for the boosters
    if not keep.all():
        rows, features = rows.loc[keep].reset_index(drop=True), features.loc[keep].reset_index(drop=True)
    return TrainingData(plan=plan, state=state, rows=rows, features=features, feature_names=used_features(skips),
                        skips=labelled, all_counts=counts)


def used_features(skips: Skips) -> list[str]:
    """The registry's features the models use: all but those skipped."""
    return [name for name in FEATURE_NAMES if name not in skips.features]


def check_labels(rows: pd.DataFrame, skips: Skips) -> Skips:
    """``skips`` plus the models whose training or validation snapshots hold no usable label.

    A slip model without labels is skipped with the reason; the win model cannot be (nothing
    would be trained), so that raises ``InsufficientDataError``.

    >>> rows = pd.DataFrame({"side": ["train", "train", "validation", "validation"], "won": [1, 0, 1, 0],
    ...                      "slipped": [1.0, 1.0, None, None]})
    >>> check_labels(rows, Skips()).models["slip"]
    'the training snapshots have one slip label only (1.0); the validation snapshots have no slip label'
    """
    models = dict(skips.models)
    for target, (label, _) in TARGETS.items():
        if target in models:
            continue
        problems = []
        for side, name in (("train", "training"), ("validation", "validation")):
            known = rows.loc[(rows["side"] == side).to_numpy(), label].dropna()
            if known.empty:
                problems.append(f"the {name} snapshots have no {target} label")
            elif known.nunique() < 2:
                problems.append(f"the {name} snapshots have one {target} label only ({known.iloc[0]})")
        if problems and target == "win":
            raise InsufficientDataError(f"win model cannot be trained: {'; '.join(problems)}")
        if problems:
            models[target] = "; ".join(problems)
    return replace(skips, models=models)


def check_minimum_data(rows: pd.DataFrame, minimum: MinimumData) -> list[str]:
    """Refuse (raise) below the minimum of won and lost training deals; return warnings.

    >>> rows = pd.DataFrame({"side": ["train"] * 4, "deal_id": list("abcd"), "won": [1, 0, 1, 0]})
    >>> check_minimum_data(rows, MinimumData(won=2, lost=2, extreme_win_rate_low=0.05))
    []
    """
    train = rows.loc[rows["side"] == "train"].drop_duplicates("deal_id")
    won = int((train["won"] == 1).sum())
    lost = int((train["won"] == 0).sum())
    if won < minimum.won or lost < minimum.lost:
        raise InsufficientDataError(
            f"training period has {won} won and {lost} lost deals; at least {minimum.won} won and "
            f"{minimum.lost} lost are needed (Dynamics 365 opportunity scoring asks for 40 + 40, "
            "Salesforce Einstein for 200 + 200). Export a longer history or move the cutoff "
            "(--cutoff) later."
        )
    rate = won / (won + lost)
    if rate < minimum.extreme_win_rate_low or rate > minimum.extreme_win_rate_high:
        return [
            f"win rate in the training period is {rate:.1%} ({won} won / {lost} lost): probabilities "
            "near 0 or 1 are hard to calibrate; check the outcome mapping of the export"
        ]
    return []


def small_data_check(rows: pd.DataFrame, minimum: MinimumData) -> dict | None:
    """What training says, before fitting, when the training period has fewer closed deals than
    ``minimum.reliable_closed``; None when it has enough.

    >>> rows = pd.DataFrame({"side": ["train"] * 3, "deal_id": ["a", "b", "c"], "won": [1.0, 0.0, 0.0]})
    >>> small_data_check(rows, MinimumData(won=1, lost=1, reliable_closed=300))["closed"]
    3
    >>> small_data_check(rows, MinimumData(won=1, lost=1, reliable_closed=3)) is None
    True
    """
    train = rows.loc[rows["side"] == "train"].drop_duplicates("deal_id")
    won, lost = int((train["won"] == 1).sum()), int((train["won"] == 0).sum())
    if won + lost >= minimum.reliable_closed:
        return None
    return {
        "closed": won + lost, "won": won, "lost": lost, "reliable_closed": minimum.reliable_closed,
        "message": (
            f"the training period has {won + lost} closed deals ({won} won, {lost} lost), fewer than "
            f"{minimum.reliable_closed}: on generated exports that small the model often beat the CRM stage table by "
            "luck only (bench/minimum_data.py). Training goes ahead and reports every figure with its interval; the "
            "run is registered but promoted only if its lead over the stage table on the test period is beyond luck "
            "(AUC and Brier intervals above 0). `dealrisk promote --version N --force` promotes it anyway"
        ),
    }


def judge_small_data(small: dict | None, report: dict) -> dict:
    """The run's promotability: always for enough data; otherwise only with a real lead over the stage table."""
    if small is None:
        return {"promotable": True}
    lead = report.get("win", {}).get("lead_over_stage_table") or {}
    real = all((lead.get(f"{metric}_ci90_low") or 0.0) > 0 for metric in ("auc", "brier"))
    verdict = (
        f"the win model's lead over the CRM stage table is beyond luck (AUC {lead.get('auc', float('nan')):+.3f}, 90% "
        f"{lead.get('auc_ci90_low', float('nan')):+.3f} .. {lead.get('auc_ci90_high', float('nan')):+.3f}; Brier "
        f"{lead.get('brier', float('nan')):+.4f}, 90% {lead.get('brier_ci90_low', float('nan')):+.4f} .. "
        f"{lead.get('brier_ci90_high', float('nan')):+.4f})"
    )
    if not real:
        verdict = verdict.replace("is beyond luck", "is within luck") + ": this run will not be promoted"
    return {**{k: v for k, v in small.items() if k != "message"}, "promotable": real, "verdict": verdict}


def fit_bundle(data: TrainingData, config: TrainConfig, fitted_on: dict) -> ModelBundle:
    """Fit the win and slip models and their calibrations.

    Per target: the booster (early stopping on validation), the logistic regression on the same
    training rows, their blend weight (``config.linear``; by default the validation log-loss
    minimiser) and the calibration of the blend on validation (``config.calibration``; by default
    the method that predicts held-out validation deals best, ``training.calibration``).
    """
    train_rows, train_features = data.side("train")
    val_rows, val_features = data.side("validation")
    spec = fit_matrix_spec(data.level_rows(), tuple(data.feature_names))
    x_train, x_val = encode_matrix(train_features, spec), encode_matrix(val_features, spec)
    names = list(spec.names)
    categorical = [c for c in CATEGORICAL_FEATURES if c in names]
    sample = training_sample(data, train_rows, config)
    boosters, linears, calibrations, calibration_choices = {}, {}, {}, {}
    for target in data.targets:
        label, _ = TARGETS[target]
        t_mask = train_rows[label].notna().to_numpy()
        v_mask = val_rows[label].notna().to_numpy()
        sign = 1 if target == "win" else -1
        monotone = monotone_vector(names, config.booster.monotone_win, sign)
        val = (x_val[v_mask], val_rows.loc[v_mask, label].to_numpy(float), _weights(val_rows.loc[v_mask]))
        if data.distributed is None:
            train = (x_train[t_mask], train_rows.loc[t_mask, label].to_numpy(float), _weights(train_rows.loc[t_mask]))
            booster = fit_booster(train, val, config.booster, names, categorical=categorical, monotone=monotone)
        else:  # every training row, where it lies on the cluster
            booster = data.distributed.fit_booster(label, spec, val, config.booster, categorical, monotone)
        l_mask = t_mask & sample
        linear = fit_linear_model(
            x_train[l_mask], names, spec["categorical"], train_rows.loc[l_mask, label].to_numpy(float),
            _weights(train_rows.loc[l_mask]),
            monotone={k: sign * v for k, v in config.linear_monotone().items()},
            c=config.linear.c, min_frequency=config.linear.min_frequency, max_iter=config.linear.max_iter,
        )
        weight = config.linear.weight
        if weight is None:
            weight = choose_blend_weight(booster.predict(val[0], raw_score=True), linear.logit(val[0]), val[1], val[2],
                                         config.linear.weight_grid)
        linear = replace(linear, weight=float(weight))
        boosters[target], linears[target] = booster, linear
        choice = choose_calibration(raw_probability(booster, linear, val[0]), val[1], val[2],
                                    val_rows.loc[v_mask, "deal_id"], config.calibration.method, config.seed)
        calibrations[target], calibration_choices[target] = choice.calibration, choice.to_dict()
    return ModelBundle(
        win_model=boosters["win"], slip_model=boosters.get("slip"),
        win_calibration=calibrations["win"], slip_calibration=calibrations.get("slip"),
        feature_state=data.state.to_dict(), features=spec.to_dict(),
        metrics={**fitted_on, "calibration": calibration_choices},
        win_linear=linears["win"], slip_linear=linears.get("slip"), skipped=data.skips.to_dict(),
    )


def training_sample(data: TrainingData, train_rows: pd.DataFrame, config: TrainConfig) -> np.ndarray:
    """Mask of ``train_rows`` the logistic half and the leak check read (``deal_sample`` of all training rows)."""
    return deal_sample(train_rows["deal_id"], config.max_rows_per_side, data.counts()["train"]["snapshots"])


def _weights(rows: pd.DataFrame) -> np.ndarray:
    # Re-weight within the labelled subset so every deal still sums to one.
    return per_deal_weights(rows["deal_id"])


def evaluate_run(
    data: TrainingData, bundle: ModelBundle, config: TrainConfig, export, truth: pd.DataFrame | None
) -> tuple[dict, dict]:
    """The evaluation report (JSON-ready) and the arrays the plots need.

    The logistic-regression baseline is the model's own linear half alone (fitted on the same
    training rows and features).
    """
    test_rows, test_features = data.side("test")
    test_matrix = encode_bundle_matrix(bundle, test_features)  # once, for the probabilities and the linear baseline
    test_probabilities = predict_matrix_probabilities(bundle, test_matrix, test_features.index)
    stage_win = predict_stage_table(test_features[STAGE_FEATURE], config.stage_probabilities)
    report: dict = {
        "weighting": "per-deal: each snapshot weighs 1 / (snapshots of its deal), so every deal counts once",
        "split": data.plan.to_dict(),
        "counts": data.counts(),
        "sampled": sampled_sides(data, config),
        "best_iteration": {target: int(bundle.halves(target)[0].best_iteration) for target in bundle.targets},
        "linear_weight": {target: bundle.halves(target)[1].weight for target in bundle.targets},
        "skipped": data.skips.to_dict(),
    }
    plots: dict = {}
    slices = test_features[list(SLICE_FEATURES)]
    report["slices"] = {}
    for target in bundle.targets:
        label, column = TARGETS[target]
        mask = test_rows[label].notna().to_numpy()
        y = test_rows.loc[mask, label].to_numpy(float)
        w = per_deal_weights(test_rows.loc[mask, "deal_id"])
        _, linear = bundle.halves(target)
        stage = stage_win[mask] if target == "win" else 1.0 - stage_win[mask]
        predictions = {
            "model": test_probabilities[column].to_numpy()[mask],
            "stage_table": stage,
            "logistic_regression": linear.predict(test_matrix[mask]),
        }
        report[target] = evaluate_predictions(y, w, predictions, config.ece_bins, test_rows.loc[mask, "deal_id"], config.seed)
        report["slices"][target] = evaluate_slices(slices.loc[mask].reset_index(drop=True), y, w, predictions, config.ece_bins)
        plots[target] = {"y": y, "w": w, "predictions": predictions}
    report["calibration"] = evaluate_calibration(bundle, data, config)
    report["leak_check"] = check_leaks(data, report["win"]["model"]["auc"], config)
    report["leak_alarms"] = report["leak_check"].pop("alarms")
    forecast_rows = test_rows.assign(won=test_rows["won"].astype(float), amount=test_rows["deal_amount"])
    forecast_predictions = {
        "model": test_probabilities["win_probability"].to_numpy(),
        "stage_table": stage_win,
    }
    report["forecast"] = evaluate_forecast(forecast_rows, forecast_predictions)
    if truth is not None:
        for target, block in evaluate_truth(truth, data, bundle, config, export).items():
            report[target]["truth"] = block
        report["truth_note"] = (
            "truth: the generator's probabilities at its truth points of test deals (creation, one or more weekly "
            "points, random midnights), every weekly point weighing one: the weighting on which the truth is the "
            "best possible prediction; by_deal: every deal weighing one (looks ahead at when the deal closes)"
        )
    report["forecast_note"] = (
        "per close month of the test period: sum over test deals closing that month of "
        "weight x win probability x deal amount, against the amount actually won that month"
    )
    return clean_for_json(report), plots


def sampled_sides(data: TrainingData, config: TrainConfig) -> dict:
    """The sides whose figures come from a deal sample (``max_rows_per_side``), with the deals and
    snapshots read (training's: by the logistic half and the leak check); {} when none is sampled."""
    train_rows = data.side("train")[0]
    held = side_counts(data.rows)
    held["train"] = side_counts(train_rows.loc[training_sample(data, train_rows, config)])["train"]
    return {side: held[side] for side in SIDES if held[side]["snapshots"] < data.counts()[side]["snapshots"]}


def check_leaks(data: TrainingData, win_test_auc: float, config: TrainConfig) -> dict:
    """Each used feature's single-feature AUC on the training snapshots (``training_sample``'s), and the alarms they and the
    win model's test AUC raise (``training.evaluate.leak_alarms``; thresholds ``config.leak_alarm``)."""
    rows, features = data.side("train")
    mask = rows["won"].notna().to_numpy() & training_sample(data, rows, config)
    aucs = single_feature_aucs(features.loc[mask], data.feature_names, set(CATEGORICAL_FEATURES),
                               rows.loc[mask, "won"].to_numpy(float), per_deal_weights(rows.loc[mask, "deal_id"]))
    limits = config.leak_alarm
    finite_aucs = [auc for auc in aucs.values() if np.isfinite(auc)]
    return {
        "alarms": leak_alarms(aucs, win_test_auc, limits.max_single_feature_auc, limits.max_win_auc),
        "max_single_feature_auc": max(finite_aucs) if finite_aucs else None,
        "strongest_feature": next(iter(aucs), None),
        "win_test_auc": win_test_auc,
        "thresholds": {"max_single_feature_auc": limits.max_single_feature_auc, "max_win_auc": limits.max_win_auc},
        "single_feature_auc": aucs,
    }


def evaluate_calibration(bundle: ModelBundle, data: TrainingData, config: TrainConfig) -> dict:
    """Brier and ECE on the validation period before and after calibration (fitted there)."""
    rows, features = data.side("validation")
    raw = predict_raw(bundle, features)
    calibrated = apply_calibration(bundle, raw)
    result = {}
    for target in bundle.targets:
        label, column = TARGETS[target]
        mask = rows[label].notna().to_numpy()
        y, w = rows.loc[mask, label].to_numpy(float), per_deal_weights(rows.loc[mask, "deal_id"])
        before = compute_metrics(y, raw[column].to_numpy()[mask], w, config.ece_bins)
        after = compute_metrics(y, calibrated[column].to_numpy()[mask], w, config.ece_bins)
        result[target] = {
            "validation_brier_raw": before["brier"], "validation_brier_calibrated": after["brier"],
            "validation_ece_raw": before["ece"], "validation_ece_calibrated": after["ece"],
            "method": getattr(bundle, f"{target}_calibration").method,
            **bundle.metrics.get("calibration", {}).get(target, {}),
        }
    return result


def evaluate_truth(truth: pd.DataFrame, data: TrainingData, bundle: ModelBundle, config: TrainConfig, export) -> dict[str, dict]:
    """The generator's truth against the model and the baselines on the truth's test points, per target.

    Features are built at the truth points exactly as at any test snapshot (the weekly ones are
    test snapshots). Each block (``training.truth.truth_block``) weighs every weekly point once,
    the weighting on which the truth is the best possible prediction; ``by_deal`` repeats the
    headline numbers with every deal weighing one (the report's other tables), and
    ``at_creation`` compares them at creation (as_of = created_at), one point per test deal.
    """
    test_deals = pd.Index(data.rows.loc[data.rows["side"] == "test", "deal_id"].unique())
    points = select_truth_points(truth, export, test_deals)
    if points.empty:
        return {"win": {"note": "no truth point falls in the test period"}}
    features = data.features_at(export, points[["deal_id", "as_of"]])
    matrix = encode_bundle_matrix(bundle, features)
    probabilities = predict_matrix_probabilities(bundle, matrix, features.index)
    stage_win = predict_stage_table(features[STAGE_FEATURE], config.stage_probabilities)
    labels = label_snapshots(export, points[["deal_id", "as_of"]])
    blocks: dict[str, dict] = {}
    for target in bundle.targets:
        label, column = TARGETS[target]
        truth_column = f"true_{target}_probability"
        mask = labels[label].notna().to_numpy() & points[truth_column].notna().to_numpy()
        if not mask.any():
            continue
        _, linear = bundle.halves(target)
        predictions = {
            "truth": points[truth_column].to_numpy(float),
            "model": probabilities[column].to_numpy(),
            "stage_table": stage_win if target == "win" else 1.0 - stage_win,
            "logistic_regression": linear.predict(matrix),
        }
        y = labels[label].to_numpy(float)
        weighted = mask & (points["week_weight"] > 0).to_numpy()
        if not weighted.any():
            continue
        main = _truth_on(points, y, predictions, weighted, "week", config)
        by_deal = _truth_on(points, y, predictions, weighted, "deal", config)
        at_creation = _truth_on(points, y, predictions, mask & (points["kind"] == "creation").to_numpy(), "week", config)
        main["by_deal"] = {k: by_deal[k] for k in TRUTH_SUMMARY_KEYS if k in by_deal}
        main["at_creation"] = {k: at_creation[k] for k in TRUTH_SUMMARY_KEYS if k in at_creation}
        blocks[target] = main
    return blocks


def _truth_on(points: pd.DataFrame, y: np.ndarray, predictions: dict, keep: np.ndarray, weighting: str, config: TrainConfig) -> dict:
    return truth_block(points.loc[keep].reset_index(drop=True), y[keep], {k: v[keep] for k, v in predictions.items()},
                       weighting, config.ece_bins, config.seed)


# What the by_deal and at_creation views of a truth block keep.
TRUTH_SUMMARY_KEYS: tuple[str, ...] = (
    "deals", "snapshots", "auc", "brier", "model_auc", "model_brier", "stage_table_auc",
    "model_auc_gap", "model_auc_gap_ci90_low", "model_auc_gap_ci90_high",
    "model_brier_gap", "model_brier_gap_ci90_low", "model_brier_gap_ci90_high",
)


def build_figures(report: dict, plots: dict, bundle: ModelBundle, data: TrainingData, config: TrainConfig) -> dict:
    """Calibration, lift, forecast and SHAP summary figures, keyed by artifact path."""
    figures = {}
    for target in bundle.targets:
        p = plots[target]
        figures[f"plots/calibration_{target}.png"] = plot_calibration(p["y"], p["w"], p["predictions"], config.ece_bins)
        figures[f"plots/lift_{target}.png"] = plot_lift(p["y"], p["w"], p["predictions"])
    figures["plots/forecast_by_month.png"] = plot_forecast(report["forecast"]["months"], ["model", "stage_table"])
    _, test_features = data.side("test")
    sample = test_features.sample(n=min(config.shap_sample, len(test_features)), random_state=config.seed)
    matrix = encode_bundle_matrix(bundle, sample)
    names = list(bundle.features["names"])
    for target in bundle.targets:
        contributions = model_contributions(bundle, matrix, target)
        figures[f"plots/shap_summary_{target}.png"] = plot_shap_summary(contributions, matrix, names)
    return figures


def _share(report: dict, target: str) -> str:
    weight = report.get("linear_weight", {}).get(target)
    return "-" if weight is None else f"{weight:.1f}"


def write_model_card(report: dict, fingerprint: dict, config: TrainConfig, feature_names: list[str]) -> str:
    """A short markdown model card for the run."""
    win, slip = report["win"], report.get("slip")

    def cell(m: dict, key: str, pattern: str) -> str:
        low, high = m.get(f"{key}_ci90_low"), m.get(f"{key}_ci90_high")
        interval = "" if low is None or high is None else f" ({format(low, pattern)}-{format(high, pattern)})"
        return _num(m.get(key), pattern) + interval

    def line(block: dict, name: str) -> str:
        m = block[name]
        return f"| {name} | {cell(m, 'auc', '.3f')} | {cell(m, 'log_loss', '.4f')} | {cell(m, 'brier', '.4f')} | {cell(m, 'ece', '.4f')} |"

    rows = "\n".join(line(win, n) for n in ("model", "stage_table", "logistic_regression"))
    if slip is None:
        slip_section = f"Not trained: {report['skipped']['models'].get('slip', 'no slip labels')}."
    else:
        slip_rows = "\n".join(line(slip, n) for n in ("model", "stage_table", "logistic_regression"))
        slip_section = f"| predictor | AUC | log-loss | Brier | ECE |\n|---|---|---|---|---|\n{slip_rows}"
    skipped = "\n".join(f"- {line}" for line in report.get("skipped", {}).get("lines", [])) or "- nothing"
    alarms = "\n".join(f"- **{alarm}**" for alarm in report.get("leak_alarms", [])) or "- none"
    small = report.get("small_data") or {}
    small_data = (f"{small['closed']} closed training deals, fewer than {small['reliable_closed']}: {small['verdict']}"
                  if "verdict" in small else "enough closed training deals (minimum.reliable_closed)")
    split = report["split"]
    return f"""# Model card: {config.names.win_model} / {config.names.slip_model}

**What**: win model (P(deal is eventually won)) and slip model (P(not won by the expected
close date known at scoring time)) on {len(feature_names)} point-in-time features (`features/pointintime/definitions.py`):
LightGBM blended in log-odds with a logistic regression (linear share {_share(report, "win")} for win,
{_share(report, "slip")} for slip; chosen on validation), calibrated on validation: {_calibration_methods(report)}.

**Data**: export sha256 `{fingerprint['sha256'][:16]}...`, rows {json.dumps(fingerprint['rows'])},
span {fingerprint['time_span']['start'][:10]} .. {fingerprint['time_span']['end'][:10]}.

**Split**: train on deals closed before {split['cutoff'][:10]}; validation (early stopping,
calibration) on deals created {split['validation_start'][:10]} .. {split['test_start'][:10]}; test on deals
created {split['test_start'][:10]} .. {split['end'][:10]} (all closed after the cutoff, outcomes known).
Metrics are per-deal weighted (each snapshot weighs 1/snapshots of its deal); (low-high) is the
90% interval from resampling deals.

## Win model, test period
| predictor | AUC | log-loss | Brier | ECE |
|---|---|---|---|---|
{rows}

## Slip model, test period
{slip_section}

## Left out for lack of data
{skipped}

## Leak alarms
{alarms}

## Small data
{small_data}

**Intended use**: ranking and forecasting open B2B deals of the same CRM and process as the
training export. **Limits**: a new sales process, new segments or a changed stage definition
need retraining; probabilities are calibrated on the validation period and drift with the
business; on generated data both models are 0.02-0.04 AUC short of the generator's truth
(README, *Gap to the truth*).
"""


def _calibration_methods(report: dict) -> str:
    """e.g. "win none, slip platt" (the method ``training.calibration`` chose for each model)."""
    methods = {target: block.get("method") for target, block in report.get("calibration", {}).items()}
    return ", ".join(f"{target} {method}" for target, method in methods.items() if method) or "-"


def _num(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def headline_metrics(report: dict, fingerprint: dict, trained_at: str) -> dict:
    """The bundle's metrics.json: headline test metrics, training date, data fingerprint."""
    keep = ("auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")
    return {
        "trained_at": trained_at,
        "data_fingerprint": {"sha256": fingerprint["sha256"], "rows": fingerprint["rows"], "time_span": fingerprint["time_span"]},
        "split": report["split"],
        "test": {t: {k: report[t]["model"][k] for k in keep} for t in ("win", "slip") if t in report},
        "linear_weight": report.get("linear_weight", {}),
    }


def engine_params(engine: dict) -> dict[str, str]:
    """The run's ``engine`` param and tag (local or dask) and ``engine.<key>`` for the rest of ``engine_record``.

    >>> engine_params({"engine": "dask", "workers": 2, "threads": 2})
    {'engine': 'dask', 'engine.workers': '2', 'engine.threads': '2'}
    """
    return {("engine" if key == "engine" else f"engine.{key}"): str(value) for key, value in engine.items()}


@dataclass
class TrainResult:
    """What ``run_train`` hands back to the CLI and the tests."""

    report: dict
    bundle: ModelBundle
    registered: object  # training.tracking.RegisteredPair
    warnings: list[str]
    seconds: dict[str, float]


def lap_timer(seconds: dict[str, float]) -> Callable[[str], None]:
    """A ``lap(name)`` function that records, in ``seconds``, the time since the previous lap."""
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    return lap


def run_train(
    data_dir: Path,
    config: TrainConfig,
    truth_path: Path | None = None,
    mapping: Path | None = None,
    step: Callable[[str], None] = lambda description: None,
    uri: str | None = None,
    config_file: ConfigFile | None = None,
    notice: Callable[[str], None] = lambda line: None,
) -> TrainResult:
    """Train, evaluate, log and register the win and slip models from an export folder.

    ``config_file``: the file ``config`` was read from (``dealrisk train --config``); the run keeps it.
    ``notice`` hears, before anything is fitted, what training will do about too little data.
    """
    seconds: dict[str, float] = {}
    lap = lap_timer(seconds)

    step("validating the export")
    truth = read_truth(truth_path) if truth_path is not None else None
    export = load_export(data_dir, mapping=mapping)
    fingerprint = {**fingerprint_files(data_dir), **describe_export(export)}
    lap("load")
    step("splitting by close date, fitting feature state, building features")
    data = prepare_training_data(export, config)
    warnings = check_training_data(data, config, notice)
    lap("features")
    return train_and_log(export, data, config, fingerprint, truth, warnings, step, uri, seconds, config_file)


def check_training_data(data: TrainingData, config: TrainConfig, notice: Callable[[str], None]) -> list[str]:
    """Before fitting: refuse too few closed training deals, warn of an extreme win rate (returned),
    and tell ``notice`` when the data is small (``small_data_check``)."""
    warnings = check_minimum_data(data.label_rows(), config.minimum)
    small = small_data_check(data.label_rows(), config.minimum)
    if small is not None:
        notice(small["message"])
    return warnings


def engine_record(data: TrainingData, config: TrainConfig) -> dict:
    """Where the run computed, for its params, tags and report: the engine, scheduler, workers and threads.

    Local: this process, with LightGBM's threads (``booster.num_threads``, 0: one per core).
    Dask: the cluster ``training.distributed`` describes, and what its fit does differently.
    """
    if data.distributed is not None:
        return dict(data.distributed.engine)
    return {"engine": "local", "scheduler": "-", "workers": 1, "threads": config.booster.num_threads or os.cpu_count() or 1}


def train_and_log(
    export,
    data: TrainingData,
    config: TrainConfig,
    fingerprint: dict,
    truth: pd.DataFrame | None = None,
    warnings: list[str] | None = None,
    step: Callable[[str], None] = lambda description: None,
    uri: str | None = None,
    seconds: dict[str, float] | None = None,
    config_file: ConfigFile | None = None,
) -> TrainResult:
    """Fit, evaluate, log and register from prepared training data (the second half of ``run_train``).

    ``export``: what ``evaluate_truth`` reads deals and labels from (the Dask engine's global tables).
    """
    seconds = dict(seconds or {})
    warnings = list(warnings or [])
    lap = lap_timer(seconds)

    step("fitting LightGBM win and slip models, calibrating")
    trained_at = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
    bundle = fit_bundle(data, config, {"trained_at": trained_at})
    lap("fit")
    step("evaluating on the test period")
    report, plots = evaluate_run(data, bundle, config, export, truth)
    small = small_data_check(data.label_rows(), config.minimum)
    report["small_data"] = judge_small_data(small, report)
    engine = engine_record(data, config)
    report["engine"] = engine
    if small is not None:
        warnings.extend([small["message"], report["small_data"]["verdict"]])
    report["warnings"] = warnings
    bundle.metrics = headline_metrics(report, fingerprint, trained_at)
    lap("evaluate")
    step("plotting and logging to MLflow")
    setup_mlflow(config.experiment, uri)
    figures = build_figures(report, plots, bundle, data, config)
    test_rows, _ = data.side("test")
    registered = log_training_run(
        params={**config.to_params(), **{f"split.{k}": v for k, v in data.plan.to_dict().items()},
                "features.count": len(data.feature_names), PROMOTABLE_PARAM: report["small_data"]["promotable"],
                **engine_params(engine)},
        metrics=flatten_metrics(report),
        fingerprint=fingerprint,
        bundle=bundle,
        report=report,
        figures=figures,
        model_card=write_model_card(report, fingerprint, config, data.feature_names),
        tables={"evaluation/test_points.parquet": test_rows[["deal_id", "as_of", "won", "slipped"]]},
        names=config.names,
        resolved_config=config.to_yaml(),
        config_file=config_file,
        tags=engine_params(engine),
    )
    lap("mlflow")
    report["run_id"] = registered.run_id
    report["registered"] = {config.names.win_model: registered.win_version, config.names.slip_model: registered.slip_version}
    report["seconds"] = seconds
    return TrainResult(report=report, bundle=bundle, registered=registered, warnings=warnings, seconds=seconds)
