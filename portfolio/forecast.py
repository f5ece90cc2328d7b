"""The forecast: expected bookings per month or quarter beside the stage table, and how past forecasts did.

Pure functions on frames of stored scores (``portfolio.store``'s ``latest()`` / ``history()``
columns: ``deal_id``, ``as_of``, ``stage``, ``amount``, ``expected_close_date``,
``win_probability``, ``slip_probability``) and, for accuracy, the ``deals`` table of a later
export (``outcome``, ``closed_at``, ``amount``).

Per period, over the open deals whose expected close date (as known at the score's ``as_of``)
falls in it:

- ``expected`` = sum of win probability x amount: what these deals should book, *eventually*
  (the win model says whether a deal is won, not when);
- ``expected_on_time`` = sum of (1 - slip probability) x amount: what they should book *by their
  expected close dates* (slip is the chance of not being won by then), so the part expected in
  the period itself when the dates hold;
- ``stage_table`` = sum of the stage table's probability x amount
  (``features.contract.schema.DEFAULT_STAGE_PROBABILITIES``, Salesforce's defaults): what a CRM's
  own forecast would say.

A deal whose expected close date has already passed at ``as_of`` is in the ``overdue`` row, one
without a date in ``no date``: neither belongs to a period, and a manager should see how much of
the pipeline they hold. A missing amount counts as 0 (the deal still counts in ``deals``).

Accuracy (``forecast_accuracy``): every stored forecast (each ``as_of`` a ``dealrisk score`` run
scored the whole pipeline at) against what was won, for the periods that have ended by the later
export's end and had not ended at the forecast's ``as_of``. A forecast made inside a period adds
what was already won in it by ``as_of`` (``booked``), so that it predicts the period's total:
``forecast = booked + expected`` (likewise for ``on time`` and the stage table), against ``won``
= the amount of the deals won with ``closed_at`` in the period.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from rich.table import Table

from features.contract.schema import DEFAULT_STAGE_PROBABILITIES
from portfolio.rank import money

PERIODS: dict[str, str] = {"month": "M", "quarter": "Q"}
OVERDUE = "overdue"
UNDATED = "no date"
FORECAST_INPUT: tuple[str, ...] = (
    "deal_id", "stage", "amount", "expected_close_date", "win_probability", "slip_probability",
)
FORECAST_COLUMNS: tuple[str, ...] = (
    "period", "period_start", "deals", "pipeline", "expected", "expected_on_time", "stage_table",
)
ACCURACY_COLUMNS: tuple[str, ...] = (
    "as_of", "period", "periods_ahead", "deals", "booked", "forecast", "forecast_on_time", "stage_forecast", "won",
    "won_deals", "error_pct", "on_time_error_pct", "stage_error_pct",
)


class ForecastError(ValueError):
    """The scores or the period cannot give a forecast; the message names the column or value."""


def check_period(period: str) -> str:
    """``period`` when it is ``month`` or ``quarter``; ``ForecastError`` otherwise."""
    if period not in PERIODS:
        raise ForecastError(f"period: {period!r} is not one of {sorted(PERIODS)}")
    return period


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ForecastError(f"{what} lack columns {missing} (have {list(frame.columns)})")


def period_of(times: pd.Series, period: str) -> pd.Series:
    """The label of the month (``2026-07``) or quarter (``2026Q3``) each UTC time falls in; NaN for NaT.

    >>> period_of(pd.Series(pd.to_datetime(["2026-07-31T23:00:00Z", None], utc=True)), "quarter").tolist()
    ['2026Q3', nan]
    """
    naive = pd.Series(times).dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.dt.to_period(PERIODS[check_period(period)]).astype(str).where(naive.notna())


def period_bounds(label: str, period: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First moment of a period and first moment of the next one (UTC).

    >>> [str(t.date()) for t in period_bounds("2026Q3", "quarter")]
    ['2026-07-01', '2026-10-01']
    """
    start = pd.Period(label, freq=PERIODS[check_period(period)])
    return start.start_time.tz_localize("UTC"), (start + 1).start_time.tz_localize("UTC")


def stage_probability(stages: pd.Series, stage_probabilities: Mapping[str, float]) -> np.ndarray:
    """The stage table's probability of each stage (NaN for a stage it does not know)."""
    return pd.Series(stages).map(dict(stage_probabilities)).to_numpy(dtype=float)


