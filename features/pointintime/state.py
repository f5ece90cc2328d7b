"""Fitted feature state: what the pipeline learns from closed deals, applied unchanged at serving.

``fit_feature_state(export, cutoff)`` uses deals closed before ``cutoff`` only. The state keeps
the closed-deal history itself (not a rate) so that each point's owner/account win rate uses only
the deals closed at or before that point's ``as_of``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.contract.schema import OPEN_STAGES, TIMESTAMP_DTYPE, Export
from features.pointintime.definitions import DEFAULT_FISCAL_YEAR_START_MONTH, INPUTS
from features.pointintime.events import prepare_points, reconstruct_field
from features.pointintime.inputs import find_inputs, missing_inputs

STATE_VERSION = 1


@dataclass(frozen=True)
class FeatureState:
    """State fitted on deals closed before ``cutoff``.

    won_stage_days: median days won deals spent in each open stage.
    closed_*: one entry per deal closed before the cutoff (owner, account, closed_at, won, and
    segment and first amount: the amount at creation, NaN when unknown). States saved before
    segment and first amount were kept have none: their ``closed_amount_history`` is empty.
    missing_inputs: the inputs (``definitions.INPUTS``) the training export lacked before the
    cutoff, with the reason for each (``features.pointintime.inputs.find_inputs``); None in a state
    saved before they were recorded. What training left out follows from it (``plan_skips``).
    fiscal_year_start_month: first month (1-12) of the fiscal year, for the calendar features.
    """

    cutoff: pd.Timestamp | None = None
    won_stage_days: dict[str, float] = field(default_factory=dict)
    closed_owner_id: tuple[str, ...] = ()
    closed_account_id: tuple[str, ...] = ()
    closed_at: tuple[pd.Timestamp, ...] = ()
    closed_won: tuple[bool, ...] = ()
    closed_segment: tuple[str | None, ...] = ()
    closed_first_amount: tuple[float, ...] = ()
    missing_inputs: dict[str, str] | None = None
    fiscal_year_start_month: int = DEFAULT_FISCAL_YEAR_START_MONTH

    def __post_init__(self) -> None:
        check_fiscal_month(self.fiscal_year_start_month)

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

    def closed_amount_history(self) -> pd.DataFrame:
        """Segment, closed_at and first amount of the closed deals (sorted by closed_at, deal id).

        Empty for a state saved without segments and first amounts (an older bundle).
        """
        n = len(self.closed_at) if len(self.closed_segment) == len(self.closed_first_amount) == len(self.closed_at) else 0
        return pd.DataFrame(
            {
                "segment": pd.Series(self.closed_segment[:n], dtype="str"),
                "closed_at": pd.Series(self.closed_at[:n], dtype=TIMESTAMP_DTYPE),
                "first_amount": pd.Series(self.closed_first_amount[:n], dtype=float),
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
                "segment": [None if _is_missing(v) else str(v) for v in self.closed_segment],
                # NaN is not JSON: an unknown first amount is null.
                "first_amount": [None if _is_missing(v) else float(v) for v in self.closed_first_amount],
            },
            "missing_inputs": None if self.missing_inputs is None else dict(self.missing_inputs),
            "fiscal_year_start_month": int(self.fiscal_year_start_month),
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
        # segment / first_amount: optional (states saved before they were kept have neither).
        segment, first_amount = closed.get("segment", []), closed.get("first_amount", [])
        if not isinstance(segment, list) or not isinstance(first_amount, list):
            raise ValueError("feature state: closed_deals segment and first_amount must be lists")
        if (segment or first_amount) and not (len(segment) == len(first_amount) == len(columns[0])):
            raise ValueError("feature state: closed_deals segment and first_amount must have one entry per closed deal")
        try:
            first_amount = tuple(np.nan if v is None else float(v) for v in first_amount)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"feature state: closed_deals first_amount must be numbers or null ({exc})") from exc
        unknown = set(stage_days) - set(OPEN_STAGES)
        if unknown:
            raise ValueError(f"feature state: won_stage_days has unknown stages {sorted(unknown)}")
        cutoff = data.get("cutoff")
        # Both optional: a state saved before them has neither (all inputs taken as present, January).
        missing = data.get("missing_inputs")
        if missing is not None:
            if not isinstance(missing, dict) or not all(isinstance(v, str) for v in missing.values()):
                raise ValueError("feature state: missing_inputs must map input names to reasons")
            unknown_inputs = set(missing) - set(INPUTS)
            if unknown_inputs:
                raise ValueError(f"feature state: missing_inputs names unknown inputs {sorted(unknown_inputs)}")
        month = data.get("fiscal_year_start_month", DEFAULT_FISCAL_YEAR_START_MONTH)
        return cls(
            cutoff=None if cutoff is None else _timestamp(cutoff),
            won_stage_days=stage_days,
            closed_owner_id=tuple(str(v) for v in columns[0]),
            closed_account_id=tuple(str(v) for v in columns[1]),
            closed_at=tuple(_timestamp(v) for v in columns[2]),
            closed_won=tuple(bool(v) for v in columns[3]),
            closed_segment=tuple(None if v is None else str(v) for v in segment),
            closed_first_amount=first_amount,
            missing_inputs=None if missing is None else {str(k): v for k, v in missing.items()},
            fiscal_year_start_month=check_fiscal_month(month),
        )


def check_fiscal_month(month) -> int:
    """The fiscal year's first month, 1-12; ValueError otherwise."""
    if isinstance(month, bool) or not isinstance(month, (int, np.integer)) or not 1 <= int(month) <= 12:
        raise ValueError(f"feature state: fiscal_year_start_month must be a month number 1-12, got {month!r}")
    return int(month)


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


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


