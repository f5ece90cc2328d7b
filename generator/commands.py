"""The ``dealrisk generate`` command: a simulated CRM export and its hidden truth. Wiring only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from generator.export import run_generate


def generate(
    deals: Annotated[int, typer.Option(help="Number of deals to simulate.", min=1)] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same export.")] = 0,
    out: Annotated[Path, typer.Option(help="Export folder to write (replaced atomically).")] = Path("data/export"),
    truth: Annotated[
        Optional[Path], typer.Option(help="Ground-truth file; default truth.csv beside the export folder.")
    ] = None,
    span_days: Annotated[int, typer.Option(help="Days over which deals are created; the export date is the end.")] = 730,
    truth_snapshots: Annotated[
        int, typer.Option(help="Random open (deal, midnight) moments with a truth, spread over the whole span.", min=0)
    ] = 2000,
    truth_grid_deals: Annotated[
        Optional[int],
        typer.Option(help="Deals whose weekly points (created_at + 7k days, the training snapshots' grid) get a truth: "
                          "the latest-created deals whose outcome training can know, i.e. its test period "
                          "(default: a tenth of --deals; the default split tests on ~7.5%). 0: none.", min=0),
    ] = None,
    truth_grid_points: Annotated[
        int, typer.Option(help="Weekly points per such deal (drawn at random among its k >= 1 points; creation is always there).", min=0)
    ] = 1,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    messy: Annotated[bool, typer.Option(help="Plant realistic dirt (duplicates, bad dates, unknown names).")] = False,
    partitions: Annotated[
        Optional[int], typer.Option(help="Write the export straight to N Parquet partitions by deal (the form "
                                         "'dealrisk partition' writes, for --engine dask) instead of a folder of tables.",
                                    min=1)
    ] = None,
) -> None:
    """Simulate a realistic CRM export (and its hidden ground truth, kept apart)."""
    try:
        run_generate(
            n_deals=deals, seed=seed, out=out, truth=truth, span_days=span_days,
            truth_snapshots=truth_snapshots, fmt=fmt, messy=messy, truth_grid_deals=deals // 10 if truth_grid_deals is None else truth_grid_deals,
            truth_grid_points=truth_grid_points, partitions=partitions,
        )
    except ValueError as exc:  # a bad combination of options, an unusable output folder (PartitionError)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def register(app: typer.Typer) -> None:
    """Add ``generate`` to the root app."""
    app.command()(generate)