def forecast_bookings(
    scores: pd.DataFrame,
    as_of: pd.Timestamp,
    period: str = "month",
    stage_probabilities: Mapping[str, float] = DEFAULT_STAGE_PROBABILITIES,
) -> pd.DataFrame:
    """Expected bookings of the open deals per period (``FORECAST_COLUMNS``): ``overdue`` first,
    then the periods in order, then ``no date``; only rows that hold deals.

    ``scores``: one row per open deal (``FORECAST_INPUT``), as scored at ``as_of``. Rules: the
    module docstring.

    >>> scores = pd.DataFrame({"deal_id": ["D1", "D2", "D3"], "stage": ["propose", "negotiate", "qualify"],
    ...     "amount": [1000.0, 2000.0, 500.0],
    ...     "expected_close_date": pd.to_datetime(["2026-07-10", "2026-07-20", "2026-05-01"], utc=True),
    ...     "win_probability": [0.5, 0.25, 0.1], "slip_probability": [0.6, 0.9, 0.95]})
    >>> out = forecast_bookings(scores, pd.Timestamp("2026-06-15", tz="UTC"))
    >>> out[["period", "deals", "expected", "stage_table"]].values.tolist()
    [['overdue', 1, 50.0, 100.0], ['2026-07', 2, 1000.0, 2200.0]]
    """
    _require(scores, FORECAST_INPUT, "scores")
    close = pd.Series(pd.to_datetime(scores["expected_close_date"], utc=True), index=scores.index)
    label = period_of(close, period)
    label = label.where(~(close < as_of), OVERDUE).fillna(UNDATED)
    amount = np.nan_to_num(pd.to_numeric(scores["amount"], errors="coerce").to_numpy(dtype=float), nan=0.0)
    stage_p = np.nan_to_num(stage_probability(scores["stage"], stage_probabilities), nan=0.0)
    frame = pd.DataFrame({
        "period": label.to_numpy(dtype=object),
        "deals": 1,
        "pipeline": amount,
        "expected": scores["win_probability"].to_numpy(dtype=float) * amount,
        "expected_on_time": (1.0 - scores["slip_probability"].to_numpy(dtype=float)) * amount,
        "stage_table": stage_p * amount,
    })
    out = frame.groupby("period", sort=False).sum().reset_index()
    dated = ~out["period"].isin((OVERDUE, UNDATED))
    starts = [period_bounds(label, period)[0] if is_dated else pd.NaT
              for label, is_dated in zip(out["period"], dated)]
    out = out.assign(period_start=pd.Series(starts, dtype="datetime64[us, UTC]"))
    rank = np.where(out["period"] == OVERDUE, 0, np.where(dated, 1, 2))
    out = out.assign(_rank=rank).sort_values(["_rank", "period_start"], kind="stable")
    return out[list(FORECAST_COLUMNS)].reset_index(drop=True).astype({"deals": "int64"})


def with_total(forecast: pd.DataFrame) -> pd.DataFrame:
    """``forecast`` with a last ``total`` row (the sums; no ``period_start``)."""
    sums = forecast[["deals", "pipeline", "expected", "expected_on_time", "stage_table"]].sum()
    total = pd.DataFrame({"period": ["total"], "period_start": pd.Series([pd.NaT], dtype=forecast["period_start"].dtype),
                          **{name: [value] for name, value in sums.items()}})
    return pd.concat([forecast, total.astype(forecast.dtypes.to_dict())], ignore_index=True)


def stored_forecasts(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    period: str = "month",
    stage_probabilities: Mapping[str, float] = DEFAULT_STAGE_PROBABILITIES,
) -> pd.DataFrame:
    """What every stored forecast said: ``forecast_bookings`` at each ``as_of`` of a batch run.

    Only the as-ofs of ``dealrisk score`` runs (``runs.source == "batch"``): they scored the whole
    pipeline, while the service's ``/score`` calls score the deals a CRM asked about. A deal scored
    at one as-of by several model pairs counts once, with its latest write. Returns ``as_of`` and
    ``FORECAST_COLUMNS``, one row per as-of and period (``overdue`` and ``no date`` included).
    """
    _require(history, (*FORECAST_INPUT, "as_of", "run_id"), "stored scores")
    _require(runs, ("as_of", "source"), "scoring runs")
    batch_as_of = pd.to_datetime(runs.loc[runs["source"] == "batch", "as_of"], utc=True).dropna().unique()
    picked = history[pd.to_datetime(history["as_of"], utc=True).isin(batch_as_of)]
    picked = picked.sort_values("run_id", kind="stable").drop_duplicates(["deal_id", "as_of"], keep="last")
    frames = [
        forecast_bookings(group, pd.Timestamp(as_of), period, stage_probabilities).assign(as_of=as_of)
        for as_of, group in picked.groupby("as_of", sort=True)
    ]
    if not frames:
        return pd.DataFrame({"as_of": pd.Series(dtype="datetime64[us, UTC]"),
                             **{c: pd.Series(dtype=object if c == "period" else float) for c in FORECAST_COLUMNS}})
    out = pd.concat(frames, ignore_index=True)
    return out[["as_of", *FORECAST_COLUMNS]]


