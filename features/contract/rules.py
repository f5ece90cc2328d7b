"""Table and cross-table rules of the contract: required columns, unique keys, deal fields, events
before their deal existed, stage sequences, contacts of activities, field-history values.

pandera validates one frame at a time: these rules would be custom checks with the same pandas
bodies there, reported without the other table's value (the deal's created_at) or the first row of
a duplicate. Its unique-key check is as good at locating repeats and no faster on 3.4M activities
(1.3x ours), but costs ~1.4 ms on one deal's 47 rows against 8 us here (``bench/bench_contract.py``,
section D; the decision is written up in ``features.contract.check``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract.cells import NAT, TIMESTAMP_RANGE, Parsed, outside_timestamp_range, parse_times, to_float
from features.contract.hints import extra_column_hints, missing_column_hint
from features.contract.schema import (
    CLOSED_STAGES,
    OPEN_STAGES,
    TABLES,
    Table,
    context_columns,
)
from features.contract.violations import (
    LARGE_STRING,
    SMALL_COLUMN,
    Cells,
    Collector,
    show_names,
    show_value,
    shown_text,
)

# ---------------------------------------------------------------------------------------------
# Table and cross-table rules.


def check_columns(table: Table, frame: pd.DataFrame, out: Collector, notes: list[str]) -> list[str]:
    """Report required columns that are missing (expected vs found); return the usable columns."""
    found = [str(c) for c in frame.columns]
    missing = [c.name for c in table.columns if c.required and c.name not in found]
    if missing:
        expected = ", ".join(c.name for c in table.columns if c.required)
        out.add(
            table.name, ", ".join(missing), "missing_column", "whole table",
            f"required column{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}; "
            f"expected: {expected}; found: {show_names(found) or '(none)'}{missing_column_hint(table, found, missing)}",
        )
    extra = [c for c in found if c not in table.column_names]
    if extra and table.name == "deals":
        kept = set(context_columns(extra))
        extra = [c for c in extra if c not in kept]
    if extra:
        absent = [c.name for c in table.columns if not c.required and c.name not in found]
        likely = extra_column_hints(table, extra, absent) if absent else {}
        notes.append(f"{table.name}: extra columns ignored: " + show_names(
            extra, show=lambda c: f"{shown_text(c)} (probably {likely[c]}?)" if c in likely else shown_text(c)))
    return [c.name for c in table.columns if c.name in found]


def _codes(cells: pa.Array) -> tuple[np.ndarray, int]:
    """Hash codes of string cells (-1 where null) and the number of distinct values."""
    encoded = pc.dictionary_encode(cells)
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def _isin(objects: np.ndarray, values: Sequence[str]) -> np.ndarray:
    """Where an object array equals one of a few strings (None never does)."""
    found = np.zeros(len(objects), dtype=bool)
    for value in values:
        found |= objects == value
    return found


def check_unique_key(table: Table, frame: pd.DataFrame, parsed: dict[str, Parsed], out: Collector) -> None:
    """Report rows whose key repeats an earlier row's key (duplicate ids), naming the first row."""
    if not table.unique_key or any(k not in parsed for k in table.key):
        return
    n = len(frame)
    if n < 2:  # one row cannot repeat another
        return
    columns = [parsed[k] for k in table.key]
    if n <= SMALL_COLUMN:
        seen: dict[tuple, int] = {}
        repeats: dict[int, int] = {}
        for i, key in enumerate(zip(*(c.objects.tolist() for c in columns))):
            if None in key:
                continue
            first_seen = seen.setdefault(key, i)
            if first_seen != i:
                repeats[i] = first_seen
        if not repeats:
            return
        duplicated = np.zeros(n, dtype=bool)
        duplicated[list(repeats)] = True
        first = np.arange(n)
        first[list(repeats)] = list(repeats.values())
    else:
        if len(columns) == 1:
            cells = columns[0].strings
            if len(pc.unique(cells)) - (cells.null_count > 0) == n - cells.null_count:  # twice count_distinct's speed
                return
        combined = np.zeros(n, dtype=np.int64)
        complete = np.ones(n, dtype=bool)
        for c in columns:
            codes, size = _codes(c.strings)
            combined = combined * (size + 1) + codes
            complete &= codes >= 0
        keys = combined[complete]
        if len(pd.unique(keys)) == len(keys):  # a hash pass; the sort below only when a key repeats
            return
        _, first_index, inverse = np.unique(combined, return_index=True, return_inverse=True)
        first = first_index[inverse]
        duplicated = complete & (first != np.arange(n))
        if not duplicated.any():
            return
    cells = [Cells(c.objects) for c in columns]

    def reason(pos: np.ndarray) -> list[str]:
        return [
            f"duplicate {' / '.join(table.key)} "
            f"{' / '.join(show_value(c[p]) for c in cells)}; first seen at row {int(first[p]) + 1}"
            for p in pos
        ]

    out.add_rows(table, frame, ", ".join(table.key), "duplicate_key", duplicated, reason)


