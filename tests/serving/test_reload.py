"""A promoted champion picked up without a restart (``serving.reload``), against a real MLflow store.

The store of this module holds four registered versions of both models: v1 (the conftest's
trained bundle), v2 (the same models, another training date), v3 (its win booster file
overwritten: unreadable) and v4 (trained "on other features": its feature list differs). Each
test moves the ``champion`` aliases with MLflow's own client, as ``dealrisk promote`` or a
person in the MLflow UI would, and then reloads: the switch is whole, a bad pair never replaces
the good one, and the refusal rules of ``POST /admin/reload`` hold. Fast tier: no server (one
service app per process, see conftest); ``test_reload_server.py`` runs the real one.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

from serving.config import ConfigError, ServingConfig
from serving.loader import ChampionError
from serving.reload import ChampionReloader, check_pair, load_pair, reload_refusal
from serving.schemas import EXAMPLE_REQUEST, ScoreRequest
from serving.service import model_info, score_current
from tests.serving.conftest import register_bundle

NAMES = ("deal-win", "deal-slip")
# How long a test waits for a background reload before it fails (the reload takes ~1-3 s).
WAIT_SECONDS = 60


def promote(uri: str, win: str, slip: str | None = None) -> None:
    """Point the champion aliases at ``win`` and ``slip`` (default: the same version)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_registered_model_alias(NAMES[0], "champion", win)
    client.set_registered_model_alias(NAMES[1], "champion", slip or win)


