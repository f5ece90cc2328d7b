"""portfolio.forecast: expected bookings per period and stored forecasts against what was won, sums by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from portfolio.forecast import (
    ForecastError,
    forecast_accuracy,
    forecast_bookings,
    stored_forecasts,
    summarise_accuracy,
    with_total,
)
from tests.factories import frame

AS_OF = pd.Timestamp("2026-06-15", tz="UTC")


def open_scores() -> pd.DataFrame:
    """Six open deals scored at AS_OF; the sums below are worked out by hand."""
    return frame(
        [
            # deal, stage, amount, expected close, win, slip
            ("D1", "propose", 10_000.0, "2026-07-15", 0.40, 0.70),  # 4,000 | on time 3,000 | stage 0.6 -> 6,000
            ("D2", "negotiate", 20_000.0, "2026-07-31", 0.25, 0.90),  # 5,000 | 2,000 | 0.8 -> 16,000
            ("D3", "identify", 5_000.0, "2026-08-10", 0.10, 0.95),  # 500 | 250 | 0.1 -> 500
            ("D4", "contract", 8_000.0, "2026-06-01", 0.80, 0.50),  # date passed: overdue; 6,400 | 4,000 | 7,200
            ("D5", "qualify", np.nan, "2026-09-01", 0.30, 0.90),  # amount unknown: counts, adds 0
            ("D6", "qualify", 1_000.0, None, 0.20, 0.90),  # no date; 200 | 100 | 0.2 -> 200
        ],
        ["deal_id", "stage", "amount", "expected_close_date", "win_probability", "slip_probability"],
        times=("expected_close_date",),
    )


def test_monthly_forecast_sums_by_hand():
    out = forecast_bookings(open_scores(), AS_OF, "month")
    assert out["period"].tolist() == ["overdue", "2026-07", "2026-08", "2026-09", "no date"]
    assert out["deals"].tolist() == [1, 2, 1, 1, 1]
    assert out["pipeline"].tolist() == [8_000.0, 30_000.0, 5_000.0, 0.0, 1_000.0]
    assert out["expected"].tolist() == pytest.approx([6_400.0, 9_000.0, 500.0, 0.0, 200.0])
    assert out["expected_on_time"].tolist() == pytest.approx([4_000.0, 5_000.0, 250.0, 0.0, 100.0])
    assert out["stage_table"].tolist() == pytest.approx([7_200.0, 22_000.0, 500.0, 0.0, 200.0])
    assert [str(t.date()) if pd.notna(t) else None for t in out["period_start"]] == [
        None, "2026-07-01", "2026-08-01", "2026-09-01", None
    ]


def test_quarterly_forecast_and_total():
    out = with_total(forecast_bookings(open_scores(), AS_OF, "quarter"))
    assert out["period"].tolist() == ["overdue", "2026Q3", "no date", "total"]
    assert out["deals"].tolist() == [1, 4, 1, 6]
    assert out["expected"].tolist() == pytest.approx([6_400.0, 9_500.0, 200.0, 16_100.0])
    assert out["stage_table"].tolist() == pytest.approx([7_200.0, 22_500.0, 200.0, 29_900.0])


def test_a_deal_closing_on_the_day_scored_is_not_overdue():
    scores = open_scores().assign(expected_close_date=pd.Series([AS_OF] * 6, dtype="datetime64[us, UTC]"))
    assert forecast_bookings(scores, AS_OF)["period"].tolist() == ["2026-06"]


def test_forecast_rejects_missing_columns_and_unknown_periods():
    with pytest.raises(ForecastError, match=r"scores lack columns \['slip_probability'\]"):
        forecast_bookings(open_scores().drop(columns="slip_probability"), AS_OF)
    with pytest.raises(ForecastError, match="period: 'week' is not one of"):
        forecast_bookings(open_scores(), AS_OF, "week")


def stored_history() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores of two batch runs (June 15 and July 10, the second re-scored by a newer model) and one API call."""
    runs = frame(
        [(1, "2026-06-15", "batch"), (2, "2026-07-10", "batch"), (3, "2026-07-12", "api"), (4, "2026-07-10", "batch")],
        ["run_id", "as_of", "source"], times=("as_of",),
    )
    history = frame(
        [
            # run, as of, deal, stage, amount, expected close, win, slip
            (1, "2026-06-15", "D1", "propose", 10_000.0, "2026-07-20", 0.50, 0.5),
            (1, "2026-06-15", "D2", "negotiate", 4_000.0, "2026-06-25", 0.25, 0.5),
            (1, "2026-06-15", "D3", "qualify", 6_000.0, "2026-07-05", 0.30, 0.5),
            (2, "2026-07-10", "D1", "propose", 10_000.0, "2026-07-20", 0.60, 0.5),  # replaced by run 4
            (2, "2026-07-10", "D3", "qualify", 6_000.0, "2026-07-25", 0.20, 0.5),
            (3, "2026-07-12", "D9", "contract", 90_000.0, "2026-07-30", 0.90, 0.5),  # a CRM call: not a forecast
            (4, "2026-07-10", "D1", "propose", 10_000.0, "2026-07-20", 0.70, 0.5),
        ],
        ["run_id", "as_of", "deal_id", "stage", "amount", "expected_close_date", "win_probability", "slip_probability"],
        times=("as_of", "expected_close_date"),
    )
    return history, runs


