"""Data commands of the ``dealrisk`` CLI: ``validate``, ``partition``, ``import salesforce|table`` and the wiring behind ``features``.

Wiring only; the logic lives in ``features.contract`` and ``features.pointintime``. The
``features`` command itself sits in ``training.commands``, which can read a registered model's
fitted state from MLflow (``--model``); this package knows nothing of MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from features.contract.importers.run import run_import_salesforce, run_import_table
from features.contract.io import write_frame
from features.contract.load import load_export
from features.contract.partitioned import PartitionError, read_layout, write_partitioned
from features.contract.report import run_validate
from features.contract.violations import ContractError
from features.pointintime.events import parse_as_of
from features.pointintime.pipeline import build_features, select_open_deals
from features.pointintime.state import FeatureState, fit_feature_state


ENGINES: tuple[str, ...] = ("local", "dask")
ENGINE_HELP = ("local: pandas in this process (an export folder, or a partitioned one read whole); dask: each "
               "partition of a partitioned export ('dealrisk partition') on a Dask cluster, the same functions")
SCHEDULER_HELP = "Address of a running Dask scheduler (tcp://host:8786) for --engine dask; default: a LocalCluster here."
WORKERS_HELP = "Worker processes of the LocalCluster started without --scheduler."


def check_engine(engine: str, scheduler: str | None, workers: int) -> None:
    """``ValueError`` naming the option when the engine options do not fit together."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local" and scheduler is not None:
        raise ValueError("--scheduler is for --engine dask")
    if scheduler is not None and not scheduler.strip():
        raise ValueError("--scheduler is empty: give the scheduler's address (tcp://host:8786), "
                         "or leave it out for a LocalCluster on this machine")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")


def run_features(
    data: Path, as_of: str, out: Path, state: FeatureState | None = None, mapping: Path | None = None,
    engine: str = "local", scheduler: str | None = None, workers: int = 2,
) -> Path:
    """Load the export, pick the deals open at as_of, compute their features, write them.

    ``state`` is a fitted feature state (a registered model's); by default it is fitted on the deals
    closed before as_of, so the output is exactly what could have been known at as_of. With
    ``engine="dask"`` the partitioned export ``data`` is read partition by partition on the cluster
    (``features.pointintime.distributed``): the same features, rows sorted by deal_id.
    """
    check_engine(engine, scheduler, workers)
    as_of_ts = parse_as_of(as_of)
    if engine == "dask":
        # Dask and distributed load only for this engine (about 1 s every other command would pay).
        from features.pointintime.distributed import cluster, features_as_of_dask, fit_feature_state_dask

        read_layout(Path(data))  # not a partitioned export: say so before starting a cluster
        with cluster(scheduler, workers) as client:
            if state is None:
                state = fit_feature_state_dask(client, Path(data), as_of_ts)
            return write_frame(features_as_of_dask(client, Path(data), as_of_ts, state), Path(out))
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


