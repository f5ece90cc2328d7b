"""The funnel: conversion from each stage to the next and median days in stage, by channel and segment.

Pure pandas over the export's ``stage_history`` (and ``deals`` for the groups); no model, no store.
A sales manager sees where deals stop and where they wait, over a recent window (the last two
calendar quarters by default: this quarter so far and the whole previous one), per lead source
(channel) and segment.

How a stage history is read (``stage_reach_times``, ``stage_stays``):

- **reached**: a deal reached a stage when it first entered that stage *or any later one*. A
  skipped stage is passed through: identify -> propose reached qualify at the propose entry,
  spending no days in it. ``won`` is the stage after ``contract``; ``lost`` is no stage of the
  funnel.
- **back-steps** (propose -> qualify -> propose): a stage is reached once, at its first entry; a
  re-entry reaches nothing new. Days in a stage add up over all its visits.
- **advanced** from stage k: reached the next stage (k + 1, or any later one), at that moment.
  **lost** at k: reached k, never k + 1, and its last entry is ``lost``, at that entry.
  **open** at k: reached k, not k + 1, not lost (a back-step leaves a deal open at k).

Measured by what happened *in the window* (a flow, not a cohort of entrants): a stage's
``advanced`` and ``lost`` count the deals that moved on from it, or were lost at it, inside the
window, and **conversion** = advanced / (advanced + lost). A cohort of the deals that *entered* a
stage in the window reads too high when only its decided deals count, because advancing is quicker
than losing, and too low when its open deals count as failures (demo export, identify -> qualify,
last two quarters: 86% and 63% for the entrants, 78% for the flow, 77% for the flow over all
eight quarters); the flow in and out of a stage matches its true conversion when the pipeline is
steady. ``open`` counts the deals open at the stage at ``as_of`` (whenever they reached it): the
ones still to be decided.

**Median days in stage**: over the deals decided at the stage in the window (advanced or lost),
the days each spent in the stage over all its visits; a deal back in the stage at ``as_of`` (its
visit still running) and a deal that skipped the stage (no days) are left out
(``stays_measured`` counts the rest).

Everything is judged with the events at or before ``as_of`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from rich.table import Table

from features.contract.schema import OPEN_STAGES, Export

# The funnel's stages in order: the open stages, then won (the stage after contract).
FUNNEL_STAGES: tuple[str, ...] = OPEN_STAGES + ("won",)
GROUP_COLUMNS: tuple[str, ...] = ("lead_source", "segment")
MISSING_GROUP = "(none)"
ALL_GROUP = "(all)"
FUNNEL_COLUMNS: tuple[str, ...] = (
    "lead_source", "segment", "stage", "next_stage", "advanced", "lost", "conversion", "median_days_in_stage",
    "stays_measured", "open",
)
_COUNTS = ("advanced", "lost", "stays_measured", "open")
_DAY_MICROS = 86_400_000_000


class FunnelError(ValueError):
    """The export cannot give a funnel (no stage history, unknown grouping); the message says why."""


def quarter_start(at: pd.Timestamp, quarters_back: int = 0) -> pd.Timestamp:
    """The first moment of the calendar quarter holding ``at``, ``quarters_back`` quarters earlier.

    >>> str(quarter_start(pd.Timestamp("2026-06-30T22:00:00Z"), 1))
    '2026-01-01 00:00:00+00:00'
    """
    period = at.tz_convert("UTC").tz_localize(None).to_period("Q") - quarters_back
    return period.start_time.tz_localize("UTC")


def stage_reach_times(stage_history: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """When each deal first reached each funnel stage: one row per deal, one column per stage.

    Reaching a stage = first entering it or any later stage (skipped stages are passed through);
    NaT where the deal never got that far by ``as_of``.

    >>> sh = pd.DataFrame({"deal_id": ["D1", "D1", "D1"], "stage": ["identify", "propose", "qualify"],
    ...     "entered_at": pd.to_datetime(["2026-01-01", "2026-01-05", "2026-01-09"], utc=True)})
    >>> reach = stage_reach_times(sh, pd.Timestamp("2026-02-01", tz="UTC"))
    >>> [str(reach.loc["D1", s].date()) if pd.notna(reach.loc["D1", s]) else None for s in FUNNEL_STAGES]
    ['2026-01-01', '2026-01-05', '2026-01-05', None, None, None]
    """
    events = stage_history.loc[stage_history["entered_at"] <= as_of, ["deal_id", "stage", "entered_at"]]
    position = events["stage"].map({stage: i for i, stage in enumerate(FUNNEL_STAGES)})
    events = events.assign(position=position).dropna(subset=["position"])
    deals = pd.Index(pd.unique(stage_history["deal_id"]), name="deal_id")
    micros = events["entered_at"].astype("datetime64[us, UTC]").astype("int64").astype(float)
    first = (
        events.assign(micros=micros)
        .groupby(["deal_id", "position"])["micros"].min()
        .unstack("position")
        .reindex(index=deals, columns=range(len(FUNNEL_STAGES)))
    )
    # Suffix minimum: reaching a later stage reaches every stage before it.
    values = np.nan_to_num(first.to_numpy(dtype=float), nan=np.inf)
    reached = np.minimum.accumulate(values[:, ::-1], axis=1)[:, ::-1]
    out = {}
    for j, stage in enumerate(FUNNEL_STAGES):
        column = reached[:, j]
        finite = np.isfinite(column)
        stamps = np.where(finite, column, 0).astype("int64").astype("datetime64[us]")
        out[stage] = pd.Series(stamps, index=deals).dt.tz_localize("UTC").where(finite)
    return pd.DataFrame(out, index=deals)


def stage_stays(stage_history: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per visit to a stage: ``deal_id, stage, entered_at, left_at, days`` (events by ``as_of``).

    A visit ends at the deal's next stage entry (any stage, won and lost included); ``left_at`` and
    ``days`` are NaT/NaN for the visit still running at ``as_of``.

    >>> sh = pd.DataFrame({"deal_id": ["D1", "D1", "D1"], "stage": ["identify", "qualify", "identify"],
    ...     "entered_at": pd.to_datetime(["2026-01-01", "2026-01-05", "2026-01-09"], utc=True)})
    >>> stage_stays(sh, pd.Timestamp("2026-02-01", tz="UTC"))["days"].tolist()
    [4.0, 4.0, nan]
    """
    events = stage_history.loc[stage_history["entered_at"] <= as_of, ["deal_id", "stage", "entered_at"]]
    events = events.sort_values(["deal_id", "entered_at"], kind="stable").reset_index(drop=True)
    left_at = events.groupby("deal_id", sort=False)["entered_at"].shift(-1)
    days = (left_at - events["entered_at"]).dt.total_seconds() / 86_400.0
    return events.assign(left_at=left_at, days=days)


