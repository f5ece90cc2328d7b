"""``rank``: order by value at risk, every filter at its edges, periods and option errors, the
table, and the command on an inline store (no model needed): CSV cells neutralised, piped width."""

from __future__ import annotations

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from dealrisk.cli import app
from portfolio.rank import FilterError, RankFilters, make_filters, parse_period, rank_deals, rank_table
from portfolio.store import ScoreStore
from portfolio.trend import add_trend
from tests.portfolio.conftest import deal, rows_of

AS_OF = "2027-01-04"
BEST = [{"action": "engage_economic_buyer", "label": "Engage the economic buyer", "gain_points": 12.4,
         "sentence": "Engage the economic buyer: +12 points"}]


def deals_now() -> list[dict]:
    """Six deals: value at risk = amount x (1 - win)."""
    return [
        deal("D1", 0.75, owner="O1", stage="propose", amount=40_000.0, close_in_days=10),     # 10,000
        deal("D2", 0.20, owner="O2", stage="negotiate", amount=50_000.0, close_in_days=40),   # 40,000
        deal("D3", 0.50, owner="O1", stage="qualify", amount=20_000.0, close_in_days=86),     # 10,000 (tie: smaller)
        deal("D4", 0.10, owner="O3", stage="negotiate", amount=5_000.0, close_in_days=None),  # 4,500
        deal("D5", 0.60, owner="O2", stage="contract", amount=None, close_in_days=87),        # 0 (no amount)
        deal("D6", 0.30, owner="O1", stage="propose", amount=30_000.0, close_in_days=300, actions=BEST),  # 21,000
    ]


def trended() -> pd.DataFrame:
    now = rows_of(deals_now(), AS_OF).assign(snapshot=0)
    before = rows_of([deal("D2", 0.45, owner="O2"), deal("D1", 0.73)], "2026-12-28").assign(snapshot=1)
    return add_trend(pd.concat([now, before], ignore_index=True))


def test_ranked_by_value_at_risk_ties_by_amount_then_id():
    ranked = rank_deals(trended())
    assert ranked["deal_id"].tolist() == ["D2", "D6", "D1", "D3", "D4", "D5"]
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert ranked.set_index("deal_id").loc["D6", "next_action"] == "Engage the economic buyer: +12 points"
    assert ranked.set_index("deal_id").loc["D2", "trend"] == "declining"


@pytest.mark.parametrize(("filters", "expected"), [
    (RankFilters(owners=("O1",)), ["D6", "D1", "D3"]),
    (RankFilters(owners=("O1", "O3")), ["D6", "D1", "D3", "D4"]),
    (RankFilters(stages=("negotiate",)), ["D2", "D4"]),
    (RankFilters(min_amount=30_000.0), ["D2", "D6", "D1"]),  # at the minimum is in; no amount is out
    (make_filters(close_in="2027-Q1"), ["D2", "D1", "D3"]),  # D3 closes on 2027-03-31, in; D5 on 2027-04-01, out
    (make_filters(close_to="2027-03-31"), ["D2", "D1", "D3"]),  # the day itself is in; no close date is out
    (make_filters(close_from="2027-03-31", close_to="2027-04-01"), ["D3", "D5"]),
    (RankFilters(changed=True), ["D2"]),  # dropped 25 points; D1 rose 2
    (RankFilters(owners=("O9",)), []),
])
def test_filters(filters, expected):
    # D3 closes 86 days after 2027-01-04 = 2027-03-31, D5 87 days after = 2027-04-01.
    assert rank_deals(trended(), filters)["deal_id"].tolist() == expected


def test_periods():
    assert parse_period("2027") == (pd.Timestamp("2027-01-01", tz="UTC"), pd.Timestamp("2028-01-01", tz="UTC"))
    assert parse_period("2027-h1")[1] == pd.Timestamp("2027-07-01", tz="UTC")
    assert parse_period("2027-Q4")[1] == pd.Timestamp("2028-01-01", tz="UTC")
    assert parse_period(" 2027-02 ") == (pd.Timestamp("2027-02-01", tz="UTC"), pd.Timestamp("2027-03-01", tz="UTC"))
    for bad in ("2027-Q5", "2027-13", "Q1-2027", "next quarter"):
        with pytest.raises(FilterError, match="--close-in"):
            parse_period(bad)


def test_filter_option_errors_name_the_option():
    with pytest.raises(FilterError, match="--stage 'won': not an open stage; the open stages are identify"):
        make_filters(stages=["won"])
    with pytest.raises(FilterError, match="--close-from 'soon'"):
        make_filters(close_from="soon")
    with pytest.raises(FilterError, match="the close range is empty"):
        make_filters(close_from="2027-05-01", close_in="2027-Q1")


def test_table_shows_actions_only_when_asked():
    ranked = rank_deals(trended())
    console = Console(width=250, record=True)
    console.print(rank_table(ranked, show_actions=True))
    text = console.export_text()
    assert "next best action" in text and "Engage the economic buyer: +12 points" in text and "▼ -25.0" in text
    console = Console(width=250, record=True)
    console.print(rank_table(ranked, show_actions=False))
    assert "next best action" not in console.export_text()


@pytest.fixture
def filled(sqlite_url) -> str:
    store = ScoreStore.open(sqlite_url)
    store.write(rows_of([deal("D2", 0.45, owner="O2"), deal("D1", 0.73)], "2026-12-28"), "batch", "x")
    risky = deal("D7", 0.05, owner="@evil", amount=1_000.0, reason="=HYPERLINK(\"http://x\") " + "long reason " * 12)
    store.write(rows_of([*deals_now(), risky], AS_OF), "batch", "x")
    store.close()
    return sqlite_url


def test_rank_command_on_a_store(filled, tmp_path):
    out = tmp_path / "ranked.csv"
    result = CliRunner().invoke(app, ["rank", "--store", filled, "--limit", "3", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    order = [next(i for i, line in enumerate(lines) if f" {d} " in line) for d in ("D2", "D6", "D1")]
    assert order == sorted(order)
    assert "4 more: --limit 0 shows all" in result.output
    assert "1 deal(s) dropped 10+ points or got a new warning" in result.output
    assert "not a promise" in result.output  # actions are shown with their caveat
    # Piped: the long reason is printed whole on one line, not cut to 80 columns.
    all_rows = CliRunner().invoke(app, ["rank", "--store", filled, "--limit", "0"]).output
    assert any("D7" in line and "long reason " * 12 in line for line in all_rows.splitlines())
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(written) == 7  # --csv writes every deal, not just the printed ones
    evil = written.set_index("deal_id").loc["D7"]
    assert evil["owner_id"] == "'@evil" and evil["top_reason"].startswith("'=HYPERLINK")


def test_rank_command_errors(filled, tmp_path):
    runner = CliRunner()
    bad_stage = runner.invoke(app, ["rank", "--store", filled, "--stage", "closing"])
    assert bad_stage.exit_code == 1 and "--stage 'closing'" in bad_stage.stderr
    bad_csv = runner.invoke(app, ["rank", "--store", filled, "--csv", str(tmp_path / "x.xlsx")])
    assert bad_csv.exit_code == 1 and "must end in .csv or .parquet" in bad_csv.stderr
    none = runner.invoke(app, ["rank", "--store", filled, "--owner", "nobody"])
    assert none.exit_code == 0 and "no deal matches the filters" in none.output
