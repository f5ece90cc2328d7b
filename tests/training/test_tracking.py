"""Tests for training.tracking: MLflow at the edge (a real SQLite store)."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from dealrisk.cli import app
from features.commands import run_features
from features.contract.io import write_tables
from features.pointintime.state import fit_feature_state
from tests.factories import make_export
from training.tracking import load_model_feature_state


@pytest.fixture
def export_folder(tmp_path):
    tables = {name: table for name, table in make_export().tables().items() if table is not None}
    return write_tables(tables, tmp_path / "export")


@pytest.mark.slow  # a real MLflow SQLite store: schema migrations take seconds
def test_features_with_model_uses_the_bundle_state(export_folder, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # an earlier test of this process may have set another store globally
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    bundle_state = fit_feature_state(make_export(), "2026-12-31")  # differs from the state fitted at as_of
    artifacts = (tmp_path / "artifacts").as_uri()  # not ./mlruns of the checkout
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("features-test", artifact_location=artifacts))
    with mlflow.start_run() as run:
        mlflow.log_dict(bundle_state.to_dict(), "bundle/feature_state.json")
    client = MlflowClient()
    client.create_registered_model("deal-win")
    version = client.create_model_version("deal-win", f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id)
    client.set_registered_model_alias("deal-win", "champion", version.version)

    runner = CliRunner()
    out = tmp_path / "f.csv"
    result = runner.invoke(app, ["features", "--data", str(export_folder), "--as-of", "2026-03-01T00:00:00Z",
                                 "--out", str(out), "--model", "models:/deal-win@champion"])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    assert written["days_in_stage_vs_won"].iloc[0] == pytest.approx(14 / 24.5)  # D1's median from the bundle
    state = load_model_feature_state("models:/deal-win/1")
    by_version = run_features(export_folder, "2026-03-01", tmp_path / "g.csv", state=state)
    pd.testing.assert_frame_equal(pd.read_csv(by_version), written)
    with pytest.raises(ValueError, match="give an alias"):
        load_model_feature_state("models:/deal-win")
    result = runner.invoke(app, ["features", "--data", str(export_folder), "--as-of", "2026-03-01",
                                 "--out", str(tmp_path / "h.csv"), "--model", "models:/deal-win"])
    assert result.exit_code == 1 and "give an alias" in result.output
    assert not (tmp_path / "h.csv").exists()
