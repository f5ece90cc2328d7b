"""CLI commands for training: ``train``, ``promote``, ``models``, and ``features`` (which can take a
registered model's fitted state from MLflow). Wiring only.

``training.pipeline``, ``training.gate`` and ``training.tracking`` are imported inside the commands
that use them: they load LightGBM and scikit-learn (and MLflow when called), about 1 s that every
other ``dealrisk`` command (``generate``, ``validate``, ``--help``) would otherwise pay.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Annotated, Optional

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.commands import ENGINE_HELP, SCHEDULER_HELP, WORKERS_HELP, check_engine, run_features
from features.contract.io import ExportFolderError
from features.contract.violations import ContractError
from features.pointintime.events import FeatureInputError
from training.config import (
    DEFAULT_TRACKING_URI,
    ConfigError,
    TrainConfig,
    read_config_file,
    resolve_train_config,
    tracking_uri,
)
from training.report import print_report, render_report
from training.split import SplitError

MLFLOW_HELP = f"MLflow tracking URI comes from $MLFLOW_TRACKING_URI, default {DEFAULT_TRACKING_URI}."
WIN_NAME_HELP = "Registered model name of the win model (default: the --config file, else $DEALRISK_WIN_MODEL or deal-win)."
SLIP_NAME_HELP = "Registered model name of the slip model (default: the --config file, else $DEALRISK_SLIP_MODEL or deal-slip)."
CONFIG_HELP = (
    "YAML file of training settings (every key and its default: docs/train.example.yaml); "
    "flags given on the command line override it."
)
OVERRIDE_LEAK_HELP = (
    "Promote even though training raised leak alarms (a feature that alone separates won from lost, "
    "or a win model too good to be true): only once you have checked those inputs are known before the outcome."
)
# Wider than any table we print: measuring against it gives a table's natural width.
_UNBOUNDED_WIDTH = 10_000


def _settings(config: Path | None, flags: dict) -> TrainConfig:
    """Defaults < registered names from the environment < the ``--config`` file < the flags given."""
    try:
        return resolve_train_config(read_config_file(config) if config is not None else None, flags)
    except ConfigError as exc:
        _fail(str(exc))


def _names_flags(win_name: str | None, slip_name: str | None) -> dict:
    return {"names": {"win_model": win_name, "slip_model": slip_name}}


def _quiet_downloads() -> None:
    """No per-file MLflow download bars in the CLI's output (the user can still turn them on)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _fail(message: str) -> None:
    # soft_wrap: one line however long, as scripts and log searches expect (rich wraps at 80 columns)
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def fitting_console(*renderables: RenderableType, file: IO[str] | None = None) -> Console:
    """A console as wide as ``renderables`` need when the output is not a terminal.

    Piped or redirected (``dealrisk models | cat``), rich assumes 80 columns and cuts table cells
    ("predi..."); a terminal keeps its own width.
    """
    console = Console(file=file)
    if console.is_terminal:
        return console
    options = console.options.update_width(_UNBOUNDED_WIDTH)
    needed = max((console.measure(renderable, options=options).maximum for renderable in renderables), default=0)
    return Console(file=file, width=max(console.width, needed))


def _expected_errors() -> tuple[type[Exception], ...]:
    # LightGBM and scikit-learn behind these modules: see the module docstring.
    from features.contract.partitioned import PartitionError
    from features.model.bundle import BundleError
    from training.gate import PromotionError
    from training.pipeline import InsufficientDataError, TruthFileError

    return (
        ContractError, ExportFolderError, InsufficientDataError, SplitError, PromotionError, BundleError, TruthFileError,
        PartitionError,
    )