def run_partition(export: Path, out: Path, partitions: int, mapping: Path | None = None) -> int:
    """Check an export and write it as a partitioned export; print the outcome, return the exit code.

    0: written; 1: the export breaks the contract (the report is printed, nothing is written) or
    the output folder cannot be used.
    """
    # rich is only needed here (progress on a large export).
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, soft_wrap=True)
    source, target = Path(export).resolve(), Path(out).resolve()
    if source == target or source in target.parents or target in source.parents:
        console.print(f"error: {out} overlaps the export {export}; write the partitions to a folder of their own",
                      highlight=False)
        return 1
    try:
        with console.status(f"reading and checking {export}"):
            checked = load_export(Path(export), mapping=mapping)
        with Progress(TextColumn("writing {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=not console.is_terminal) as progress:
            tasks: dict[str, int] = {}

            def advance(table: str, done: int, total: int) -> None:
                if table not in tasks:
                    tasks[table] = progress.add_task(table, total=total)
                progress.update(tasks[table], completed=done)

            layout = write_partitioned(checked, Path(out), partitions, progress=advance)
    except ContractError as exc:
        console.print(str(exc), highlight=False, markup=False)
        return 1
    except (PartitionError, OSError) as exc:
        console.print(f"error: {exc}", highlight=False, markup=False)
        return 1
    rows = ", ".join(f"{name} {layout.rows[name]:,}" for name in layout.tables)
    typer.echo(f"wrote {layout.partitions} partitions of {export} to {out} ({rows} rows)")
    return 0


def partition(
    export: Annotated[Path, typer.Argument(help="Export folder (CSV or Parquet tables) to lay out.")],
    out: Annotated[Path, typer.Argument(help="Folder to write the partitioned export to (replaced as a whole when it "
                                             "is one already; must not overlap EXPORT).")],
    partitions: Annotated[int, typer.Option(help="Number of partitions; every row of a deal lands in one "
                                                 "(a stable hash of deal_id).", min=1)],
    mapping: Annotated[
        Optional[Path], typer.Option(help="YAML mapping of CRM stage/role names (as for validate).")
    ] = None,
) -> None:
    """Lay an export out as Parquet partitions by deal for the Dask engine (--engine dask)."""
    raise typer.Exit(run_partition(export, out, partitions, mapping))


import_app = typer.Typer(
    name="import",
    help="Convert a CRM's own export into a contract export folder (checked, written atomically).",
    no_args_is_help=True,
)


@import_app.command("salesforce")
def import_salesforce(
    src: Annotated[Path, typer.Argument(help="Folder of Salesforce object CSVs: Opportunity.csv (required), "
                                             "OpportunityHistory.csv, OpportunityFieldHistory.csv, "
                                             "OpportunityContactRole.csv, Contact.csv, Account.csv, Task.csv, Event.csv.")],
    out: Annotated[Path, typer.Option(help="Export folder to write (replaced as a whole; must not overlap SRC).")],
    mapping: Annotated[
        Optional[Path], typer.Option(help="YAML mapping of your custom stage/role/type names (as for validate).")
    ] = None,
    timezone: Annotated[
        Optional[str], typer.Option(help="IANA zone of local times in report exports ('3/31/2026 2:05 PM'); "
                                         "ISO-8601 times need none.")
    ] = None,
    date_format: Annotated[
        Optional[list[str]], typer.Option(help="Another strftime layout to read dates in, e.g. '%d.%m.%Y %H:%M' "
                                               "(repeatable; tried first).")
    ] = None,
    deal_type: Annotated[
        Optional[str], typer.Option(help="Deal type for opportunities with a blank Type: new_business, expansion "
                                         "or renewal (default: a blank Type is a problem).")
    ] = None,
    as_of: Annotated[
        Optional[str], typer.Option(help="When the export was taken (default: its latest record time).")
    ] = None,
    comparison: Annotated[
        Optional[Path], typer.Option(help="Where to write Salesforce's Probability per deal (default: "
                                          "crm_probability.csv beside --out; never inside it).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    encoding: Annotated[str, typer.Option(help="Text encoding of the CSV files.")] = "utf-8",
    max_errors: Annotated[int, typer.Option(help="Most problems to print per rule.")] = 20,
) -> None:
    """Import a Salesforce export (Data Loader or the weekly data export) into a contract export."""
    raise typer.Exit(run_import_salesforce(
        src, out, mapping=mapping, timezone=timezone, date_formats=date_format or (), deal_type=deal_type,
        as_of=as_of, comparison=comparison, fmt=fmt, encoding=encoding, max_errors=max_errors,
    ))


@import_app.command("table")
def import_table(
    src: Annotated[Path, typer.Argument(help="The CRM's file (a one-table export) or the folder holding its files.")],
    mapping: Annotated[Path, typer.Option(help="YAML mapping of source files and columns onto the contract "
                                               "(docs/importers.md).")],
    out: Annotated[Path, typer.Option(help="Export folder to write (replaced as a whole; must not overlap SRC).")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    max_errors: Annotated[int, typer.Option(help="Most problems to print per rule.")] = 20,
) -> None:
    """Import any CRM's table-shaped export (a spreadsheet of deals, ...) by a YAML mapping."""
    raise typer.Exit(run_import_table(src, mapping, out, fmt=fmt, max_errors=max_errors))


def register(app: typer.Typer) -> None:
    """Add the data commands to the root app."""
    app.command()(validate)
    app.command()(partition)
    app.add_typer(import_app)
