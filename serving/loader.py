"""Load the champion win and slip models (with their fitted feature state) from the MLflow registry.

The registry alias is the only hand-off from training: the registered win and slip models
named by ``features.model.names`` (default ``deal-win`` and ``deal-slip``) with alias ``champion``; each version's run holds the artifact folder ``bundle/``
(``features.model.bundle``). MLflow is touched here and nowhere else in serving.

Every downloaded file is checked against the digest training recorded (the tag
``dealrisk.bundle.sha256`` of the registered version, else of its run) before any parser reads
it: ``features.model.integrity.verify_bundle_dir``, for the start-up check, each worker's load and
every reload alike. A cut or changed file, a missing or extra one, or a bundle without a recorded
digest is a ``ChampionError`` naming the file (LightGBM would crash the process on a cut booster).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from features.model.bundle import BundleError, ModelBundle, load_bundle_dir
from features.model.integrity import BUNDLE_DIGEST_TAG, BundleIntegrityError, verify_bundle_dir
from serving.config import ServingConfig


class ChampionError(RuntimeError):
    """The champion models cannot be found or read; the message says which and why."""


def _champion_version(client, name: str, alias: str):
    """The model version behind ``name@alias``; ``ChampionError`` when there is none."""
    from mlflow.exceptions import MlflowException  # lazy, like every mlflow import here: see load_champion

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ChampionError(
            f"no '{alias}' version of registered model '{name}' in {client.tracking_uri}: "
            f"train and promote one first (dealrisk train --data DIR --promote). MLflow said: {exc.message}"
        ) from None


@dataclass(frozen=True)
class ChampionAliases:
    """Which registered versions (and training runs) the champion aliases name at one moment.

    A reload compares these, a few milliseconds of registry reads, before it downloads anything:
    equal aliases mean the pair being served is still the champion. ``slip`` is None when the
    slip model has no such alias (a champion trained without a slip model).
    """

    win: str
    win_run_id: str
    slip: str | None = None
    slip_run_id: str | None = None


def read_champion_aliases(config: ServingConfig) -> ChampionAliases:
    """The versions behind the champion aliases now; ``ChampionError`` when the win model has none."""
    from mlflow import MlflowClient  # lazy: see load_champion

    client = MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)
    names = config.names
    win = _champion_version(client, names.win_model, names.champion_alias)
    try:
        slip = _champion_version(client, names.slip_model, names.champion_alias)
    except ChampionError:
        slip = None  # load_champion says whether the win model's run needs one
    return ChampionAliases(
        win=str(win.version), win_run_id=win.run_id,
        slip=None if slip is None else str(slip.version), slip_run_id=None if slip is None else slip.run_id,
    )


def recorded_digest(client, version) -> str | None:
    """The bundle digest training recorded for a model version: its tag, else its run's; None when neither has one.

    The two are written together; tags that disagree mean one was changed, and nothing is trusted.
    """
    from mlflow.exceptions import MlflowException  # lazy: see load_champion

    on_version = (version.tags or {}).get(BUNDLE_DIGEST_TAG)
    try:
        on_run = client.get_run(version.run_id).data.tags.get(BUNDLE_DIGEST_TAG)
    except MlflowException as exc:
        raise ChampionError(f"cannot read run {version.run_id} of {version.name} v{version.version}: {exc.message}") from None
    if on_version and on_run and on_version != on_run:
        raise ChampionError(
            f"{version.name} v{version.version}: its tag {BUNDLE_DIGEST_TAG} ({on_version[:12]}...) differs from "
            f"its run {version.run_id}'s ({on_run[:12]}...); retrain and promote, or set the right tag"
        )
    return on_version or on_run


def _download_bundle(client, version, dst: Path) -> ModelBundle:
    """Download the ``bundle/`` artefact of ``version``'s run, check every file, then read it."""
    import mlflow.artifacts  # lazy: see load_champion
    from mlflow.exceptions import MlflowException

    run_id, name = version.run_id, version.name
    digest = recorded_digest(client, version)
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle", dst_path=str(dst))
    except (MlflowException, OSError) as exc:
        raise ChampionError(f"cannot download artefact 'bundle/' of run {run_id} ({name}): {exc}") from None
    try:
        verify_bundle_dir(Path(local), digest, f"'bundle/' of run {run_id} ({name} v{version.version})")
    except BundleIntegrityError as exc:
        raise ChampionError(str(exc)) from None
    try:
        return load_bundle_dir(Path(local))
    except (BundleError, ValueError, KeyError, TypeError) as exc:
        raise ChampionError(f"artefact 'bundle/' of run {run_id} ({name}) is unreadable: {exc}") from None


def load_champion(config: ServingConfig) -> ModelBundle:
    """Return one bundle scoring with the champion win model and the champion slip model.

    When the two aliases point at different runs, the slip booster and calibration come from the
    slip run; both runs must then share the same feature list and feature state. A champion win
    model whose run trained no slip model (its bundle's ``skipped`` says why) is served alone:
    slip probabilities are then missing, and ``versions["slip"]`` is None.
    """
    # mlflow takes ~1.5 s to import and only loading a champion needs it: the service module
    # imports this one in processes that never load a model (the ``bentoml serve`` parent that
    # reads the service's settings, ``bentoml build``).
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(config.tracking_uri)
    client = MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)
    names = config.names
    win_version = _champion_version(client, names.win_model, names.champion_alias)
    with tempfile.TemporaryDirectory(prefix="dealrisk-champion-") as tmp:
        bundle = _download_bundle(client, win_version, Path(tmp) / "win")
        slip_version = _champion_version(client, names.slip_model, names.champion_alias) if bundle.has("slip") else None
        if slip_version is not None and slip_version.run_id != win_version.run_id:
            slip = _download_bundle(client, slip_version, Path(tmp) / "slip")
            if slip.features != bundle.features or slip.feature_state != bundle.feature_state:
                raise ChampionError(
                    f"champion win (run {win_version.run_id}) and slip (run {slip_version.run_id}) models were "
                    "trained on different features; promote both from one training run"
                )
            bundle.slip_model = slip.slip_model
            bundle.slip_calibration = slip.slip_calibration
            bundle.slip_linear = slip.slip_linear
    bundle.versions = {
        "win": str(win_version.version),
        "slip": None if slip_version is None else str(slip_version.version),
        "win_run_id": win_version.run_id,
        "slip_run_id": None if slip_version is None else slip_version.run_id,
        "win_name": names.win_model,
        "slip_name": names.slip_model,
    }
    return bundle
