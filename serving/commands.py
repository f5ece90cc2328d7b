"""The ``dealrisk serve`` and ``dealrisk score`` commands. Wiring only.

``serve``: ``serving.run`` checks the champion and starts BentoML. ``score``: every open deal of
an export through the service's own scoring path (``serving.scoring.score_batches``), stored in
the score store (``portfolio.store``) and optionally written to a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from features.commands import ENGINE_HELP, SCHEDULER_HELP, WORKERS_HELP, check_engine
from serving.run import run_serve


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(3000, help="Port to listen on."),
) -> None:
    """Start the scoring service (BentoML) with the champion models from the MLflow registry."""
    run_serve(host=host, port=port)


def score(
    data: Annotated[Path, typer.Option(help="Export folder (CSV or Parquet tables).")],
    as_of: Annotated[
        Optional[str], typer.Option(help="Score the deals open at this moment (ISO 8601, UTC); default: the export's last event.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the scores to this .csv or .parquet file.")] = None,
    mapping: Annotated[
        Optional[Path], typer.Option(help="YAML mapping of CRM stage/role names added to the default (canonical + "
                                          "Salesforce); default: DEALRISK_MAPPING, as the service reads it.")
    ] = None,
    store: Annotated[
        Optional[str], typer.Option(help="Score store URL; default: DEALRISK_STORE_URL, else sqlite:///data/scores.db.")
    ] = None,
    actions: Annotated[
        bool, typer.Option("--actions/--no-actions", help="Add the next best actions per deal (when the model code offers them).")
    ] = True,
    engine: Annotated[str, typer.Option(help=ENGINE_HELP)] = "local",
    scheduler: Annotated[Optional[str], typer.Option(help=SCHEDULER_HELP)] = None,
    workers: Annotated[int, typer.Option(help=WORKERS_HELP)] = 2,
) -> None:
    """Score every open deal of an export with the champion models and store the scores.

    The same path as the service's POST /score (contract check, point-in-time features,
    explained scores), in batches of 2,000 deals; the run is written to the score store in one
    transaction (re-scoring the same deals, as-of and models replaces their rows). With
    ``--engine dask`` each partition of a partitioned export is scored on a Dask cluster by the
    same functions.
    """
    run_score(data=data, as_of=as_of, out=out, mapping=mapping, store_url=store, with_actions=actions,
              engine=engine, scheduler=scheduler, workers=workers)


def _fail(message: str) -> None:
    """One line on stderr, exit status 1."""
    typer.echo(f"dealrisk score: {message}", err=True)
    raise typer.Exit(1)


def run_score(data: Path, as_of: str | None = None, out: Path | None = None, mapping: Path | None = None,
              store_url: str | None = None, with_actions: bool = True, engine: str = "local",
              scheduler: str | None = None, workers: int = 2) -> int:
    """Load the champion, check the export, score its open deals with a progress bar, store them.

    Returns the store's run id. Every expected failure (no champion, a bad export, as_of or
    store URL, an unwritable output) is one line on stderr and exit status 1. ``engine="dask"``:
    a partitioned export scored partition by partition on a Dask cluster (``_run_score_dask``); the
    local engine reads a partitioned export whole.
    """
    # Imported here, not at module level: the ``dealrisk`` CLI imports this module for every
    # command, and these pull in LightGBM, SQLAlchemy and the feature code (~1.5 s).
    import pandas as pd
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from features.contract.load import load_export
    from features.contract.mapping import MappingError, load_mapping
    from features.contract.partitioned import is_partitioned
    from features.contract.violations import ContractError
    from portfolio.store import ScoreStore, StoreError
    from serving.batch import batch_rows
    from serving.config import ConfigError, ServingConfig
    from serving.loader import ChampionError, load_champion
    from serving.scoring import (
        RequestError,
        load_model,
        read_export_checked,
        resolve_export_as_of,
        score_batches,
        split_open_deals,
    )

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own bar is the one to read
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines would bury the one-line errors
    if out is not None and out.suffix not in (".csv", ".parquet"):
        _fail(f"--out {out}: the file must end in .csv or .parquet")
    try:
        check_engine(engine, scheduler, workers)
    except ValueError as exc:
        _fail(str(exc))
    try:
        config = ServingConfig.from_env()
        model = load_model(load_champion(config), config.mapping)
    except (ChampionError, ConfigError, ValueError) as exc:
        _fail(f"no champion model to score with: {exc}")
    try:
        names = load_mapping(mapping) if mapping is not None else model.mapping
    except MappingError as exc:
        _fail(f"mapping {mapping}: {exc}")
    if engine == "dask":
        return _run_score_dask(data, as_of, out, store_url, with_actions, model, config, scheduler, workers)
    try:
        # A partitioned export is read whole, each partition through the contract check (its errors name the file).
        export = load_export(data, names) if is_partitioned(data) else read_export_checked(data, names)
    except ContractError as exc:
        _fail(f"export {data} cannot be read: {_first_violation(exc)}")
    except RequestError as exc:
        first = exc.problems[0]
        _fail(f"export {data} breaks the data contract ({len(exc.problems)} problem(s)); first: {first.field}: "
              f"{first.reason}. 'dealrisk validate {data}' lists them all")
    try:
        moment = resolve_export_as_of(export, as_of)
    except ValueError as exc:
        _fail(f"--as-of: {exc}")
    try:
        store = ScoreStore.open(store_url)
    except StoreError as exc:
        _fail(str(exc))
    open_batches = split_open_deals(export, moment)
    total = sum(len(batch.deals) for batch in open_batches)
    if total == 0:
        _fail(f"no deal of {data} is open as of {moment.isoformat()} (created by then and not closed); nothing scored")
    console = Console(file=sys.stderr)
    batches = []
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("deals"), TimeElapsedColumn(),
                  console=console, transient=not console.is_terminal) as progress:
        task = progress.add_task("scoring", total=total)
        for batch in score_batches(model, open_batches, moment, config.explain):
            batches.append(batch_rows(model, batch, moment, with_actions))
            progress.advance(task, len(batch))
    return _store_rows(pd.concat(batches, ignore_index=True), store, data, moment, model, config, out)


def _run_score_dask(data: Path, as_of: str | None, out: Path | None, store_url: str | None, with_actions: bool,
                    model, config, scheduler: str | None, workers: int) -> int:
    """``run_score`` of a partitioned export on a Dask cluster: each partition's open deals scored by
    ``serving.batch.score_partition`` on the workers (the champion sent to each worker once), the
    rows stored here in one run, as the local engine does."""
    # Dask, distributed and the feature code load only for this engine.
    import pandas as pd
    from distributed import as_completed
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from features.contract.partitioned import PartitionError, read_layout
    from features.contract.violations import ContractError
    from features.pointintime.distributed import cluster, export_end_dask
    from portfolio.store import ScoreStore, StoreError
    from serving.batch import submit_scoring
    from serving.scoring import resolve_export_as_of

    try:
        read_layout(data)
    except PartitionError as exc:
        _fail(f"--engine dask: {exc}")
    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(cluster(scheduler, workers))
        except PartitionError as exc:  # ClusterError: the --scheduler cannot be reached
            _fail(f"--engine dask: {exc}")
        try:
            moment = resolve_export_as_of(None, as_of, end=export_end_dask(client, data))
        except ContractError as exc:
            _fail(f"export {data} cannot be read: {_first_violation(exc)}")
        except ValueError as exc:
            _fail(f"--as-of: {exc}")
        try:
            store = ScoreStore.open(store_url)
        except StoreError as exc:
            _fail(str(exc))
        futures = submit_scoring(client, data, model, moment, config.explain, with_actions)
        position = {future.key: k for k, future in enumerate(futures)}
        parts = [None] * len(futures)
        console = Console(file=sys.stderr)
        with Progress(TextColumn("scoring partitions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=not console.is_terminal) as progress:
            task = progress.add_task("scoring", total=len(futures))
            try:
                for future in as_completed(futures, loop=client.loop):  # its default: a default client
                    parts[position[future.key]] = future.result()
                    progress.advance(task)
            except ContractError as exc:
                store.close()
                _fail(f"export {data} cannot be read: {_first_violation(exc)}")
    rows = [part for part in parts if part is not None]
    if not rows:
        store.close()
        _fail(f"no deal of {data} is open as of {moment.isoformat()} (created by then and not closed); nothing scored")
    return _store_rows(pd.concat(rows, ignore_index=True), store, data, moment, model, config, out)


def _first_violation(error) -> str:
    """The first violation of a ``ContractError``: table | column | row (with its partition file) | reason."""
    return str(error.violations[0]) if error.violations else str(error).splitlines()[0]


def _store_rows(rows, store, data: Path, moment, model, config, out: Path | None) -> int:
    """Write the scored rows to the store as one run (and to ``out``), print what was done; the run id."""
    from portfolio.files import write_table
    from portfolio.store import JSON_COLUMNS, StoreError

    try:
        run_id = store.write(rows, source="batch", origin=str(data))
    except StoreError as exc:
        _fail(str(exc))
    finally:
        store.close()
    v = model.versions
    typer.echo(f"scored {len(rows):,} open deals of {data} as of {moment.isoformat()} with "
               f"{config.names.describe(v)}; "
               f"stored as run {run_id} in {store.describe()}")
    if out is not None:
        try:
            written = write_table(rows, out, json_columns=JSON_COLUMNS)
        except (OSError, ValueError) as exc:
            _fail(f"--out {out}: {exc}")
        typer.echo(f"wrote {written}")
    typer.echo("next: 'dealrisk rank' lists the open deals by value at risk")
    return run_id


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``score`` to the root app."""
    app.command()(serve)
    app.command()(score)
