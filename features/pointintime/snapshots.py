"""Training snapshots: moments in the open life of closed deals, and their labels.

A snapshot is a (deal_id, as_of) point strictly before the deal's ``closed_at``: weekly from
creation and at each stage entry. Labels: ``won`` (eventually won) and ``slipped`` (not won by
the expected close date known at as_of). A maturity rule keeps deals whose outcome is not yet
knowable out of training (see docs/features.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract.schema import OPEN_STAGES, TIMESTAMP_DTYPE, Export
from features.pointintime.events import (
    DAY_US,
    prepare_points,
    reconstruct_field,
    to_micros,
)

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class SnapshotConfig:
    """How to sample snapshots and which deals are mature enough to label."""

    every_days: float = 7.0  # a snapshot every N days from creation; 0 turns weekly sampling off
    at_stage_entries: bool = True  # also one at each open-stage entry
    maturity_quantile: float = 0.9  # N = this quantile of the creation-to-close cycle, in days


def sample_snapshots(export: Export, config: SnapshotConfig = SnapshotConfig(), deal_ids=None) -> pd.DataFrame:
    """Points (deal_id, as_of) of closed deals, always at or after creation and strictly before closing.

    >>> from tests.factories import make_export
    >>> points = sample_snapshots(make_export())
    >>> points.groupby("deal_id").size().to_dict()
    {'D1': 15, 'D2': 8, 'D4': 7}
    """
    deals = export.deals
    closed = deals[deals["outcome"].isin(("won", "lost")) & deals["closed_at"].notna()]
    if deal_ids is not None:
        closed = closed[closed["deal_id"].isin(pd.Index(deal_ids))]
    parts = []
    if config.every_days > 0:
        step_us = int(round(config.every_days * DAY_US))
        created, closes = to_micros(closed["created_at"]), to_micros(closed["closed_at"])
        counts = np.maximum(-((created - closes) // step_us), 0)  # ceil(life / step): k * step < life
        rows = np.repeat(np.arange(len(closed)), counts)
        k = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        as_of = pd.to_datetime(created[rows] + k * step_us, unit="us", utc=True)
        parts.append(pd.DataFrame({"deal_id": closed["deal_id"].to_numpy()[rows], "as_of": as_of}))
    if config.at_stage_entries and export.stage_history is not None:
        entries = export.stage_history[export.stage_history["stage"].isin(OPEN_STAGES)]
        bounds = closed.set_index("deal_id")[["created_at", "closed_at"]]
        entries = entries.join(bounds, on="deal_id", how="inner")
        inside = (entries["entered_at"] >= entries["created_at"]) & (entries["entered_at"] < entries["closed_at"])
        parts.append(pd.DataFrame({"deal_id": entries.loc[inside, "deal_id"].to_numpy(),
                                   "as_of": entries.loc[inside, "entered_at"].to_numpy()}))
    if not parts:
        return pd.DataFrame({"deal_id": pd.Series(dtype="str"), "as_of": pd.Series(dtype=TIMESTAMP_DTYPE)})
    points = pd.concat(parts, ignore_index=True).astype({"as_of": TIMESTAMP_DTYPE})
    return points.drop_duplicates().sort_values(["deal_id", "as_of"], kind="stable").reset_index(drop=True)


def label_snapshots(export: Export, points: pd.DataFrame, missing_inputs: dict | None = None) -> pd.DataFrame:
    """Add ``won`` and ``slipped`` (float 0/1, NaN where unknown) to points of closed deals.

    ``slipped`` is 1 when the deal was lost, or won on a later calendar day than the expected close
    date known at as_of (reconstructed point-in-time, as the features are); NaN when no expected
    close date was known then. Open deals get NaN labels. ``missing_inputs`` (the feature state's):
    without expected_close_date changes in field_history, every ``slipped`` is NaN - the deals row's
    close date is its export-time value (a CRM often sets it to the day the deal closed).

    >>> from tests.factories import make_export
    >>> points = pd.DataFrame({"deal_id": ["D1", "D1", "D2"],
    ...                        "as_of": pd.to_datetime(["2026-02-01", "2026-03-01", "2026-02-01"], utc=True)})
    >>> label_snapshots(make_export(), points)[["won", "slipped"]].values.tolist()
    [[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    """
    pts = prepare_points(export, points)
    deals = export.deals
    outcome = deals["outcome"].to_numpy()[pts.deal_row]
    closed_at = deals["closed_at"].to_numpy()[pts.deal_row]
    known = np.isin(outcome, ("won", "lost"))
    won = np.where(known, (outcome == "won").astype(float), np.nan)
    expected = reconstruct_field(export, pts, "expected_close_date")["value"]  # microseconds, NaN unknown
    expected_day = pd.to_datetime(pd.Series(expected), unit="us", utc=True).dt.floor("D").to_numpy()
    closed_day = pd.Series(closed_at, dtype=TIMESTAMP_DTYPE).dt.floor("D").to_numpy()  # typed: no points is no rows
    late = closed_day > expected_day
    slipped = np.where(outcome == "lost", 1.0, np.where(late, 1.0, 0.0))
    slipped = np.where(known & ~np.isnan(expected), slipped, np.nan)
    if missing_inputs and "history:expected_close_date" in missing_inputs:
        slipped = np.full(len(slipped), np.nan)
    return points.assign(won=won, slipped=slipped)


def export_end(export: Export) -> pd.Timestamp:
    """The data end: the latest timestamp anywhere in the export (the export moment, at the latest)."""
    times = [export.deals[c].max() for c in ("created_at", "closed_at")]
    for table, column in (("stage_history", "entered_at"), ("field_history", "changed_at"),
                          ("contacts", "added_at"), ("activities", "occurred_at")):
        frame = export.table(table)
        if frame is not None and len(frame):
            times.append(frame[column].max())
    return max(t for t in times if pd.notna(t))


def maturity_days(export: Export, quantile: float = 0.9) -> float:
    """N: the ``quantile`` of creation-to-close days over closed deals (NaN when none closed)."""
    deals = export.deals
    closed = deals[deals["outcome"].isin(("won", "lost")) & deals["closed_at"].notna()]
    if closed.empty:
        return float("nan")
    return float(((closed["closed_at"] - closed["created_at"]) / DAY).quantile(quantile))


def select_mature_deals(export: Export, end=None, quantile: float = 0.9) -> pd.Index:
    """Closed deals created at least N days before ``end`` (N from ``maturity_days``): their outcome is knowable.

    Right-censoring: lost deals take longer to close than won ones, so among recently created
    deals the closed ones are mostly quick wins; labelling them would bias the win rate upwards.
    Deals still open at ``end`` are never labelled.

    >>> from tests.factories import make_export
    >>> list(select_mature_deals(make_export(), end="2026-06-01"))
    ['D1', 'D2', 'D4']
    """
    end = export_end(export) if end is None else _utc(end)
    days = maturity_days(export, quantile)
    deals = export.deals
    if np.isnan(days):
        return pd.Index([], dtype="str", name="deal_id")
    mature = (
        deals["outcome"].isin(("won", "lost"))
        & deals["closed_at"].notna()
        & (deals["created_at"] <= end - pd.Timedelta(days=days))
    )
    return pd.Index(deals.loc[mature, "deal_id"], name="deal_id")


def sample_training_snapshots(export: Export, config: SnapshotConfig = SnapshotConfig(), end=None) -> pd.DataFrame:
    """Labelled snapshots (deal_id, as_of, won, slipped) of mature closed deals: the training rows."""
    mature = select_mature_deals(export, end=end, quantile=config.maturity_quantile)
    points = sample_snapshots(export, config, deal_ids=mature)
    return label_snapshots(export, points)


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
