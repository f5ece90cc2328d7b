"""portfolio.team: per-owner aggregates of the latest stored scores, on inline frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from portfolio.team import TEAM_COLUMNS, TeamError, summarise_team


def latest_scores() -> pd.DataFrame:
    """Six open deals of three owners (one deal without an owner), as the store's latest() gives them."""
    return pd.DataFrame({
        "deal_id": ["D1", "D2", "D3", "D4", "D5", "D6"],
        "owner_id": ["ana", "ana", "ana", "ben", "ben", None],
        "amount": [10_000.0, 40_000.0, 2_000.0, 5_000.0, np.nan, 1_000.0],
        "win_probability": [0.50, 0.10, 0.80, 0.20, 0.60, 0.30],
        "risk_level": ["medium", "high", "low", "high", "low", "low"],
        "value_at_risk": [5_000.0, 36_000.0, 400.0, 4_000.0, 0.0, 700.0],
        "warning_codes": [
            "no_activity", "no_decision_maker,single_threaded", "", "ghosted,no_activity,no_decision_maker",
            "single_threaded", "",
        ],
    })


def test_team_aggregates_by_hand():
    team = summarise_team(latest_scores()).set_index("owner_id")
    assert team.index.tolist() == ["ana", "ben", "(none)", "(all)"]  # most value at risk first, total last
    ana, ben, total = team.loc["ana"], team.loc["ben"], team.loc["(all)"]
    assert (ana.open_deals, ana.pipeline, ana.at_risk, ana.at_risk_amount, ana.no_activity_14d) == (
        3, 52_000.0, 1, 40_000.0, 1
    )
    assert ana.expected == pytest.approx(0.5 * 10_000 + 0.1 * 40_000 + 0.8 * 2_000)
    assert ana.value_at_risk == pytest.approx(41_400.0)
    assert (ana.decision_maker_engaged, ana.multi_threaded) == pytest.approx((2 / 3, 2 / 3))
    # ben's second deal has no amount: it counts as a deal and adds nothing to the sums.
    assert (ben.open_deals, ben.pipeline, ben.expected, ben.at_risk, ben.no_activity_14d) == (2, 5_000.0, 1_000.0, 1, 1)
    assert (ben.decision_maker_engaged, ben.multi_threaded) == pytest.approx((0.5, 0.5))
    assert (total.open_deals, total.pipeline, total.at_risk, total.no_activity_14d) == (6, 58_000.0, 2, 2)
    assert total.expected == pytest.approx(5_000 + 4_000 + 1_600 + 1_000 + 0 + 300)
    assert total.decision_maker_engaged == pytest.approx(4 / 6)


def test_at_risk_follows_the_chosen_level():
    team = summarise_team(latest_scores(), at_risk_level="low").set_index("owner_id")
    assert team.loc["(all)", "at_risk"] == 3 and team.loc["ana", "at_risk_amount"] == 2_000.0


def test_no_open_deals_gives_an_empty_team():
    empty = summarise_team(latest_scores().iloc[:0])
    assert empty.empty and empty.columns.tolist() == list(TEAM_COLUMNS)


def test_team_names_the_missing_columns():
    with pytest.raises(TeamError, match=r"scores lack columns \['owner_id', 'warning_codes'\]"):
        summarise_team(latest_scores().drop(columns=["owner_id", "warning_codes"]))


def test_team_command_reads_the_latest_stored_scores(sqlite_url, tmp_path):
    from typer.testing import CliRunner

    from dealrisk.cli import app
    from portfolio.store import ScoreStore
    from tests.portfolio.conftest import deal, rows_of

    store = ScoreStore.open(sqlite_url)
    store.write(rows_of([deal("D1", 0.5, owner="ana", warnings=("no_activity",)), deal("D2", 0.1, owner="ana"),
                         deal("D3", 0.9, owner="ben", amount=4000.0)], "2026-06-01"), "batch", "test")
    # A week later D2 is re-scored higher: the team view reads each deal's latest score.
    store.write(rows_of([deal("D1", 0.5, owner="ana", warnings=("no_activity",)), deal("D2", 0.6, owner="ana"),
                         deal("D3", 0.9, owner="ben", amount=4000.0)], "2026-06-08"), "batch", "test")
    store.close()
    out = tmp_path / "team.csv"
    result = CliRunner().invoke(app, ["team", "--store", sqlite_url, "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "Team: 2 owners, 3 open deals scored as of 2026-06-08" in result.output
    team = pd.read_csv(out).set_index("owner_id")
    assert team.loc["ana", "expected"] == pytest.approx(0.5 * 1000 + 0.6 * 1000)
    assert team.loc["ana", "no_activity_14d"] == 1 and team.loc["(all)", "open_deals"] == 3
    assert team.loc["ben", "pipeline"] == 4000.0


def test_team_command_on_a_missing_store_says_so(tmp_path):
    from typer.testing import CliRunner

    from dealrisk.cli import app

    result = CliRunner().invoke(app, ["team", "--store", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 1
    assert "dealrisk team:" in result.output
    result = CliRunner().invoke(app, ["team", "--store", f"sqlite:///{tmp_path / 'none.db'}", "--at-risk-level", "severe"])
    assert result.exit_code == 1 and "--at-risk-level 'severe'" in result.output