def train(
    data: Annotated[Path, typer.Option(help="Export folder (CSV or Parquet tables), or a partitioned export ('dealrisk partition').")],
    truth: Annotated[
        Optional[Path], typer.Option(help="Generator truth file: adds the true probabilities (the ceiling) to the report.")
    ] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the evaluation as JSON to this file.")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Run the promotion gate after training.")] = False,
    config: Annotated[Optional[Path], typer.Option(help=CONFIG_HELP)] = None,
    cutoff: Annotated[
        Optional[str],
        typer.Option(help="Training cutoff (UTC): training deals closed before it (overrides split.cutoff; default: the moment "
                          "that gives the training cohort half of the deals either side uses)."),
    ] = None,
    gap_days: Annotated[
        Optional[int],
        typer.Option(help="Days after the cutoff before the first validation/test deal's creation date "
                          "(overrides split.gap_days; default 30)."),
    ] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="YAML mapping of CRM stage/role names.")] = None,
    experiment: Annotated[
        Optional[str], typer.Option(help="MLflow experiment name (overrides experiment; default dealrisk).")
    ] = None,
    win_name: Annotated[Optional[str], typer.Option(help=WIN_NAME_HELP)] = None,
    slip_name: Annotated[Optional[str], typer.Option(help=SLIP_NAME_HELP)] = None,
    override_leak_alarm: Annotated[bool, typer.Option("--override-leak-alarm", help=OVERRIDE_LEAK_HELP)] = False,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = "local",
    scheduler: Annotated[Optional[str], typer.Option(help=SCHEDULER_HELP)] = None,
    workers: Annotated[int, typer.Option(help=WORKERS_HELP)] = 2,
) -> None:
    """Train, evaluate and register the win and slip models (aliased 'challenger').

    What the export lacks is skipped, one line each (a model without its label, features without
    their table or field history); a model that looks too good to be true raises leak alarms.
    With --engine dask the partitioned export's features are built and the boosters fitted on a
    Dask cluster (docs/scale.md); the run, report and registered models are the local engine's.
    """
    # LightGBM, scikit-learn and MLflow behind these: see the module docstring.
    from training.gate import run_promote
    from training.pipeline import run_train

    _quiet_downloads()
    try:
        check_engine(engine, scheduler, workers)
    except ValueError as exc:
        _fail(str(exc))
    if engine == "dask" and mapping is not None:
        _fail("--mapping is for --engine local: a partitioned export holds canonical names already "
              "(dealrisk partition applied the mapping when it wrote it)")
    config_file = None
    try:
        config_file = read_config_file(config) if config is not None else None
        settings = resolve_train_config(config_file, {
            "split": {"cutoff": cutoff, "gap_days": gap_days}, "experiment": experiment,
            **_names_flags(win_name, slip_name),
        })
    except ConfigError as exc:
        _fail(str(exc))
    names = settings.names
    steps = 5
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=Console(), transient=False) as progress:
            task = progress.add_task("training", total=steps)
            started = {"n": 0}

            def step(description: str) -> None:
                if started["n"]:
                    progress.advance(task)
                started["n"] += 1
                progress.update(task, description=description)

            def notice(line: str) -> None:
                progress.console.print(f"[bold yellow]small data:[/] {line}", highlight=False, soft_wrap=True)

            if engine == "dask":
                # Dask, distributed and lightgbm.dask load only for this engine (about 1 s).
                from features.contract.partitioned import read_layout
                from features.pointintime.distributed import cluster
                from training.distributed import run_train_dask

                read_layout(data)  # not a partitioned export: say so before starting a cluster
                with cluster(scheduler, workers) as client:
                    result = run_train_dask(data, settings, client, truth_path=truth, step=step,
                                            config_file=config_file, notice=notice)
            else:
                result = run_train(data, settings, truth_path=truth, mapping=mapping, step=step,
                                   config_file=config_file, notice=notice)
            progress.update(task, completed=steps, description="done")
    except _expected_errors() as exc:
        _fail(str(exc))
    console = fitting_console(render_report(result.report))
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    for line in result.report.get("skipped", {}).get("lines", []):
        console.print(f"[bold yellow]skipped:[/] {line}", highlight=False, soft_wrap=True)
    print_report(result.report, console)
    for alarm in result.report.get("leak_alarms", []):
        console.print(f"[bold red]LEAK ALARM:[/] {alarm}", highlight=False, soft_wrap=True)
    registered = result.registered
    slip = (f" and {names.slip_model} v{registered.slip_version}" if registered.slip_version is not None
            else f" (no {names.slip_model}: not trained)")
    console.print(
        f"registered {names.win_model} v{registered.win_version}{slip} (alias '{names.challenger_alias}') "
        f"from run {registered.run_id}; seconds per step: {result.seconds}"
    )
    ran = result.report.get("engine", {})
    console.print(f"engine: {ran.get('engine')} ({ran.get('workers')} worker(s), {ran.get('threads')} thread(s)"
                  + (f", scheduler {ran['scheduler']})" if ran.get("engine") == "dask" else ")"), highlight=False)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.report, indent=2, sort_keys=True))
        console.print(f"report written to {report}")
    if promote:
        try:
            decision = run_promote(data=data, names=names, config=settings.gate, mapping=mapping,
                                   echo=lambda line: console.print(line, highlight=False, soft_wrap=True),
                                   override_leak_alarm=override_leak_alarm)
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
    config: Annotated[
        Optional[Path], typer.Option(help="YAML file of training settings: its gate tolerances and names are used.")
    ] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="YAML mapping of CRM stage/role names.")] = None,
    win_name: Annotated[Optional[str], typer.Option(help=WIN_NAME_HELP)] = None,
    slip_name: Annotated[Optional[str], typer.Option(help=SLIP_NAME_HELP)] = None,
    override_leak_alarm: Annotated[bool, typer.Option("--override-leak-alarm", help=OVERRIDE_LEAK_HELP)] = False,
) -> None:
    """Move 'champion' to the challenger if it is at least as good on the same test period; else exit 1.

    A run that raised leak alarms is refused (even with --force) unless --override-leak-alarm.
    """
    # LightGBM, scikit-learn and MLflow behind it: see the module docstring.
    from training.gate import run_promote

    if force and version is None:
        _fail("--force needs --version N (the win-model version to make champion)")
    _quiet_downloads()
    settings = _settings(config, _names_flags(win_name, slip_name))
    console = Console()
    try:
        decision = run_promote(data=data, names=settings.names, config=settings.gate,
                               version=version, force=force, mapping=mapping,
                               echo=lambda line: console.print(line, highlight=False, soft_wrap=True),
                               override_leak_alarm=override_leak_alarm)
    except _expected_errors() as exc:
        _fail(str(exc))
    if not decision.promote:
        raise typer.Exit(1)


