"""Fitted feature state: what the pipeline learns from closed deals, applied unchanged at serving.

``fit_feature_state(export, cutoff)`` uses deals closed before ``cutoff`` only. The state keeps
the closed-deal history itself (not a rate) so that each point's owner/account win rate uses only
the deals closed at or before that point's ``as_of``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.schema import OPEN_STAGES, TIMESTAMP_DTYPE, Export

STATE_VERSION = 1


@dataclass(frozen=True)
class FeatureState:
    """State fitted on deals closed before ``cutoff``.

    won_stage_days: median days won deals spent in each open stage.
    closed_*: one entry per deal closed before the cutoff (owner, account, closed_at, won).
    """

    cutoff: pd.Timestamp | None = None
    won_stage_days: dict[str, float] = field(default_factory=dict)
    closed_owner_id: tuple[str, ...] = ()
    closed_account_id: tuple[str, ...] = ()
    closed_at: tuple[pd.Timestamp, ...] = ()
    closed_won: tuple[bool, ...] = ()

    def closed_history(self) -> pd.DataFrame:
        """The closed-deal history as a frame (owner_id, account_id, closed_at, won)."""
        return pd.DataFrame(
            {
                "owner_id": pd.Series(self.closed_owner_id, dtype="str"),
                "account_id": pd.Series(self.closed_account_id, dtype="str"),
                "closed_at": pd.Series(self.closed_at, dtype=TIMESTAMP_DTYPE),
                "won": pd.Series(self.closed_won, dtype=bool),
            }
        )

    def to_dict(self) -> dict:
        """JSON-safe dict (ISO timestamps, plain lists); inverse of ``from_dict``."""
        return {
            "version": STATE_VERSION,
            "cutoff": None if self.cutoff is None else self.cutoff.isoformat(),
            "won_stage_days": {k: float(v) for k, v in self.won_stage_days.items()},
            "closed_deals": {
                "owner_id": list(self.closed_owner_id),
                "account_id": list(self.closed_account_id),
                "closed_at": [t.isoformat() for t in self.closed_at],
                "won": [bool(w) for w in self.closed_won],
            },
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FeatureState":
        """Rebuild a state from ``to_dict()`` output; raises ValueError naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"feature state must be a JSON object, got {type(data).__name__}")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"feature state: version must be {STATE_VERSION}, got {data.get('version')!r}")
        try:
            closed = data["closed_deals"]
            columns = [closed[k] for k in ("owner_id", "account_id", "closed_at", "won")]
            stage_days = {str(k): float(v) for k, v in data["won_stage_days"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"feature state: missing or malformed field ({exc!r})") from exc
        if len({len(c) for c in columns}) != 1:
            raise ValueError("feature state: closed_deals columns have different lengths")
        unknown = set(stage_days) - set(OPEN_STAGES)
        if unknown:
            raise ValueError(f"feature state: won_stage_days has unknown stages {sorted(unknown)}")
        cutoff = data.get("cutoff")
        return cls(
            cutoff=None if cutoff is None else _timestamp(cutoff),
            won_stage_days=stage_days,
            closed_owner_id=tuple(str(v) for v in columns[0]),
            closed_account_id=tuple(str(v) for v in columns[1]),
            closed_at=tuple(_timestamp(v) for v in columns[2]),
            closed_won=tuple(bool(v) for v in columns[3]),
        )


def _timestamp(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def compute_won_stage_days(export: Export, won_deal_ids: pd.Series) -> dict[str, float]:
    """Median days the given won deals spent in each open stage (visits of one stage summed).

    A stage visit lasts until the deal's next stage entry, or its ``closed_at`` for the last one.
    """
    history = export.stage_history
    if history is None or len(won_deal_ids) == 0:
        return {}
    deals = export.deals.set_index("deal_id")
    visits = history[history["deal_id"].isin(won_deal_ids)].reset_index(drop=True)
    visits = visits.assign(_row=np.arange(len(visits))).sort_values(["deal_id", "entered_at", "_row"], kind="stable")
    next_entry = visits.groupby("deal_id", sort=False)["entered_at"].shift(-1)
    left = next_entry.fillna(visits["deal_id"].map(deals["closed_at"]))
    visits = visits.assign(days=(left - visits["entered_at"]).dt.total_seconds() / 86400.0)
    visits = visits[visits["stage"].isin(OPEN_STAGES) & visits["days"].notna()]
    per_deal = visits.groupby(["deal_id", "stage"], sort=False)["days"].sum()
    medians = per_deal.groupby(level="stage").median()
    return {stage: float(medians[stage]) for stage in OPEN_STAGES if stage in medians.index}


def fit_feature_state(export: Export, cutoff) -> FeatureState:
    """Fit the feature state on deals closed strictly before ``cutoff``.

    >>> from tests.factories import make_export
    >>> state = fit_feature_state(make_export(), "2026-12-31")
    >>> sorted(state.won_stage_days)[:2], len(state.closed_at)
    (['identify', 'negotiate'], 3)
    """
    cutoff = _timestamp(cutoff)
    deals = export.deals
    closed = deals[deals["outcome"].isin(("won", "lost")) & deals["closed_at"].notna() & (deals["closed_at"] < cutoff)]
    closed = closed.sort_values(["closed_at", "deal_id"], kind="stable")
    won_ids = closed.loc[closed["outcome"] == "won", "deal_id"]
    return FeatureState(
        cutoff=cutoff,
        won_stage_days=compute_won_stage_days(export, won_ids),
        closed_owner_id=tuple(closed["owner_id"].astype(str)),
        closed_account_id=tuple(closed["account_id"].astype(str)),
        closed_at=tuple(closed["closed_at"]),
        closed_won=tuple((closed["outcome"] == "won").to_numpy(dtype=bool)),
    )
