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


def register_challenger_from_another_run(trained, client) -> str:
    """Make a new run's versions of both models the challenger; the session's run stays champion.

    The versions point at the session's logged bundle, so no second training is needed: the
    gate tells runs apart by run id, and without --data it fails before reading any artefact.
    """
    session_run = client.get_run(trained.report["run_id"])
    run = client.create_run(session_run.info.experiment_id)
    client.set_terminated(run.info.run_id)
    for name in ("deal-win", "deal-slip"):
        version = client.create_model_version(name, f"{session_run.info.artifact_uri}/bundle", run_id=run.info.run_id)
        client.set_registered_model_alias(name, "challenger", version.version)
    return run.info.run_id


def aliases(client) -> dict[str, str]:
    return {f"{name}@{alias}": str(client.get_model_version_by_alias(name, alias).version)
            for name in ("deal-win", "deal-slip") for alias in ("challenger", "champion")}


def test_promote_without_data_explains_what_is_needed(store):
    trained, mlflow_client = store
    other_run = register_challenger_from_another_run(trained, mlflow_client)
    assert mlflow_client.get_model_version_by_alias("deal-win", "champion").run_id == trained.report["run_id"] != other_run
    before = aliases(mlflow_client)

    result = invoke(trained, "promote")
    assert result.exit_code == 1, result.output
    assert "a champion exists" in result.output and "--data" in result.output
    assert aliases(mlflow_client) == before  # nothing moved


def test_promote_when_the_challenger_already_is_the_champion_moves_nothing(store):
    trained, mlflow_client = store
    for name in ("deal-win", "deal-slip"):  # set here, not taken on trust from the session's --promote
        challenger = mlflow_client.get_model_version_by_alias(name, "challenger")
        mlflow_client.set_registered_model_alias(name, "champion", challenger.version)
    before = aliases(mlflow_client)

    result = invoke(trained, "promote")
    assert result.exit_code == 0, result.output
    assert "already the champion" in result.output
    assert aliases(mlflow_client) == before


def test_force_needs_a_version(trained):
    result = invoke(trained, "promote", "--force")
    assert result.exit_code == 1 and "--version" in result.output
