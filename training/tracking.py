"""MLflow at the edge: experiment setup, run logging, model registration and aliases.

Everything that talks to MLflow lives here (and in ``training.gate`` for promotion), so the
training and evaluation logic stays pure.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import pandas as pd

from features.contract.schema import TABLES
from features.model.bundle import load_bundle_dir, save_bundle_dir
from features.model.integrity import BUNDLE_DIGEST_TAG, bundle_digest, verify_bundle_dir
from features.model.names import RegisteredNames
from features.pointintime.state import FeatureState
from training.config import ConfigFile, tracking_uri

# MLflow (~1 s to import) and matplotlib (~0.4 s; only to close the logged figures) are imported
# inside the functions that use them, so what imports this module without logging a run (the
# pipeline's pure steps, their tests and benchmarks) does not load them.
CONFIG_ARTIFACT = "config/train.yaml"
RESOLVED_CONFIG_ARTIFACT = "config/resolved.yaml"


# Run tags the gate reads: which models the run trained, and how many leak alarms it raised.
MODELS_TAG = "dealrisk.models"
LEAK_ALARMS_TAG = "dealrisk.leak_alarms"


@dataclass(frozen=True)
class RegisteredPair:
    """The win and slip model versions registered from one training run (slip None: not trained)."""

    run_id: str
    win_version: str
    slip_version: str | None


def artifact_root_for(uri: str) -> str | None:
    """Artifact folder beside a SQLite tracking database (``.../mlartifacts``); None for servers."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