def won_by_period(deals: pd.DataFrame, period: str = "month") -> pd.DataFrame:
    """Amount and number of deals won per period (``closed_at``'s), from an export's ``deals``.

    >>> deals = pd.DataFrame({"outcome": ["won", "lost", "won"], "amount": [100.0, 50.0, 30.0],
    ...     "closed_at": pd.to_datetime(["2026-07-02", "2026-07-03", "2026-08-01"], utc=True)})
    >>> won_by_period(deals).values.tolist()
    [['2026-07', 100.0, 1], ['2026-08', 30.0, 1]]
    """
    _require(deals, ("outcome", "amount", "closed_at"), "deals")
    won = deals[(deals["outcome"] == "won") & deals["closed_at"].notna()]
    frame = pd.DataFrame({"period": period_of(won["closed_at"], period).to_numpy(dtype=object),
                          "won": np.nan_to_num(won["amount"].to_numpy(dtype=float), nan=0.0), "won_deals": 1})
    return frame.groupby("period", sort=True).sum().reset_index().astype({"won_deals": "int64"})


def booked_before(deals: pd.DataFrame, as_of: pd.Timestamp, label: str, period: str) -> float:
    """Amount won in period ``label`` at or before ``as_of`` (what a forecast inside it already knows)."""
    start, _ = period_bounds(label, period)
    won = (deals["outcome"] == "won") & (deals["closed_at"] >= start) & (deals["closed_at"] <= as_of)
    return float(np.nan_to_num(deals.loc[won, "amount"].to_numpy(dtype=float), nan=0.0).sum())


def forecast_accuracy(forecasts: pd.DataFrame, deals: pd.DataFrame, data_end: pd.Timestamp,
                      period: str = "month") -> pd.DataFrame:
    """Each stored forecast of a period that has ended against what was won (``ACCURACY_COLUMNS``).

    ``forecasts``: ``stored_forecasts``' rows; ``deals``: the ``deals`` table of an export that
    runs to ``data_end`` (its last event), later than the forecasts. Kept: periods that ended at or
    before ``data_end`` and had not ended at the forecast's ``as_of``. ``periods_ahead``: 0 for
    the period holding ``as_of``, 1 for the next, ... ``*_error_pct``: (forecast - won) / won in
    percent (NaN when nothing was won). Rows by period, then as-of.
    """
    _require(deals, ("outcome", "amount", "closed_at"), "deals")
    dated = forecasts[~forecasts["period"].isin((OVERDUE, UNDATED))]
    if dated.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ACCURACY_COLUMNS})
    bounds = {label: period_bounds(label, period) for label in dated["period"].unique()}
    ends = dated["period"].map(lambda label: bounds[label][1])
    as_of = pd.to_datetime(dated["as_of"], utc=True)
    kept = dated[((ends <= data_end) & (ends > as_of)).to_numpy()]
    if kept.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ACCURACY_COLUMNS})
    freq = PERIODS[period]
    booked = np.array([booked_before(deals, pd.Timestamp(at), label, period)
                       for at, label in zip(kept["as_of"], kept["period"])], dtype=float)
    at_period = period_of(pd.Series(pd.to_datetime(kept["as_of"], utc=True)), period)
    ahead = [pd.Period(label, freq=freq).ordinal - pd.Period(now, freq=freq).ordinal
             for label, now in zip(kept["period"], at_period)]
    won = won_by_period(deals, period).set_index("period")
    actual = won["won"].reindex(kept["period"]).fillna(0.0).to_numpy()
    actual_deals = won["won_deals"].reindex(kept["period"]).fillna(0).astype("int64").to_numpy()
    out = pd.DataFrame({
        "as_of": kept["as_of"].to_numpy(),
        "period": kept["period"].to_numpy(dtype=object),
        "periods_ahead": np.asarray(ahead, dtype="int64"),
        "deals": kept["deals"].to_numpy(dtype="int64"),
        "booked": booked,
        "forecast": booked + kept["expected"].to_numpy(dtype=float),
        "forecast_on_time": booked + kept["expected_on_time"].to_numpy(dtype=float),
        "stage_forecast": booked + kept["stage_table"].to_numpy(dtype=float),
        "won": actual,
        "won_deals": actual_deals,
    })
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, column in (("error_pct", "forecast"), ("on_time_error_pct", "forecast_on_time"),
                             ("stage_error_pct", "stage_forecast")):
            out[name] = np.where(actual > 0, 100.0 * (out[column] - actual) / np.where(actual > 0, actual, 1.0), np.nan)
    out = out.sort_values(["period", "as_of"], kind="stable").reset_index(drop=True)
    return out[list(ACCURACY_COLUMNS)]