def deal_groups(deals: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Each deal's group values, indexed by deal id: the ``by`` columns, missing as ``(none)``,
    every other grouping column ``(all)``."""
    unknown = [c for c in by if c not in GROUP_COLUMNS]
    if unknown:
        raise FunnelError(f"funnel: cannot group by {unknown}; choose from {list(GROUP_COLUMNS)}")
    out = {}
    for column in GROUP_COLUMNS:
        if column in by:
            values = deals[column].astype(object)
            out[column] = values.where(values.notna() & (values.astype(str).str.strip() != ""), MISSING_GROUP).astype(str)
        else:
            out[column] = pd.Series(ALL_GROUP, index=deals.index)
    return pd.DataFrame(out).set_axis(pd.Index(deals["deal_id"].astype(str), name="deal_id"))


def summarise_funnel(
    export: Export,
    as_of: pd.Timestamp,
    by: Sequence[str] = (),
    quarters: int = 2,
) -> pd.DataFrame:
    """Conversion and median days in stage per group and stage (``FUNNEL_COLUMNS``).

    The window runs from the start of the calendar quarter ``quarters - 1`` quarters before the
    one holding ``as_of`` up to ``as_of``. One row per group (``lead_source`` and ``segment``: the
    value, ``(none)`` when missing, ``(all)`` when not grouped by it) and stage from ``identify``
    to ``contract`` (``next_stage`` is the one after; ``won`` after ``contract``) where something
    happened; ``conversion`` and ``median_days_in_stage`` are NaN where nothing was decided in
    the window. Rules: the module docstring.
    """
    if export.stage_history is None:
        raise FunnelError("funnel: the export has no stage_history table; the funnel is read from it")
    if quarters < 1:
        raise FunnelError(f"funnel: quarters must be at least 1, got {quarters}")
    history = export.stage_history
    first = history["entered_at"].min()
    if pd.notna(first) and as_of < first:
        raise FunnelError(f"funnel: as_of {as_of.isoformat()} is before the first stage entry of the export "
                          f"({first.isoformat()}); nothing had happened yet")
    try:
        start = quarter_start(as_of, quarters - 1)
    except (ValueError, OverflowError) as exc:  # pandas' OutOfBoundsDatetime is a ValueError
        raise FunnelError(f"funnel: {quarters} quarters back from {as_of.date()} is before year 1 ({exc})") from None
    reach = stage_reach_times(history, as_of)
    stays = stage_stays(history, as_of)
    last = stays.groupby("deal_id", sort=False).tail(1).set_index("deal_id").reindex(reach.index)
    lost_at = last["entered_at"].where(last["stage"] == "lost")
    groups = deal_groups(export.deals, by).reindex(reach.index, fill_value=MISSING_GROUP)
    # Days per deal and stage over completed visits; a deal whose visit is still running is left out.
    running = pd.MultiIndex.from_frame(stays.loc[stays["left_at"].isna(), ["deal_id", "stage"]])
    completed = stays.dropna(subset=["days"]).groupby(["deal_id", "stage"])["days"].sum()
    completed = completed[~completed.index.isin(running)]

    def within(times: pd.Series) -> np.ndarray:
        return ((times >= start) & (times <= as_of)).to_numpy()

    rows = []
    for k, stage in enumerate(OPEN_STAGES):
        next_stage = FUNNEL_STAGES[k + 1]
        reached = reach[stage].notna().to_numpy()
        moved_on = reach[next_stage].notna().to_numpy()
        stopped = reached & ~moved_on
        advanced = moved_on & within(reach[next_stage])
        lost = stopped & lost_at.notna().to_numpy() & within(lost_at)
        is_open = stopped & lost_at.isna().to_numpy()
        days = completed[completed.index.get_level_values("stage") == stage].droplevel("stage")
        days = days.reindex(reach.index).to_numpy(dtype=float)
        frame = groups.assign(
            advanced=advanced.astype(int), lost=lost.astype(int), open=is_open.astype(int),
            days=np.where(advanced | lost, days, np.nan),
        )[advanced | lost | is_open]
        if frame.empty:
            continue
        summary = frame.groupby(list(GROUP_COLUMNS), sort=True).agg(
            advanced=("advanced", "sum"), lost=("lost", "sum"), open=("open", "sum"),
            median_days_in_stage=("days", "median"), stays_measured=("days", "count"),
        )
        rows.append(summary.reset_index().assign(stage=stage, next_stage=next_stage))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in _COUNTS else float if c in (
            "conversion", "median_days_in_stage") else object) for c in FUNNEL_COLUMNS})
    out = pd.concat(rows, ignore_index=True)
    decided = out["advanced"] + out["lost"]
    out = out.assign(conversion=(out["advanced"] / decided.where(decided > 0)).astype(float))
    order = {stage: i for i, stage in enumerate(OPEN_STAGES)}
    out = out.assign(position=out["stage"].map(order)).sort_values([*GROUP_COLUMNS, "position"], kind="stable")
    return out[list(FUNNEL_COLUMNS)].reset_index(drop=True).astype({c: "int64" for c in _COUNTS})


def funnel_table(funnel: pd.DataFrame, by: Sequence[str], title: str = "") -> Table:
    """``summarise_funnel`` rows as a rich table: the grouping columns, then one row per stage."""
    table = Table(title=title or None, title_justify="left")
    for column in by:
        table.add_column(column.replace("_", " "), no_wrap=True)
    for name in ("stage -> next", "advanced", "lost", "conversion", "median days in stage", "stays", "open now"):
        table.add_column(name, justify="left" if name == "stage -> next" else "right", no_wrap=True)
    previous = None
    for row in funnel.itertuples(index=False):
        group = tuple(getattr(row, column) for column in by)
        if previous is not None and group != previous:
            table.add_section()
        shown = [str(value) if group != previous else "" for value in group]
        previous = group
        days = row.median_days_in_stage
        table.add_row(*shown, f"{row.stage} -> {row.next_stage}", f"{row.advanced:,}", f"{row.lost:,}",
                      "-" if not np.isfinite(row.conversion) else f"{row.conversion:.0%}",
                      "-" if not np.isfinite(days) else f"{days:.0f}", f"{row.stays_measured:,}", f"{row.open:,}")
    return table
