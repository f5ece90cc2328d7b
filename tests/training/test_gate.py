"""The promotion gate against a real MLflow store: refuses a worse model, accepts a better one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from dealrisk.cli import app


@pytest.fixture
def store(trained, tmp_path):
    """A copy of the session's registry, so moving aliases here leaves other tests' view alone."""
    import shutil

    import mlflow
    from mlflow import MlflowClient

    source = trained.uri.removeprefix("sqlite:///")
    shutil.copy(source, tmp_path / "mlflow.db")
    copy = replace(trained, uri=f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(copy.uri)
    return copy, MlflowClient(tracking_uri=copy.uri)


def invoke(trained, *args):
    return CliRunner().invoke(app, list(args), env={"MLFLOW_TRACKING_URI": trained.uri, "COLUMNS": "200"})


def train_on_shuffled_labels(trained):
    """Register a challenger trained on labels shuffled across deals (no signal left)."""
    from features.contract.load import load_export
    from training.config import TrainConfig
    from training.pipeline import prepare_training_data, train_and_log
    from training.tracking import describe_export, fingerprint_files

    export = load_export(trained.export)
    config = TrainConfig()
    data = prepare_training_data(export, config)
    rng = np.random.default_rng(0)
    rows = data.rows.copy()
    fit_side = rows["side"].isin(["train", "validation"]).to_numpy()
    for label in ("won", "slipped"):
        values = rows.loc[fit_side, label].to_numpy()
        rows.loc[fit_side, label] = values[rng.permutation(len(values))]
    fingerprint = {**fingerprint_files(trained.export), **describe_export(export)}
    return train_and_log(export, replace(data, rows=rows), config, fingerprint, uri=trained.uri)


@pytest.mark.slow  # trains a second (shuffled-label) model: ~20 s on 2 cores
def test_gate_refuses_worse_model_and_accepts_better_one(store):
    trained, mlflow_client = store
    champion = str(mlflow_client.get_model_version_by_alias("deal-win", "champion").version)
    worse = train_on_shuffled_labels(trained)
    assert str(mlflow_client.get_model_version_by_alias("deal-win", "challenger").version) == worse.registered.win_version

    refused = invoke(trained, "promote", "--data", str(trained.export))
    assert refused.exit_code == 1, refused.output
    assert "refused" in refused.output and "challenger" in refused.output and "champion" in refused.output
    assert str(mlflow_client.get_model_version_by_alias("deal-win", "champion").version) == champion

    # roll back onto the worse model by force, then the real model must win the gate
    forced = invoke(trained, "promote", "--version", worse.registered.win_version, "--force")
    assert forced.exit_code == 0, forced.output
    assert str(mlflow_client.get_model_version_by_alias("deal-slip", "champion").version) == worse.registered.slip_version
    accepted = invoke(trained, "promote", "--version", champion, "--data", str(trained.export))
    assert accepted.exit_code == 0, accepted.output
    assert str(mlflow_client.get_model_version_by_alias("deal-win", "champion").version) == champion

    listed = invoke(trained, "models")
    assert listed.exit_code == 0 and "champion" in listed.output and "challenger" in listed.output, listed.output


def test_promote_without_data_explains_what_is_needed(store):
    trained, mlflow_client = store
    # a champion exists (set by the session's --promote), so re-evaluation needs the export
    result = invoke(trained, "promote")
    if mlflow_client.get_model_version_by_alias("deal-win", "challenger").version == \
            mlflow_client.get_model_version_by_alias("deal-win", "champion").version:
        assert result.exit_code == 0 and "already the champion" in result.output
    else:
        assert result.exit_code == 1 and "--data" in result.output


def test_force_needs_a_version(trained):
    result = invoke(trained, "promote", "--force")
    assert result.exit_code == 1 and "--version" in result.output
