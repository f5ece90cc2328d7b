"""The champion's files are checked against training's record before LightGBM reads them.

A real MLflow store: v1 and v2 of both models from two runs of the conftest's trained bundle,
recorded the way training records them (``tests.serving.conftest.register_bundle``). Each test
damages the store's artefact files or tags in place and puts them back. Without the check, a
cut booster file crashes this test process inside LightGBM (segfault or abort) instead of failing
an assertion. Fast tier: no server; ``test_artefact_integrity_serve.py`` runs ``dealrisk serve``.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from features.model.integrity import BUNDLE_DIGEST_TAG
from serving.config import ServingConfig
from serving.loader import ChampionError, load_champion
from serving.reload import ChampionReloader, load_pair
from serving.service import model_info
from tests.serving.conftest import register_bundle

NAMES = ("deal-win", "deal-slip")


def promote(uri: str, win: str, slip: str | None = None) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.set_registered_model_alias(NAMES[0], "champion", win)
    client.set_registered_model_alias(NAMES[1], "champion", slip or win)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained_bundle) -> dict:
    """A store with v1 and v2 (one run each); returns its URI and each version's bundle folder."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('integrity') / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    folders = {}
    for version in ("1", "2"):
        run_id = register_bundle(trained_bundle, uri)
        folders[version] = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "bundle"
    promote(uri, "1")
    return {"uri": uri, "bundles": folders, "run_ids": {v: folders[v].parent.parent.name for v in folders}}


@pytest.fixture
def config(runs) -> ServingConfig:
    promote(runs["uri"], "1")
    return replace(ServingConfig(), tracking_uri=runs["uri"])


@contextmanager
def cut(path: Path, percent: int):
    """``path`` cut to ``percent`` of its length for the block; its size before, and after."""
    original = path.read_bytes()
    path.write_bytes(original[: len(original) * percent // 100])
    try:
        yield len(original), len(original) * percent // 100
    finally:
        path.write_bytes(original)


@pytest.mark.parametrize("percent", [5, 20, 50, 90])
def test_a_cut_champion_booster_is_refused_naming_the_file(config, runs, percent):
    with cut(runs["bundles"]["1"] / "win_model.txt", percent) as (size, left), pytest.raises(ChampionError) as refused:
        load_champion(config)
    message = str(refused.value)
    assert f"run {runs['run_ids']['1']} (deal-win v1) is not what training wrote" in message
    assert f"win_model.txt is {left:,} bytes, training wrote {size:,}" in message and "\n" not in message


def test_a_reload_to_a_damaged_champion_keeps_the_old_pair_and_says_why(config, runs, caplog):
    reloader = ChampionReloader(load_pair(config, model_info), config, lambda: load_pair(config, model_info))
    before = reloader.champion
    promote(config.tracking_uri, "2")
    with cut(runs["bundles"]["2"] / "slip_model.txt", 50) as (size, left), \
            caplog.at_level(logging.ERROR, logger="dealrisk.serving"):
        answer = reloader.reload("POST /admin/reload").answer()
    assert answer["switched"] is False and reloader.champion is before
    assert answer["model_versions"] == answer["previous_versions"] == {"win": "1", "slip": "1"}
    assert f"slip_model.txt is {left:,} bytes, training wrote {size:,}" in answer["error"]
    assert "still serving deal-win v1 / deal-slip v1" in caplog.text and "slip_model.txt" in caplog.text
    assert reloader.reload().switched  # the file put back, the same promotion loads
    assert reloader.champion.versions == {"win": "2", "slip": "2"}


def test_a_damaged_slip_champion_of_another_run_is_refused(config, runs):
    promote(config.tracking_uri, "1", slip="2")
    with cut(runs["bundles"]["2"] / "slip_model.txt", 20), pytest.raises(ChampionError) as refused:
        load_champion(config)
    assert f"run {runs['run_ids']['2']} (deal-slip v2)" in str(refused.value) and "slip_model.txt is" in str(refused.value)


def test_an_extra_file_in_the_champion_bundle_is_refused(config, runs):
    extra = runs["bundles"]["1"] / "win_model.txt.bak"
    extra.write_text("left behind")
    try:
        with pytest.raises(ChampionError, match=r"win_model.txt.bak is not in manifest.json"):
            load_champion(config)
    finally:
        extra.unlink()


def test_a_bundle_without_a_record_is_refused_with_what_to_do(config, runs):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=runs["uri"], registry_uri=runs["uri"])
    run_id = runs["run_ids"]["1"]
    digest = client.get_run(run_id).data.tags[BUNDLE_DIGEST_TAG]
    client.delete_tag(run_id, BUNDLE_DIGEST_TAG)
    client.delete_model_version_tag(NAMES[0], "1", BUNDLE_DIGEST_TAG)
    try:
        with pytest.raises(ChampionError, match="deal-win v1.*has no recorded digest.*dealrisk train --data EXPORT --promote"):
            load_champion(config)
    finally:
        client.set_tag(run_id, BUNDLE_DIGEST_TAG, digest)
        client.set_model_version_tag(NAMES[0], "1", BUNDLE_DIGEST_TAG, digest)
    assert load_champion(config).versions["win"] == "1"


def test_a_version_tag_that_disagrees_with_its_run_is_refused(config, runs):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=runs["uri"], registry_uri=runs["uri"])
    digest = client.get_model_version(NAMES[0], "1").tags[BUNDLE_DIGEST_TAG]
    client.set_model_version_tag(NAMES[0], "1", BUNDLE_DIGEST_TAG, "0" * 64)
    try:
        with pytest.raises(ChampionError, match=f"deal-win v1: its tag {BUNDLE_DIGEST_TAG} .* differs from its run"):
            load_champion(config)
    finally:
        client.set_model_version_tag(NAMES[0], "1", BUNDLE_DIGEST_TAG, digest)