def summarise_accuracy(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute percentage error of the three forecasts by how many periods ahead they looked.

    >>> acc = pd.DataFrame({"periods_ahead": [0, 0, 1], "error_pct": [10.0, -30.0, 5.0],
    ...     "on_time_error_pct": [1.0, 1.0, 1.0], "stage_error_pct": [50.0, 50.0, np.nan]})
    >>> summarise_accuracy(acc)[["forecasts", "model_mape", "stage_mape"]].values.tolist()
    [[2.0, 20.0, 50.0], [1.0, 5.0, nan]]
    """
    grouped = accuracy.assign(
        model=accuracy["error_pct"].abs(), on_time=accuracy["on_time_error_pct"].abs(),
        stage=accuracy["stage_error_pct"].abs(),
    ).groupby("periods_ahead", sort=True)
    return grouped.agg(forecasts=("model", "size"), model_mape=("model", "mean"), on_time_mape=("on_time", "mean"),
                       stage_mape=("stage", "mean")).reset_index()


def _percent(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:+.0f}%"


def forecast_table(forecast: pd.DataFrame, title: str = "") -> Table:
    """``with_total(forecast_bookings(...))`` as a rich table."""
    table = Table(title=title or None, title_justify="left")
    for name, justify in (("period", "left"), ("deals", "right"), ("pipeline", "right"),
                          ("expected (win x amount)", "right"), ("on time ((1 - slip) x amount)", "right"),
                          ("stage table", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for row in forecast.itertuples(index=False):
        if row.period == "total":
            table.add_section()
        table.add_row(str(row.period), f"{row.deals:,}", money(row.pipeline), money(row.expected),
                      money(row.expected_on_time), money(row.stage_table),
                      style="bold" if row.period == "total" else ("dim" if row.period in (OVERDUE, UNDATED) else None))
    return table


def accuracy_table(accuracy: pd.DataFrame, title: str = "") -> Table:
    """``forecast_accuracy`` rows as a rich table, one section per period."""
    table = Table(title=title or None, title_justify="left")
    for name, justify in (("period", "left"), ("forecast as of", "left"), ("ahead", "right"), ("booked", "right"),
                          ("model", "right"), ("err", "right"), ("on time", "right"), ("err", "right"),
                          ("stage table", "right"), ("err", "right"), ("won", "right"), ("won deals", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    previous = None
    for row in accuracy.itertuples(index=False):
        if previous is not None and row.period != previous:
            table.add_section()
        previous = row.period
        table.add_row(str(row.period), f"{pd.Timestamp(row.as_of):%Y-%m-%d %H:%M}", str(row.periods_ahead),
                      money(row.booked), money(row.forecast), _percent(row.error_pct), money(row.forecast_on_time),
                      _percent(row.on_time_error_pct), money(row.stage_forecast), _percent(row.stage_error_pct),
                      money(row.won), f"{row.won_deals:,}")
    return table


def accuracy_summary_table(summary: pd.DataFrame, period: str) -> Table:
    """``summarise_accuracy`` as a rich table: mean absolute error by periods ahead."""
    table = Table(title=f"mean absolute error of the stored forecasts, by {period}s ahead", title_justify="left")
    for name in (f"{period}s ahead", "forecasts", "model", "on time", "stage table"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in summary.itertuples(index=False):
        table.add_row(str(row.periods_ahead), f"{row.forecasts:,}",
                      *["-" if not np.isfinite(v) else f"{v:.0f}%" for v in (row.model_mape, row.on_time_mape, row.stage_mape)])
    return table
