"""The team: each owner's open pipeline, expected bookings, deals at risk, silent deals and decision-chain coverage.

A pure function on the store's latest scores (``portfolio.store``'s ``latest()``: one row per open
deal with ``owner_id``, ``amount``, ``win_probability``, ``risk_level``, ``value_at_risk`` and
``warning_codes``). Everything is read from what was stored with each score, not recomputed from
an export, so the view needs no export and no model, and shows what the reps see on their deals:

- **at risk**: deals whose ``risk_level`` is ``high`` (``features.model.grades.ExplainConfig``);
- **no activity 14d**: deals with the ``no_activity`` warning (no activity for 14 days, or none
  ever on a deal older than that, at the default ``WarningThresholds.no_activity_days``; the
  thresholds the scores were written with apply);
- **decision-chain coverage**: the share of the owner's deals *without* ``no_decision_maker``
  (a decision maker or economic buyer engaged in the last 30 days) and the share without
  ``single_threaded`` (more than one contact engaged and no one holding 80% of the contact
  activity). A warning never fires on missing data (a CRM without contacts), so such deals
  count as covered: the warnings say what is known to be wrong.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.table import Table

from portfolio.rank import money

TEAM_INPUT: tuple[str, ...] = ("deal_id", "owner_id", "amount", "win_probability", "risk_level", "value_at_risk",
                               "warning_codes")
TEAM_COLUMNS: tuple[str, ...] = (
    "owner_id", "open_deals", "pipeline", "expected", "value_at_risk", "at_risk", "at_risk_amount",
    "no_activity_14d", "decision_maker_engaged", "multi_threaded",
)
ALL_OWNERS = "(all)"
UNKNOWN_OWNER = "(none)"


class TeamError(ValueError):
    """The scores cannot give a team view; the message names what is missing."""


def has_warning(codes: pd.Series, code: str) -> np.ndarray:
    """Whether each comma-separated ``warning_codes`` cell holds ``code``.

    >>> has_warning(pd.Series(["ghosted,no_activity", "", None]), "no_activity").tolist()
    [True, False, False]
    """
    cells = pd.Series(codes, dtype=object).fillna("").astype(str)
    return cells.map(lambda text: code in text.split(",")).to_numpy(dtype=bool)


def summarise_team(scores: pd.DataFrame, at_risk_level: str = "high") -> pd.DataFrame:
    """One row per owner (``TEAM_COLUMNS``), largest value at risk first, then an ``(all)`` row.

    ``pipeline``: sum of amounts; ``expected``: sum of win probability x amount; ``at_risk``:
    deals at ``at_risk_level`` and ``at_risk_amount`` their amount; ``no_activity_14d``: deals
    with the ``no_activity`` warning; ``decision_maker_engaged`` and ``multi_threaded``: shares
    of the owner's deals without ``no_decision_maker`` / ``single_threaded`` (module docstring).
    A missing amount counts as 0; a missing owner is ``(none)``.

    >>> scores = pd.DataFrame({"deal_id": ["D1", "D2", "D3"], "owner_id": ["O1", "O1", "O2"],
    ...     "amount": [1000.0, 3000.0, 500.0], "win_probability": [0.5, 0.1, 0.8],
    ...     "risk_level": ["medium", "high", "low"], "value_at_risk": [500.0, 2700.0, 100.0],
    ...     "warning_codes": ["no_activity", "no_decision_maker,single_threaded", ""]})
    >>> summarise_team(scores)[["owner_id", "open_deals", "expected", "at_risk", "decision_maker_engaged"]].values.tolist()
    [['O1', 2, 800.0, 1, 0.5], ['O2', 1, 400.0, 0, 1.0], ['(all)', 3, 1200.0, 1, 0.6666666666666666]]
    """
    missing = [c for c in TEAM_INPUT if c not in scores.columns]
    if missing:
        raise TeamError(f"scores lack columns {missing} (have {list(scores.columns)})")
    amount = np.nan_to_num(pd.to_numeric(scores["amount"], errors="coerce").to_numpy(dtype=float), nan=0.0)
    at_risk = (scores["risk_level"].astype(str) == at_risk_level).to_numpy()
    owner = scores["owner_id"].astype(object).where(scores["owner_id"].notna(), UNKNOWN_OWNER).astype(str)
    codes = scores["warning_codes"]
    frame = pd.DataFrame({
        "owner_id": owner.to_numpy(dtype=object),
        "open_deals": 1,
        "pipeline": amount,
        "expected": scores["win_probability"].to_numpy(dtype=float) * amount,
        "value_at_risk": np.nan_to_num(scores["value_at_risk"].to_numpy(dtype=float), nan=0.0),
        "at_risk": at_risk.astype(int),
        "at_risk_amount": np.where(at_risk, amount, 0.0),
        "no_activity_14d": has_warning(codes, "no_activity").astype(int),
        "decision_maker_engaged": (~has_warning(codes, "no_decision_maker")).astype(float),
        "multi_threaded": (~has_warning(codes, "single_threaded")).astype(float),
    })
    sums = {c: "sum" for c in ("open_deals", "pipeline", "expected", "value_at_risk", "at_risk", "at_risk_amount",
                                "no_activity_14d")}
    shares = {c: "mean" for c in ("decision_maker_engaged", "multi_threaded")}
    per_owner = frame.groupby("owner_id", sort=True).agg({**sums, **shares}).reset_index()
    per_owner = per_owner.sort_values(["value_at_risk", "owner_id"], ascending=[False, True], kind="stable")
    total = pd.DataFrame([{"owner_id": ALL_OWNERS, **frame[list(sums)].sum().to_dict(),
                           **frame[list(shares)].mean().to_dict()}])
    out = pd.concat([per_owner, total], ignore_index=True) if len(frame) else per_owner
    return out[list(TEAM_COLUMNS)].astype({"open_deals": "int64", "at_risk": "int64", "no_activity_14d": "int64"})


def team_table(team: pd.DataFrame, title: str = "", at_risk_level: str = "high") -> Table:
    """``summarise_team`` as a rich table (the ``(all)`` row last, in bold)."""
    table = Table(title=title or None, title_justify="left")
    for name in ("owner", "open deals", "pipeline", "expected", "value at risk", f"at risk ({at_risk_level})",
                 "at-risk amount", "no activity 14d", "DM/EB engaged", "multi-threaded"):
        table.add_column(name, justify="left" if name == "owner" else "right", no_wrap=True)
    for row in team.itertuples(index=False):
        total = row.owner_id == ALL_OWNERS
        if total:
            table.add_section()
        table.add_row(str(row.owner_id), f"{row.open_deals:,}", money(row.pipeline), money(row.expected),
                      money(row.value_at_risk), f"{row.at_risk:,}", money(row.at_risk_amount), f"{row.no_activity_14d:,}",
                      f"{row.decision_maker_engaged:.0%}", f"{row.multi_threaded:.0%}", style="bold" if total else None)
    return table
