"""The Monday list: open deals ranked by value at risk, with trend, top reason and next best action.

Pure functions on ``portfolio.trend.add_trend`` output (each deal's latest stored snapshot with
its trend); ``portfolio.commands`` reads the store and prints. Ranked by value at risk (amount x
(1 - win probability)): the money a manager can still lose on the deal, so a large deal at 60%
comes before a small one at 10%. Ties: larger amount first, then deal id, so the order is stable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from features.contract.schema import OPEN_STAGES

RANK_COLUMNS = (
    "rank", "deal_id", "owner_id", "stage", "amount", "expected_close_date", "win_probability", "points_moved",
    "trend", "value_at_risk", "top_reason", "next_action", "warning_codes", "new_warnings", "grade", "risk_level",
    "as_of",
)
# The store's columns the list reads (``ScoreStore.snapshots(columns=...)``): the rest of a row is
# not read, which halves reading 100k deals.
STORE_COLUMNS = ("owner_id", "stage", "amount", "expected_close_date", "win_probability", "value_at_risk",
                 "top_reason", "warning_codes", "actions", "grade", "risk_level")
_PERIOD = re.compile(r"^(\d{4})(?:-(?:Q([1-4])|H([12])|(\d{2})))?$")


class FilterError(ValueError):
    """A filter of ``dealrisk rank`` cannot be read; the message names the option."""


@dataclass(frozen=True)
class RankFilters:
    """Which deals to list. Close dates: ``close_from`` included, ``close_to`` excluded (UTC)."""

    owners: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    close_from: pd.Timestamp | None = None
    close_to: pd.Timestamp | None = None
    min_amount: float | None = None
    changed: bool = False


def parse_period(text: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """A close period as [start, end) in UTC: a year, a half, a quarter or a month.

    >>> [str(t.date()) for t in parse_period("2027-Q1")]
    ['2027-01-01', '2027-04-01']
    >>> [str(t.date()) for t in parse_period("2026-12")], [str(t.date()) for t in parse_period("2027-H2")]
    (['2026-12-01', '2027-01-01'], ['2027-07-01', '2028-01-01'])
    """
    match = _PERIOD.match(str(text).strip().upper())
    if match is None or (match.group(4) and not 1 <= int(match.group(4)) <= 12):
        raise FilterError(f"--close-in {text!r}: expected a year (2027), half (2027-H1), quarter (2027-Q1) or month (2027-03)")
    year, quarter, half, month = match.groups()
    if quarter:
        start, months = pd.Timestamp(int(year), 3 * int(quarter) - 2, 1, tz="UTC"), 3
    elif half:
        start, months = pd.Timestamp(int(year), 6 * int(half) - 5, 1, tz="UTC"), 6
    elif month:
        start, months = pd.Timestamp(int(year), int(month), 1, tz="UTC"), 1
    else:
        start, months = pd.Timestamp(int(year), 1, 1, tz="UTC"), 12
    return start, start + pd.DateOffset(months=months)


def parse_day(text: str, option: str) -> pd.Timestamp:
    """A date (``2027-03-31``) as the UTC midnight starting it; ``FilterError`` naming ``option``.

    >>> parse_day("2027-03-31", "--close-to")
    Timestamp('2027-03-31 00:00:00+0000', tz='UTC')
    """
    try:
        day = pd.Timestamp(str(text).strip())
    except (TypeError, ValueError):
        day = pd.NaT
    if pd.isna(day):
        raise FilterError(f"{option} {text!r}: expected a date such as 2027-03-31")
    day = day.tz_localize("UTC") if day.tzinfo is None else day.tz_convert("UTC")
    return day.floor("D")


def make_filters(owners=(), stages=(), close_from: str | None = None, close_to: str | None = None,
                 close_in: str | None = None, min_amount: float | None = None, changed: bool = False) -> RankFilters:
    """``RankFilters`` from the command's options; ``FilterError`` names a bad one.

    ``close_to`` is a day included in the range; ``close_in`` a period (``parse_period``) that
    narrows whatever ``close_from``/``close_to`` allow.

    >>> f = make_filters(stages=["Negotiate"], close_to="2027-03-31", close_in="2027-Q1")
    >>> f.stages, str(f.close_from.date()), str(f.close_to.date())
    (('negotiate',), '2027-01-01', '2027-04-01')
    """
    stages = tuple(str(s).strip().lower() for s in stages)
    unknown = [s for s in stages if s not in OPEN_STAGES]
    if unknown:
        raise FilterError(f"--stage {unknown[0]!r}: not an open stage; the open stages are {', '.join(OPEN_STAGES)}")
    start = parse_day(close_from, "--close-from") if close_from else None
    end = parse_day(close_to, "--close-to") + pd.Timedelta(days=1) if close_to else None
    if close_in:
        period_start, period_end = parse_period(close_in)
        start = period_start if start is None else max(start, period_start)
        end = period_end if end is None else min(end, period_end)
    if start is not None and end is not None and start >= end:
        raise FilterError("the close range is empty: --close-from is after --close-to (or outside --close-in)")
    if min_amount is not None and not np.isfinite(min_amount):
        raise FilterError(f"--min-amount {min_amount!r}: expected a number")
    return RankFilters(owners=tuple(str(o) for o in owners), stages=stages, close_from=start, close_to=end,
                       min_amount=min_amount, changed=changed)


def filter_deals(trended: pd.DataFrame, filters: RankFilters) -> pd.DataFrame:
    """The deals of ``trended`` that pass every filter (a deal with no close date or amount fails
    the filters that need one)."""
    keep = np.ones(len(trended), dtype=bool)
    if filters.owners:
        keep &= trended["owner_id"].isin(filters.owners).to_numpy()
    if filters.stages:
        keep &= trended["stage"].isin(filters.stages).to_numpy()
    close = trended["expected_close_date"]
    if filters.close_from is not None:
        keep &= (close >= filters.close_from).fillna(False).to_numpy(dtype=bool)
    if filters.close_to is not None:
        keep &= (close < filters.close_to).fillna(False).to_numpy(dtype=bool)
    if filters.min_amount is not None:
        keep &= (trended["amount"] >= filters.min_amount).fillna(False).to_numpy(dtype=bool)
    if filters.changed:
        keep &= trended["alert"].to_numpy(dtype=bool)
    return trended.loc[keep]


def rank_deals(trended: pd.DataFrame, filters: RankFilters = RankFilters()) -> pd.DataFrame:
    """The deals passing ``filters``, ranked by value at risk (``RANK_COLUMNS``; ``rank`` from 1).

    >>> from portfolio.trend import add_trend
    >>> at = pd.to_datetime(["2026-03-09"] * 3, utc=True)
    >>> deals = pd.DataFrame({"deal_id": ["D1", "D2", "D3"], "snapshot": 0, "as_of": at, "owner_id": ["O1", "O2", "O1"],
    ...     "stage": "propose", "amount": [1000.0, 50000.0, 8000.0], "expected_close_date": at,
    ...     "win_probability": [0.1, 0.6, 0.2], "value_at_risk": [900.0, 20000.0, 6400.0], "top_reason": "",
    ...     "actions": None, "warning_codes": "", "grade": "C", "risk_level": "low"})
    >>> rank_deals(add_trend(deals))["deal_id"].tolist()
    ['D2', 'D3', 'D1']
    >>> rank_deals(add_trend(deals), RankFilters(owners=("O1",)))["deal_id"].tolist()
    ['D3', 'D1']
    """
    chosen = filter_deals(trended, filters)
    order = np.lexsort((
        chosen["deal_id"].astype(str).to_numpy(),
        -chosen["amount"].fillna(0.0).to_numpy(dtype=float),
        -chosen["value_at_risk"].fillna(0.0).to_numpy(dtype=float),
    ))
    chosen = chosen.iloc[order].reset_index(drop=True)
    return pd.DataFrame({
        "rank": np.arange(1, len(chosen) + 1),
        "deal_id": chosen["deal_id"],
        "owner_id": chosen["owner_id"],
        "stage": chosen["stage"],
        "amount": chosen["amount"],
        "expected_close_date": chosen["expected_close_date"],
        "win_probability": chosen["win_probability"],
        "points_moved": chosen["points_moved"],
        "trend": chosen["trend"],
        "value_at_risk": chosen["value_at_risk"],
        "top_reason": chosen["top_reason"],
        "next_action": [next_action(actions) for actions in chosen["actions"].tolist()],
        "warning_codes": chosen["warning_codes"],
        "new_warnings": chosen["new_warnings"],
        "grade": chosen["grade"],
        "risk_level": chosen["risk_level"],
        "as_of": chosen["as_of"],
    }, columns=list(RANK_COLUMNS))


def next_action(actions) -> str:
    """The sentence of a deal's best action ("Engage the economic buyer: +12 points"); "" when none.

    >>> next_action([{"sentence": "Engage the economic buyer: +12 points"}]), next_action(None), next_action([])
    ('Engage the economic buyer: +12 points', '', '')
    """
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return ""
    first = actions[0]
    return str(first.get("sentence") or first.get("label") or "")


# --- the terminal table -----------------------------------------------------------------------------

_TREND_STYLE = {"improving": "green", "declining": "red", "steady": "dim", "new": "cyan"}


def trend_text(trend: str, points) -> Text:
    """The trend cell: an arrow and the points moved ("▼ -12.0"), or "new".

    >>> str(trend_text("declining", -12.0)), str(trend_text("new", float("nan")))
    ('▼ -12.0', 'new')
    """
    if trend == "new" or points is None or not np.isfinite(points):
        return Text("new", style=_TREND_STYLE["new"])
    arrow = {"improving": "▲", "declining": "▼"}.get(trend, "=")
    return Text(f"{arrow} {points:+.1f}", style=_TREND_STYLE.get(trend, ""))


def money(value) -> str:
    """An amount as a whole number with thousands separators; "-" when unknown.

    >>> money(125000.4), money(float("nan"))
    ('125,000', '-')
    """
    return "-" if value is None or not np.isfinite(value) else f"{value:,.0f}"


def rank_table(ranked: pd.DataFrame, title: str = "", show_actions: bool = True) -> Table:
    """The ranked deals as a rich table; the text columns wrap in a narrow terminal."""
    table = Table(title=title or None, title_justify="left", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("deal", no_wrap=True)
    table.add_column("owner", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("amount", justify="right", no_wrap=True)
    table.add_column("close", no_wrap=True)
    table.add_column("win", justify="right", no_wrap=True)
    table.add_column("trend", no_wrap=True)
    table.add_column("at risk", justify="right", no_wrap=True)
    table.add_column("top reason", ratio=1, min_width=16)
    if show_actions:
        table.add_column("next best action", ratio=1, min_width=16)
    for row in ranked.itertuples(index=False):
        close = row.expected_close_date
        cells = [
            str(row.rank), str(row.deal_id), str(row.owner_id), str(row.stage), money(row.amount),
            "-" if pd.isna(close) else close.strftime("%Y-%m-%d"),
            f"{row.win_probability * 100:.0f}%", trend_text(str(row.trend), row.points_moved),
            money(row.value_at_risk), str(row.top_reason),
        ]
        if show_actions:
            cells.append(str(row.next_action))
        table.add_row(*cells)
    return table
