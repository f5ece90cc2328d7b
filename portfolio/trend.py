"""Trend and alerts: how each deal moved since its previous stored snapshot.

Pure functions on the frame ``portfolio.store.ScoreStore.snapshots()`` returns (each deal's
latest snapshot, ``snapshot`` 0, and the one before it, 1).

- **Points moved**: the change of the win probability, in percentage points, from the previous
  snapshot to the latest (``+12.0``: from 30% to 42%).
- **Trend**: ``improving`` when it rose by ``TrendRules.steady_points`` (5) points or more,
  ``declining`` when it fell by as much, ``steady`` in between, ``new`` when the deal has no
  earlier snapshot. Five points, because a calibrated probability moves by a few points from one
  week to the next with nothing happening on the deal (a day more in the stage, an activity
  leaving the 14-day window); a move of five or more is something a manager should see.
- **Alert**: the deal dropped ``TrendRules.alert_drop_points`` (10) points or more, or has a
  warning its previous snapshot did not have (``new_warnings``). These are ``dealrisk rank
  --changed``. Both compare a deal with its own previous snapshot: with weekly ``dealrisk
  score`` runs, that is last week's run; a ``POST /score`` written in between (the service's
  store writes) is a snapshot too, so the trend then reads "since the CRM last asked".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TRENDS = ("improving", "steady", "declining", "new")
TREND_COLUMNS = ("previous_as_of", "previous_win_probability", "points_moved", "trend", "new_warnings", "alert")


@dataclass(frozen=True)
class TrendRules:
    """Thresholds of the trend and the alerts, in win-probability points (see the module docstring)."""

    steady_points: float = 5.0
    alert_drop_points: float = 10.0


def add_trend(snapshots: pd.DataFrame, rules: TrendRules = TrendRules()) -> pd.DataFrame:
    """Each deal's latest snapshot with its trend columns (``TREND_COLUMNS``), one row per deal.

    ``previous_as_of`` and ``previous_win_probability`` are NaT/NaN for a new deal;
    ``points_moved`` is NaN then; ``new_warnings`` holds the codes (comma-separated, sorted)
    in the latest snapshot but not in the previous one.

    >>> at = pd.to_datetime(["2026-03-09", "2026-03-02", "2026-03-09", "2026-03-09"], utc=True)
    >>> snapshots = pd.DataFrame({"deal_id": ["D1", "D1", "D2", "D3"], "snapshot": [0, 1, 0, 0], "as_of": at,
    ...     "win_probability": [0.30, 0.45, 0.5, 0.2], "warning_codes": ["ghosted", "", "", ""]})
    >>> trended = add_trend(snapshots)
    >>> trended["points_moved"].tolist()[0], trended["new_warnings"].tolist()
    (-15.0, ['ghosted', '', ''])
    >>> trended["trend"].tolist(), trended["alert"].tolist()
    (['declining', 'new', 'new'], [True, False, False])
    """
    missing = [c for c in ("deal_id", "snapshot", "as_of", "win_probability", "warning_codes") if c not in snapshots]
    if missing:
        raise ValueError(f"add_trend: the snapshots frame lacks columns {missing} (use ScoreStore.snapshots())")
    latest = snapshots.loc[snapshots["snapshot"] == 0].drop(columns="snapshot").reset_index(drop=True)
    previous = (snapshots.loc[snapshots["snapshot"] == 1, ["deal_id", "as_of", "win_probability", "warning_codes"]]
                .drop_duplicates("deal_id")
                .set_index("deal_id"))
    ids = latest["deal_id"]
    before = previous.reindex(ids.to_numpy())
    has_previous = before["win_probability"].notna().to_numpy()
    moved = np.round((latest["win_probability"].to_numpy(dtype=float)
                      - before["win_probability"].to_numpy(dtype=float)) * 100.0, 1)
    trend = np.select(
        [~has_previous, moved >= rules.steady_points, moved <= -rules.steady_points],
        ["new", "improving", "declining"], default="steady",
    )
    new_warnings = [
        new_codes(now, then) if known else ""
        for now, then, known in zip(latest["warning_codes"].tolist(), before["warning_codes"].tolist(), has_previous)
    ]
    alert = (has_previous & (moved <= -rules.alert_drop_points)) | (np.array(new_warnings, dtype=object) != "")
    return latest.assign(
        previous_as_of=before["as_of"].to_numpy(),
        previous_win_probability=before["win_probability"].to_numpy(dtype=float),
        points_moved=np.where(has_previous, moved, np.nan),
        trend=pd.array(trend, dtype="str"),
        new_warnings=pd.array(new_warnings, dtype="str"),
        alert=alert.astype(bool),
    )


def new_codes(now, then) -> str:
    """Warning codes in ``now`` but not in ``then`` (comma-separated code lists), sorted.

    >>> new_codes("ghosted,no_activity", "no_activity"), new_codes("", "ghosted")
    ('ghosted', '')
    """
    before = set(_codes(then))
    return ",".join(sorted(code for code in _codes(now) if code not in before))


def _codes(text) -> list[str]:
    if not isinstance(text, str) or not text:
        return []
    return [code for code in text.split(",") if code]


def select_alerts(trended: pd.DataFrame) -> pd.DataFrame:
    """The deals of ``add_trend`` output that alert (dropped 10+ points or got a new warning)."""
    return trended.loc[trended["alert"]].reset_index(drop=True)