def _known(*columns: Parsed) -> np.ndarray:
    """Rows where every one of the parsed columns holds a value (neither missing nor invalid)."""
    known = ~(columns[0].missing | columns[0].invalid)
    for column in columns[1:]:
        known &= ~(column.missing | column.invalid)
    return known


def check_deals(frame: pd.DataFrame, parsed: dict[str, Parsed], out: Collector) -> None:
    """Deal-level rules: closed_at set iff won/lost, stage consistent with outcome, closed after created."""
    table = TABLES["deals"]
    if not {"outcome", "stage", "closed_at", "created_at"} <= parsed.keys():
        return
    outcome = parsed["outcome"].objects
    stage = parsed["stage"].objects
    closed = parsed["closed_at"]
    closed_at_set = ~closed.missing
    is_closed = _isin(outcome, CLOSED_STAGES)
    is_open = outcome == "open"
    out.add_rows(
        table, frame, "closed_at", "closed_at_missing", is_closed & closed.missing,
        lambda pos: [f"empty closed_at but outcome is {outcome[p]!r}; a won or lost deal needs closed_at" for p in pos],
    )
    out.add_rows(
        table, frame, "closed_at", "closed_at_set_on_open", is_open & closed_at_set,
        lambda pos: ["closed_at is set but outcome is 'open'; an open deal has no closed_at" for _ in pos],
    )
    known = _known(parsed["stage"], parsed["outcome"])
    open_stage = _isin(stage, OPEN_STAGES)
    mismatch = known & ((is_closed & (stage != outcome)) | (is_open & ~open_stage))
    out.add_rows(
        table, frame, "stage", "stage_outcome_mismatch", mismatch,
        lambda pos: [
            f"stage {stage[p]!r} does not match outcome {outcome[p]!r}; expected "
            + (f"{outcome[p]!r}" if outcome[p] != "open" else f"one of {', '.join(OPEN_STAGES)}")
            for p in pos
        ],
    )
    created = parsed["created_at"]
    before = (closed.micros != NAT) & (created.micros != NAT) & (closed.micros < created.micros)
    closed_shown = Cells(closed.array)
    created_shown = Cells(created.array)
    out.add_rows(
        table, frame, "closed_at", "closed_before_created", before,
        lambda pos: [
            f"closed_at {show_value(closed_shown[p])} is before created_at {show_value(created_shown[p])}" for p in pos
        ],
    )


@dataclass(frozen=True)
class _DealIndex:
    """Deals by id; ``position`` finds each event's deal row (the first row with that id wins;
    duplicates are reported separately)."""

    ids: Parsed
    created_at: np.ndarray | None  # per deals row, int64 microseconds
    stage: np.ndarray | None  # per deals row, canonical stage or None

    def position(self, deal_id: Parsed) -> np.ndarray:
        """Row in deals of each event's deal, -1 where the id is missing or not in deals."""
        if len(deal_id.missing) <= SMALL_COLUMN and len(self.ids.missing) <= SMALL_COLUMN:
            rows: dict[str, int] = {}
            for i, value in enumerate(self.ids.objects.tolist()):
                if value is not None:
                    rows.setdefault(value, i)
            return np.fromiter((rows.get(v, -1) for v in deal_id.objects.tolist()), np.int64, len(deal_id.missing))
        found = pc.index_in(deal_id.strings, value_set=self.ids.strings, skip_nulls=True)
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _utc(micros: int) -> pd.Timestamp:
    return pd.Timestamp(np.datetime64(int(micros), "us")).tz_localize("UTC")


def index_deals(parsed: dict[str, Parsed]) -> _DealIndex | None:
    if "deal_id" not in parsed:
        return None
    created = parsed["created_at"].micros if "created_at" in parsed else None
    stage = parsed["stage"].objects if "stage" in parsed else None
    return _DealIndex(parsed["deal_id"], created, stage)


def check_events(
    table: Table, frame: pd.DataFrame, parsed: dict[str, Parsed], deals: _DealIndex, out: Collector
) -> np.ndarray | None:
    """Every event's deal exists and no event precedes its deal's created_at; returns deal positions."""
    if "deal_id" not in parsed:
        return None
    deal_id = parsed["deal_id"]
    where = deals.position(deal_id)
    unknown = (where < 0) & ~deal_id.missing
    if unknown.any():
        ids_shown = Cells(deal_id.objects)
        out.add_rows(
            table, frame, "deal_id", "unknown_deal", unknown,
            lambda pos: [f"deal_id {show_value(ids_shown[p])} is not in deals" for p in pos],
        )
    time_column = table.time_column
    if time_column in parsed and deals.created_at is not None and len(deals.created_at):
        created = deals.created_at[np.clip(where, 0, None)]
        event_time = parsed[time_column].micros
        early = (where >= 0) & (created != NAT) & (event_time != NAT) & (event_time < created)
        out.add_rows(
            table, frame, time_column, "before_created", early,
            lambda pos: [
                f"{time_column} {show_value(_utc(event_time[p]))} is before the deal's created_at "
                f"{show_value(_utc(created[p]))}"
                for p in pos
            ],
        )
    return where