def compute_first_amounts(export: Export, deal_ids: pd.Series) -> np.ndarray:
    """Amount of each given deal at its creation (``features.pointintime.events.reconstruct_field``'s
    ``initial``: the old_value of its first amount change, else the deals row); NaN for all
    without a field_history table (unknown).

    >>> from tests.factories import make_export
    >>> compute_first_amounts(make_export(), pd.Series(["D1", "D2"])).tolist()
    [1000.0, 500.0]
    """
    if len(deal_ids) == 0:
        return np.zeros(0)
    created = deal_ids.map(export.deals.set_index("deal_id")["created_at"])
    points = pd.DataFrame({"deal_id": deal_ids.to_numpy(), "as_of": created.to_numpy()})
    return reconstruct_field(export, prepare_points(export, points), "amount")["initial"]


def fit_feature_state(export: Export, cutoff, fiscal_year_start_month: int = DEFAULT_FISCAL_YEAR_START_MONTH) -> FeatureState:
    """Fit the feature state on deals closed strictly before ``cutoff``.

    Also records which inputs the export lacks before ``cutoff`` (``missing_inputs``). Without
    amount changes in field_history the first amounts are unknown (NaN), not the deals row's
    export-time amount.

    >>> from tests.factories import make_export
    >>> state = fit_feature_state(make_export(), "2026-12-31")
    >>> sorted(state.won_stage_days)[:2], len(state.closed_at), list(state.missing_inputs)
    (['identify', 'negotiate'], 3, ['history:owner_id'])
    """
    cutoff = _timestamp(cutoff)
    missing = missing_inputs(find_inputs(export, before=cutoff))
    deals = export.deals
    closed = deals[deals["outcome"].isin(("won", "lost")) & deals["closed_at"].notna() & (deals["closed_at"] < cutoff)]
    closed = closed.sort_values(["closed_at", "deal_id"], kind="stable")
    won_ids = closed.loc[closed["outcome"] == "won", "deal_id"]
    first_amounts = compute_first_amounts(export, closed["deal_id"])
    if "history:amount" in missing:
        first_amounts = np.full(len(first_amounts), np.nan)
    return FeatureState(
        cutoff=cutoff,
        won_stage_days=compute_won_stage_days(export, won_ids),
        closed_owner_id=tuple(closed["owner_id"].astype(str)),
        closed_account_id=tuple(closed["account_id"].astype(str)),
        closed_at=tuple(closed["closed_at"]),
        closed_won=tuple((closed["outcome"] == "won").to_numpy(dtype=bool)),
        closed_segment=tuple(None if _is_missing(v) else str(v) for v in closed["segment"].to_numpy(dtype=object)),
        # Unknown amounts as the one np.nan object: tuples compare items by identity first, so a
        # state still equals its JSON round trip.
        closed_first_amount=tuple(np.nan if v != v else v for v in first_amounts.tolist()),
        missing_inputs=missing,
        fiscal_year_start_month=check_fiscal_month(fiscal_year_start_month),
    )
