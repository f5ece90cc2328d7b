"""Trend and alerts on inline snapshots: the documented thresholds at their edges, new warnings,
new deals; and the same computed from a store on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import pandas as pd
import pytest

from portfolio.store import ScoreStore
from portfolio.trend import TrendRules, add_trend, new_codes, select_alerts
from tests.portfolio.conftest import deal, rows_of


def snapshots(*pairs: tuple[str, float | None, float, str, str]) -> pd.DataFrame:
    """(deal, previous win or None, latest win, previous warnings, latest warnings) -> snapshots frame."""
    rows = []
    for deal_id, before, now, warnings_before, warnings_now in pairs:
        rows.append((deal_id, 0, pd.Timestamp("2026-03-09", tz="UTC"), now, warnings_now))
        if before is not None:
            rows.append((deal_id, 1, pd.Timestamp("2026-03-02", tz="UTC"), before, warnings_before))
    return pd.DataFrame(rows, columns=["deal_id", "snapshot", "as_of", "win_probability", "warning_codes"])


def test_trend_thresholds_at_their_edges():
    trended = add_trend(snapshots(
        ("up5", 0.40, 0.45, "", ""), ("up4.9", 0.40, 0.449, "", ""), ("down5", 0.45, 0.40, "", ""),
        ("down9.9", 0.50, 0.401, "", ""), ("down10", 0.50, 0.40, "", ""), ("flat", 0.3, 0.3, "", ""),
    )).set_index("deal_id")
    assert trended["trend"].to_dict() == {"up5": "improving", "up4.9": "steady", "down5": "declining",
                                          "down9.9": "declining", "down10": "declining", "flat": "steady"}
    assert trended["points_moved"].to_dict() == {"up5": 5.0, "up4.9": 4.9, "down5": -5.0, "down9.9": -9.9,
                                                 "down10": -10.0, "flat": 0.0}
    assert trended.index[trended["alert"]].tolist() == ["down10"]


def test_a_new_warning_alerts_and_a_cleared_one_does_not():
    trended = add_trend(snapshots(
        ("new", 0.5, 0.5, "no_activity", "ghosted,no_activity"), ("cleared", 0.5, 0.5, "ghosted", ""),
        ("same", 0.5, 0.52, "ghosted", "ghosted"),
    )).set_index("deal_id")
    assert trended["new_warnings"].to_dict() == {"new": "ghosted", "cleared": "", "same": ""}
    assert trended["alert"].to_dict() == {"new": True, "cleared": False, "same": False}
    assert select_alerts(trended.reset_index())["deal_id"].tolist() == ["new"]


def test_a_deal_without_previous_snapshot_is_new_and_never_alerts():
    row = add_trend(snapshots(("D1", None, 0.05, "", "ghosted,no_activity"))).iloc[0]
    assert row["trend"] == "new" and not row["alert"] and row["new_warnings"] == ""
    assert pd.isna(row["points_moved"]) and pd.isna(row["previous_as_of"])


def test_thresholds_are_settings():
    trended = add_trend(snapshots(("D1", 0.50, 0.47, "", "")), TrendRules(steady_points=2.0, alert_drop_points=3.0))
    assert trended.loc[0, "trend"] == "declining" and trended.loc[0, "alert"]


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"lacks columns \['warning_codes'\]"):
        add_trend(snapshots(("D1", 0.5, 0.5, "", "")).drop(columns="warning_codes"))


def test_new_codes():
    assert new_codes("a,b,c", "b") == "a,c"
    assert new_codes("", "") == "" and new_codes("a", None) == "a"


def test_trend_from_a_store(store_url):
    store = ScoreStore.open(store_url)
    store.write(rows_of([deal("D1", 0.50), deal("D2", 0.40), deal("D3", 0.60, warnings=("ghosted",))],
                        "2026-03-02"), "batch", "x")
    store.write(rows_of([deal("D1", 0.38), deal("D2", 0.47), deal("D3", 0.58, warnings=("ghosted", "no_activity")),
                         deal("D4", 0.20)], "2026-03-09"), "batch", "x")
    trended = add_trend(store.snapshots()).set_index("deal_id")
    store.close()
    assert trended["points_moved"].fillna(99).to_dict() == {"D1": -12.0, "D2": 7.0, "D3": -2.0, "D4": 99}
    assert trended["trend"].to_dict() == {"D1": "declining", "D2": "improving", "D3": "steady", "D4": "new"}
    assert trended["new_warnings"].to_dict() == {"D1": "", "D2": "", "D3": "no_activity", "D4": ""}
    assert trended.index[trended["alert"]].tolist() == ["D1", "D3"]
    assert (trended.loc[["D1", "D2", "D3"], "previous_as_of"] == pd.Timestamp("2026-03-02", tz="UTC")).all()
