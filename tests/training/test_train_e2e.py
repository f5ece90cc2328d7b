"""End to end: `dealrisk train` against a real MLflow SQLite store, and what it leaves there."""

import numpy as np
import pandas as pd
import pytest

from features.model.bundle import load_bundle_dir
from training.config import TrainConfig

BUNDLE_FILES = {
    "features.json", "feature_state.json", "calibration_win.json", "calibration_slip.json",
    "metrics.json", "win_model.txt", "slip_model.txt", "linear_win.json", "linear_slip.json",
}


def test_both_models_registered_from_one_run_with_aliases(trained, mlflow_client):
    win = mlflow_client.get_model_version_by_alias("deal-win", "challenger")
    slip = mlflow_client.get_model_version_by_alias("deal-slip", "challenger")
    assert win.run_id == slip.run_id == trained.report["run_id"]
    # --promote with no champion yet promotes
    champion = mlflow_client.get_model_version_by_alias("deal-win", "champion")
    if champion.run_id == win.run_id:  # later tests move the aliases; only check the session's own promotion
        assert mlflow_client.get_model_version_by_alias("deal-slip", "champion").run_id == win.run_id


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
    assert "truth" not in report["slip"]
    assert report["forecast"]["months"] and "model_error_pct" in report["forecast"]["months"][0]
    assert {"model_mean_abs_error_pct", "stage_table_mean_abs_error_pct"} <= set(report["forecast"])


def test_printed_table_says_metrics_are_per_deal_weighted(trained):
    assert "per-deal weighted" in trained.output
    assert "CRM stage table" in trained.output and "truth" in trained.output


def test_model_beats_the_stage_table(trained):
    win = trained.report["win"]
    assert win["model"]["brier"] < win["stage_table"]["brier"]
    assert win["model"]["log_loss"] < win["stage_table"]["log_loss"]
    assert win["model"]["auc"] > win["stage_table"]["auc"]


def test_calibration_keeps_or_improves_validation_brier(trained):
    for target in ("win", "slip"):
        block = trained.report["calibration"][target]
        assert block["validation_brier_calibrated"] <= block["validation_brier_raw"] + 1e-12


def test_test_points_logged_for_the_gate(trained, mlflow_client, tmp_path):
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        run_id=trained.report["run_id"], artifact_path="evaluation/test_points.parquet", dst_path=str(tmp_path)
    )
    points = pd.read_parquet(path)
    assert list(points.columns) == ["deal_id", "as_of", "won", "slipped"]
    assert len(points) == trained.report["counts"]["test"]["snapshots"]
    assert np.isin(points["won"].unique(), [0.0, 1.0]).all()