def setup_mlflow(experiment: str, uri: str | None = None) -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; returns its id."""
    import mlflow  # ~1 s: see the module's imports

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        mlflow.set_experiment(experiment_id=found.experiment_id)
        return found.experiment_id
    experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_root_for(uri))
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def fingerprint_files(folder: Path) -> dict:
    """SHA-256 over the export's files (paths relative to ``folder`` and bytes, sorted), per file and overall.

    Files in subfolders count (a partitioned export keeps each table's partitions in one); hidden
    files and folders do not. For a flat export folder the paths are the file names.
    """
    folder = Path(folder)
    total = hashlib.sha256()
    files = {}
    found = (p for p in folder.rglob("*") if p.is_file())
    for relative in sorted(p.relative_to(folder).as_posix() for p in found):
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        digest = _file_sha256(folder / relative)
        files[relative] = digest
        total.update(relative.encode() + b"\0" + digest.encode())
    return {"sha256": total.hexdigest(), "files": files}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:  # in blocks: an export's files can be larger than memory allows twice
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_export(export) -> dict:
    """Row counts per table and the time span of the export (first creation .. last event)."""
    counts = {name: (None if export.table(name) is None else int(len(export.table(name)))) for name in TABLES}
    times = [export.deals["created_at"].min(), export.deals["created_at"].max(), export.deals["closed_at"].max()]
    for name, table in TABLES.items():
        frame = export.table(name)
        if table.time_column and frame is not None and len(frame):
            times.append(frame[table.time_column].max())
    times = [t for t in times if pd.notna(t)]
    return {"rows": counts, "time_span": {"start": min(times).isoformat(), "end": max(times).isoformat()}}


def log_training_run(
    *,
    params: dict,
    metrics: dict[str, float],
    fingerprint: dict,
    bundle,
    report: dict,
    figures: dict,
    model_card: str,
    tables: dict[str, pd.DataFrame],
    names: RegisteredNames,
    resolved_config: str | None = None,
    config_file: ConfigFile | None = None,
    tags: dict[str, str] | None = None,
) -> RegisteredPair:
    """Log one training run and register its two boosters under ``names``, aliased as its challenger.

    ``figures`` maps artifact file names (``plots/calibration.png``) to matplotlib figures;
    ``tables`` maps artifact file names (``evaluation/test_points.parquet``) to frames.
    ``resolved_config`` (the YAML of every setting used, file and flags merged) is logged as
    ``config/resolved.yaml``: ``dealrisk train --config`` on it repeats the run's settings.
    ``config_file``, the file the user gave, is logged byte for byte as ``config/train.yaml``
    with its SHA-256 in the tag ``config.sha256`` (and its name in ``config.file``).
    ``tags``: more run tags (the engine the run computed on and its size).
    The bundle's digest (``features.model.integrity``: the SHA-256 of its ``manifest.json``, which
    holds every file's size and SHA-256) tags the run and each registered version
    (``dealrisk.bundle.sha256``); loaders check the downloaded files against it before parsing.
    """
    # MLflow ~1 s, matplotlib ~0.4 s: see the module's imports.
    import matplotlib.pyplot as plt
    import mlflow
    import mlflow.lightgbm
    from mlflow import MlflowClient

    with mlflow.start_run() as run:
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        mlflow.set_tags({
            "data.sha256": fingerprint["sha256"],
            "data.deals": str(fingerprint.get("rows", {}).get("deals")),
            "dealrisk.kind": "training",
            MODELS_TAG: ",".join(bundle.targets),
            LEAK_ALARMS_TAG: str(len(report.get("leak_alarms", []))),
            **{key: str(value) for key, value in (tags or {}).items()},
        })
        if config_file is not None:
            mlflow.set_tags({"config.sha256": config_file.sha256, "config.file": Path(config_file.name).name})
        if resolved_config is not None:
            mlflow.log_text(resolved_config, RESOLVED_CONFIG_ARTIFACT)
        mlflow.log_dict(fingerprint, "data/fingerprint.json")
        mlflow.log_dict(bundle.features, "features/features.json")
        mlflow.log_dict(bundle.feature_state, "features/feature_state.json")
        for target in bundle.targets:
            mlflow.log_dict(getattr(bundle, f"{target}_calibration").to_dict(), f"calibration/{target}.json")
        mlflow.log_text(json.dumps(report, indent=2, sort_keys=True), "evaluation/report.json")
        mlflow.log_text(model_card, "model_card.md")
        for name, figure in figures.items():
            mlflow.log_figure(figure, name)
            plt.close(figure)
        with tempfile.TemporaryDirectory() as tmp:
            if config_file is not None:  # the bytes the tag's SHA-256 is of (log_text would re-encode)
                copy = Path(tmp) / "config" / Path(CONFIG_ARTIFACT).name
                copy.parent.mkdir()
                copy.write_bytes(config_file.content)
                mlflow.log_artifact(str(copy), str(Path(CONFIG_ARTIFACT).parent))
            for name, frame in tables.items():
                path = Path(tmp) / Path(name).name
                frame.to_parquet(path, index=False)
                mlflow.log_artifact(str(path), str(Path(name).parent))
            save_bundle_dir(bundle, Path(tmp) / "bundle")
            digest = bundle_digest(Path(tmp) / "bundle")
            mlflow.log_artifacts(str(Path(tmp) / "bundle"), "bundle")
            mlflow.set_tag(BUNDLE_DIGEST_TAG, digest)
        pip = [f"lightgbm=={package_version('lightgbm')}"]
        win_info = mlflow.lightgbm.log_model(bundle.win_model, name="win_model", pip_requirements=pip)
        slip_info = None  # a run that skipped the slip model registers none
        if bundle.has("slip"):
            slip_info = mlflow.lightgbm.log_model(bundle.slip_model, name="slip_model", pip_requirements=pip)
        run_id = run.info.run_id

    client = MlflowClient()
    win_version = _register(client, win_info.model_uri, names.win_model, names.challenger_alias, run_id, digest)
    slip_version = None if slip_info is None else _register(
        client, slip_info.model_uri, names.slip_model, names.challenger_alias, run_id, digest)
    if slip_version is None:  # an older run's slip challenger is not this run's: it would pair wrongly
        remove_alias(client, names.slip_model, names.challenger_alias)
    return RegisteredPair(run_id=run_id, win_version=win_version, slip_version=slip_version)


def _register(client, model_uri: str, name: str, alias: str, run_id: str, digest: str) -> str:
    import mlflow  # ~1 s: see the module's imports

    version = mlflow.register_model(model_uri, name, tags={"run_id": run_id, BUNDLE_DIGEST_TAG: digest})
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def remove_alias(client, name: str, alias: str) -> bool:
    """Delete ``name@alias`` if it exists; True if there was one."""
    if version_by_alias(client, name, alias) is None:
        return False
    client.delete_registered_model_alias(name, alias)
    return True


def run_id_of_version(client, name: str, version: str) -> str:
    """The training run of a registered version (its ``run_id``, or our ``run_id`` tag)."""
    mv = client.get_model_version(name, version)
    return mv.run_id or mv.tags.get("run_id")


def version_by_alias(client, name: str, alias: str):
    """The model version holding ``alias``, or None if the model or alias does not exist."""
    from mlflow.exceptions import MlflowException  # ~1 s: see the module's imports

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def version_of_run(client, name: str, run_id: str) -> str | None:
    """The version of ``name`` registered from ``run_id`` (the newest if several)."""
    versions = [
        mv for mv in client.search_model_versions(f"name = '{name}'")
        if (mv.run_id or mv.tags.get("run_id")) == run_id
    ]
    return str(max(int(mv.version) for mv in versions)) if versions else None


def download_bundle(run_id: str, destination: Path):
    """Download the ``bundle/`` artifact of a training run, check it against the run's digest, read it.

    A mismatch is a ``BundleIntegrityError`` naming the file. A run logged before bundles had a
    digest is read unchecked: the gate compares a new challenger with such a champion in order to
    replace it (serving refuses to load one).
    """
    import mlflow  # ~1 s: see the module's imports

    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="bundle", dst_path=str(destination)))
    digest = mlflow.MlflowClient().get_run(run_id).data.tags.get(BUNDLE_DIGEST_TAG)
    if digest is not None:
        verify_bundle_dir(local, digest, f"of run {run_id}")
    return load_bundle_dir(local)


def download_report(run_id: str, destination: Path) -> dict:
    """Download and read a training run's ``evaluation/report.json``."""
    import mlflow  # ~1 s: see the module's imports

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/report.json", dst_path=str(destination))
    return json.loads(Path(local).read_text())


def download_table(run_id: str, artifact_path: str, destination: Path) -> pd.DataFrame:
    """Download one Parquet artifact of a run and read it."""
    import mlflow  # ~1 s: see the module's imports

    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(destination))
    return pd.read_parquet(local)


def load_model_feature_state(model_uri: str) -> FeatureState:
    """Read feature_state.json from the bundle/ artifacts of a registered model version's run.

    ``model_uri`` is ``models:/<name>@<alias>`` or ``models:/<name>/<version>``; the tracking
    and registry URIs come from the environment (MLFLOW_TRACKING_URI), as MLflow does.
    """
    # ~1 s: see the module's imports.
    import mlflow
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        raise ValueError(f"--model must look like models:/<name>@<alias> or models:/<name>/<version>, got {model_uri!r}")
    ref = model_uri[len("models:/"):]
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in ref:
        name, number = ref.split("/", 1)
        version = client.get_model_version(name, number)
    else:
        raise ValueError(f"--model {model_uri!r}: give an alias (@champion) or a version (/3)")
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path="bundle/feature_state.json", dst_path=tmp
        )
        return FeatureState.from_dict(json.loads(Path(path).read_text()))
