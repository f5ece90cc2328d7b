"""The champion loader against real temporary MLflow stores: found, missing, unreadable."""

from __future__ import annotations

import pytest

from serving.config import ServingConfig
from serving.loader import ChampionError, load_champion
from tests.serving.conftest import register_bundle


def test_loads_the_champion_with_versions_and_state(store, trained_bundle):
    bundle = load_champion(ServingConfig(tracking_uri=store["uri"]))
    assert bundle.versions["win"] == bundle.versions["slip"] == "1"
    assert bundle.versions["win_run_id"] == store["run_id"]
    assert bundle.features == trained_bundle.features
    assert bundle.feature_state == trained_bundle.feature_state


def test_no_champion_is_a_clear_error(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(ChampionError, match="no 'champion' version of registered model 'deal-win'.*dealrisk train"):
        load_champion(ServingConfig(tracking_uri=uri))


def test_unreadable_artefact_is_a_clear_error(tmp_path, trained_bundle):
    uri = f"sqlite:///{tmp_path / 'broken.db'}"
    run_id = register_bundle(trained_bundle, uri)
    # Corrupt the logged booster file in the run's (local) artifact folder.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    artifact_root = client.get_run(run_id).info.artifact_uri.removeprefix("file://")
    from pathlib import Path

    (Path(artifact_root) / "bundle" / "win_model.txt").write_text("this is not a LightGBM model")
    with pytest.raises(ChampionError, match="not what training wrote: win_model.txt is 28 bytes"):
        load_champion(ServingConfig(tracking_uri=uri))
