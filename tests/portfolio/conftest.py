"""Fixtures for the portfolio tests: inline scored deals, and stores on SQLite and on a real PostgreSQL.

``deal(...)`` describes one scored deal in a line; ``rows_of(deals, as_of)`` turns a few of them
into the store rows ``portfolio.store.score_rows`` builds from a scoring pass (the explained
frame, the feature frame and the deals rows), so the tests write what ``dealrisk score`` writes.
``store_url`` runs a test on both backends: a SQLite file (fast tier) and a database on a
throwaway PostgreSQL server (slow tier, ``tests/portfolio/postgres.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.model.grades import grade_from_probability, score_from_probability
from portfolio.store import score_rows
from tests.portfolio.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures

WARNING_MESSAGES = {
    "no_activity": "No activity for 20 days",
    "ghosted": "Nothing inbound for 25 days",
    "single_threaded": "Only one contact engaged",
}


def deal(deal_id: str, win: float, owner: str = "O1", stage: str = "propose", amount: float | None = 1000.0,
         close_in_days: float | None = 30.0, warnings: tuple[str, ...] = (), reason: str = "In propose for 41 days",
         slip: float = 0.3, actions: list | None = None) -> dict:
    """One scored deal as the tests describe it."""
    return dict(deal_id=deal_id, win=win, owner=owner, stage=stage, amount=amount, close_in_days=close_in_days,
                warnings=warnings, reason=reason, slip=slip, actions=actions)


def rows_of(deals: list[dict], as_of: str, versions: tuple[str, str] = ("1", "1")) -> pd.DataFrame:
    """Store rows of ``deals`` scored as of ``as_of`` (through ``score_rows``)."""
    n = len(deals)
    at = pd.Timestamp(as_of, tz="UTC")
    win = np.array([d["win"] for d in deals], dtype=float)
    slip = np.array([d["slip"] for d in deals], dtype=float)
    amount = np.array([np.nan if d["amount"] is None else d["amount"] for d in deals], dtype=float)
    explained = pd.DataFrame({
        "deal_id": [d["deal_id"] for d in deals],
        "as_of": pd.Series([at] * n, dtype="datetime64[us, UTC]"),
        "win_probability": win,
        "score": score_from_probability(win),
        "grade": grade_from_probability(win),
        "slip_probability": slip,
        "risk_level": np.where(win < 0.3, "high", "low"),  # the store keeps whatever the scorer says
        "value_at_risk": np.where(np.isnan(amount), 0.0, amount) * (1 - win),
        "factors_up": [[{"feature": "meetings_held", "value": 3.0, "contribution": 0.2, "sentence": "3 meetings held"}]
                       for _ in deals],
        "factors_down": [[{"feature": "days_in_stage", "value": 41.0, "contribution": -0.4, "sentence": d["reason"]}]
                         if d["reason"] else [] for d in deals],
        "warnings": [[{"code": code, "message": WARNING_MESSAGES.get(code, code)} for code in d["warnings"]]
                     for d in deals],
        "amount": amount,
    })
    features = pd.DataFrame({
        "deal_id": explained["deal_id"],
        "current_stage": [d["stage"] for d in deals],
        "days_to_expected_close": [np.nan if d["close_in_days"] is None else d["close_in_days"] for d in deals],
    })
    rows_deals = pd.DataFrame({"deal_id": explained["deal_id"], "owner_id": [d["owner"] for d in deals],
                               "stage": [d["stage"] for d in deals], "segment": "smb", "lead_source": "web"})
    actions = [d["actions"] for d in deals]
    return score_rows(explained, features, rows_deals, {"win": versions[0], "slip": versions[1]},
                      actions if any(a is not None for a in actions) else None)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'scores.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_url(request, tmp_path) -> str:
    """A fresh store URL on each backend: a SQLite file, a database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scores.db'}"
    return request.getfixturevalue("postgres_url")
