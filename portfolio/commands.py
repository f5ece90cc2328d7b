"""Managers' commands of the ``dealrisk`` CLI (``rank``, ``team``, ``funnel``, ``forecast``). Wiring only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

STORE_HELP = "Score store URL; default: DEALRISK_STORE_URL, else sqlite:///data/scores.db."


def rank(
    owner: Annotated[Optional[list[str]], typer.Option(help="Only this owner's deals (repeat for several).")] = None,
    stage: Annotated[Optional[list[str]], typer.Option(help="Only deals in this open stage (repeat for several).")] = None,
    close_from: Annotated[Optional[str], typer.Option(help="Expected to close on or after this date (2027-01-01).")] = None,
    close_to: Annotated[Optional[str], typer.Option(help="Expected to close on or before this date (2027-03-31).")] = None,
    close_in: Annotated[
        Optional[str], typer.Option(help="Expected to close in this period: 2027, 2027-H1, 2027-Q1 or 2027-03.")
    ] = None,
    min_amount: Annotated[Optional[float], typer.Option(help="Only deals of at least this amount.")] = None,
    changed: Annotated[
        bool, typer.Option("--changed", help="Only deals that dropped 10+ points or got a new warning since their previous snapshot.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Rows to print (0: all); --csv always writes all.")] = 50,
    csv: Annotated[Optional[Path], typer.Option(help="Also write the ranked deals to this .csv (or .parquet) file.")] = None,
    store: Annotated[Optional[str], typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Open deals ranked by value at risk, from the score store (fill it with 'dealrisk score').

    Each deal as of its latest score: owner, stage, amount, expected close, win probability,
    trend since its previous score, value at risk, the top reason lowering its win probability
    and the next best action when it was computed.
    """
    run_rank(owner=owner or (), stage=stage or (), close_from=close_from, close_to=close_to, close_in=close_in,
             min_amount=min_amount, changed=changed, limit=limit, csv=csv, store_url=store)


def _fail(command: str, message: str) -> None:
    """One line on stderr, exit status 1."""
    typer.echo(f"dealrisk {command}: {message}", err=True)
    raise typer.Exit(1)


def run_rank(owner=(), stage=(), close_from=None, close_to=None, close_in=None, min_amount=None, changed=False,
             limit: int = 50, csv: Path | None = None, store_url: str | None = None) -> None:
    """Read the store, add the trend, filter and rank, print the table (and write ``csv``)."""
    # Imported here, not at module level: the ``dealrisk`` CLI imports this module for every
    # command, and SQLAlchemy with the store's tables costs ~0.2 s that only these commands need.
    from portfolio.rank import STORE_COLUMNS, FilterError, make_filters, rank_deals, rank_table
    from portfolio.trend import add_trend

    if limit < 0:
        _fail("rank", f"--limit {limit}: expected 0 (all) or more")
    _check_output("rank", "--csv", csv)
    try:
        filters = make_filters(owner, stage, close_from, close_to, close_in, min_amount, changed)
    except FilterError as exc:
        _fail("rank", str(exc))
    opened, (snapshots, runs) = _read_store("rank", store_url,
                                            lambda s: (s.snapshots(columns=STORE_COLUMNS), s.runs()))
    _require_scores("rank", opened, snapshots)
    trended = add_trend(snapshots)
    ranked = rank_deals(trended, filters)
    shown = ranked if limit == 0 else ranked.head(limit)
    has_actions = bool((ranked["next_action"] != "").any())
    console = fitting_console()
    last = runs.iloc[-1]
    title = (f"Open deals by value at risk: {len(ranked):,} of {len(trended):,}"
             f"{' (changed since their previous score)' if changed else ''}; "
             f"last run {last['run_id']} ({last['source']}, {int(last['deals']):,} deals as of "
             f"{last['as_of']:%Y-%m-%d %H:%M} UTC)")
    if ranked.empty:
        console.print(title)
        console.print("no deal matches the filters")
    else:
        table = rank_table(shown, title=title, show_actions=has_actions)
        console = fitting_console(table)
        console.print(table)
        alerts = int(trended["alert"].sum())
        notes = [f"value at risk of these deals: {ranked['value_at_risk'].sum():,.0f}"]
        if not changed:
            notes.append(f"{alerts:,} deal(s) dropped 10+ points or got a new warning since their previous score "
                         "(dealrisk rank --changed)")
        if len(shown) < len(ranked):
            notes.append(f"{len(ranked) - len(shown):,} more: --limit 0 shows all")
        if has_actions:
            notes.append(gain_note())
        for note in notes:
            console.print(note, soft_wrap=True)
    if csv is not None:
        _write("rank", "--csv", ranked, csv, "deals")


