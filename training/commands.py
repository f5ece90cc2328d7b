"""CLI commands for training: ``train``, ``promote``, ``models``. Wiring only."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from training.config import DEFAULT_TRACKING_URI, SplitConfig, TrainConfig

MLFLOW_HELP = f"MLflow tracking URI comes from $MLFLOW_TRACKING_URI, default {DEFAULT_TRACKING_URI}."


def _quiet_downloads() -> None:
    """No per-file MLflow download bars in the CLI's output (the user can still turn them on)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _fail(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def _expected_errors() -> tuple[type[Exception], ...]:
    from features.bundle import BundleError
    from features.contract import ContractError
    from features.io import ExportFolderError
    from training.gate import PromotionError
    from training.pipeline import InsufficientDataError, TruthFileError
    from training.split import SplitError

    return (
        ContractError, ExportFolderError, InsufficientDataError, SplitError, PromotionError, BundleError, TruthFileError,
    )


def train(
    data: Annotated[Path, typer.Option(help="Export folder (CSV or Parquet tables).")],
    truth: Annotated[
        Optional[Path], typer.Option(help="Generator truth file: adds the true probabilities (the ceiling) to the report.")
    ] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the evaluation as JSON to this file.")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Run the promotion gate after training.")] = False,
    cutoff: Annotated[
        Optional[str], typer.Option(help="Training cutoff (UTC close date); default: 60% quantile of close dates.")
    ] = None,
    gap_days: Annotated[int, typer.Option(help="Days between the cutoff and the first validation close date.")] = 30,
    mapping: Annotated[Optional[Path], typer.Option(help="YAML mapping of CRM stage/role names.")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "dealrisk",
    win_name: Annotated[str, typer.Option(help="Registered model name of the win model.")] = "deal-win",
    slip_name: Annotated[str, typer.Option(help="Registered model name of the slip model.")] = "deal-slip",
) -> None:
    """Train, evaluate and register the win and slip models (aliased 'challenger')."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from training.gate import run_promote
    from training.pipeline import run_train
    from training.report import print_report

    _quiet_downloads()
    config = replace(
        TrainConfig(), split=replace(SplitConfig(), cutoff=cutoff, gap_days=gap_days),
        experiment=experiment, win_model_name=win_name, slip_model_name=slip_name,
    )
    console = Console()
    steps = 5
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            task = progress.add_task("training", total=steps)
            started = {"n": 0}

            def step(description: str) -> None:
                if started["n"]:
                    progress.advance(task)
                started["n"] += 1
                progress.update(task, description=description)

            result = run_train(data, config, truth_path=truth, mapping=mapping, step=step)
            progress.update(task, completed=steps, description="done")
    except _expected_errors() as exc:
        _fail(str(exc))
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    print_report(result.report, console)
    console.print(
        f"registered {win_name} v{result.registered.win_version} and {slip_name} v{result.registered.slip_version} "
        f"(alias 'challenger') from run {result.registered.run_id}; seconds per step: {result.seconds}"
    )
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.report, indent=2, sort_keys=True))
        console.print(f"report written to {report}")
    if promote:
        try:
            decision = run_promote(data=data, win_name=win_name, slip_name=slip_name, config=config.gate,
                                   mapping=mapping, echo=console.print)
        except _expected_errors() as exc:
            _fail(str(exc))
        if not decision.promote:
            raise typer.Exit(1)


def promote(
    data: Annotated[
        Optional[Path], typer.Option(help="Export the challenger was trained on (needed to re-evaluate the champion).")
    ] = None,
    version: Annotated[
        Optional[str], typer.Option(help="Version of the win model to promote (default: the 'challenger').")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Move 'champion' to --version without the gate (rollback).")
    ] = False,
    mapping: Annotated[Optional[Path], typer.Option(help="YAML mapping of CRM stage/role names.")] = None,
    win_name: Annotated[str, typer.Option(help="Registered model name of the win model.")] = "deal-win",
    slip_name: Annotated[str, typer.Option(help="Registered model name of the slip model.")] = "deal-slip",
) -> None:
    """Move 'champion' to the challenger if it is at least as good on the same test period; else exit 1."""
    from rich.console import Console

    from training.config import GateConfig
    from training.gate import run_promote

    if force and version is None:
        _fail("--force needs --version N (the win-model version to make champion)")
    _quiet_downloads()
    console = Console()
    try:
        decision = run_promote(data=data, win_name=win_name, slip_name=slip_name, config=GateConfig(),
                               version=version, force=force, mapping=mapping, echo=console.print)
    except _expected_errors() as exc:
        _fail(str(exc))
    if not decision.promote:
        raise typer.Exit(1)


def models(
    win_name: Annotated[str, typer.Option(help="Registered model name of the win model.")] = "deal-win",
    slip_name: Annotated[str, typer.Option(help="Registered model name of the slip model.")] = "deal-slip",
) -> None:
    """List registered versions with their aliases and headline test metrics."""
    from rich.console import Console
    from rich.table import Table

    from training.config import tracking_uri
    from training.gate import list_models

    frame = list_models(win_name, slip_name, uri=tracking_uri())
    console = Console()
    if frame.empty:
        console.print(f"no registered versions of {win_name} / {slip_name} in {tracking_uri()}")
        return
    table = Table(title=f"registered models in {tracking_uri()} (test metrics of each version's run)", title_justify="left")
    for column in frame.columns:
        table.add_column(column, justify="right" if frame[column].dtype.kind in "fi" else "left", no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the training commands to the root app."""
    app.command(help=f"{train.__doc__} {MLFLOW_HELP}")(train)
    app.command(help=f"{promote.__doc__} {MLFLOW_HELP}")(promote)
    app.command(help=f"{models.__doc__} {MLFLOW_HELP}")(models)
