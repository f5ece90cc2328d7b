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
    from portfolio.files import write_table
    from portfolio.rank import FilterError, make_filters, rank_deals, rank_table
    from portfolio.store import ScoreStore, StoreError
    from portfolio.trend import add_trend

    if limit < 0:
        _fail("rank", f"--limit {limit}: expected 0 (all) or more")
    if csv is not None and csv.suffix not in (".csv", ".parquet"):
        _fail("rank", f"--csv {csv}: the file must end in .csv or .parquet")
    try:
        filters = make_filters(owner, stage, close_from, close_to, close_in, min_amount, changed)
    except FilterError as exc:
        _fail("rank", str(exc))
    try:
        opened = ScoreStore.open(store_url, create=False)
        try:
            snapshots = opened.snapshots(json_columns=False)
            runs = opened.runs()
        finally:
            opened.close()
    except StoreError as exc:
        _fail("rank", str(exc))
    if snapshots.empty:
        _fail("rank", f"the score store {opened.describe()} holds no scores yet; "
                      "fill it with 'dealrisk score --data EXPORT_FOLDER'")
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
        try:
            written = write_table(ranked, csv)
        except (OSError, ValueError) as exc:
            _fail("rank", f"--csv {csv}: {exc}")
        typer.echo(f"wrote {len(ranked):,} deals to {written}")


def gain_note() -> str:
    """What a next best action's gain is (and is not), said wherever gains are shown."""
    try:
        from features.model.actions import GAIN_NOTE
    except ImportError:
        return "Action gains are the model's estimate, not a promise that the step causes the gain."
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


def register(app: typer.Typer) -> None:
    """Add the managers' commands to the root app."""
    app.command()(rank)
