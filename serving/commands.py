"""The ``dealrisk serve`` and ``dealrisk score`` commands. Wiring only.

``serve``: ``serving.run`` checks the champion and starts BentoML. ``score``: every open deal of
an export through the service's own scoring path (``serving.scoring.score_batches``), stored in
the score store (``portfolio.store``) and optionally written to a file.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

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
) -> None:
    """Score every open deal of an export with the champion models and store the scores.

    The same path as the service's POST /score (contract check, point-in-time features,
    explained scores), in batches of 2,000 deals; the run is written to the score store in one
    transaction (re-scoring the same deals, as-of and models replaces their rows).
    """
    run_score(data=data, as_of=as_of, out=out, mapping=mapping, store_url=store, with_actions=actions)


def _fail(message: str) -> None:
    """One line on stderr, exit status 1."""
    typer.echo(f"dealrisk score: {message}", err=True)
    raise typer.Exit(1)


def run_score(data: Path, as_of: str | None = None, out: Path | None = None, mapping: Path | None = None,
              store_url: str | None = None, with_actions: bool = True) -> int:
    """Load the champion, check the export, score its open deals with a progress bar, store them.

    Returns the store's run id. Every expected failure (no champion, a bad export, as_of or
    store URL, an unwritable output) is one line on stderr and exit status 1.
    """
    # Imported here, not at module level: the ``dealrisk`` CLI imports this module for every
    # command, and these pull in LightGBM, SQLAlchemy and the feature code (~1.5 s).
    import pandas as pd
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from features.contract.mapping import MappingError, load_mapping
    from features.contract.violations import ContractError
    from portfolio.files import write_table
    from portfolio.store import JSON_COLUMNS, ScoreStore, StoreError, score_rows
    from serving.config import ConfigError, ServingConfig
    from serving.loader import ChampionError, load_champion
    from serving.scoring import (
        RequestError,
        deal_actions,
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
        config = ServingConfig.from_env()
        model = load_model(load_champion(config), config.mapping)
    except (ChampionError, ConfigError, ValueError) as exc:
        _fail(f"no champion model to score with: {exc}")
    try:
        names = load_mapping(mapping) if mapping is not None else model.mapping
    except MappingError as exc:
        _fail(f"mapping {mapping}: {exc}")
    try:
        export = read_export_checked(data, names)
    except ContractError as exc:
        first = exc.violations[0] if exc.violations else None
        where = f"{first.table}: {first.reason}" if first is not None else str(exc).splitlines()[0]
        _fail(f"export {data} cannot be read: {where}")
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
            actions = deal_actions(model, batch.export, moment, batch.features) if with_actions else None
            batches.append(score_rows(batch.explained, batch.features, batch.export.deals, model.versions, actions))
            progress.advance(task, len(batch))
    rows = pd.concat(batches, ignore_index=True)
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
