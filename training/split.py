"""Time split of closed deals into training, validation and test periods.

A deal is assigned by the date it closed, so all snapshots of one deal share a side and the
model is always judged on a later period than it learnt from.
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
    """Period boundaries (UTC). Train: closed < cutoff; validation: validation_start <= closed <
    test_start; test: closed >= test_start. Deals closing inside the gap are left out."""

    cutoff: pd.Timestamp
    validation_start: pd.Timestamp
    test_start: pd.Timestamp
    end: pd.Timestamp

    def to_dict(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "SplitPlan":
        return cls(**{k: pd.Timestamp(data[k]) for k in ("cutoff", "validation_start", "test_start", "end")})


def plan_split(deals: pd.DataFrame, config: SplitConfig) -> SplitPlan:
    """Choose the period boundaries from the close dates of won and lost deals.

    >>> deals = pd.DataFrame({"outcome": ["won", "lost"] * 50,
    ...     "closed_at": pd.date_range("2025-01-01", periods=100, freq="D", tz="UTC")})
    >>> plan = plan_split(deals, SplitConfig(train_share=0.6, gap_days=0))
    >>> plan.cutoff < plan.validation_start or plan.cutoff == plan.validation_start
    True
    """
    closed = deals.loc[deals["outcome"].isin(["won", "lost"]), "closed_at"].dropna().sort_values()
    if closed.empty:
        raise SplitError("deals: no won or lost deal with a closed_at; nothing to train on")
    if config.cutoff is not None:
        cutoff = pd.Timestamp(config.cutoff)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    else:
        cutoff = closed.quantile(config.train_share)
    validation_start = cutoff + pd.Timedelta(days=config.gap_days)
    after = closed[closed >= validation_start]
    if after.empty:
        raise SplitError(
            f"split: no deal closed on or after {validation_start.isoformat()} (cutoff {cutoff.isoformat()} "
            f"+ gap {config.gap_days} days); last close in the export is {closed.iloc[-1].isoformat()}"
        )
    test_start = after.quantile(config.validation_share)
    return SplitPlan(cutoff=cutoff, validation_start=validation_start, test_start=test_start, end=closed.iloc[-1])


def assign_sides(deals: pd.DataFrame, plan: SplitPlan) -> pd.Series:
    """Side of each closed deal (``train`` / ``validation`` / ``test``), indexed by deal_id.

    Open deals and deals closing inside the gap get no side (they are absent from the result).
    """
    closed = deals.loc[deals["outcome"].isin(["won", "lost"]) & deals["closed_at"].notna(), ["deal_id", "closed_at"]]
    at = closed["closed_at"]
    side = pd.Series(pd.NA, index=closed.index, dtype="object")
    side = side.mask(at < plan.cutoff, "train")
    side = side.mask((at >= plan.validation_start) & (at < plan.test_start), "validation")
    side = side.mask(at >= plan.test_start, "test")
    result = pd.Series(side.to_numpy(), index=pd.Index(closed["deal_id"], name="deal_id"), name="side")
    return result.dropna().astype("str")


def attach_sides(snapshots: pd.DataFrame, sides: pd.Series) -> pd.DataFrame:
    """Add a ``side`` column to snapshot rows (by deal_id) and drop rows whose deal has no side."""
    side = snapshots["deal_id"].map(sides)
    return snapshots.assign(side=side).loc[side.notna()].reset_index(drop=True)
