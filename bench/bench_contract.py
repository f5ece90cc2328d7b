"""Benchmark the data contract check side by side with pandera: what each finds, where, how fast.

The hand-written checker (``features.contract.check.check_tables``) and pandera ``DataFrameSchema``s
written as faithfully as pandera allows (dtypes, required and nullable columns, allowed values
after the name mapping as a ``Parser``, ranges, unique keys, the timestamp text rules, the
cross-column and cross-table rules as custom DataFrame checks) run on the same tables:

1. a messy generated export (``generator.export.generate_export(..., messy=True)``, written as CSV
   and read back as text, as ``dealrisk validate`` sees it) with one more planted problem for each
   rule the generator does not plant: which violations each finds, and whether each names the
   table, column, row and reason (``Violation(table, column, row, reason, rule)``);
2. a clean generated export of ``--deals`` deals: the whole check, and each per-column concern
   (allowed values, ranges, unique keys, timestamps) alone;
3. one deal's tables (text, and the JSON request's Python objects) and ``--request-deals`` deals:
   the serving path, called on every request.

    .venv/bin/python bench/bench_contract.py                     # 100k deals, ~2-3 minutes on 2 cores
    .venv/bin/python bench/bench_contract.py --deals 20000       # quicker
    .venv/bin/python bench/bench_contract.py --data data/big/export   # time an export folder instead

CPU seconds are the best of the repeats (steadier than wall time on a shared machine); the
ratio is pandera / ours in the same run.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract.cells import frame_columns, parse_column
from features.contract.check import check_tables
from features.contract.io import read_raw_tables, write_tables
from features.contract.mapping import NameMapping, load_mapping, map_series
from features.contract.rules import check_unique_key
from features.contract.schema import (
    CLOSED_STAGES,
    EVENT_TABLES,
    OPEN_STAGES,
    OUTCOMES,
    STAGES,
    TABLES,
    Table,
)
from features.contract.violations import (
    FALSE_WORDS,
    OFFSET_PATTERN,
    TRUE_WORDS,
    ZERO_OFFSET_PATTERN,
    Collector,
    Violation,
)
from generator.export import generate_export

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the shared request-shaped tables live with the test factories
    sys.path.insert(0, str(ROOT))
from tests.factories import as_request_objects

# Imported here, timed: what pandera adds to the start of a process that already has pandas.
_t0 = time.perf_counter()
import pandera
import pandera.pandas as pa
from pandera.errors import SchemaErrors

PANDERA_IMPORT_S = time.perf_counter() - _t0

# ---------------------------------------------------------------------------------------------
# The contract as pandera schemas. Everything pandera offers is used as it is (dtype coercion,
# nullable, isin, ge/le, unique with report_duplicates); what it has no check for is a custom
# Check whose body is plain pandas, written here. Checks are named "<rule>" (column checks) or
# "<column>:<rule>" (DataFrame checks, which pandera reports once per column of a failing row).


def _blank_as_missing(s: pd.Series) -> pd.Series:
    """Text cells with blank ones missing; objects (a JSON request) as ``str`` first."""
    text = s.astype("str")
    text = text.str.strip()
    return text.where(text != "")


def _times(s: pd.Series) -> pd.Series:
    """ISO-8601 text as UTC timestamps, NaT where it does not parse."""
    return pd.to_datetime(s, format="ISO8601", utc=True, errors="coerce")


def _iso_parses(s: pd.Series) -> pd.Series:
    return _times(s).notna()


def _utc_offset(s: pd.Series) -> pd.Series:
    with_offset = s.str.contains(OFFSET_PATTERN, regex=True)
    return ~with_offset | s.str.contains(ZERO_OFFSET_PATTERN, regex=True)


class PanderaContract:
    """One pandera schema per contract table; cross-table checks read ``context``, set per call.

    Building the schemas once and resetting the context for each set of tables is the cheapest
    way to run them per request (building a schema costs more than validating a one-deal table).
    """

    def __init__(self, mapping: NameMapping) -> None:
        self.mapping = mapping
        self.context: dict[str, object] = {}
        self.schemas = {name: self._schema(table) for name, table in TABLES.items()}

    # -- columns ------------------------------------------------------------------------------
    def _column(self, table: Table, name: str) -> pa.Column:
        column = table.column(name)
        common = {"nullable": column.nullable, "required": column.required, "name": name}
        if column.kind in ("id", "text"):
            return pa.Column(str, coerce=True, parsers=pa.Parser(_blank_as_missing), **common)
        if column.kind == "choice":
            section = self.mapping.for_column(table.name, name)
            names = self.mapping.section(section) if section else {a: a for a in column.allowed}
            return pa.Column(
                str, coerce=True, parsers=pa.Parser(lambda s: map_series(_blank_as_missing(s), names)),
                checks=pa.Check.isin(column.allowed), **common,
            )
        if column.kind == "timestamp":
            return pa.Column(
                str, coerce=True, parsers=pa.Parser(_blank_as_missing),
                checks=[pa.Check(_iso_parses, error="bad_timestamp"), pa.Check(_utc_offset, error="not_utc")],
                **common,
            )
        if column.kind == "number":
            checks = [pa.Check(np.isfinite, error="bad_number")]
            if column.min_value is not None:
                checks.append(pa.Check.ge(column.min_value))
            if column.max_value is not None:
                checks.append(pa.Check.le(column.max_value))
            return pa.Column(float, coerce=True, checks=checks, **common)
        if column.kind == "flag":
            return pa.Column(
                str, coerce=True, parsers=pa.Parser(lambda s: _blank_as_missing(s).str.lower()),
                checks=pa.Check.isin(TRUE_WORDS + FALSE_WORDS), **common,
            )
        raise ValueError(column.kind)

    def _schema(self, table: Table) -> pa.DataFrameSchema:
        checks = []
        if table.name == "deals":
            checks = [self._wide("closed_at", "closed_at_missing", self._closed_at_missing),
                      self._wide("closed_at", "closed_at_set_on_open", self._closed_at_set_on_open),
                      self._wide("stage", "stage_outcome_mismatch", self._stage_outcome_mismatch),
                      self._wide("closed_at", "closed_before_created", self._closed_before_created)]
        if table.name in EVENT_TABLES:
            checks += [self._wide("deal_id", "unknown_deal", self._unknown_deal),
                       self._wide(table.time_column, "before_created", self._before_created(table.time_column))]
        if table.name == "stage_history":
            checks += [self._wide("entered_at", "same_time", self._same_time),
                       self._wide("entered_at", "after_terminal", self._after_terminal),
                       self._wide("stage", "last_stage_mismatch", self._last_stage_mismatch)]
        if table.name == "activities":
            checks.append(self._wide("contact_id", "contact_not_on_deal", self._contact_not_on_deal))
        if table.name == "field_history":
            checks += [self._wide(c, "bad_field_value", self._field_value(c)) for c in ("old_value", "new_value")]
        return pa.DataFrameSchema(
            {c.name: self._column(table, c.name) for c in table.columns},
            checks=checks, name=table.name,
            unique=list(table.key) if table.unique_key else None, report_duplicates="exclude_first",
        )

    @staticmethod
    def _wide(column: str, rule: str, fn: Callable[[pd.DataFrame], pd.Series]) -> pa.Check:
        def check(frame: pd.DataFrame) -> pd.Series:
            try:
                return fn(frame)
            except KeyError:  # a column it reads is missing: reported as missing_column already
                return pd.Series(True, index=frame.index)

        return pa.Check(check, error=f"{column}:{rule}")

    # -- cross-table context --------------------------------------------------------------------
    def set_context(self, raw: dict[str, pd.DataFrame]) -> None:
        """What the cross-table checks need from deals and contacts, from this call's tables."""
        deals = raw.get("deals")
        self.context = {"created": None, "stage": None, "pairs": None}
        if deals is not None and "deal_id" in deals:
            first = deals.drop_duplicates("deal_id")
            ids = _blank_as_missing(first["deal_id"])
            self.context["ids"] = ids
            if "created_at" in first:
                self.context["created"] = pd.Series(_times(_blank_as_missing(first["created_at"])).to_numpy(),
                                                    index=ids)
            if "stage" in first:
                stage = map_series(_blank_as_missing(first["stage"]), self.mapping.section("stage"))
                self.context["stage"] = pd.Series(stage.where(stage.isin(STAGES)).to_numpy(), index=ids)
        contacts = raw.get("contacts")
        if contacts is not None and {"deal_id", "contact_id"} <= set(contacts.columns):
            self.context["pairs"] = pd.MultiIndex.from_arrays(
                [_blank_as_missing(contacts["deal_id"]), _blank_as_missing(contacts["contact_id"])]
            )

    # -- the rules ------------------------------------------------------------------------------
    @staticmethod
    def _closed_at_missing(d: pd.DataFrame) -> pd.Series:
        return ~(d["outcome"].isin(CLOSED_STAGES) & d["closed_at"].isna())

    @staticmethod
    def _closed_at_set_on_open(d: pd.DataFrame) -> pd.Series:
        return ~((d["outcome"] == "open") & d["closed_at"].notna())

    @staticmethod
    def _stage_outcome_mismatch(d: pd.DataFrame) -> pd.Series:
        stage, outcome = d["stage"], d["outcome"]
        known = stage.isin(STAGES) & outcome.isin(OUTCOMES)
        closed = outcome.isin(CLOSED_STAGES)
        return ~(known & ((closed & (stage != outcome)) | ((outcome == "open") & ~stage.isin(OPEN_STAGES))))

    @staticmethod
    def _closed_before_created(d: pd.DataFrame) -> pd.Series:
        return ~(_times(d["closed_at"]) < _times(d["created_at"])).fillna(False)

    def _unknown_deal(self, d: pd.DataFrame) -> pd.Series:
        ids = self.context.get("ids")
        if ids is None:  # no deals to look in: ours skips the rule too
            return pd.Series(True, index=d.index)
        return d["deal_id"].isna() | d["deal_id"].isin(ids)

    def _before_created(self, time_column: str) -> Callable[[pd.DataFrame], pd.Series]:
        def check(d: pd.DataFrame) -> pd.Series:
            created = self.context.get("created")
            if created is None:
                return pd.Series(True, index=d.index)
            deal_created = d["deal_id"].map(created)
            return ~(_times(d[time_column]) < deal_created).fillna(False)

        return check

    def _usable_history(self, d: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        ids = self.context.get("ids")
        at = _times(d["entered_at"])
        known_deal = d["deal_id"].isin(ids) if ids is not None else pd.Series(False, index=d.index)
        return known_deal & d["stage"].isin(STAGES) & at.notna(), at

    def _same_time(self, d: pd.DataFrame) -> pd.Series:
        usable, at = self._usable_history(d)
        repeat = pd.DataFrame({"deal": d["deal_id"], "at": at})[usable].duplicated(keep="first")
        return ~repeat.reindex(d.index, fill_value=False)

    def _after_terminal(self, d: pd.DataFrame) -> pd.Series:
        usable, at = self._usable_history(d)
        terminal = usable & d["stage"].isin(CLOSED_STAGES)
        first_terminal = at.where(terminal).groupby(d["deal_id"]).transform("min")
        return ~(usable & (at > first_terminal)).fillna(False)

    def _last_stage_mismatch(self, d: pd.DataFrame) -> pd.Series:
        current = self.context.get("stage")
        if current is None:
            return pd.Series(True, index=d.index)
        usable, at = self._usable_history(d)
        rows = pd.DataFrame({"deal": d["deal_id"], "at": at, "row": np.arange(len(d))})[usable]
        last = rows.sort_values(["deal", "at", "row"]).drop_duplicates("deal", keep="last").index
        deal_stage = d["deal_id"].map(current)
        bad = pd.Series(False, index=d.index)
        bad[last] = deal_stage[last].notna() & (d["stage"][last] != deal_stage[last])
        return ~bad

    def _contact_not_on_deal(self, d: pd.DataFrame) -> pd.Series:
        pairs = self.context.get("pairs")
        if pairs is None:
            return pd.Series(True, index=d.index)
        known = d["contact_id"].notna() & d["deal_id"].notna()
        on_deal = pd.MultiIndex.from_arrays([d["deal_id"], d["contact_id"]]).isin(pairs)
        return pd.Series(~known.to_numpy() | on_deal, index=d.index)

    @staticmethod
    def _field_value(column: str) -> Callable[[pd.DataFrame], pd.Series]:
        def check(d: pd.DataFrame) -> pd.Series:
            values = d[column]
            present = values.notna()
            is_date = present & (d["field"] == "expected_close_date")
            is_amount = present & (d["field"] == "amount")
            bad_date = is_date & ~(_iso_parses(values) & _utc_offset(values).fillna(True))
            amounts = pd.to_numeric(values.where(is_amount), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad_amount = is_amount & ~np.isfinite(amounts)
            return ~(bad_date | bad_amount)

        return check

    # -- running --------------------------------------------------------------------------------
    def check(self, raw: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """Validate every table lazily; return pandera's failure cases, one frame, with the table."""
        self.set_context(raw)
        found = []
        if "deals" not in raw:  # pandera validates frames, not a set of them: hand-written here too
            found.append(pd.DataFrame({"table": ["deals"], "column": ["-"], "check": ["missing_table"],
                                       "failure_case": ["deals"], "index": [None]}))
        for name, frame in raw.items():
            if name not in self.schemas:
                continue
            try:
                self.schemas[name].validate(frame, lazy=True)
            except SchemaErrors as errors:
                found.append(errors.failure_cases.assign(table=name))
        if not found:
            return pd.DataFrame(columns=["table", "column", "check", "failure_case", "index"])
        return pd.concat(found, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# pandera's failure cases as (table, column, row, rule, message), the shape ours reports.

_BUILT_IN_RULES = (
    ("column_in_dataframe", "missing_column"), ("not_nullable", "empty"), ("field_uniqueness", "duplicate_key"),
    ("multiple_fields_uniqueness", "duplicate_key"), ("coerce_dtype('float64')", "bad_number"),
    ("greater_than_or_equal_to", "below_min"), ("less_than_or_equal_to", "above_max"),
)


def pandera_violations(failures: pd.DataFrame) -> list[tuple[str, str, int | None, str, str]]:
    """(table, column, row from 1 or None, rule, pandera's own message), deduplicated.

    A DataFrame check is reported by pandera once per non-missing cell of each failing row (a
    missing cell, such as the empty ``closed_at`` of ``closed_at_missing``, is not listed); the
    row is kept once, under the column the check's name points at. ``dtype(...)`` lines repeat a
    failed coercion.
    """
    seen: set[tuple] = set()
    out = []
    own_cell = failures["column"].astype("str") == failures["check"].astype("str").str.split(":").str[0]
    failures = failures.assign(own_cell=own_cell).sort_values("own_cell", ascending=False, kind="stable")
    for table, column, check, case, index in failures[["table", "column", "check", "failure_case", "index"]].itertuples(
            index=False):
        column = "-" if pd.isna(column) else str(column)
        if check.startswith("dtype("):
            continue
        if ":" in check and not check.startswith(("isin", "coerce")):
            column, rule = check.split(":", 1)
        elif check == "missing_table":
            rule = "missing_table"
        elif check.startswith("isin("):
            rule = "bad_flag" if TABLES[table].column(column).kind == "flag" else "unknown_value"
        elif check in ("bad_timestamp", "not_utc", "bad_number"):
            rule = check
        else:
            rule = next((ours for prefix, ours in _BUILT_IN_RULES if check.startswith(prefix)), f"other: {check}")
        if rule == "missing_column":
            column = str(case)
        if rule == "duplicate_key":
            column = ", ".join(TABLES[table].key)
        row = None if index is None or pd.isna(index) else int(index) + 1
        key = (table, column, row, rule)
        if key in seen:
            continue
        seen.add(key)
        out.append((table, column, row, rule, f"{check} failed: {case!r}" if row else f"{check}: {case}"))
    return out


_ROW = re.compile(r"^row (\d+)")


def our_violations(violations: list[Violation]) -> list[tuple[str, str, int | None, str, str]]:
    """Ours in the same shape: (table, column, row from 1 or None, rule, our message with row key)."""
    out = []
    for v in violations:
        match = _ROW.match(v.row)
        out.append((v.table, v.column, int(match.group(1)) if match else None, v.rule, f"{v.row}: {v.reason}"))
    return out


# ---------------------------------------------------------------------------------------------
# Planting: one problem more for each rule the generator does not plant, on rows nothing else uses.


# What each of the generator's planted kinds breaks, as our rule codes.
GENERATOR_KINDS = {
    "unknown_stage": "unknown_value", "missing_value": "empty", "non_utc_timestamp": "not_utc",
    "malformed_timestamp": "bad_timestamp", "before_deal_created": "before_created", "duplicate_id": "duplicate_key",
}


def plant_rule_problems(
    raw: dict[str, pd.DataFrame], avoid: pd.DataFrame, seed: int
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Text tables with one more problem for each rule ``generator.messy`` does not plant.

    Returns the tables and (table, column, row, rule): where each plant must be reported (0-based
    row; for a stage entry made won/lost too early, the entry after it).
    """
    rng = np.random.default_rng(seed)
    out = {name: frame.copy() for name, frame in raw.items()}
    used = {name: set(avoid.loc[avoid["table"] == name, "row"].tolist()) for name in out}
    records: list[tuple[str, str, int, str]] = []

    def pick(table: str, mask: np.ndarray) -> int:
        candidates = [i for i in np.flatnonzero(mask).tolist() if i not in used[table]]
        row = int(rng.choice(candidates))
        used[table].add(row)
        return row

    def put(table: str, mask: np.ndarray, column: str, value: object, rule: str,
            value_from: Callable[[int], object] | None = None, reported: tuple[str, int] | None = None) -> None:
        row = pick(table, mask)
        out[table].loc[row, column] = value_from(row) if value_from else value
        where_column, shift = reported or (column, 0)
        records.append((table, where_column, row + shift, rule))

    deals, activities, history, fields = out["deals"], out["activities"], out["stage_history"], out["field_history"]
    won = (deals["outcome"] == "won").to_numpy()
    open_ = (deals["outcome"] == "open").to_numpy()
    everywhere = np.ones(len(deals), dtype=bool)
    put("deals", everywhere, "amount", "12,5", "bad_number")  # a decimal comma
    put("deals", everywhere, "amount", "-300", "below_min")
    put("deals", everywhere, "amount", "inf", "bad_number")  # not finite
    put("deals", everywhere, "owner_id", "   ", "empty")  # a blank id
    put("deals", won, "closed_at", None, "closed_at_missing")
    put("deals", open_, "closed_at", None, "closed_at_set_on_open", value_from=lambda r: deals.loc[r, "created_at"])
    put("deals", won, "stage", "Closed Lost", "stage_outcome_mismatch")  # and its history's last entry
    put("deals", won, "closed_at", "2020-01-01T00:00:00Z", "closed_before_created")
    recorded = activities["customer_talk_ratio"].notna().to_numpy()
    put("activities", recorded, "customer_talk_ratio", "1.5", "above_max")
    put("activities", recorded, "next_step_set", "maybe", "bad_flag")
    no_contact = activities["contact_id"].isna().to_numpy()
    put("activities", no_contact, "deal_id", "D9999999", "unknown_deal")
    contacts = out["contacts"]
    put("activities", ~no_contact, "contact_id", None, "contact_not_on_deal", value_from=lambda r: contacts[
        "contact_id"][contacts["deal_id"] != activities.loc[r, "deal_id"]].iloc[0])
    deal_of = history["deal_id"].to_numpy()
    middle = (deal_of == np.roll(deal_of, 1)) & (deal_of == np.roll(deal_of, -1))
    middle &= ~history["stage"].isin(["won", "lost"]).to_numpy()
    put("stage_history", middle, "entered_at", None, "same_time", value_from=lambda r: history.loc[r - 1, "entered_at"])
    put("stage_history", middle, "stage", "Closed Lost", "after_terminal", reported=("entered_at", 1))
    last = (deal_of != np.roll(deal_of, -1)) & history["deal_id"].isin(deals.loc[open_, "deal_id"]).to_numpy()
    put("stage_history", last & (history["stage"] != "identify").to_numpy(), "stage", "identify", "last_stage_mismatch")
    put("field_history", (fields["field"] == "amount").to_numpy(), "new_value", "abc", "bad_field_value")
    put("field_history", (fields["field"] == "expected_close_date").to_numpy(), "old_value", "soon", "bad_field_value")
    out["contacts"] = pd.concat([contacts, contacts.iloc[[len(contacts) // 2]]], ignore_index=True)
    records.append(("contacts", "deal_id, contact_id", len(contacts), "duplicate_key"))
    return out, pd.DataFrame.from_records(records, columns=["table", "column", "row", "rule"])


# ---------------------------------------------------------------------------------------------
# Timing.


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, float, object]:
    """Best (wall seconds, CPU seconds) over ``repeat`` runs, and the last run's result.

    CPU time is steadier than wall time on a shared machine.
    """
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def concern_timers(raw: dict[str, pd.DataFrame], mapping: NameMapping) -> list[tuple[str, int, Callable, Callable]]:
    """Each per-column concern alone, ours vs a pandera schema holding only that concern."""
    activities = raw["activities"]
    table = TABLES["activities"]
    frame = activities.reset_index(drop=True)
    cells = frame_columns(frame, [c for c in table.column_names if c in frame.columns])

    def ours(column: str) -> Callable[[], object]:
        return lambda: parse_column(cells[column], table, table.column(column), mapping, Collector(), frame)

    def theirs(column: str) -> Callable[[], object]:
        schema = pa.DataFrameSchema({column: PanderaContract(mapping)._column(table, column)})
        sub = frame[[column]]
        return lambda: _validate(schema, sub)

    parsed_id = {"activity_id": parse_column(cells["activity_id"], table, table.column("activity_id"), mapping,
                                             Collector(), frame)}
    unique_schema = pa.DataFrameSchema({"activity_id": pa.Column(str)}, unique=["activity_id"],
                                       report_duplicates="exclude_first")
    ids = frame[["activity_id"]]
    timers = [
        ("allowed values: type (mapped)", len(frame), ours("type"), theirs("type")),
        ("unique key: activity_id", len(frame),
         lambda: check_unique_key(table, frame, parsed_id, Collector()), lambda: _validate(unique_schema, ids)),
        ("timestamp: occurred_at", len(frame), ours("occurred_at"), theirs("occurred_at")),
    ]
    if "customer_talk_ratio" in frame.columns:  # an optional column: a --data export may lack it
        timers.insert(1, ("range: customer_talk_ratio", len(frame), ours("customer_talk_ratio"),
                          theirs("customer_talk_ratio")))
    return timers


def _validate(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame | None:
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        return errors.failure_cases
    return None


def one_deal(raw: dict[str, pd.DataFrame], deal_ids: set[str]) -> dict[str, pd.DataFrame]:
    return {name: f[f["deal_id"].isin(deal_ids)].reset_index(drop=True) for name, f in raw.items()}


# ---------------------------------------------------------------------------------------------
# The run.


def compare(raw: dict[str, pd.DataFrame], mapping: NameMapping, contract: PanderaContract,
            planted: pd.DataFrame) -> None:
    """Print, per rule, what each checker finds on the messy export, and one message of each."""
    result = check_tables(raw, mapping)
    ours = our_violations(result.violations)
    theirs = pandera_violations(contract.check(raw))
    # The table-level rules on tiny inputs: a required column gone, the required table gone.
    small = one_deal(raw, {raw["deals"]["deal_id"].iloc[0]})
    no_column = {**small, "contacts": small["contacts"].drop(columns=["role"])}
    no_table = {k: v for k, v in small.items() if k != "deals"}
    for case in (no_column, no_table):
        ours += our_violations(check_tables(case, mapping).violations)
        theirs += pandera_violations(contract.check(case))
    ours_keys = {v[:4] for v in ours}
    theirs_keys = {v[:4] for v in theirs}
    located_ours = {k for k in ours_keys if k[2] is not None}
    located_theirs = {k for k in theirs_keys if k[2] is not None}
    rules = list(dict.fromkeys([v[3] for v in ours] + [v[3] for v in theirs]))
    expected = {(p.table, p.column, p.row + 1, p.rule) for p in planted.itertuples()}
    print(f"\nA. Messy export ({len(raw['deals']):,} deals; {len(planted)} problems planted: generator.messy's and one "
          "per other rule) + one deal without contacts.role, and without deals")
    print(f"{'rule':<24}{'ours':>6}{'pandera':>9}{'both':>6}{'only ours':>11}{'only pd':>9}"
          f"{'ours@row':>10}{'pd@row':>8}{'planted ours/pd':>17}")
    for rule in rules:
        o = {k for k in ours_keys if k[3] == rule}
        t = {k for k in theirs_keys if k[3] == rule}
        seeded = {k for k in expected if k[3] == rule}
        planted_text = f"{len(seeded & o)}/{len(seeded & t)} of {len(seeded)}" if seeded else "-"
        print(f"{rule:<24}{len(o):>6}{len(t):>9}{len(o & t):>6}{len(o - t):>11}{len(t - o):>9}"
              f"{len(o & located_ours):>10}{len(t & located_theirs):>8}{planted_text:>17}")
    for name, mine, other in (("ours", ours_keys, theirs_keys), ("pandera", theirs_keys, ours_keys)):
        only = sorted(mine - other, key=lambda k: (k[0], k[1], k[2] or 0))
        if only:
            print(f"only {name}: " + "; ".join(f"{t}.{c} row {r} {rule}" for t, c, r, rule in only[:8])
                  + (f"; ... {len(only) - 8} more" if len(only) > 8 else ""))
    missed = sorted(expected - ours_keys), sorted(expected - theirs_keys)
    print(f"planted, not reported at their row and rule: ours {missed[0] or 'none'}; pandera {missed[1] or 'none'}")
    print("\nB. One message per rule (ours: row with its key + reason; pandera: its check and failure case)")
    for rule in rules:
        o = next((v for v in ours if v[3] == rule), None)
        t = next((v for v in theirs if v[3] == rule), None)
        print(f"{rule}")
        print(f"  ours    {_clip(f'{o[0]}.{o[1]} {o[4]}') if o else '(not found)'}")
        row = f"row {t[2]}" if t and t[2] else "no row"
        print(f"  pandera {_clip(f'{t[0]}.{t[1]} {row}: {t[4]}') if t else '(not found)'}")


def _clip(text: str, width: int = 150) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=100_000, help="deals in the clean generated export")
    parser.add_argument("--messy-deals", type=int, default=2000, help="deals in the messy export compared")
    parser.add_argument("--request-deals", type=int, default=1000, help="deals in the request-shaped batch")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=None, help="time this export folder instead of generating one")
    args = parser.parse_args()
    mapping = load_mapping()
    contract = PanderaContract(mapping)
    print(f"pandera {pandera.__version__}: import pandera.pandas with pandas already loaded {PANDERA_IMPORT_S:.3f} s wall")

    with tempfile.TemporaryDirectory() as tmp:
        messy = generate_export(args.messy_deals, seed=args.seed, messy=True, truth_snapshots=0, n_paths=1)
        messy_raw = read_raw_tables(write_tables(messy.tables, Path(tmp) / "messy"))
        # planted.csv counts rows from 1 like the contract's messages; the plants here are 0-based.
        generator_plants = messy.planted.assign(rule=messy.planted["kind"].map(GENERATOR_KINDS),
                                                row=messy.planted["row"] - 1)
        messy_raw, more = plant_rule_problems(messy_raw, generator_plants, args.seed)
        planted = pd.concat([generator_plants[["table", "column", "row", "rule"]], more], ignore_index=True)
        folder = args.data
        if folder is None:
            clean = generate_export(args.deals, seed=args.seed, truth_snapshots=0, n_paths=1)
            folder = write_tables(clean.tables, Path(tmp) / "export")
            del clean
        _, read_cpu, raw = timed(lambda: read_raw_tables(folder))
    compare(messy_raw, mapping, contract, planted)

    rows = sum(len(f) for f in raw.values())
    one = one_deal(raw, {raw["deals"]["deal_id"].iloc[len(raw["deals"]) // 2]})
    one_request = as_request_objects(one)
    many = as_request_objects(one_deal(raw, set(raw["deals"]["deal_id"].iloc[: args.request_deals])))
    print(f"\nC. Clean export: {', '.join(f'{n} {len(f):,}' for n, f in raw.items())} rows")
    print(f"{'step':<34}{'rows':>11}{'ours cpu s':>12}{'pandera cpu s':>15}{'pandera/ours':>14}{'violations':>12}")
    print(f"{'read_raw_tables (baseline)':<34}{rows:>11,}{read_cpu:>12.4f}")
    for label, tables, repeat in (
        ("whole export", raw, 1),
        ("one deal, CSV text", one, 30),
        ("one deal, request objects", one_request, 30),
        (f"{len(many['deals'])} deals, request objects", many, 3),
    ):
        _, ours_cpu, ours_result = timed(lambda t=tables: check_tables(t, mapping), repeat)
        _, theirs_cpu, failures = timed(lambda t=tables: contract.check(t), repeat)
        n = sum(len(f) for f in tables.values())
        found = f"{ours_result.total}/{len(pandera_violations(failures))}"  # clean: both must be 0
        print(f"{label:<34}{n:>11,}{ours_cpu:>12.4f}{theirs_cpu:>15.4f}{theirs_cpu / ours_cpu:>14.1f}{found:>12}")
    print("\nD. One concern alone, activities table (ours: the column's parser or rule; pandera: a one-column schema)")
    print(f"{'concern':<41}{'rows':>11}{'ours cpu s':>12}{'pandera cpu s':>15}{'pandera/ours':>14}")
    for size, tables, repeat in (("export", raw, 2), ("one deal", one, 30)):
        for label, n, ours_fn, theirs_fn in concern_timers(tables, mapping):
            _, ours_cpu, _ = timed(ours_fn, repeat)
            _, theirs_cpu, _ = timed(theirs_fn, repeat)
            print(f"{label + ', ' + size:<41}{n:>11,}{ours_cpu:>12.6f}{theirs_cpu:>15.6f}{theirs_cpu / ours_cpu:>14.1f}")


if __name__ == "__main__":
    main()
