"""Shared fixtures: one small generated export and one model trained from it, per session.

The model is trained through the real CLI into a real MLflow SQLite store in a temp folder,
then reused by the end-to-end, behaviour and gate tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEALS = 1200
SEED = 5


@dataclass(frozen=True)
class Trained:
    folder: Path
    export: Path
    truth: Path
    uri: str
    report: dict
    output: str
    aliases: dict  # "deal-win@champion" -> run id, as the store stood right after training


MODEL_ALIASES = tuple(f"{model}@{alias}" for model in ("deal-win", "deal-slip") for alias in ("challenger", "champion"))


def read_aliases(uri: str) -> dict[str, str | None]:
    """Run id behind each model@alias of the store (None where the alias is not set)."""
    from mlflow import MlflowClient

    from training.tracking import version_by_alias

    client = MlflowClient(tracking_uri=uri)
    found = {key: version_by_alias(client, *key.split("@")) for key in MODEL_ALIASES}
    return {key: None if version is None else (version.run_id or version.tags.get("run_id")) for key, version in found.items()}


def write_generated(folder: Path, n_deals: int, seed: int, truth_snapshots: int = 300) -> Path:
    """Generate an export (and its truth file) into ``folder``; small Monte Carlo for speed."""
    from features.contract.io import write_frame, write_tables
    from generator.export import generate_export

    result = generate_export(n_deals, seed, truth_snapshots=truth_snapshots, n_paths=100)
    write_tables(result.tables, folder / "export")
    write_frame(result.truth, folder / "truth.csv")
    return folder


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    return write_generated(tmp_path_factory.mktemp("generated"), DEALS, SEED)


@pytest.fixture(scope="session")
def trained(generated, tmp_path_factory) -> Trained:
    from typer.testing import CliRunner

    from dealrisk.cli import app

    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store}/mlflow.db"
    report = store / "report.json"
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(generated / "export"), "--truth", str(generated / "truth.csv"),
         "--report", str(report), "--promote"],
        env={"MLFLOW_TRACKING_URI": uri, "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    return Trained(
        folder=generated, export=generated / "export", truth=generated / "truth.csv", uri=uri,
        report=json.loads(report.read_text()), output=result.output, aliases=read_aliases(uri),
    )


@pytest.fixture
def mlflow_client(trained):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(trained.uri)
    return MlflowClient(tracking_uri=trained.uri)
