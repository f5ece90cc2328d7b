"""End to end: `dealrisk train` against a real MLflow SQLite store, and what it leaves there."""

import numpy as np
import pandas as pd
import pytest

from features.model.bundle import load_bundle_dir
from training.config import TrainConfig

BUNDLE_FILES = {
    "features.json", "feature_state.json", "calibration_win.json", "calibration_slip.json",
    "metrics.json", "win_model.txt", "slip_model.txt", "linear_win.json", "linear_slip.json", "skipped.json",
    "manifest.json",
}


def test_both_models_registered_from_one_run_with_aliases(trained):
    # As the store stood right after `dealrisk train --promote` into an empty store (the fixture
    # read it then): both models from the one run are the challenger, and, with no champion
    # before, --promote made them the champion too.
    run_id = trained.report["run_id"]
    assert trained.aliases == {
        "deal-win@challenger": run_id, "deal-win@champion": run_id,
        "deal-slip@challenger": run_id, "deal-slip@champion": run_id,
    }


def test_run_holds_bundle_plots_card_and_data_fingerprint(trained, mlflow_client, tmp_path):
    import mlflow

    run_id = trained.report["run_id"]
    listed = {a.path for a in mlflow_client.list_artifacts(run_id)}
    assert {"bundle", "plots", "model_card.md", "data", "features", "calibration", "evaluation"} <= listed
    assert {a.path.split("/")[-1] for a in mlflow_client.list_artifacts(run_id, "bundle")} == BUNDLE_FILES
    plots = {a.path.split("/")[-1] for a in mlflow_client.list_artifacts(run_id, "plots")}
    assert {"calibration_win.png", "lift_win.png", "forecast_by_month.png", "shap_summary_win.png"} <= plots
    bundle = load_bundle_dir(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle", dst_path=str(tmp_path)))
    assert bundle.metrics["data_fingerprint"]["rows"]["deals"] == 1200
    assert len(bundle.metrics["data_fingerprint"]["sha256"]) == 64
    assert bundle.metrics["test"]["win"]["auc"] == pytest.approx(trained.report["win"]["model"]["auc"])
    run = mlflow_client.get_run(run_id)
    assert run.data.metrics["win.model.auc"] == pytest.approx(trained.report["win"]["model"]["auc"])
    assert run.data.params["booster.num_leaves"] == str(TrainConfig().booster.num_leaves)


def test_report_json_has_documented_keys(trained):
    report = trained.report
    for target in ("win", "slip"):
        for predictor in ("model", "stage_table", "logistic_regression"):
            assert {"auc", "brier", "log_loss", "ece"} <= set(report[target][predictor])
    truth = report["win"]["truth"]
    assert {"auc", "brier", "log_loss", "ece", "model_auc", "model_brier", "model_log_loss", "model_ece"} <= set(truth)
    assert truth["model_auc_gap_ci90_low"] <= truth["model_auc_gap"] <= truth["model_auc_gap_ci90_high"]
    assert {"auc", "model_auc", "model_brier_gap", "model_auc_gap_ci90_low"} <= set(report["slip"]["truth"])  # slip truth too
    assert report["forecast"]["months"] and "model_error_pct" in report["forecast"]["months"][0]
    assert {"model_mean_abs_error_pct", "stage_table_mean_abs_error_pct"} <= set(report["forecast"])
    for target in ("win", "slip"):
        assert {"validation_brier_raw", "validation_brier_calibrated", "validation_ece_raw",
                "validation_ece_calibrated"} <= set(report["calibration"][target])


def test_printed_table_says_metrics_are_per_deal_weighted(trained):
    assert "per-deal weighted" in trained.output
    assert "CRM stage table" in trained.output and "truth" in trained.output


def test_model_beats_the_stage_table(trained):
    win = trained.report["win"]
    assert win["model"]["brier"] < win["stage_table"]["brier"]
    assert win["model"]["log_loss"] < win["stage_table"]["log_loss"]
    assert win["model"]["auc"] > win["stage_table"]["auc"]


def logged_bundle(trained, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(trained.uri)
    return load_bundle_dir(mlflow.artifacts.download_artifacts(
        run_id=trained.report["run_id"], artifact_path="bundle", dst_path=str(tmp_path)))


def test_shipped_calibration_is_the_one_chosen_on_the_validation_period(trained, tmp_path):
    # Not of training rows (overconfident boosters), not of the test period (that would leak it);
    # the method is the one with the lowest held-out validation log-loss (training.calibration, "auto").
    from features.contract.load import load_export
    from features.model.predict import predict_raw
    from training.calibration import choose_calibration
    from training.metrics import per_deal_weights
    from training.pipeline import TARGETS, prepare_training_data

    bundle = logged_bundle(trained, tmp_path)
    rows, features = prepare_training_data(load_export(trained.export), TrainConfig()).side("validation")
    raw = predict_raw(bundle, features)
    for target, (label, column) in TARGETS.items():
        mask = rows[label].notna().to_numpy()
        refit = choose_calibration(raw[column].to_numpy()[mask], rows.loc[mask, label].to_numpy(float),
                                   per_deal_weights(rows.loc[mask, "deal_id"]), rows.loc[mask, "deal_id"])
        shipped = getattr(bundle, f"{target}_calibration")
        assert shipped.method == refit.method == trained.report["calibration"][target]["method"], target
        assert shipped.x == pytest.approx(refit.calibration.x) and shipped.y == pytest.approx(refit.calibration.y), target
        losses = trained.report["calibration"][target]["held_out_log_loss"]
        assert losses[refit.method] == min(losses.values()), target


def test_calibration_holds_up_on_the_test_period_it_never_saw(trained, tmp_path):
    """The report's validation_* calibration numbers are in-sample (isotonic fitted there cannot
    lose to the raw scores on its own rows); the test period is the honest check.

    On this 1,200-deal export the isotonic map gains nothing out of sample (test Brier win
    0.1459 raw / 0.1469 calibrated, slip 0.0907 / 0.0932), so the bars say it does no real harm
    and keeps the scores informative; a calibration fitted on shuffled labels breaks both
    (win 0.1963, slip 0.1272: near the base rate).
    """
    import mlflow

    from features.contract.load import load_export
    from features.model.predict import apply_calibration, predict_raw
    from features.pointintime.pipeline import build_features
    from features.pointintime.state import FeatureState
    from training.metrics import compute_metrics, per_deal_weights
    from training.pipeline import TARGETS

    bundle = logged_bundle(trained, tmp_path / "bundle")
    points = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=trained.report["run_id"], artifact_path="evaluation/test_points.parquet", dst_path=str(tmp_path)))
    features = build_features(load_export(trained.export), points[["deal_id", "as_of"]],
                              FeatureState.from_dict(bundle.feature_state))
    raw = predict_raw(bundle, features)
    calibrated = apply_calibration(bundle, raw)
    for target, (label, column) in TARGETS.items():
        mask = points[label].notna().to_numpy()
        y, w = points.loc[mask, label].to_numpy(float), per_deal_weights(points.loc[mask, "deal_id"])
        before = compute_metrics(y, raw[column].to_numpy()[mask], w)
        after = compute_metrics(y, calibrated[column].to_numpy()[mask], w)
        base_rate = compute_metrics(y, np.full(len(y), np.average(y, weights=w)), w)
        assert after["brier"] <= before["brier"] + 0.005, (target, before, after)
        assert after["ece"] <= before["ece"] + 0.03, (target, before, after)
        assert after["brier"] <= 0.85 * base_rate["brier"], (target, base_rate, after)
        assert after["brier"] == pytest.approx(trained.report[target]["model"]["brier"])  # the reported model


def test_test_points_logged_for_the_gate(trained, mlflow_client, tmp_path):
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        run_id=trained.report["run_id"], artifact_path="evaluation/test_points.parquet", dst_path=str(tmp_path)
    )
    points = pd.read_parquet(path)
    assert list(points.columns) == ["deal_id", "as_of", "won", "slipped"]
    assert len(points) == trained.report["counts"]["test"]["snapshots"]
    assert np.isin(points["won"].unique(), [0.0, 1.0]).all()
