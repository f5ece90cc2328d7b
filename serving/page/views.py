"""What each view of the managers' page shows, as pure functions of the stored scores and the export.

The numbers come from ``portfolio`` (the same functions as ``dealrisk rank``, ``forecast``,
``team`` and ``funnel``), so the page and the command line never disagree; this module only picks
and shapes them for the templates. ``serving.page.data`` reads the store and the export,
``serving.page.app`` serves the HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contract.schema import OPEN_STAGES, ROLES
from features.model.grades import RISK_LEVELS
from portfolio.forecast import OVERDUE, forecast_bookings, period_of
from portfolio.rank import FilterError, RankFilters, make_filters

# The rows the list shows unless asked for more (``limit``); the header counts every deal.
DEFAULT_ROWS = 100
ROW_CHOICES = (100, 500, 0)  # 0: all
# The roles a manager asks about first: always listed in the decision chain, present or not.
KEY_ROLES = ("economic_buyer", "decision_maker", "champion")
ENGAGED_WINDOW_DAYS = 30  # as features.pointintime.definitions' *_engaged_30d
# CLI option names in portfolio.rank's messages -> the labels of the page's filter form.
FILTER_LABELS = {"--close-in": "Close period", "--stage": "Stage", "--min-amount": "Minimum amount",
                 "--close-from": "Close from", "--close-to": "Close to"}


@dataclass(frozen=True)
class ListQuery:
    """The list's filters as the form sends them (text, as typed) and the rows to show."""

    owner: str = ""
    stage: str = ""
    close_in: str = ""
    min_amount: str = ""
    changed: bool = False
    limit: int = DEFAULT_ROWS

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ListQuery:
        """From query parameters; an unknown ``limit`` falls back to the default."""
        try:
            limit = int(params.get("limit", DEFAULT_ROWS))
        except ValueError:
            limit = DEFAULT_ROWS
        return cls(
            owner=str(params.get("owner", "")).strip(),
            stage=str(params.get("stage", "")).strip(),
            close_in=str(params.get("close_in", "")).strip(),
            min_amount=str(params.get("min_amount", "")).strip(),
            changed=str(params.get("changed", "")).lower() in ("1", "on", "true", "yes"),
            limit=limit if limit in ROW_CHOICES else DEFAULT_ROWS,
        )

    def filters(self) -> RankFilters:
        """``portfolio.rank.RankFilters``; ``FilterError`` naming the form's field for a bad value.

        >>> ListQuery(close_in="2026-Q5").filters()
        Traceback (most recent call last):
        ...
        portfolio.rank.FilterError: Close period '2026-Q5': expected a year (2027), half (2027-H1), quarter (2027-Q1) or month (2027-03)
        """
        try:
            minimum = float(self.min_amount.replace(",", "")) if self.min_amount else None
        except ValueError:
            raise FilterError(f"Minimum amount {self.min_amount!r}: expected a number such as 50000") from None
        if minimum is not None and (not np.isfinite(minimum) or minimum < 0):
            raise FilterError(f"Minimum amount {self.min_amount!r}: expected a number of 0 or more")
        try:
            return make_filters(owners=[self.owner] if self.owner else (), stages=[self.stage] if self.stage else (),
                                close_in=self.close_in or None, min_amount=minimum, changed=self.changed)
        except FilterError as exc:
            message = str(exc)
            for option, label in FILTER_LABELS.items():
                message = message.replace(option, label)
            raise FilterError(message) from None

    def params(self, **changes) -> dict[str, str]:
        """The query parameters of this query with ``changes``, empty ones left out (for links)."""
        values = {"owner": self.owner, "stage": self.stage, "close_in": self.close_in, "min_amount": self.min_amount,
                  "changed": "1" if self.changed else "", "limit": "" if self.limit == DEFAULT_ROWS else str(self.limit)}
        values.update({k: str(v) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}


def quarter_label(as_of: pd.Timestamp, ahead: int = 0) -> str:
    """The calendar quarter holding ``as_of`` (``ahead`` quarters later) as the forecast labels it.

    >>> quarter_label(pd.Timestamp("2026-06-30T23:00:00Z")), quarter_label(pd.Timestamp("2026-12-01T00:00:00Z"), 1)
    ('2026Q2', '2027Q1')
    """
    period = pd.Timestamp(as_of).tz_convert("UTC").tz_localize(None).to_period("Q") + ahead
    return str(period)


def pipeline_header(latest: pd.DataFrame, as_of: pd.Timestamp) -> dict:
    """The numbers above the list: open deals and pipeline, value at risk, deals per risk level, and
    expected bookings in this quarter and the next (win x amount over the deals expected to close in
    each) against the stage table's estimate for the same deals (``portfolio.forecast.forecast_bookings``),
    with the deals whose expected close date has already passed (``overdue``) apart. Both quarters,
    because in a quarter's last days what is left of it is nearly nothing.

    >>> latest = pd.DataFrame({"deal_id": ["D1", "D2", "D3"], "stage": ["propose", "negotiate", "qualify"],
    ...     "amount": [1000.0, 2000.0, 400.0],
    ...     "expected_close_date": pd.to_datetime(["2026-06-10", "2026-08-01", "2026-05-01"], utc=True),
    ...     "win_probability": [0.5, 0.25, 0.5], "slip_probability": [0.6, 0.9, 0.9],
    ...     "risk_level": ["medium", "high", "low"], "value_at_risk": [500.0, 1500.0, 200.0]})
    >>> h = pipeline_header(latest, pd.Timestamp("2026-06-01", tz="UTC"))
    >>> h["pipeline"], h["risk_counts"], h["overdue"]
    (3400.0, {'high': 1, 'medium': 1, 'low': 1}, {'pipeline': 400.0, 'expected': 200.0, 'stage_table': 80.0, 'deals': 1})
    >>> [(q["quarter"], q["deals"], q["expected"], q["stage_table"]) for q in h["quarters"]]
    [('2026Q2', 1, 500.0, 600.0), ('2026Q3', 1, 500.0, 1600.0)]
    """
    amount = np.nan_to_num(pd.to_numeric(latest["amount"], errors="coerce").to_numpy(dtype=float), nan=0.0)
    by_quarter = forecast_bookings(latest, as_of, "quarter").set_index("period")

    def period_row(label: str) -> dict:
        found = label in by_quarter.index
        return {name: (float(by_quarter.at[label, name]) if found else 0.0)
                for name in ("pipeline", "expected", "stage_table")} | {
            "deals": int(by_quarter.at[label, "deals"]) if found else 0}

    quarters = [{"quarter": quarter_label(as_of, k), **period_row(quarter_label(as_of, k))} for k in (0, 1)]
    levels = latest["risk_level"].astype(str).value_counts()
    return {
        "deals": len(latest),
        "pipeline": float(amount.sum()),
        "value_at_risk": float(np.nan_to_num(latest["value_at_risk"].to_numpy(dtype=float), nan=0.0).sum()),
        "expected": float((latest["win_probability"].to_numpy(dtype=float) * amount).sum()),
        "quarters": quarters,
        "quarter_ends": pd.Period(quarters[0]["quarter"], freq="Q").end_time.tz_localize("UTC").floor("D"),
        "overdue": period_row(OVERDUE),
        "risk_counts": {level: int(levels.get(level, 0)) for level in RISK_LEVELS},
        "as_of": as_of,
    }


def filter_choices(latest: pd.DataFrame, as_of: pd.Timestamp) -> dict:
    """What the filter form offers: the owners present, the open stages, and close periods (the
    quarters of the expected close dates, from the current one on, plus the current year)."""
    owners = sorted(str(o) for o in latest["owner_id"].dropna().unique())
    close = pd.to_datetime(latest["expected_close_date"], utc=True)
    current = quarter_label(as_of)
    quarters = sorted(q for q in period_of(close, "quarter").dropna().unique() if q >= current)
    periods = [f"{q[:4]}-{q[4:]}" for q in quarters[:8]] + [f"{as_of:%Y}"]
    return {"owners": owners, "stages": list(OPEN_STAGES), "periods": periods}


def history_points(history: pd.DataFrame) -> pd.DataFrame:
    """A deal's stored scores, one per as-of (of several model pairs, the row written last), oldest first."""
    if history.empty:
        return history
    ordered = history.sort_values(["as_of", "scored_at", "run_id"], kind="stable")
    return ordered.drop_duplicates("as_of", keep="last").reset_index(drop=True)


def decision_chain_from_export(contacts: pd.DataFrame | None, activities: pd.DataFrame | None,
                               as_of: pd.Timestamp, window_days: int = ENGAGED_WINDOW_DAYS) -> list[dict]:
    """Each decision-chain role of one deal as of ``as_of``: contacts holding it, whether it was
    engaged in the last ``window_days`` days, and days since it was last engaged.

    Read as the features read the export (docs/features.md): a contact counts from its
    ``added_at``; an activity with a contact engages the contact's role from the later of the
    activity's ``occurred_at`` and the contact's ``added_at``; the window is
    ``(as_of - window_days, as_of]``. Rows: the key roles (economic buyer, decision maker,
    champion) always, any other role when present. ``None`` tables (the CRM keeps no such
    table): presence or engagement is unknown (``None``), never "no".

    >>> at = pd.Timestamp("2026-06-30", tz="UTC")
    >>> contacts = pd.DataFrame({"deal_id": ["D1", "D1"], "contact_id": ["C1", "C2"], "role": ["economic_buyer", "influencer"],
    ...     "added_at": pd.to_datetime(["2026-05-01", "2026-05-02"], utc=True)})
    >>> activities = pd.DataFrame({"deal_id": ["D1"], "contact_id": ["C1"],
    ...     "occurred_at": pd.to_datetime(["2026-06-20"], utc=True)})
    >>> [(r["role"], r["contacts"], r["engaged"], r["days_since_engaged"]) for r in decision_chain_from_export(contacts, activities, at)]
    [('economic_buyer', 1, True, 10.0), ('decision_maker', 0, False, None), ('champion', 0, False, None), ('influencer', 1, False, None)]
    """
    as_of = pd.Timestamp(as_of)
    known_contacts = contacts is not None
    present: dict[str, int] = {}
    last_engaged: dict[str, pd.Timestamp] = {}
    if known_contacts:
        on_deal = contacts.loc[contacts["added_at"] <= as_of, ["contact_id", "role", "added_at"]]
        present = on_deal["role"].astype(str).value_counts().to_dict()
        if activities is not None and len(on_deal):
            done = activities.loc[activities["occurred_at"] <= as_of, ["contact_id", "occurred_at"]].dropna(subset=["contact_id"])
            joined = done.merge(on_deal, on="contact_id", how="inner")
            if len(joined):
                engaged_at = joined["occurred_at"].where(joined["occurred_at"] >= joined["added_at"], joined["added_at"])
                last_engaged = joined.assign(engaged_at=engaged_at).groupby("role")["engaged_at"].max().to_dict()
    window_start = as_of - pd.Timedelta(days=window_days)
    rows = []
    for role in ROLES:
        count = int(present.get(role, 0))
        if role not in KEY_ROLES and count == 0:
            continue
        last = last_engaged.get(role)
        known_activity = known_contacts and activities is not None
        rows.append({
            "role": role,
            "label": role.replace("_", " "),
            "contacts": count if known_contacts else None,
            "present": (count > 0) if known_contacts else None,
            "engaged": (last is not None and last > window_start) if known_activity else None,
            "days_since_engaged": None if last is None else round((as_of - last).total_seconds() / 86400.0, 1),
        })
    rows.sort(key=lambda r: (KEY_ROLES.index(r["role"]) if r["role"] in KEY_ROLES else len(KEY_ROLES), ROLES.index(r["role"])))
    return rows


def decision_chain_from_score(factors_up, factors_down, warning_codes: str) -> list[dict]:
    """The key roles as far as a stored score tells (no export at hand): the stored factors carry a
    role's ``*_engaged_30d`` or ``days_since_*_engaged`` value when it was among the top reasons,
    and the ``no_decision_maker`` warning says neither the decision maker nor the economic buyer
    was engaged in 30 days. Everything else is unknown (``None``).

    >>> rows = decision_chain_from_score([{"feature": "champion_engaged_30d", "value": 1.0}], [], "no_decision_maker")
    >>> [(r["role"], r["engaged"]) for r in rows]
    [('economic_buyer', False), ('decision_maker', False), ('champion', True)]
    """
    values: dict[str, float] = {}
    for factor in list(factors_up or []) + list(factors_down or []):
        if isinstance(factor, dict) and factor.get("value") is not None:
            try:
                values[str(factor.get("feature"))] = float(factor["value"])
            except (TypeError, ValueError):
                continue
    codes = set(str(warning_codes or "").split(","))
    rows = []
    for role in KEY_ROLES:
        engaged = None
        flag = values.get(f"{role}_engaged_30d")
        days = values.get(f"days_since_{role}_engaged")
        if flag is not None and np.isfinite(flag):
            engaged = bool(flag >= 0.5)
        elif days is not None and np.isfinite(days):
            engaged = days < ENGAGED_WINDOW_DAYS
        if engaged is None and role in ("decision_maker", "economic_buyer") and "no_decision_maker" in codes:
            engaged = False
        rows.append({
            "role": role, "label": role.replace("_", " "), "contacts": None,
            "present": True if engaged else None,
            "engaged": engaged,
            "days_since_engaged": days if days is not None and np.isfinite(days) else None,
        })
    return rows


def deal_summary(points: pd.DataFrame) -> dict:
    """The deal view's facts from its stored history (``history_points``): the latest score and how
    it moved since the one before."""
    latest = points.iloc[-1]
    previous = points.iloc[-2] if len(points) > 1 else None
    moved = None if previous is None else round((latest["win_probability"] - previous["win_probability"]) * 100.0, 1)
    return {
        "latest": latest,
        "previous_as_of": None if previous is None else previous["as_of"],
        "points_moved": moved,
        "scores": len(points),
    }
