"""Data commands of the ``dealrisk`` CLI: ``validate`` and the wiring behind ``features``.

Wiring only; the logic lives in ``features.contract`` and ``features.pointintime``. The
``features`` command itself sits in ``training.commands``, which can read a registered model's
fitted state from MLflow (``--model``); this package knows nothing of MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from features.contract.io import write_frame
from features.contract.load import load_export
from features.contract.report import run_validate
from features.pointintime.events import parse_as_of
from features.pointintime.pipeline import build_features, select_open_deals
from features.pointintime.state import FeatureState, fit_feature_state


def run_features(
    data: Path, as_of: str, out: Path, state: FeatureState | None = None, mapping: Path | None = None
) -> Path:
    """Load the export, pick the deals open at as_of, compute their features, write them.

    ``state`` is a fitted feature state (a registered model's); by default it is fitted on the deals
    closed before as_of, so the output is exactly what could have been known at as_of.
    """
    as_of_ts = parse_as_of(as_of)
    export = load_export(Path(data), mapping=mapping)
    if state is None:
        state = fit_feature_state(export, as_of_ts)
    points = select_open_deals(export, as_of_ts)
    return write_frame(build_features(export, points, state), Path(out))


def validate(
    data: Annotated[Path, typer.Argument(help="Export folder (CSV or Parquet tables).")],
    mapping: Annotated[
        Optional[Path], typer.Option(help="YAML mapping of CRM stage/role names; default: canonical + Salesforce.")
    ] = None,
    max_errors: Annotated[int, typer.Option(help="Most violations to print per rule.")] = 20,
) -> None:
    """Check an export against the data contract; list every violation and exit 1 if any."""
    raise typer.Exit(run_validate(data, mapping=mapping, max_errors=max_errors))


def register(app: typer.Typer) -> None:
    """Add the data commands to the root app."""
    app.command()(validate)
