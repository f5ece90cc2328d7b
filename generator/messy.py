"""Realistic dirt for robustness tests, planted into a generated export and listed one by one."""

from __future__ import annotations

import numpy as np
import pandas as pd

PLANTED_COLUMNS = ["table", "column", "row", "row_key", "kind", "value"]
KEY_COLUMN = {
    "deals": "deal_id",
    "stage_history": "deal_id",
    "field_history": "deal_id",
    "contacts": "contact_id",
    "activities": "activity_id",
}


def shift_to_offset(timestamp: str, hours: int) -> str:
    """The same instant written in local time with a non-UTC offset, e.g. ...T12:15:00+02:00."""
    local = pd.Timestamp(timestamp).tz_convert(f"Etc/GMT{-hours:+d}")
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:00"


def plant_problems(
    tables: dict[str, pd.DataFrame], rng: np.random.Generator, per_kind: int = 2
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Return copies of ``tables`` with planted problems, and one row per problem planted.

    Kinds: duplicate ids, unknown stage names, missing values in required columns, non-UTC
    offsets, malformed dates, events before their deal's creation. Each problem sits on its own
    row so that a checker can be held to report every one of them; ``row`` is the row number as
    every message of the contract counts it (data rows from 1, the header not counted: the
    ``row 17`` of ``dealrisk validate``, the ``activities[row 17]`` of ``POST /score/tables``) and
    ``row_key`` the value of the table's key column there.
    """
    out = {name: frame.copy() for name, frame in tables.items()}
    records: list[dict] = []
    used: dict[str, set[int]] = {name: set() for name in out}
    created = dict(zip(tables["deals"]["deal_id"], tables["deals"]["created_at"]))

    def pick_rows(table: str, k: int, allowed: np.ndarray | None = None) -> list[int]:
        frame = out[table]
        candidates = np.arange(len(frame)) if allowed is None else allowed
        candidates = np.array([i for i in candidates.tolist() if i not in used[table]])
        if len(candidates) == 0:
            return []
        chosen = sorted(rng.choice(candidates, size=min(k, len(candidates)), replace=False).tolist())
        used[table].update(chosen)
        return chosen

    def plant(table: str, column: str, row: int, kind: str, value) -> None:
        frame = out[table]
        values = frame[column].astype(object).to_numpy(copy=True)
        values[row] = value
        out[table] = frame.assign(**{column: pd.Series(values, index=frame.index, dtype=object)})
        records.append(
            {"table": table, "column": column, "row": row + 1, "row_key": str(out[table].iloc[row][KEY_COLUMN[table]]),
             "kind": kind, "value": "" if value is None else str(value)}
        )

    # Unknown stage names: a CRM status nobody mapped.
    for row in pick_rows("deals", per_kind):
        plant("deals", "stage", row, "unknown_stage", "Closed Won?")
    history = out["stage_history"]
    not_last = np.flatnonzero(history["deal_id"].to_numpy() == np.roll(history["deal_id"].to_numpy(), -1))
    for row in pick_rows("stage_history", per_kind, not_last):
        plant("stage_history", "stage", row, "unknown_stage", "Stalled")
    # Missing values in required columns.
    for row in pick_rows("deals", per_kind):
        plant("deals", "account_id", row, "missing_value", None)
    for row in pick_rows("activities", per_kind):
        plant("activities", "type", row, "missing_value", None)
    for row in pick_rows("contacts", per_kind):
        plant("contacts", "role", row, "missing_value", None)
    # Timestamps with a non-UTC offset (same instant, local time): the contract requires UTC.
    for row in pick_rows("activities", per_kind):
        plant("activities", "occurred_at", row, "non_utc_timestamp", shift_to_offset(out["activities"].iloc[row]["occurred_at"], 2))
    for row in pick_rows("contacts", per_kind):
        plant("contacts", "added_at", row, "non_utc_timestamp", shift_to_offset(out["contacts"].iloc[row]["added_at"], -5))
    # Malformed dates.
    for row, bad in zip(pick_rows("field_history", per_kind), ["2025-02-30T10:00:00Z", "31/12/2025 09:00"]):
        plant("field_history", "changed_at", row, "malformed_timestamp", bad)
    for row, bad in zip(pick_rows("deals", per_kind), ["2025-13-01T00:00:00Z", "next quarter"]):
        plant("deals", "expected_close_date", row, "malformed_timestamp", bad)
    # Events before their deal was created.
    for table, column in (("activities", "occurred_at"), ("contacts", "added_at")):
        for row in pick_rows(table, per_kind):
            deal_created = pd.Timestamp(created[out[table].iloc[row]["deal_id"]])
            early = (deal_created - pd.Timedelta(days=int(rng.integers(2, 30)))).strftime("%Y-%m-%dT%H:%M:%SZ")
            plant(table, column, row, "before_deal_created", early)
    # Duplicate ids: a deal exported twice, an activity id reused.
    deals = out["deals"]
    for row in pick_rows("deals", per_kind):
        out["deals"] = pd.concat([out["deals"], deals.iloc[[row]]], ignore_index=True)
        new_row = len(out["deals"]) - 1
        used["deals"].add(new_row)
        records.append({"table": "deals", "column": "deal_id", "row": new_row + 1,
                        "row_key": str(deals.iloc[row]["deal_id"]), "kind": "duplicate_id", "value": str(deals.iloc[row]["deal_id"])})
    activities = out["activities"]
    rows = pick_rows("activities", 2 * per_kind)
    for source, target in zip(rows[::2], rows[1::2]):
        plant("activities", "activity_id", target, "duplicate_id", activities.iloc[source]["activity_id"])
    planted = pd.DataFrame.from_records(records, columns=PLANTED_COLUMNS)
    return out, planted