def check_stage_history(
    frame: pd.DataFrame, parsed: dict[str, Parsed], deals: _DealIndex, where: np.ndarray, out: Collector
) -> None:
    """Per deal: no two entries at the same time, the last is the current stage, nothing after won/lost.

    Entries are ordered by (deal, entered_at, row) with numpy, so one deal and a whole export take
    the same path.
    """
    table = TABLES["stage_history"]
    if not {"deal_id", "stage", "entered_at"} <= parsed.keys():
        return
    usable = np.flatnonzero((where >= 0) & _known(parsed["stage"], parsed["entered_at"]))
    if len(usable) == 0:
        return
    stage = parsed["stage"].objects
    time = parsed["entered_at"].micros
    rows = usable[np.lexsort((usable, time[usable], where[usable]))]  # sorted row positions
    deal, at = where[rows], time[rows]
    n = len(frame)
    new_deal = np.r_[True, deal[1:] != deal[:-1]]
    new_time = new_deal | np.r_[True, at[1:] != at[:-1]]

    if not new_time.all():
        run_start = np.maximum.accumulate(np.where(new_time, np.arange(len(rows)), 0))
        mask = np.zeros(n, dtype=bool)
        first_of = np.zeros(n, dtype=np.int64)
        mask[rows[~new_time]] = True
        first_of[rows] = rows[run_start]
        out.add_rows(
            table, frame, "entered_at", "same_time", mask,
            lambda pos: [
                f"two stage entries of this deal at the same time (also row {first_of[p] + 1}); the order is ambiguous"
                for p in pos
            ],
        )

    group_start = np.flatnonzero(new_deal)
    group = np.cumsum(new_deal) - 1
    terminal = _isin(stage[rows], CLOSED_STAGES)
    if terminal.any():
        never = np.iinfo(np.int64).max
        first_terminal = np.minimum.reduceat(np.where(terminal, at, never), group_start)[group]
        after = (first_terminal != never) & (at > first_terminal)
        if after.any():
            mask = np.zeros(n, dtype=bool)
            terminal_at = np.zeros(n, dtype=np.int64)
            mask[rows[after]] = True
            terminal_at[rows] = first_terminal
            out.add_rows(
                table, frame, "entered_at", "after_terminal", mask,
                lambda pos: [
                    f"stage entry after the deal was closed (won/lost entered at "
                    f"{show_value(pd.Timestamp(terminal_at[p], unit='us', tz='UTC'))})"
                    for p in pos
                ],
            )

    if deals.stage is not None:
        last = rows[np.r_[group_start[1:] - 1, len(rows) - 1]]
        current = deals.stage[where[last]]
        differs = pd.notna(current) & (stage[last] != current)
        if differs.any():
            mask = np.zeros(n, dtype=bool)
            current_of = np.empty(n, dtype=object)
            mask[last[differs]] = True
            current_of[last] = current
            out.add_rows(
                table, frame, "stage", "last_stage_mismatch", mask,
                lambda pos: [
                    f"the deal's last stage entry is {stage[p]!r} but its current stage in deals is {current_of[p]!r}"
                    for p in pos
                ],
            )


def _pairs_in(first: pa.Array, second: pa.Array, first_in: pa.Array, second_in: pa.Array) -> np.ndarray:
    """Whether each (first, second) pair occurs among the (first_in, second_in) pairs; hash-based."""
    a_codes, a_size = _codes(pa.concat_arrays([first, first_in]))
    b_codes, b_size = _codes(pa.concat_arrays([second, second_in]))
    pairs = a_codes * (b_size + 1) + b_codes
    valid = (a_codes >= 0) & (b_codes >= 0)
    n = len(first)
    return np.isin(pairs[:n], pairs[n:][valid[n:]]) & valid[:n]