def models(
    config: Annotated[
        Optional[Path], typer.Option(help="YAML file of training settings: its registered names are listed.")
    ] = None,
    win_name: Annotated[Optional[str], typer.Option(help=WIN_NAME_HELP)] = None,
    slip_name: Annotated[Optional[str], typer.Option(help=SLIP_NAME_HELP)] = None,
) -> None:
    """List registered versions with their aliases and headline test metrics."""
    # scikit-learn and MLflow behind it: see the module docstring.
    from training.gate import list_models

    names = _settings(config, _names_flags(win_name, slip_name)).names
    frame = list_models(names, uri=tracking_uri())
    if frame.empty:
        Console().print(f"no registered versions of {names.win_model} / {names.slip_model} in {tracking_uri()}")
        return
    table = Table(title=f"registered models in {tracking_uri()} (test metrics of each version's run)", title_justify="left")
    for column in frame.columns:
        table.add_column(column, justify="right" if frame[column].dtype.kind in "fi" else "left", no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    fitting_console(table).print(table)


def features(
    data: Annotated[Path, typer.Option(help="Export folder.")],
    as_of: Annotated[str, typer.Option(help="UTC timestamp, e.g. 2026-06-30T00:00:00Z.")],
    out: Annotated[Path, typer.Option(help="Output file, .parquet or .csv.")],
    model: Annotated[
        Optional[str],
        typer.Option(help="Take fitted feature state from this registered model URI (e.g. models:/deal-win@champion)."),
    ] = None,
    mapping: Annotated[Optional[Path], typer.Option(help="YAML name mapping.")] = None,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = "local",
    scheduler: Annotated[Optional[str], typer.Option(help=SCHEDULER_HELP)] = None,
    workers: Annotated[int, typer.Option(help=WORKERS_HELP)] = 2,
) -> None:
    """Write point-in-time features of every deal open at AS_OF."""
    # LightGBM (through the bundle) and MLflow behind it: see the module docstring.
    from training.tracking import load_model_feature_state

    _quiet_downloads()
    try:
        check_engine(engine, scheduler, workers)
        state = load_model_feature_state(model) if model else None
        written = run_features(data=data, as_of=as_of, out=out, state=state, mapping=mapping,
                               engine=engine, scheduler=scheduler, workers=workers)
    except (*_expected_errors(), FeatureInputError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote features to {written}")


def register(app: typer.Typer) -> None:
    """Add the training commands to the root app."""
    app.command(help=f"{train.__doc__} {MLFLOW_HELP}")(train)
    app.command(help=f"{promote.__doc__} {MLFLOW_HELP}")(promote)
    app.command(help=f"{models.__doc__} {MLFLOW_HELP}")(models)
    app.command(help=f"{features.__doc__} {MLFLOW_HELP}")(features)
