"""Fixtures for the serving tests: a small generated export, a model trained on it with training's
own code, registered as ``champion`` in a temporary MLflow SQLite store, and the service's ASGI app.

Training is the real thing (``training.pipeline.prepare_training_data`` + ``fit_bundle``) with a
smaller booster so the session stays fast; the store is real MLflow; serving reads it only
through the registry alias, as in production.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

N_DEALS = 900
SEED = 11
ENV_KEYS = ("MLFLOW_TRACKING_URI", "DEALRISK_API_TOKEN", "DEALRISK_MAX_DEALS", "DEALRISK_MAX_BODY_BYTES",
            "DEALRISK_WARNING_THRESHOLDS", "DEALRISK_LOG_REQUESTS", "DEALRISK_BATCH_LINGER_MS", "DEALRISK_MAPPING")
TEST_EXPERIMENT = "dealrisk-serving-tests"


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    """A generated export folder (CSV), as ``dealrisk generate`` writes it."""
    from features.contract.io import write_tables
    from generator.export import generate_export

    generated = generate_export(n_deals=N_DEALS, seed=SEED, truth_snapshots=0)
    return write_tables(generated.tables, tmp_path_factory.mktemp("export") / "export")


@pytest.fixture(scope="session")
def export(export_dir):
    from features.contract.load import load_export

    return load_export(export_dir)


def register_bundle(bundle, uri: str, win_name: str = "deal-win", slip_name: str = "deal-slip") -> str:
    """Log ``bundle/`` in a run of the store at ``uri`` and register it as both champions; return run id.

    The run goes to an experiment whose artifacts sit beside the SQLite file: MLflow's default
    experiment would put them in ``./mlruns`` of the working directory, i.e. the checkout.
    """
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    from features.model.bundle import save_bundle_dir
    from features.model.integrity import BUNDLE_DIGEST_TAG, bundle_digest

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(TEST_EXPERIMENT)
    if experiment is None:
        artifacts = Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
        experiment_id = client.create_experiment(TEST_EXPERIMENT, artifact_location=artifacts.as_uri())
    else:
        experiment_id = experiment.experiment_id
    with mlflow.start_run(experiment_id=experiment_id) as run, tempfile.TemporaryDirectory() as tmp:
        save_bundle_dir(bundle, Path(tmp) / "bundle")
        mlflow.log_artifacts(str(Path(tmp) / "bundle"), "bundle")
        tags = {BUNDLE_DIGEST_TAG: bundle_digest(Path(tmp) / "bundle")}  # recorded as training records it
        mlflow.set_tags(tags)
    for name in (win_name, slip_name):
        try:
            client.create_registered_model(name)
        except mlflow.exceptions.MlflowException:
            pass  # already registered by an earlier call
        version = client.create_model_version(name, source=f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id,
                                              tags=tags)
        client.set_registered_model_alias(name, "champion", version.version)
    return run.info.run_id


@pytest.fixture(scope="session")
def trained_bundle(export):
    """Win and slip models fitted by training's own code on the generated export."""
    from training.config import BoosterConfig, MinimumData, TrainConfig
    from training.pipeline import fit_bundle, prepare_training_data

    config = replace(
        TrainConfig(),
        booster=replace(BoosterConfig(), num_boost_round=80, early_stopping_rounds=20, num_threads=1),
        minimum=replace(MinimumData(), won=10, lost=10),
    )
    data = prepare_training_data(export, config)
    bundle = fit_bundle(data, config, {"trained_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")})
    bundle.metrics = {**bundle.metrics, "trained_at": "2026-06-30T00:00:00+00:00", "test_auc": 0.5}
    return bundle


@pytest.fixture(scope="session")
def store(tmp_path_factory, trained_bundle) -> dict:
    """A temporary MLflow SQLite store whose ``champion`` aliases point at the trained bundle."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        run_id = register_bundle(trained_bundle, uri)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return {"uri": uri, "run_id": run_id, "folder": folder}


@pytest.fixture
def service_env(monkeypatch, store):
    """Environment of a service using the test store, with every dealrisk setting at its default."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    return monkeypatch


@pytest.fixture(scope="session")
def loaded_model(store):
    """The champion as the service loads it (registry -> bundle -> feature state)."""
    from serving.config import ServingConfig
    from serving.loader import load_champion
    from serving.scoring import load_model

    return load_model(load_champion(replace(ServingConfig(), tracking_uri=store["uri"])))


def start_client(monkeypatch, store, **env):
    """A started in-process client of the service (lifespan run: models loaded) with ``env`` set."""
    from starlette.testclient import TestClient

    from serving.service import DealRiskService

    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return TestClient(DealRiskService.to_asgi(), raise_server_exceptions=False)


@pytest.fixture(scope="session")
def client(store):
    """The started in-process client (default settings); one service app per process, since
    BentoML registers its Prometheus metrics globally."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        with start_client(monkeypatch, store) as started:
            yield started
    finally:
        monkeypatch.undo()


@pytest.fixture(scope="session")
def open_request(export) -> dict:
    """A request body with five open deals of the export and their full histories."""
    from serving.request import request_from_export

    open_ids = export.deals.loc[export.deals["outcome"] == "open", "deal_id"].head(5).tolist()
    return json.loads(json.dumps(request_from_export(export, open_ids)))