def later_deals() -> pd.DataFrame:
    return frame(
        [
            ("D1", "won", 10_000.0, "2026-07-28"),
            ("D2", "won", 4_000.0, "2026-06-28"),
            ("D3", "lost", 6_000.0, "2026-08-01"),
            ("D7", "won", 3_000.0, "2026-07-02"),  # never in a forecast, won in July all the same
            ("D8", "won", 1_000.0, "2026-08-15"),
            ("D9", "open", 90_000.0, None),
        ],
        ["deal_id", "outcome", "amount", "closed_at"], times=("closed_at",),
    )


def test_stored_forecasts_use_batch_runs_and_the_latest_model_per_deal():
    history, runs = stored_history()
    forecasts = stored_forecasts(history, runs, "month")
    assert sorted({str(t.date()) for t in forecasts["as_of"]}) == ["2026-06-15", "2026-07-10"]
    july_10 = forecasts[forecasts["as_of"] == pd.Timestamp("2026-07-10", tz="UTC")].set_index("period")
    assert july_10.loc["2026-07", "deals"] == 2
    assert july_10.loc["2026-07", "expected"] == pytest.approx(0.70 * 10_000 + 0.20 * 6_000)


def test_forecast_accuracy_against_what_was_won_by_hand():
    history, runs = stored_history()
    forecasts = stored_forecasts(history, runs, "month")
    accuracy = forecast_accuracy(forecasts, later_deals(), pd.Timestamp("2026-09-01", tz="UTC"), "month")
    rows = {(str(r.as_of.date()), r.period): r for r in accuracy.itertuples()}
    assert list(rows) == [("2026-06-15", "2026-06"), ("2026-06-15", "2026-07"), ("2026-07-10", "2026-07")]
    june = rows[("2026-06-15", "2026-06")]  # D2 alone expected in June; D2 won 4,000
    assert (june.periods_ahead, june.booked, june.forecast, june.stage_forecast, june.won) == (0, 0.0, 1_000.0, 3_200.0, 4_000.0)
    assert (june.error_pct, june.stage_error_pct) == pytest.approx((-75.0, -20.0))
    early = rows[("2026-06-15", "2026-07")]  # D1 and D3 expected; July won D1 10,000 + D7 3,000
    assert early.periods_ahead == 1 and early.won == 13_000.0 and early.won_deals == 2
    assert early.forecast == pytest.approx(0.5 * 10_000 + 0.3 * 6_000)
    assert early.stage_forecast == pytest.approx(0.6 * 10_000 + 0.2 * 6_000)
    assert early.forecast_on_time == pytest.approx(0.5 * 16_000)
    inside = rows[("2026-07-10", "2026-07")]  # made inside July: D7's 3,000 already won by July 10
    assert inside.booked == 3_000.0
    assert inside.forecast == pytest.approx(3_000 + 0.7 * 10_000 + 0.2 * 6_000)
    assert inside.error_pct == pytest.approx(100 * (11_200 - 13_000) / 13_000)
    summary = summarise_accuracy(accuracy).set_index("periods_ahead")
    assert summary.loc[0, "model_mape"] == pytest.approx((75.0 + 100 * 1_800 / 13_000) / 2)


