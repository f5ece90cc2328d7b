"""Tiny typed exports for tests: one hand-checkable export, and a small random one.

``make_export()`` returns a 4-deal ``features.contract.schema.Export`` whose feature values are worked out
by hand in tests/features/test_pipeline.py. ``random_export(n, seed)`` builds a consistent export
of ``n`` deals (vectorised numpy) for property and batch tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract.schema import (
    ACTIVITY_TYPES,
    OPEN_STAGES,
    ROLES,
    SENIORITIES,
    TABLES,
    TIMESTAMP_DTYPE,
    Export,
)


def as_request_objects(raw: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Text tables as a JSON request gives them: object columns of str, float, bool and None.

    Used by the contract tests and bench/bench_contract.py (the request rows).
    """
    out = {}
    for name, table in raw.items():
        columns = {}
        for column in table.columns:
            kind = TABLES[name].column(column).kind if column in TABLES[name].column_names else "text"
            cells = table[column].astype(object).where(table[column].notna(), None).tolist()
            if kind == "number":
                cells = [None if v is None else float(v) for v in cells]
            elif kind == "flag":
                cells = [None if v is None else v.strip().lower() in ("true", "1") for v in cells]
            columns[column] = cells
        out[name] = pd.DataFrame(columns, dtype=object)
    return out


def ts(values) -> pd.Series:
    """Timestamps in the contract dtype (tz-aware UTC, microseconds); None becomes NaT."""
    return pd.Series(pd.to_datetime(list(values), utc=True), dtype=TIMESTAMP_DTYPE)


def frame(rows: list[tuple], columns: list[str], times: tuple[str, ...] = ()) -> pd.DataFrame:
    """A frame from row tuples, with the named columns converted to contract timestamps."""
    data = pd.DataFrame(rows, columns=columns)
    return data.assign(**{c: ts(data[c]) for c in times}) if len(data) else data.astype({c: TIMESTAMP_DTYPE for c in times})


def make_deals() -> pd.DataFrame:
    """Four deals: D1 won, D2 lost, D3 open, D4 won; current values are the export-time ones."""
    return frame(
        [
            ("D1", "A1", "O1", "2026-01-01", 1500.0, "new_business", "web", "smb", "emea", "core", "won",
             "2026-03-15", "2026-03-10", "won"),
            ("D2", "A1", "O2", "2026-01-05", 500.0, "expansion", "partner", "smb", "emea", "addon", "lost",
             "2026-02-20", "2026-02-20", "lost"),
            ("D3", "A2", "O1", "2026-02-01", 2000.0, "renewal", None, "mid", "amer", "core", "negotiate",
             "2026-04-30", None, "open"),
            ("D4", "A3", "O1", "2026-01-10", 800.0, "new_business", "web", "ent", "apac", "core", "won",
             "2026-02-15", "2026-02-15", "won"),
        ],
        ["deal_id", "account_id", "owner_id", "created_at", "amount", "deal_type", "lead_source", "segment",
         "region", "product", "stage", "expected_close_date", "closed_at", "outcome"],
        times=("created_at", "expected_close_date", "closed_at"),
    )


def make_stage_history() -> pd.DataFrame:
    rows = [
        ("D1", "identify", "2026-01-01"), ("D1", "qualify", "2026-01-11"), ("D1", "propose", "2026-01-21"),
        ("D1", "qualify", "2026-01-25"), ("D1", "propose", "2026-02-01"), ("D1", "negotiate", "2026-02-15"),
        ("D1", "won", "2026-03-10"),
        ("D2", "identify", "2026-01-05"), ("D2", "qualify", "2026-01-20"), ("D2", "lost", "2026-02-20"),
        ("D3", "identify", "2026-02-01"), ("D3", "qualify", "2026-02-10"), ("D3", "propose", "2026-02-20"),
        ("D3", "negotiate", "2026-03-01"),
        ("D4", "identify", "2026-01-10"), ("D4", "negotiate", "2026-01-20"), ("D4", "won", "2026-02-15"),
    ]
    return frame(rows, ["deal_id", "stage", "entered_at"], times=("entered_at",))


