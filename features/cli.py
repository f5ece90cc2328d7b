"""CLI commands for data: ``generate``, ``validate``, ``features``. Wiring only; logic lives in the modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def generate(
    deals: Annotated[int, typer.Option(help="Number of deals to simulate.", min=1)] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same export.")] = 0,
    out: Annotated[Path, typer.Option(help="Export folder to write (replaced atomically).")] = Path("data/export"),
    truth: Annotated[
        Optional[Path], typer.Option(help="Ground-truth file; default truth.csv beside the export folder.")
    ] = None,
    span_days: Annotated[int, typer.Option(help="Days over which deals are created; the export date is the end.")] = 730,
    truth_snapshots: Annotated[int, typer.Option(help="Snapshot moments sampled for the truth file.")] = 2000,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    messy: Annotated[bool, typer.Option(help="Plant realistic dirt (duplicates, bad dates, unknown names).")] = False,
) -> None:
    """Simulate a realistic CRM export (and its hidden ground truth, kept apart)."""
    from features.generator import run_generate

    run_generate(
        n_deals=deals, seed=seed, out=out, truth=truth, span_days=span_days,
        truth_snapshots=truth_snapshots, fmt=fmt, messy=messy,
    )


def validate(
    data: Annotated[Path, typer.Argument(help="Export folder (CSV or Parquet tables).")],
    mapping: Annotated[
        Optional[Path], typer.Option(help="YAML mapping of CRM stage/role names; default: canonical + Salesforce.")
    ] = None,
    max_errors: Annotated[int, typer.Option(help="Most violations to print per rule.")] = 20,
) -> None:
    """Check an export against the data contract; list every violation and exit 1 if any."""
    from features.contract import run_validate

    raise typer.Exit(run_validate(data, mapping=mapping, max_errors=max_errors))


def features(
    data: Annotated[Path, typer.Option(help="Export folder.")],
    as_of: Annotated[str, typer.Option(help="UTC timestamp, e.g. 2026-06-30T00:00:00Z.")],
    out: Annotated[Path, typer.Option(help="Output file, .parquet or .csv.")],
    model: Annotated[
        Optional[str],
        typer.Option(help="Take fitted feature state from this registered model URI (e.g. models:/deal-win@champion)."),
    ] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="YAML name mapping.")] = None,
) -> None:
    """Write point-in-time features of every deal open at AS_OF."""
    from features.contract import ContractError
    from features.pipeline import FeatureInputError, run_features

    try:
        written = run_features(data=data, as_of=as_of, out=out, model=model, mapping=mapping)
    except (FeatureInputError, ContractError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote features to {written}")


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.command()(validate)
    app.command()(features)