@pytest.fixture(scope="module")
def versions_store(tmp_path_factory, trained_bundle) -> str:
    """A store with versions 1 (good), 2 (good, later date), 3 (unreadable), 4 (other features)."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('reload') / 'mlflow.db'}"
    register_bundle(trained_bundle, uri)
    later = copy.copy(trained_bundle)
    later.metrics = {**trained_bundle.metrics, "trained_at": "2026-07-31T00:00:00+00:00"}
    register_bundle(later, uri)
    broken_run = register_bundle(trained_bundle, uri)
    root = mlflow.MlflowClient(tracking_uri=uri).get_run(broken_run).info.artifact_uri.removeprefix("file://")
    (Path(root) / "bundle" / "win_model.txt").write_text("this is not a LightGBM model")
    other = copy.copy(trained_bundle)
    other.features = {**trained_bundle.features, "trained_on": "another export"}
    register_bundle(other, uri)
    promote(uri, "1")
    return uri


@pytest.fixture
def config(versions_store) -> ServingConfig:
    return replace(ServingConfig(), tracking_uri=versions_store)


def reloader_at(config: ServingConfig, version: str, **kwargs) -> ChampionReloader:
    """A reloader serving ``version`` (loaded as the service loads it at start-up)."""
    promote(config.tracking_uri, version)
    return ChampionReloader(load_pair(config, model_info), config, lambda: load_pair(config, model_info), **kwargs)


def served_versions(reloader: ChampionReloader, config: ServingConfig) -> dict:
    """``model_versions`` of an answer scored the way the service scores a batch."""
    import json

    [answer] = score_current(reloader, config, [ScoreRequest.model_validate(EXAMPLE_REQUEST)])
    return json.loads(answer)["model_versions"]


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_SECONDS} s: {what}")
        time.sleep(0.05)


def test_a_promoted_pair_is_switched_to_whole(config):
    reloader = reloader_at(config, "1")
    assert served_versions(reloader, config) == {"win": "1", "slip": "1"}
    promote(config.tracking_uri, "2")
    outcome = reloader.reload()
    assert outcome.switched and outcome.error is None
    assert (outcome.previous, outcome.versions) == ({"win": "1", "slip": "1"}, {"win": "2", "slip": "2"})
    assert served_versions(reloader, config) == {"win": "2", "slip": "2"}
    info = reloader.champion.info  # GET /model switched with the models
    assert info["model_versions"] == {"win": "2", "slip": "2"}
    assert info["trained_at"] == "2026-07-31T00:00:00+00:00"
    assert info["run_ids"]["win"] == reloader.champion.model.bundle.versions["win_run_id"]


def test_unchanged_aliases_load_nothing(config):
    loads = []

    def counted_load():
        loads.append(1)
        return load_pair(config, model_info)

    promote(config.tracking_uri, "2")
    reloader = ChampionReloader(load_pair(config, model_info), config, counted_load)
    before = reloader.champion
    outcome = reloader.reload()
    assert not outcome.switched and outcome.error is None and "unchanged" in outcome.message
    assert loads == [] and reloader.champion is before


def test_an_unreadable_new_champion_keeps_the_old_pair(config, caplog):
    reloader = reloader_at(config, "2")
    before = reloader.champion
    promote(config.tracking_uri, "3")
    with caplog.at_level(logging.INFO, logger="dealrisk.serving"):
        outcome = reloader.reload("scheduled check")
    assert not outcome.switched
    assert "not what training wrote" in outcome.error and "win_model.txt" in outcome.error
    assert reloader.champion is before and served_versions(reloader, config) == {"win": "2", "slip": "2"}
    [record] = [r for r in caplog.records if "not reloaded" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info is None
    assert "still serving deal-win v2 / deal-slip v2" in record.getMessage()
    assert "win_model.txt" in record.getMessage()


def test_a_win_and_slip_pair_that_do_not_fit_together_is_refused(config):
    reloader = reloader_at(config, "1")
    before = reloader.champion
    promote(config.tracking_uri, "2", slip="4")  # a half-promoted pair: slip from another feature list
    outcome = reloader.reload()
    assert not outcome.switched and "different features" in outcome.error
    assert reloader.champion is before and served_versions(reloader, config) == {"win": "1", "slip": "1"}


def test_a_pair_that_loads_but_cannot_score_is_refused(loaded_model):
    broken = copy.copy(loaded_model.bundle)
    broken.features = {**broken.features, "names": list(broken.features["names"])[:-3]}  # the boosters want more
    with pytest.raises(ChampionError, match="cannot score the example request"):
        check_pair(replace(loaded_model, bundle=broken), ServingConfig())
    check_pair(loaded_model, ServingConfig())  # the good pair passes


def test_the_schedule_picks_up_a_promotion(config):
    reloader = reloader_at(config, "1")
    assert reloader.start(interval=0.2)
    try:
        promote(config.tracking_uri, "2")
        wait_until(lambda: reloader.champion.versions == {"win": "2", "slip": "2"}, "the scheduled reload to v2")
    finally:
        reloader.stop()
    assert served_versions(reloader, config) == {"win": "2", "slip": "2"}


def test_a_reload_call_to_one_worker_reaches_the_others(config, tmp_path):
    """Two reloaders with one service folder stand for two workers: no schedule, only the request."""
    shared = replace(config, service_dir=str(tmp_path), reload_seconds=0)
    called, other = reloader_at(shared, "1", worker=1), reloader_at(shared, "1", worker=2)
    assert other.start()  # the request file alone keeps a thread looking
    try:
        promote(config.tracking_uri, "2")
        assert called.request_all()
        assert called.reload("POST /admin/reload").switched
        wait_until(lambda: other.champion.versions == {"win": "2", "slip": "2"}, "the other worker's reload")
    finally:
        other.stop()


def test_no_schedule_and_no_service_folder_start_nothing(config):
    reloader = reloader_at(replace(config, reload_seconds=0), "1")
    assert not reloader.start() and not reloader.request_all()


def test_reload_call_refusals():
    assert reload_refusal(ServingConfig(), None)[0] == 403
    assert "DEALRISK_API_TOKEN" in reload_refusal(ServingConfig(), "Bearer anything")[1]
    assert reload_refusal(ServingConfig(reload_without_token=True), None) is None
    token = ServingConfig(api_token="s3cret")
    assert reload_refusal(token, None)[0] == 401
    assert reload_refusal(token, "Bearer s3cre")[0] == 401
    assert reload_refusal(token, "s3cret")[0] == 401
    assert reload_refusal(token, "Bearer s3cret") is None
    # A token set wins over the open setting: the call then always needs it.
    assert reload_refusal(replace(token, reload_without_token=True), None)[0] == 401


def test_reload_settings_from_the_environment():
    assert ServingConfig.from_env({}).reload_seconds == 60
    assert ServingConfig.from_env({"DEALRISK_RELOAD_SECONDS": "0"}).reload_seconds == 0
    assert ServingConfig.from_env({"DEALRISK_RELOAD_SECONDS": "2.5"}).reload_seconds == 2.5
    for bad in ("-1", "soon", "nan", "1e9"):
        with pytest.raises(ConfigError, match="DEALRISK_RELOAD_SECONDS must be a number of seconds"):
            ServingConfig.from_env({"DEALRISK_RELOAD_SECONDS": bad})
    assert ServingConfig.from_env({}).reload_without_token is False
    assert ServingConfig.from_env({"DEALRISK_RELOAD_WITHOUT_TOKEN": "on"}).reload_without_token is True
    with pytest.raises(ConfigError, match="DEALRISK_RELOAD_WITHOUT_TOKEN must be on or off"):
        ServingConfig.from_env({"DEALRISK_RELOAD_WITHOUT_TOKEN": "maybe"})


def test_the_service_refuses_a_reload_call_without_a_token_set(client):
    response = client.post("/admin/reload")
    assert response.status_code == 403
    assert "DEALRISK_API_TOKEN" in response.json()["error"] and "DEALRISK_RELOAD_WITHOUT_TOKEN" in response.json()["error"]
    spec = client.get("/docs.json").json()
    assert "post" in spec["paths"]["/admin/reload"]