def make_field_history() -> pd.DataFrame:
    rows = [
        ("D1", "expected_close_date", "2026-02-28T00:00:00Z", "2026-03-15T00:00:00Z", "2026-02-10"),
        ("D1", "amount", "1000", "1500", "2026-02-20"),
        ("D3", "expected_close_date", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z", "2026-03-05"),
    ]
    return frame(rows, ["deal_id", "field", "old_value", "new_value", "changed_at"], times=("changed_at",))


def make_contacts() -> pd.DataFrame:
    rows = [
        ("D1", "C1", "decision_maker", "c_level", "2026-01-02"),
        ("D1", "C2", "champion", "manager", "2026-01-12"),
        ("D1", "C3", "technical_evaluator", "director", "2026-02-01"),
        ("D3", "C4", "champion", "manager", "2026-02-02"),
        ("D3", "C5", "economic_buyer", "vp", "2026-03-10"),
    ]
    return frame(rows, ["deal_id", "contact_id", "role", "seniority", "added_at"], times=("added_at",))


def make_activities() -> pd.DataFrame:
    rows = [
        ("a1", "D1", "C1", "call", "outbound", "2026-01-03", 30.0, np.nan, None),
        ("a2", "D1", "C2", "email", "inbound", "2026-01-15", np.nan, np.nan, None),
        ("a3", "D1", "C2", "meeting", "outbound", "2026-02-05", 60.0, 0.4, True),
        ("a4", "D1", "C2", "call", "outbound", "2026-02-20", 20.0, 0.6, False),
        ("a5", "D1", "C3", "demo", "outbound", "2026-02-25", 45.0, np.nan, None),
        ("a6", "D1", None, "email", "inbound", "2026-03-01", np.nan, np.nan, None),
        ("a7", "D3", "C4", "meeting", "outbound", "2026-02-05", 30.0, np.nan, None),
        ("a8", "D3", "C4", "call", "inbound", "2026-02-25", 15.0, 0.5, True),
        ("a9", "D3", "C5", "email", "outbound", "2026-03-08", np.nan, np.nan, None),
    ]
    columns = ["activity_id", "deal_id", "contact_id", "type", "direction", "occurred_at", "duration_min",
               "customer_talk_ratio", "next_step_set"]
    data = frame(rows, columns, times=("occurred_at",))
    return data.astype({"next_step_set": "boolean"})


def make_export(drop: tuple[str, ...] = ()) -> Export:
    """The hand-checked 4-deal export; ``drop`` names optional tables to leave out (None)."""
    tables = {
        "deals": make_deals(),
        "stage_history": make_stage_history(),
        "field_history": make_field_history(),
        "contacts": make_contacts(),
        "activities": make_activities(),
    }
    return Export(**{name: None if name in drop else table for name, table in tables.items()})


def random_export(n_deals: int, seed: int = 0, start: str = "2025-01-01", span_days: int = 365,
                  activities_per_deal: float = 20.0) -> Export:
    """A consistent random export of ``n_deals`` deals (vectorised; not the product generator).

    Deals move forward through stages with occasional back-steps, close won/lost (some stay open),
    push their close dates and change amounts, and get contacts and activities while open.
    """
    rng = np.random.default_rng(seed)
    day = np.int64(86_400_000_000)
    t0 = pd.Timestamp(start, tz="UTC").value // 1000
    end = t0 + span_days * day
    ids = np.array([f"D{i:06d}" for i in range(n_deals)], dtype=object)
    created = t0 + (rng.random(n_deals) * span_days * 0.9 * day).astype(np.int64)
    cycle = (rng.gamma(2.0, 30.0, n_deals) * day).astype(np.int64) + day
    closes = created + cycle
    is_closed = closes < end
    won = rng.random(n_deals) < 0.4
    outcome = np.where(is_closed, np.where(won, "won", "lost"), "open")
    # Stage entries: k open-stage entries spread over the open life, then the closing entry.
    n_entries = rng.integers(1, 7, n_deals)
    deal_of_entry = np.repeat(np.arange(n_deals), n_entries)
    position = np.arange(len(deal_of_entry)) - np.repeat(np.cumsum(n_entries) - n_entries, n_entries)
    life = np.minimum(closes, end) - created
    entered = created[deal_of_entry] + (life[deal_of_entry] * position / n_entries[deal_of_entry]).astype(np.int64)
    step = np.where(rng.random(len(position)) < 0.15, -1, 1)
    stage_idx = np.clip(np.where(position == 0, 0, position + np.minimum(step, 0) * 2), 0, len(OPEN_STAGES) - 1)
    stage = np.array(OPEN_STAGES, dtype=object)[stage_idx]
    closing = np.flatnonzero(is_closed)
    stage_history = pd.DataFrame({
        "deal_id": np.concatenate([ids[deal_of_entry], ids[closing]]),
        "stage": np.concatenate([stage, outcome[closing].astype(object)]),
        "entered_at": _stamps(np.concatenate([entered, closes[closing]])),
    })
    last_open_stage = pd.Series(stage).groupby(deal_of_entry).last().to_numpy()
    current_stage = np.where(is_closed, outcome, last_open_stage)
    # Field history: 0-3 close-date changes and 0-1 amount change per deal, strictly inside the open life.
    n_close = rng.integers(0, 4, n_deals)
    deal_of_change = np.repeat(np.arange(n_deals), n_close)
    expected0 = created + cycle + (rng.normal(0, 10, n_deals) * day).astype(np.int64)
    moves = (rng.integers(-10, 30, len(deal_of_change)) * day).astype(np.int64)
    cum_moves = pd.Series(moves).groupby(deal_of_change).cumsum().to_numpy()
    new_close = expected0[deal_of_change] + cum_moves
    old_close = new_close - moves
    changed = created[deal_of_change] + (rng.random(len(deal_of_change)) * life[deal_of_change]).astype(np.int64)
    changed = changed[np.lexsort((changed, deal_of_change))]  # chronological within each deal
    final_close = expected0.copy()
    if len(deal_of_change):
        final_close[np.unique(deal_of_change)] = pd.Series(new_close).groupby(deal_of_change).last().to_numpy()
    amount0 = np.round(rng.lognormal(9, 1, n_deals), 2)
    has_amount_change = rng.random(n_deals) < 0.3
    amount_deals = np.flatnonzero(has_amount_change)
    amount1 = np.round(amount0[amount_deals] * rng.uniform(0.5, 1.5, len(amount_deals)), 2)
    amount_changed = created[amount_deals] + (rng.random(len(amount_deals)) * life[amount_deals]).astype(np.int64)
    current_amount = amount0.copy()
    current_amount[amount_deals] = amount1
    field_history = pd.DataFrame({
        "deal_id": np.concatenate([ids[deal_of_change], ids[amount_deals]]),
        "field": np.array(["expected_close_date"] * len(deal_of_change) + ["amount"] * len(amount_deals), dtype=object),
        "old_value": np.concatenate([_iso(old_close), amount0[amount_deals].astype(str)]),
        "new_value": np.concatenate([_iso(new_close), amount1.astype(str)]),
        "changed_at": _stamps(np.concatenate([changed, amount_changed])),
    })
    # Contacts: 0-5 per deal, added during the open life.
    n_contacts = rng.integers(0, 6, n_deals)
    deal_of_contact = np.repeat(np.arange(n_deals), n_contacts)
    contact_pos = np.arange(len(deal_of_contact)) - np.repeat(np.cumsum(n_contacts) - n_contacts, n_contacts)
    contact_ids = np.array([f"C{p}" for p in contact_pos], dtype=object)
    added = created[deal_of_contact] + (rng.random(len(deal_of_contact)) * life[deal_of_contact] * 0.5).astype(np.int64)
    seniority = np.array(SENIORITIES, dtype=object)[rng.integers(0, len(SENIORITIES), len(deal_of_contact))]
    seniority[rng.random(len(seniority)) < 0.1] = None
    contacts = pd.DataFrame({
        "deal_id": ids[deal_of_contact],
        "contact_id": contact_ids,
        "role": np.array(ROLES, dtype=object)[rng.integers(0, len(ROLES), len(deal_of_contact))],
        "seniority": seniority,
        "added_at": _stamps(added),
    })
    # Activities: Poisson per deal, during the open life; contact from the deal's contacts or none.
    n_acts = rng.poisson(activities_per_deal, n_deals)
    deal_of_act = np.repeat(np.arange(n_deals), n_acts)
    occurred = created[deal_of_act] + (rng.random(len(deal_of_act)) * life[deal_of_act]).astype(np.int64)
    pick = np.floor(rng.random(len(deal_of_act)) * n_contacts[deal_of_act]).astype(int)
    act_contact = np.where(n_contacts[deal_of_act] > 0, np.char.add("C", pick.astype(str)).astype(object), None)
    act_contact[rng.random(len(act_contact)) < 0.1] = None
    kind = np.array(ACTIVITY_TYPES, dtype=object)[rng.integers(0, len(ACTIVITY_TYPES), len(deal_of_act))]
    recorded = (kind == "call") & (rng.random(len(kind)) < 0.6)
    activities = pd.DataFrame({
        "activity_id": np.array([f"A{i}" for i in range(len(deal_of_act))], dtype=object),
        "deal_id": ids[deal_of_act],
        "contact_id": act_contact,
        "type": kind,
        "direction": np.where(rng.random(len(kind)) < 0.3, "inbound", "outbound").astype(object),
        "occurred_at": _stamps(occurred),
        "duration_min": np.round(rng.uniform(5, 60, len(kind)), 1),
        "customer_talk_ratio": np.where(recorded, np.round(rng.uniform(0.1, 0.9, len(kind)), 2), np.nan),
        "next_step_set": pd.array(np.where(recorded, rng.random(len(kind)) < 0.5, False), dtype="boolean"),
    })
    activities.loc[~recorded, "next_step_set"] = pd.NA
    deals = pd.DataFrame({
        "deal_id": ids,
        "account_id": np.array([f"A{i}" for i in rng.integers(0, max(n_deals // 3, 1), n_deals)], dtype=object),
        "owner_id": np.array([f"O{i}" for i in rng.integers(0, max(n_deals // 20, 2), n_deals)], dtype=object),
        "created_at": _stamps(created),
        "amount": current_amount,
        "deal_type": np.array(("new_business", "expansion", "renewal"), dtype=object)[rng.integers(0, 3, n_deals)],
        "lead_source": np.array(("web", "partner", "outbound", None), dtype=object)[rng.integers(0, 4, n_deals)],
        "segment": np.array(("smb", "mid", "ent"), dtype=object)[rng.integers(0, 3, n_deals)],
        "region": np.array(("emea", "amer", "apac"), dtype=object)[rng.integers(0, 3, n_deals)],
        "product": np.array(("core", "addon"), dtype=object)[rng.integers(0, 2, n_deals)],
        "stage": current_stage.astype(object),
        "expected_close_date": _stamps(final_close),
        "closed_at": _stamps(np.where(is_closed, closes, np.iinfo(np.int64).min)),
        "outcome": outcome.astype(object),
    })
    return Export(deals=deals, stage_history=stage_history, field_history=field_history, contacts=contacts,
                  activities=activities)


def _stamps(micros: np.ndarray) -> pd.Series:
    """int64 microseconds (int64 min = missing) as contract timestamps."""
    return pd.Series(pd.to_datetime(np.asarray(micros, dtype=np.int64), unit="us", utc=True), dtype=TIMESTAMP_DTYPE)


def _iso(micros: np.ndarray) -> np.ndarray:
    return np.asarray(pd.to_datetime(micros, unit="us", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"), dtype=object)
