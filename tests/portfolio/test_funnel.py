"""portfolio.funnel: conversion and days in stage on a hand-built stage history (skips, back-steps, losses)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract.schema import Export
from portfolio.funnel import FunnelError, quarter_start, stage_reach_times, summarise_funnel
from tests.factories import frame

AS_OF = pd.Timestamp("2026-06-30", tz="UTC")  # two quarters: 2026-01-01 .. as_of


def funnel_export() -> Export:
    """Seven deals; the expected counts and days are worked out beside each test."""
    deals = pd.DataFrame({
        "deal_id": ["F1", "F2", "F3", "F4", "F5", "F6", "F7"],
        "lead_source": ["web", "web", "partner", "partner", "web", None, "partner"],
        "segment": ["smb", "smb", "mid", "mid", "smb", "smb", "mid"],
    })
    history = frame(
        [
            # F1 skips negotiate and contract: won straight from propose.
            ("F1", "identify", "2026-01-10"), ("F1", "qualify", "2026-01-20"), ("F1", "propose", "2026-02-01"),
            ("F1", "won", "2026-03-01"),
            # F2 steps back from propose to qualify, returns, and is lost at propose.
            ("F2", "identify", "2026-02-01"), ("F2", "qualify", "2026-02-11"), ("F2", "propose", "2026-02-21"),
            ("F2", "qualify", "2026-03-03"), ("F2", "propose", "2026-03-13"), ("F2", "lost", "2026-04-12"),
            # F3 lost at identify.
            ("F3", "identify", "2026-03-01"), ("F3", "lost", "2026-03-31"),
            # F4 still in qualify at as_of.
            ("F4", "identify", "2026-04-01"), ("F4", "qualify", "2026-04-06"),
            # F5 entered qualify before the window, lost at contract inside it.
            ("F5", "identify", "2025-10-01"), ("F5", "qualify", "2025-11-01"), ("F5", "propose", "2026-01-15"),
            ("F5", "negotiate", "2026-02-15"), ("F5", "contract", "2026-03-01"), ("F5", "lost", "2026-03-11"),
            # F6 open at identify, no lead source.
            ("F6", "identify", "2026-05-01"),
            # F7 moves on after as_of: open at identify as of as_of.
            ("F7", "identify", "2026-06-01"), ("F7", "qualify", "2026-07-15"),
        ],
        ["deal_id", "stage", "entered_at"], times=("entered_at",),
    )
    return Export(deals=deals, stage_history=history)


def test_conversion_and_days_in_stage_over_all_deals():
    out = summarise_funnel(funnel_export(), AS_OF).set_index("stage")
    assert out.index.tolist() == ["identify", "qualify", "propose", "negotiate", "contract"]
    assert out["next_stage"].tolist() == ["qualify", "propose", "negotiate", "contract", "won"]
    # identify: F1, F2, F4 moved on in the window (F5 before it), F3 lost, F6 and F7 still there.
    assert out.loc["identify", ["advanced", "lost", "open"]].tolist() == [3, 1, 2]
    assert out.loc["identify", "conversion"] == pytest.approx(0.75)
    assert out.loc["identify", "median_days_in_stage"] == pytest.approx(10.0)  # F1 10, F2 10, F4 5, F3 30
    # qualify: F1, F2 (reached propose first on Feb 21) and F5 moved on; F4 open. F2's two visits add up: 10 + 10.
    assert out.loc["qualify", ["advanced", "lost", "open"]].tolist() == [3, 0, 1]
    assert out.loc["qualify", "median_days_in_stage"] == pytest.approx(20.0)  # F1 12, F2 20, F5 75
    # propose: F1 (to won, skipping negotiate) and F5 moved on; F2 lost here after 10 + 30 days.
    assert out.loc["propose", ["advanced", "lost"]].tolist() == [2, 1]
    assert out.loc["propose", "conversion"] == pytest.approx(2 / 3)
    assert out.loc["propose", "median_days_in_stage"] == pytest.approx(31.0)  # F1 28, F5 31, F2 40
    # negotiate and contract: F1 passed both without a day in them (no stay measured).
    assert out.loc["negotiate", ["advanced", "lost", "stays_measured"]].tolist() == [2, 0, 1]
    assert out.loc["negotiate", "median_days_in_stage"] == pytest.approx(14.0)
    assert out.loc["contract", ["advanced", "lost", "stays_measured"]].tolist() == [1, 1, 1]
    assert out.loc["contract", "conversion"] == pytest.approx(0.5)
    assert out.loc["contract", "median_days_in_stage"] == pytest.approx(10.0)
    assert set(out["lead_source"]) == set(out["segment"]) == {"(all)"}


def test_by_lead_source():
    out = summarise_funnel(funnel_export(), AS_OF, by=["lead_source"])
    identify = out[out["stage"] == "identify"].set_index("lead_source")
    assert identify.index.tolist() == ["(none)", "partner", "web"]
    assert identify.loc["partner", ["advanced", "lost", "open"]].tolist() == [1, 1, 1]
    assert identify.loc["partner", "median_days_in_stage"] == pytest.approx(17.5)  # F4 5, F3 30
    assert identify.loc["web", ["advanced", "lost", "open"]].tolist() == [2, 0, 0]
    assert identify.loc["(none)", "open"] == 1 and np.isnan(identify.loc["(none)", "conversion"])


def test_by_lead_source_and_segment():
    out = summarise_funnel(funnel_export(), AS_OF, by=["lead_source", "segment"])
    groups = set(zip(out["lead_source"], out["segment"]))
    assert groups == {("web", "smb"), ("partner", "mid"), ("(none)", "smb")}


def test_one_quarter_window():
    out = summarise_funnel(funnel_export(), AS_OF, quarters=1).set_index("stage")
    # From April 1: only F4 moved on from identify; F3's loss (March 31) is before the window.
    assert out.loc["identify", ["advanced", "lost", "open"]].tolist() == [1, 0, 2]
    assert out.loc["propose", ["advanced", "lost"]].tolist() == [0, 1]  # F2 lost on April 12


def test_reach_times_pass_through_skipped_stages():
    reach = stage_reach_times(funnel_export().stage_history, AS_OF)
    assert reach.loc["F1", "negotiate"] == reach.loc["F1", "contract"] == pd.Timestamp("2026-03-01", tz="UTC")
    assert pd.isna(reach.loc["F7", "qualify"])  # after as_of


def test_quarter_start():
    assert quarter_start(AS_OF, 1) == pd.Timestamp("2026-01-01", tz="UTC")
    assert quarter_start(pd.Timestamp("2026-01-01", tz="UTC"), 0) == pd.Timestamp("2026-01-01", tz="UTC")


def test_funnel_errors_name_the_problem():
    export = funnel_export()
    with pytest.raises(FunnelError, match="no stage_history table"):
        summarise_funnel(Export(deals=export.deals), AS_OF)
    with pytest.raises(FunnelError, match=r"cannot group by \['region'\]"):
        summarise_funnel(export, AS_OF, by=["region"])
    with pytest.raises(FunnelError, match="quarters must be at least 1"):
        summarise_funnel(export, AS_OF, quarters=0)
    # an as_of of year 0001 and a window reaching before year 1 were tracebacks (strftime, OutOfBoundsDatetime)
    with pytest.raises(FunnelError, match="is before the first stage entry of the export"):
        summarise_funnel(export, pd.Timestamp("0001-01-01", tz="UTC").as_unit("us"))
    with pytest.raises(FunnelError, match="100000000 quarters back from .* is before year 1"):
        summarise_funnel(export, AS_OF, quarters=100_000_000)


def test_funnel_command_on_the_hand_checked_export(tmp_path):
    """tests.factories' 4-deal export: D1 steps back to qualify, D2 is lost in qualify, D4 skips to negotiate."""
    from typer.testing import CliRunner

    from dealrisk.cli import app
    from features.contract.io import write_tables
    from tests.factories import make_export

    folder = write_tables(make_export().tables(), tmp_path / "export", fmt="parquet")
    out = tmp_path / "funnel.csv"
    result = CliRunner().invoke(app, ["funnel", "--data", str(folder), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert "all deals" in result.output and "by lead source" in result.output and "by segment" in result.output
    rows = pd.read_csv(out)
    overall = rows[(rows["lead_source"] == "(all)") & (rows["segment"] == "(all)")].set_index("stage")
    # qualify: D1, D3 and D4 (skipping it) moved on, D2 was lost there; days D1 10 + 7, D3 10, D2 31.
    assert overall.loc["qualify", ["advanced", "lost"]].tolist() == [3, 1]
    assert overall.loc["qualify", "median_days_in_stage"] == pytest.approx(17.0)
    assert overall.loc["negotiate", ["advanced", "lost", "open"]].tolist() == [2, 0, 1]
    result = CliRunner().invoke(app, ["funnel", "--data", str(folder), "--by", "region"])
    assert result.exit_code == 1 and "cannot group by ['region']" in result.output
