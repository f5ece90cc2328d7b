"""Time split of closed deals into training, validation and test periods.

Training: deals **closed before the cutoff** (optionally only those created at least the
maturity horizon before it). Validation and test: deals **created on or after cutoff + gap**
(so they also closed after the cutoff) whose outcome is knowable at the export end, split by
creation date (earlier ``validation_share`` validates, the rest tests). Every snapshot of a
deal lands on its deal's side, and nothing that happened after the cutoff reaches training.

Why creation date after the cutoff: choosing post-cutoff deals by *close* date keeps only the
long-lived ones among those created before the cutoff (the quick ones closed before it), and
choosing them near the export end keeps only the quick ones; either skews the win rate that
calibration is fitted on and measured against. A creation cohort whose outcomes are all known
(created at least the maturity horizon before the export end, see ``features.pointintime.snapshots``) has no
such skew. Deals created between ``cutoff - horizon`` and ``cutoff + gap`` that close after the
cutoff are used by neither side.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from training.config import SplitConfig

SIDES: tuple[str, ...] = ("train", "validation", "test")


class SplitError(ValueError):
    """The export cannot be split as configured (too few closed deals, cutoff outside the data)."""


@dataclass(frozen=True)
class SplitPlan:
    """Period boundaries (UTC).

    train: closed < cutoff (and created <= train_created_by); validation: created in
    [validation_start, test_start); test: created in [test_start, end]; ``end`` is the last
    creation date whose outcome is knowable at the export end.
    """

    cutoff: pd.Timestamp
    train_created_by: pd.Timestamp
    validation_start: pd.Timestamp
    test_start: pd.Timestamp
    end: pd.Timestamp

    def to_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "SplitPlan":
        return cls(**{k: pd.Timestamp(data[k]) for k in cls.__dataclass_fields__})


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _closed(deals: pd.DataFrame) -> pd.DataFrame:
    return deals.loc[deals["outcome"].isin(["won", "lost"]) & deals["closed_at"].notna()]


def plan_split(
    deals: pd.DataFrame,
    config: SplitConfig,
    mature_by: pd.Timestamp,
    train_horizon_days: float = 0.0,
) -> SplitPlan:
    """Choose the period boundaries.

    ``mature_by``: the last creation date whose outcome is knowable at the export end.
    ``train_horizon_days``: training deals must be created this long before the cutoff
    (0: every deal closed before the cutoff trains). Default cutoff: the ``train_share``
    quantile of the creation dates of closed deals created by ``mature_by``.

    >>> deals = pd.DataFrame({"outcome": ["won", "lost"] * 50,
    ...     "created_at": pd.date_range("2025-01-01", periods=100, freq="D", tz="UTC"),
    ...     "closed_at": pd.date_range("2025-01-11", periods=100, freq="D", tz="UTC")})
    >>> plan = plan_split(deals, SplitConfig(train_share=0.5, gap_days=5), pd.Timestamp("2025-04-10", tz="UTC"))
    >>> str(plan.cutoff.date()), str(plan.validation_start.date())
    ('2025-02-19', '2025-02-24')
    """
    closed = _closed(deals)
    if closed.empty:
        raise SplitError("deals: no won or lost deal with a closed_at; nothing to train on")
    mature_by = _utc(mature_by)
    mature = closed.loc[closed["created_at"] <= mature_by, "created_at"]
    if mature.empty:
        raise SplitError(f"deals: no closed deal was created by {mature_by.isoformat()} (outcome knowable)")
    cutoff = _utc(config.cutoff) if config.cutoff is not None else mature.quantile(config.train_share)
    validation_start = cutoff + pd.Timedelta(days=config.gap_days)
    after = mature[mature >= validation_start].sort_values()
    if after.empty:
        raise SplitError(
            f"split: no mature deal was created on or after {validation_start.isoformat()} (cutoff "
            f"{cutoff.isoformat()} + gap {config.gap_days} days); deals created after {mature_by.isoformat()} "
            "are too recent for their outcome to be known. Move the cutoff earlier (--cutoff)."
        )
    return SplitPlan(
        cutoff=cutoff,
        train_created_by=cutoff - pd.Timedelta(days=train_horizon_days),
        validation_start=validation_start,
        test_start=after.quantile(config.validation_share),
        end=mature_by,
    )


def assign_sides(deals: pd.DataFrame, plan: SplitPlan) -> pd.Series:
    """Side of each closed deal (``train`` / ``validation`` / ``test``), indexed by deal_id.

    Open deals, and closed deals outside every period, are absent from the result.
    """
    closed = _closed(deals)
    created, closed_at = closed["created_at"], closed["closed_at"]
    side = pd.Series(pd.NA, index=closed.index, dtype="object")
    side = side.mask((closed_at < plan.cutoff) & (created <= plan.train_created_by), "train")
    side = side.mask((created >= plan.validation_start) & (created < plan.test_start), "validation")
    side = side.mask((created >= plan.test_start) & (created <= plan.end), "test")
    result = pd.Series(side.to_numpy(), index=pd.Index(closed["deal_id"], name="deal_id"), name="side")
    return result.dropna().astype("str")


def attach_sides(snapshots: pd.DataFrame, sides: pd.Series) -> pd.DataFrame:
    """Add a ``side`` column to snapshot rows (by deal_id) and drop rows whose deal has no side."""
    side = snapshots["deal_id"].map(sides)
    return snapshots.assign(side=side).loc[side.notna()].reset_index(drop=True)