def _contact_pairs_in(
    contact_id: Parsed, deal_row: np.ndarray, contacts_contact_id: Parsed, contacts_deal_row: np.ndarray
) -> np.ndarray:
    """Whether each (deal row, contact_id) pair occurs among the contacts' pairs; hash-based.

    Deal rows stand for deal ids (two ids are equal exactly when they find the same first row of
    deals), so only the contact ids are encoded. The caller passes rows where every deal is known.
    """
    codes, size = _codes(pa.concat_arrays([contact_id.strings, contacts_contact_id.strings]))
    n = len(deal_row)
    pairs = deal_row * (size + 1) + codes[:n]
    contact_codes = codes[n:]
    valid = (contacts_deal_row >= 0) & (contact_codes >= 0)
    on_deal = contacts_deal_row[valid] * (size + 1) + contact_codes[valid]
    return pc.is_in(pa.array(pairs), value_set=pa.array(on_deal)).to_numpy(zero_copy_only=False)


def check_activity_contacts(
    frame: pd.DataFrame, parsed: dict[str, Parsed], contacts: dict[str, Parsed] | None, out: Collector,
    deal_rows: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
) -> None:
    """An activity's contact_id, when set, must be a contact of the same deal.

    ``deal_rows``: the row in deals of each activity's and each contact's deal (``check_events``),
    when known; pairs are then matched on deal rows instead of deal id text.
    """
    if contacts is None or not {"deal_id", "contact_id"} <= contacts.keys():
        return
    if not {"deal_id", "contact_id"} <= parsed.keys():
        return
    contact_id = parsed["contact_id"]
    deal_id = parsed["deal_id"]
    known = ~(contact_id.missing | deal_id.missing)
    if not known.any():
        return
    if len(known) <= SMALL_COLUMN and len(contacts["deal_id"].missing) <= SMALL_COLUMN:
        on_deal = set(zip(contacts["deal_id"].objects.tolist(), contacts["contact_id"].objects.tolist()))
        pairs = zip(deal_id.objects.tolist(), contact_id.objects.tolist())
        not_on_deal = known & np.fromiter((pair not in on_deal for pair in pairs), bool, len(known))
    elif deal_rows[0] is not None and deal_rows[1] is not None and (deal_rows[0][known] >= 0).all():
        not_on_deal = known & ~_contact_pairs_in(contact_id, deal_rows[0], contacts["contact_id"], deal_rows[1])
    else:  # an activity of a deal not in deals: its pair is matched on the id text
        not_on_deal = known & ~_pairs_in(
            deal_id.strings, contact_id.strings, contacts["deal_id"].strings, contacts["contact_id"].strings
        )
    if not not_on_deal.any():
        return
    contact_shown = Cells(contact_id.objects)
    deal_shown = Cells(deal_id.objects)
    out.add_rows(
        TABLES["activities"], frame, "contact_id", "contact_not_on_deal", not_on_deal,
        lambda pos: [
            f"contact_id {show_value(contact_shown[p])} is not a contact of deal {show_value(deal_shown[p])} in contacts"
            for p in pos
        ],
    )


def check_field_values(frame: pd.DataFrame, parsed: dict[str, Parsed], out: Collector) -> None:
    """old_value / new_value parse as the tracked field's type: dates for the close date, numbers for amount."""
    table = TABLES["field_history"]
    if "field" not in parsed:
        return
    tracked = parsed["field"].objects
    for column in ("old_value", "new_value"):
        if column not in parsed:
            continue
        values = parsed[column]
        present = ~values.missing
        is_date = present & (tracked == "expected_close_date")
        is_amount = present & (tracked == "amount")
        if not (is_date.any() or is_amount.any()):
            continue
        cells = values.objects  # one conversion; the subsets below are numpy takes
        shown = Cells(cells)
        if is_date.any():
            micros, _, malformed, not_utc = parse_times(pa.array(cells[is_date], type=LARGE_STRING))
            bad = np.zeros(len(cells), dtype=bool)
            bad[np.flatnonzero(is_date)] = malformed | not_utc
            out.add_rows(
                table, frame, column, "bad_field_value", bad,
                lambda pos: [
                    f"expected_close_date value {show_value(shown[p])} is not an ISO-8601 UTC date" for p in pos
                ],
            )
            outside = np.zeros(len(cells), dtype=bool)
            outside[np.flatnonzero(is_date)] = outside_timestamp_range(micros) & ~(malformed | not_utc)
            out.add_rows(
                table, frame, column, "bad_field_value", outside,
                lambda pos: [
                    f"expected_close_date value {show_value(shown[p])} is outside the supported range {TIMESTAMP_RANGE}"
                    for p in pos
                ],
            )
        if is_amount.any():
            stripped = pc.utf8_trim_whitespace(pa.array(cells[is_amount], type=LARGE_STRING))  # as .str.strip()
            numbers = to_float(stripped)
            bad = np.zeros(len(cells), dtype=bool)
            bad[np.flatnonzero(is_amount)] = ~np.isfinite(numbers)
            out.add_rows(
                table, frame, column, "bad_field_value", bad,
                lambda pos: [f"amount value {show_value(shown[p])} is not a finite number" for p in pos],
            )