def gain_note() -> str:
    """What a next best action's gain is (and is not), said wherever gains are shown."""
    from features.model.actions import GAIN_NOTE  # here: it loads LightGBM, which most commands never need

    return GAIN_NOTE


def fitting_console(*renderables):
    """A console as wide as ``renderables`` need when the output is not a terminal.

    Piped or redirected (``dealrisk rank | less -S``, ``> list.txt``), rich assumes 80 columns
    and wraps every reason into a tall narrow cell; a terminal keeps its own width.
    """
    from rich.console import Console

    console = Console()
    if console.is_terminal or not renderables:
        return console
    options = console.options.update_width(10_000)
    needed = max(console.measure(renderable, options=options).maximum for renderable in renderables)
    return Console(width=max(console.width, needed))


MAPPING_HELP = "YAML mapping of CRM stage/role names; default: canonical + Salesforce."


def _check_output(command: str, option: str, path: Path | None) -> None:
    if path is not None and path.suffix not in (".csv", ".parquet"):
        _fail(command, f"{option} {path}: the file must end in .csv or .parquet")


def _read_store(command: str, store_url: str | None, read):
    """``read(opened_store)`` on the score store, which must already exist; ``_fail`` on a store error."""
    from portfolio.store import ScoreStore, StoreError

    try:
        opened = ScoreStore.open(store_url, create=False)
        try:
            return opened, read(opened)
        finally:
            opened.close()
    except StoreError as exc:
        _fail(command, str(exc))


def _require_scores(command: str, opened, scores) -> None:
    """``_fail`` when the store read back no scores, saying how to fill it."""
    if scores.empty:
        _fail(command, f"the score store {opened.describe()} holds no scores yet; "
                       "fill it with 'dealrisk score --data EXPORT_FOLDER'")


def _load_export(command: str, data: Path, mapping: Path | None, console):
    """The export at ``data`` (with a spinner: a large export takes seconds) and its last event."""
    from features.contract.io import ExportFolderError
    from features.contract.load import load_export
    from features.contract.violations import ContractError
    from features.pointintime.snapshots import export_end

    try:
        with console.status(f"reading the export {data} ...", spinner="dots"):
            export = load_export(Path(data), mapping=mapping)
    except (ContractError, ExportFolderError) as exc:
        _fail(command, f"{data}: {exc}")
    return export, export_end(export)


def _write(command: str, option: str, frame, path: Path, what: str) -> None:
    from portfolio.files import write_table

    try:
        written = write_table(frame, path)
    except (OSError, ValueError) as exc:
        _fail(command, f"{option} {path}: {exc}")
    typer.echo(f"wrote {len(frame):,} {what} to {written}")