def test_periods_not_over_by_the_later_export_are_left_out():
    history, runs = stored_history()
    forecasts = stored_forecasts(history, runs, "month")
    accuracy = forecast_accuracy(forecasts, later_deals(), pd.Timestamp("2026-07-20", tz="UTC"), "month")
    assert accuracy["period"].tolist() == ["2026-06"]


def test_accuracy_needs_the_deals_outcomes():
    history, runs = stored_history()
    with pytest.raises(ForecastError, match=r"deals lack columns \['outcome'\]"):
        forecast_accuracy(stored_forecasts(history, runs), later_deals().drop(columns="outcome"),
                          pd.Timestamp("2026-09-01", tz="UTC"))


def test_forecast_command_with_outcomes_from_a_later_export(sqlite_url, tmp_path):
    """Stored forecasts of the hand-checked 4-deal export (tests.factories) against what it shows won."""
    from typer.testing import CliRunner

    from dealrisk.cli import app
    from features.contract.io import write_tables
    from portfolio.store import ScoreStore
    from tests.factories import make_export
    from tests.portfolio.conftest import deal, rows_of

    folder = write_tables(make_export().tables(), tmp_path / "export", fmt="parquet")
    store = ScoreStore.open(sqlite_url)
    # As of Jan 15: D1 (1,500) and D4 (800) expected in February, D3 (2,000) in April.
    store.write(rows_of([deal("D1", 0.5, amount=1500.0, close_in_days=40), deal("D4", 0.4, amount=800.0, close_in_days=20),
                         deal("D3", 0.3, amount=2000.0, close_in_days=100)], "2026-01-15"), "batch", "test")
    store.close()
    out, accuracy = tmp_path / "forecast.csv", tmp_path / "accuracy.csv"
    result = CliRunner().invoke(app, ["forecast", "--store", sqlite_url, "--outcomes", str(folder), "--csv", str(out),
                                      "--accuracy-csv", str(accuracy)])
    assert result.exit_code == 0, result.output
    forecast = pd.read_csv(out).set_index("period")
    assert forecast.loc["2026-02", "expected"] == pytest.approx(0.5 * 1500 + 0.4 * 800)
    assert forecast.loc["total", "deals"] == 3
    # February has ended by the export's last event (March 10); D4 was won on Feb 15, D1 only in March.
    rows = pd.read_csv(accuracy)
    assert rows["period"].tolist() == ["2026-02"]
    assert rows.loc[0, "forecast"] == pytest.approx(1070.0) and rows.loc[0, "won"] == 800.0
    assert rows.loc[0, "error_pct"] == pytest.approx(100 * 270 / 800)
    assert "mean absolute error of the stored forecasts" in result.output


def test_forecast_command_rejects_a_bad_period_and_a_lone_accuracy_file(sqlite_url, tmp_path):
    from typer.testing import CliRunner

    from dealrisk.cli import app

    result = CliRunner().invoke(app, ["forecast", "--store", sqlite_url, "--period", "week"])
    assert result.exit_code == 1 and "--period: 'week' is not one of" in result.output
    result = CliRunner().invoke(app, ["forecast", "--store", sqlite_url, "--accuracy-csv", str(tmp_path / "a.csv")])
    assert result.exit_code == 1 and "--accuracy-csv needs --outcomes" in result.output