def forecast(
    period: Annotated[str, typer.Option(help="Group by 'month' or 'quarter' of the expected close date.")] = "month",
    outcomes: Annotated[
        Optional[Path],
        typer.Option(help="A later export: judge every stored forecast of a period that has ended against what it shows won."),
    ] = None,
    csv: Annotated[Optional[Path], typer.Option(help="Also write the forecast to this .csv or .parquet file.")] = None,
    accuracy_csv: Annotated[
        Optional[Path], typer.Option(help="With --outcomes: also write each stored forecast against what was won.")
    ] = None,
    mapping: Annotated[Optional[Path], typer.Option(help=MAPPING_HELP)] = None,
    store: Annotated[Optional[str], typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Expected bookings per month or quarter from the latest scores, beside the stage table's estimate.

    Per period of the expected close date: win probability x amount (booked eventually), (1 - slip)
    x amount (booked by the expected date) and the stage table's probability x amount; deals past
    their expected close date and deals without one in rows of their own. With --outcomes, each
    earlier 'dealrisk score' run's forecast against what was won (forecast accuracy over time).
    """
    run_forecast(period=period, outcomes=outcomes, csv=csv, accuracy_csv=accuracy_csv, mapping=mapping,
                 store_url=store)


def run_forecast(period: str = "month", outcomes: Path | None = None, csv: Path | None = None,
                 accuracy_csv: Path | None = None, mapping: Path | None = None, store_url: str | None = None) -> None:
    """Read the store, print the forecast (and, with ``outcomes``, the stored forecasts' accuracy)."""
    from portfolio.forecast import (
        ForecastError,
        accuracy_summary_table,
        accuracy_table,
        check_period,
        forecast_accuracy,
        forecast_bookings,
        forecast_table,
        stored_forecasts,
        summarise_accuracy,
        with_total,
    )

    try:
        check_period(period)
    except ForecastError as exc:
        _fail("forecast", f"--{exc}")
    _check_output("forecast", "--csv", csv)
    _check_output("forecast", "--accuracy-csv", accuracy_csv)
    if accuracy_csv is not None and outcomes is None:
        _fail("forecast", "--accuracy-csv needs --outcomes EXPORT_FOLDER (the export that shows what was won)")

    def read(opened):
        latest = opened.latest(json_columns=False)
        as_of = opened.latest_batch_as_of()
        past = (opened.history(), opened.runs()) if outcomes is not None else None
        return latest, as_of, past

    opened, (latest, as_of, past) = _read_store("forecast", store_url, read)
    _require_scores("forecast", opened, latest)
    as_of = as_of if as_of is not None else latest["as_of"].max()
    table = with_total(forecast_bookings(latest, as_of, period))
    title = (f"Expected bookings by {period} of expected close: {len(latest):,} open deals scored as of "
             f"{as_of:%Y-%m-%d %H:%M} UTC")
    rendered = forecast_table(table, title=title)
    console = fitting_console(rendered)
    console.print(rendered)
    console.print("expected: sum of win probability x amount (won eventually); on time: (1 - slip probability) x "
                  "amount (won by the expected close date); stage table: the CRM's stage probability x amount",
                  soft_wrap=True)
    if csv is not None:
        _write("forecast", "--csv", table, csv, "periods")
    if outcomes is None:
        return
    export, data_end = _load_export("forecast", outcomes, mapping, console)
    history, runs = past
    accuracy = forecast_accuracy(stored_forecasts(history, runs, period), export.deals, data_end, period)
    if accuracy.empty:
        console.print(f"no stored forecast of a {period} that has ended by {data_end:%Y-%m-%d %H:%M} UTC "
                      f"(the last event of {outcomes}); score earlier as-ofs with 'dealrisk score --as-of' to build "
                      "a history", soft_wrap=True)
    else:
        rendered = accuracy_table(accuracy, title=f"Stored forecasts against what {outcomes} shows won "
                                                  f"(data to {data_end:%Y-%m-%d %H:%M} UTC)")
        summary = accuracy_summary_table(summarise_accuracy(accuracy), period)
        console = fitting_console(rendered, summary)
        console.print(rendered)
        console.print(summary)
        console.print("a forecast made inside a period adds what was already won in it (booked); err: "
                      "(forecast - won) / won", soft_wrap=True)
    if accuracy_csv is not None:
        _write("forecast", "--accuracy-csv", accuracy, accuracy_csv, "stored forecasts")


def team(
    at_risk_level: Annotated[str, typer.Option(help="The risk level counted as at risk: high, medium or low.")] = "high",
    csv: Annotated[Optional[Path], typer.Option(help="Also write the team table to this .csv or .parquet file.")] = None,
    store: Annotated[Optional[str], typer.Option(help=STORE_HELP)] = None,
) -> None:
    """Per owner: pipeline, expected bookings, deals at risk, silent deals, decision-chain coverage.

    From the latest stored scores and their warnings: deals at the --at-risk-level, deals with the
    no_activity warning (two weeks without activity), and the shares of deals with a decision
    maker or economic buyer engaged (no no_decision_maker) and not single-threaded.
    """
    run_team(at_risk_level=at_risk_level, csv=csv, store_url=store)


def run_team(at_risk_level: str = "high", csv: Path | None = None, store_url: str | None = None) -> None:
    """Read the store's latest scores, print the per-owner table (and write ``csv``)."""
    from features.model.grades import RISK_LEVELS
    from portfolio.team import summarise_team, team_table

    if at_risk_level not in RISK_LEVELS:
        _fail("team", f"--at-risk-level {at_risk_level!r}: expected one of {list(RISK_LEVELS)}")
    _check_output("team", "--csv", csv)
    opened, (latest, as_of) = _read_store("team", store_url, lambda s: (s.latest(json_columns=False), s.latest_batch_as_of()))
    _require_scores("team", opened, latest)
    as_of = as_of if as_of is not None else latest["as_of"].max()
    summary = summarise_team(latest, at_risk_level)
    owners = len(summary) - 1
    rendered = team_table(summary, title=f"Team: {owners:,} owners, {len(latest):,} open deals scored as of "
                                         f"{as_of:%Y-%m-%d %H:%M} UTC", at_risk_level=at_risk_level)
    console = fitting_console(rendered)
    console.print(rendered)
    console.print("no activity 14d: the no_activity warning; DM/EB engaged: deals without no_decision_maker "
                  "(a decision maker or economic buyer engaged in 30 days); multi-threaded: without single_threaded",
                  soft_wrap=True)
    if csv is not None:
        _write("team", "--csv", summary, csv, "rows (owners and the total)")


def funnel(
    data: Annotated[Path, typer.Option(help="Export folder (CSV or Parquet tables).")],
    as_of: Annotated[
        Optional[str], typer.Option(help="Judge the funnel as of this moment (ISO 8601, UTC); default: the export's last event.")
    ] = None,
    quarters: Annotated[int, typer.Option(help="Calendar quarters in the window, the one holding as-of included.")] = 2,
    by: Annotated[
        Optional[list[str]],
        typer.Option(help="Group by lead_source and/or segment (repeat to cross them); default: all deals, then each alone."),
    ] = None,
    csv: Annotated[Optional[Path], typer.Option(help="Also write the funnel rows to this .csv or .parquet file.")] = None,
    mapping: Annotated[Optional[Path], typer.Option(help=MAPPING_HELP)] = None,
) -> None:
    """Stage-to-stage conversion and median days in stage, by lead source and segment.

    From the export's stage history over the last --quarters calendar quarters: the deals that
    moved on from each stage or were lost at it in that window (skipped stages count as passed,
    back-steps reach nothing new).
    """
    run_funnel(data=data, as_of=as_of, quarters=quarters, by=by, csv=csv, mapping=mapping)


def run_funnel(data: Path, as_of: str | None = None, quarters: int = 2, by: list[str] | None = None,
               csv: Path | None = None, mapping: Path | None = None) -> None:
    """Load the export, print the funnel tables (and write ``csv``)."""
    import pandas as pd

    from features.pointintime.events import FeatureInputError, parse_as_of
    from portfolio.funnel import FunnelError, funnel_table, quarter_start, summarise_funnel

    _check_output("funnel", "--csv", csv)
    groupings = [tuple(by)] if by else [(), ("lead_source",), ("segment",)]
    console = fitting_console()
    export, data_end = _load_export("funnel", data, mapping, console)
    try:
        at = parse_as_of(as_of) if as_of is not None else data_end
        frames = [summarise_funnel(export, at, grouping, quarters) for grouping in groupings]
    except (FunnelError, FeatureInputError) as exc:
        _fail("funnel", str(exc))
    window = f"{quarter_start(at, quarters - 1):%Y-%m-%d} .. {at:%Y-%m-%d %H:%M} UTC"
    tables = [funnel_table(frame, grouping, title=f"Funnel {window}, " + (
        "by " + " x ".join(c.replace("_", " ") for c in grouping) if grouping else "all deals"))
        for frame, grouping in zip(frames, groupings)]
    console = fitting_console(*tables)
    for table in tables:
        console.print(table)
    console.print("advanced / lost: deals that moved on from the stage / were lost at it in the window; conversion = "
                  "advanced / (advanced + lost); days in stage over all visits of the deals decided in the window; "
                  "open now: deals still open at the stage", soft_wrap=True)
    if csv is not None:
        _write("funnel", "--csv", pd.concat(frames, ignore_index=True), csv, "funnel rows")


def register(app: typer.Typer) -> None:
    """Add the managers' commands to the root app."""
    app.command()(rank)
    app.command()(forecast)
    app.command()(team)
    app.command()(funnel)
