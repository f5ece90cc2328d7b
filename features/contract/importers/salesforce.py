"""Salesforce object exports -> the contract's tables (``dealrisk import salesforce``).

Reads the CSV files Data Loader or the weekly data export writes, one per object, named by the
object (``Opportunity.csv``, ``OpportunityHistory.csv``, ``OpportunityFieldHistory.csv``,
``OpportunityContactRole.csv``, ``Contact.csv``, ``Account.csv``, ``Task.csv``, ``Event.csv``;
any case), with the standard API field names as headers (any case: Data Loader writes
``STAGENAME``). Only ``Opportunity`` is required.

What each object gives, what is left out and why is in docs/importers.md; the rules in short:

- a deal per Opportunity; outcome from IsClosed/IsWon (from the stage where those are absent), and
  a record whose flags contradict its stage is a problem, not a guess; a custom stage Salesforce
  marks closed on every opportunity that has it is taken as won or lost by those flags;
- stage entries from OpportunityHistory (a row whose stage differs from the one before), amount
  and close-date changes from OpportunityFieldHistory where it tracks the field, else from the
  snapshots OpportunityHistory keeps;
- contacts from OpportunityContactRole, seniority from Contact.Title (``titles``);
- calls, emails, meetings and demos from Task and Event on an opportunity; to-dos, internal calls,
  open tasks, events not yet held and copies of group events are left out and counted;
- Probability (the stage table reps see) and ForecastCategoryName go to a comparison file beside
  the export, never into it: at export time a closed deal's probability is 0 or 100, the outcome.

Salesforce ids are matched on their first 15 characters, so 15-character ids (reports) and
18-character ids (API, Data Loader) of the same record meet; the output keeps each id as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd

from features.contract.importers.sources import (
    Imported,
    Lines,
    Origin,
    ParsedTimes,
    SourceError,
    TimeFormats,
    find_header,
    flag_column,
    not_before,
    parse_numbers,
    parse_times,
    report_rows,
    report_times,
    text_column,
)
from features.contract.importers.titles import seniority_of_titles
from features.contract.mapping import NameMapping, normalize_name
from features.contract.schema import CLOSED_STAGES, DEAL_TYPES, OPEN_STAGES
from features.contract.violations import Collector, show_value

OBJECTS: tuple[str, ...] = (
    "Opportunity", "OpportunityHistory", "OpportunityFieldHistory", "OpportunityContactRole",
    "Contact", "Account", "Task", "Event",
)
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "Opportunity": ("Id", "AccountId", "OwnerId", "CreatedDate", "Amount", "StageName", "CloseDate"),
    "OpportunityHistory": ("OpportunityId", "StageName", "CreatedDate"),
    "OpportunityFieldHistory": ("OpportunityId", "Field", "OldValue", "NewValue", "CreatedDate"),
    "OpportunityContactRole": ("OpportunityId", "ContactId", "CreatedDate"),
    "Contact": ("Id", "Title"),
    "Account": ("Id",),
    "Task": ("Id", "WhatId"),
    "Event": ("Id", "WhatId"),
}
# Layouts of Salesforce's report exports (the exporting user's local time, US locale); the API
# and Data Loader write ISO-8601 (``2026-03-31T14:05:00.000Z``, dates ``2026-03-31``).
REPORT_FORMATS: tuple[str, ...] = ("%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M", "%m/%d/%Y")
# Account.NumberOfEmployees -> the contract's segment, by the usual size bands.
SEGMENT_BANDS: tuple[tuple[float, str], ...] = ((100.0, "smb"), (1000.0, "mid_market"), (np.inf, "enterprise"))
# OpportunityFieldHistory.Field values that are tracked fields of the contract.
TRACKED: dict[str, str] = {"amount": "amount", "closedate": "expected_close_date"}
# Task.TaskSubtype values that say what the task was (others, e.g. "Task", say nothing).
TASK_SUBTYPES: dict[str, str] = {"call": "call", "email": "email", "listemail": "email"}
KEY_LENGTH = 15  # a Salesforce id's case-sensitive core; the 18-character form adds a checksum


@dataclass(frozen=True)
class SalesforceOptions:
    """Choices a Salesforce export cannot answer by itself.

    ``times``: how dates and times are written (ISO-8601 always; report layouts in ``timezone``).
    ``deal_type``: the deal type of opportunities with a blank ``Type`` (blank is otherwise a
    problem: Salesforce's Type is optional, the contract's deal_type is not).
    ``as_of``: the moment of the export; default the latest CreatedDate, LastModifiedDate or
    SystemModstamp in the files. Open deals whose CloseDate lies before it are warned about;
    tasks and events after it have not happened yet.
    """

    times: TimeFormats = field(default_factory=lambda: TimeFormats(local_formats=REPORT_FORMATS))
    deal_type: str | None = None
    as_of: pd.Timestamp | None = None

    def __post_init__(self) -> None:
        if self.deal_type is not None and self.deal_type not in DEAL_TYPES:
            raise ValueError(f"deal type {self.deal_type!r}: use one of {', '.join(DEAL_TYPES)}")


def find_objects(files: Mapping[str, pd.DataFrame]) -> tuple[dict[str, str], list[str]]:
    """Which file holds which object (matched on the file name's stem, any case); files ignored."""
    by_stem = {name.rsplit(".", 1)[0].casefold(): name for name in files}
    found = {obj: by_stem[obj.casefold()] for obj in OBJECTS if obj.casefold() in by_stem}
    return found, sorted(set(files) - set(found.values()))


def check_fields(obj: str, file: str, frame: pd.DataFrame) -> None:
    """``SourceError`` naming the file and the required fields it lacks."""
    missing = [name for name in REQUIRED_FIELDS[obj] if find_header(frame, name) is None]
    if missing:
        found = ", ".join(str(c) for c in frame.columns) or "(none)"
        raise SourceError(f"{file}: required field{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}; "
                          f"found: {found} (export the object with its standard API field names)")


def id_key(ids: pd.Series) -> pd.Series:
    """The matching form of Salesforce ids: the first 15 characters (15- and 18-character forms meet)."""
    return ids.where(ids.isna(), ids.astype(str).str.slice(0, KEY_LENGTH))


def with_names(mapping: NameMapping, section: str, extra: Mapping[str, str]) -> NameMapping:
    """``mapping`` with more names in one section (normalised name -> canonical)."""
    if not extra:
        return mapping
    sections = {name: dict(names) for name, names in mapping.sections.items()}
    sections.setdefault(section, {}).update(extra)
    return NameMapping(MappingProxyType({s: MappingProxyType(n) for s, n in sections.items()}))


@dataclass
class _Found:
    """Problems, rows left out, warnings and notes gathered while building the tables."""

    problems: Collector = field(default_factory=Collector)
    skipped: Collector = field(default_factory=Collector)
    warnings: Collector = field(default_factory=Collector)
    notes: list[str] = field(default_factory=list)


def _drop_deleted(lines: Lines, frame: pd.DataFrame, found: _Found) -> pd.DataFrame:
    """Rows Salesforce marks deleted (``IsDeleted``, in the recycle bin) are not data: left out, counted."""
    deleted, bad = flag_column(frame, "IsDeleted")
    report_rows(found.problems, lines, "IsDeleted", bad, "IsDeleted is not true or false", "bad_flag")
    gone = deleted.eq(True).to_numpy()
    report_rows(found.skipped, lines, "IsDeleted", gone, "deleted in Salesforce (IsDeleted is true)", "deleted")
    return frame.loc[~gone]


def export_time(objects: Mapping[str, pd.DataFrame], times: TimeFormats) -> pd.Timestamp | None:
    """The moment of the export: the latest record time (CreatedDate, LastModifiedDate, SystemModstamp)."""
    latest = []
    for frame in objects.values():
        for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"):
            if find_header(frame, name) is not None and len(frame):
                values = parse_times(text_column(frame, name), times).values
                if values.notna().any():
                    latest.append(values.max())
    return max(latest) if latest else None


def _normal(values: pd.Series) -> pd.Series:
    return values.map(lambda v: normalize_name(v) if isinstance(v, str) else None).astype(object)


def _stage_names(names: pd.Series, closed: pd.Series, won: pd.Series, mapping: NameMapping,
                 file: str, found: _Found) -> dict[str, str]:
    """Custom stages the mapping does not know, taken as won or lost by Salesforce's own flags.

    A stage name every opportunity of which has IsClosed true and the same IsWon is, by
    Salesforce's definition of that stage, a won or lost stage. Open custom stages carry no such
    meaning and stay unknown (the check reports them, with the line to add to a mapping file).
    """
    known = mapping.section("stage")
    table = pd.DataFrame({"name": _normal(names).to_numpy(), "shown": names.to_numpy(),
                          "closed": closed.to_numpy(), "won": won.to_numpy()})
    table = table.loc[table["name"].notna().to_numpy() & ~table["name"].isin(list(known)).to_numpy()]
    derived: dict[str, str] = {}
    for name, group in table.groupby("name", sort=True):
        flags_closed = group["closed"].map(lambda v: v is True).all()
        flags_won = group["won"].map(lambda v: v is True)
        flags_lost = group["won"].map(lambda v: v is False)
        if flags_closed and (flags_won.all() or flags_lost.all()):
            stage = "won" if flags_won.all() else "lost"
            derived[name] = stage
            count = "the one opportunity" if len(group) == 1 else f"all {len(group)} opportunities"
            found.notes.append(
                f"{file}: stage {show_value(group['shown'].iloc[0])} taken as {stage}: Salesforce marks it closed and "
                f"{'won' if stage == 'won' else 'not won'} on {count} with it "
                "(a line under 'stage:' in a mapping file overrides this)")
    return derived


def _canonical_stage(names: pd.Series, mapping: NameMapping) -> pd.Series:
    """Canonical stage of each stage name, None where the mapping does not know it."""
    section = mapping.section("stage")
    return names.map(lambda v: section.get(normalize_name(v)) if isinstance(v, str) else None).astype(object)


def _number_text(values: np.ndarray) -> list[str | None]:
    """Numbers as plain decimal text for field_history (``12500``, ``99.5``), None where missing."""
    return [None if not np.isfinite(v) else np.format_float_positional(v, trim="-") for v in values]


def _date_text(values: pd.Series) -> list[str | None]:
    """Dates as ISO text (``2026-03-31``; a time of day, if any, as ``...T14:05:00Z``)."""
    out = []
    for v in values.tolist():
        if v is None or v is pd.NaT or pd.isna(v):
            out.append(None)
        elif v.hour == v.minute == v.second == 0 and v.microsecond == 0:
            out.append(v.strftime("%Y-%m-%d"))
        else:
            out.append(v.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out


def _shown(value: object) -> str:
    """A cell in a message: quoted, or (blank)."""
    return show_value(value) if isinstance(value, str) else "(blank)"


def _none_where_missing(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), None)


# ---------------------------------------------------------------------------------------------
# Opportunity -> deals.

DEAL_SOURCES: dict[str, str] = {
    "deal_id": "Id", "account_id": "AccountId", "owner_id": "OwnerId", "created_at": "CreatedDate",
    "amount": "Amount", "deal_type": "Type", "lead_source": "LeadSource",
    "segment": "AccountId -> Account.NumberOfEmployees", "region": "AccountId -> Account.BillingCountry",
    "product": "(none)", "stage": "StageName", "expected_close_date": "CloseDate",
    "closed_at": "CloseDate", "outcome": "IsClosed, IsWon",
    "context_industry": "AccountId -> Account.Industry",
}


@dataclass
class _Deals:
    frame: pd.DataFrame  # contract deals columns (raw values: Salesforce stage and type names)
    lines: Lines
    key: np.ndarray  # 15-character id of each deal row
    created: pd.Series  # created_at per deal row (UTC), positional index
    close_date: ParsedTimes

    @property
    def ids(self) -> np.ndarray:
        return self.frame["deal_id"].to_numpy(dtype=object)


def _deals(opp: pd.DataFrame, lines: Lines, accounts: tuple[Lines, pd.DataFrame] | None, mapping: NameMapping,
           options: SalesforceOptions, as_of: pd.Timestamp | None, found: _Found) -> tuple[_Deals, NameMapping]:
    created = parse_times(text_column(opp, "CreatedDate"), options.times)
    report_times(found.problems, lines, "CreatedDate", created)
    close = parse_times(text_column(opp, "CloseDate"), options.times)
    report_times(found.problems, lines, "CloseDate", close)
    amount_text = text_column(opp, "Amount").tolist()
    amount, bad_amount = parse_numbers(text_column(opp, "Amount"))
    report_rows(found.problems, lines, "Amount", bad_amount, lambda p: f"Amount {show_value(amount_text[p])} is not a number",
                "bad_number")

    closed, bad_closed = flag_column(opp, "IsClosed")
    won, bad_won = flag_column(opp, "IsWon")
    report_rows(found.problems, lines, "IsClosed", bad_closed, "IsClosed is not true or false", "bad_flag")
    report_rows(found.problems, lines, "IsWon", bad_won, "IsWon is not true or false", "bad_flag")
    stage_names = text_column(opp, "StageName")
    mapping = with_names(mapping, "stage", _stage_names(stage_names, closed, won, mapping, lines.file, found))
    canonical = _canonical_stage(stage_names, mapping)
    outcome = _outcomes(opp, closed, won, canonical, stage_names, lines, found)

    if as_of is not None:
        open_late = (outcome == "open").to_numpy() & (close.values < as_of.floor("D")).fillna(False).to_numpy(dtype=bool)
        report_rows(found.warnings, lines, "CloseDate", open_late,
                    lambda p: (f"open, but CloseDate {close.values.iloc[p]:%Y-%m-%d} is before the export "
                               f"({as_of:%Y-%m-%d}): the close date was not kept up to date; kept as it is"),
                    "open_past_close_date")

    deal_type = text_column(opp, "Type")
    if options.deal_type is not None:
        deal_type = deal_type.where(deal_type.notna(), options.deal_type)
    else:
        report_rows(found.problems, lines, "Type", deal_type.isna().to_numpy(),
                    "blank Type: the contract needs a deal type (new_business, expansion or renewal); set Type in "
                    "Salesforce or pass --deal-type for opportunities without one", "blank_type")

    account_key = id_key(text_column(opp, "AccountId")).to_numpy(dtype=object)
    context = {}
    segment = region = np.full(len(opp), None, dtype=object)
    if accounts is not None:
        segment, region, industry = _account_context(*accounts, account_key, found)
        if find_header(accounts[1], "Industry") is not None:
            context["context_industry"] = industry
    sources = dict(DEAL_SOURCES)
    if find_header(opp, "IsClosed") is None:
        sources["outcome"] = "StageName"
    frame = pd.DataFrame({
        "deal_id": text_column(opp, "Id").to_numpy(dtype=object),
        "account_id": text_column(opp, "AccountId").to_numpy(dtype=object),
        "owner_id": text_column(opp, "OwnerId").to_numpy(dtype=object),
        "created_at": created.values.array, "amount": amount, "deal_type": deal_type.to_numpy(dtype=object),
        "lead_source": text_column(opp, "LeadSource").to_numpy(dtype=object), "segment": segment, "region": region,
        "product": np.full(len(opp), None, dtype=object), "stage": stage_names.to_numpy(dtype=object),
        "expected_close_date": close.values.array,
        "closed_at": pd.Series(pd.NaT, index=range(len(opp)), dtype="datetime64[us, UTC]").array,
        "outcome": outcome.to_numpy(dtype=object), **context,
    })
    deals = _Deals(frame, Lines(lines.file, lines.rows, lines.keys), id_key(text_column(opp, "Id")).to_numpy(dtype=object),
                   created.values.reset_index(drop=True), close)
    deals.frame.attrs["sources"] = sources
    return deals, mapping


def _outcomes(opp: pd.DataFrame, closed: pd.Series, won: pd.Series, canonical: pd.Series, names: pd.Series,
              lines: Lines, found: _Found) -> pd.Series:
    """open / won / lost from IsClosed and IsWon (from the stage where they are absent); records
    whose flags contradict each other or their stage are problems."""
    is_closed = closed.eq(True).to_numpy()
    is_open = closed.eq(False).to_numpy()
    is_won = won.eq(True).to_numpy()
    not_won = won.eq(False).to_numpy()
    stage = canonical.to_numpy(dtype=object)
    stage_closed = canonical.isin(CLOSED_STAGES).to_numpy()
    stage_open = canonical.isin(OPEN_STAGES).to_numpy()
    shown = names.tolist()
    if find_header(opp, "IsClosed") is None:
        outcome = np.where(stage_closed, stage, np.where(stage_open, "open", None))
        return pd.Series(outcome, index=opp.index, dtype=object)
    if find_header(opp, "IsWon") is not None:
        result = np.where(is_won, "won", np.where(not_won, "lost", None))
    else:  # closed without IsWon: only the stage can say won or lost
        result = np.where(stage_closed, stage, None)
    outcome = np.where(is_closed, result, np.where(is_open, "open", None))
    report_rows(found.problems, lines, "IsWon, IsClosed", is_won & is_open,
                "IsWon is true but IsClosed is false: a won deal is closed", "contradiction")
    report_rows(found.problems, lines, "IsClosed, StageName", is_closed & stage_open,
                lambda p: f"IsClosed is true but StageName {show_value(shown[p])} is an open stage ({stage[p]})", "contradiction")
    report_rows(found.problems, lines, "IsClosed, StageName", is_open & stage_closed,
                lambda p: f"IsClosed is false but StageName {show_value(shown[p])} is a closed stage ({stage[p]})",
                "contradiction")
    report_rows(found.problems, lines, "IsWon, StageName", is_closed & is_won & (stage == "lost"),
                lambda p: f"IsWon is true but StageName {show_value(shown[p])} is a lost stage", "contradiction")
    report_rows(found.problems, lines, "IsWon, StageName", is_closed & not_won & (stage == "won"),
                lambda p: f"IsWon is false but StageName {show_value(shown[p])} is a won stage", "contradiction")
    return pd.Series(outcome, index=opp.index, dtype=object)


def _account_context(lines: Lines, accounts: pd.DataFrame, account_key: np.ndarray,
                     found: _Found) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """segment (NumberOfEmployees in size bands), region (BillingCountry) and industry of each deal's account."""
    employees, bad = parse_numbers(text_column(accounts, "NumberOfEmployees"))
    report_rows(found.problems, lines, "NumberOfEmployees", bad, "NumberOfEmployees is not a number", "bad_number")
    bands = np.array([upper for upper, _ in SEGMENT_BANDS])
    names = np.array([name for _, name in SEGMENT_BANDS], dtype=object)
    band = np.searchsorted(bands, np.nan_to_num(employees), side="right").clip(0, len(names) - 1)
    segment = np.where(np.isfinite(employees), names[band], None)
    index = pd.Index(id_key(text_column(accounts, "Id")).to_numpy(dtype=object))
    first = ~index.duplicated()
    index = index[first]
    where = index.get_indexer(account_key)

    def pick(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=object)[first]
        return np.where(where >= 0, values[np.clip(where, 0, None)] if len(values) else None, None)

    return (pick(segment), pick(text_column(accounts, "BillingCountry").to_numpy(dtype=object)),
            pick(text_column(accounts, "Industry").to_numpy(dtype=object)))


# ---------------------------------------------------------------------------------------------
# Rows of other objects, tied to their opportunity.


def _on_deals(frame: pd.DataFrame, lines: Lines, column: str, deals: _Deals, found: _Found,
              what: str) -> tuple[pd.DataFrame, Lines, np.ndarray]:
    """Rows whose ``column`` names an opportunity of the export, their lines, and each one's deal
    row; the others are left out and counted (history of deleted opportunities, tasks on accounts)."""
    where = pd.Index(deals.key).get_indexer(id_key(text_column(frame, column)).to_numpy(dtype=object))
    report_rows(found.skipped, lines, column, where < 0, f"not {what} an opportunity in the export", "not_on_opportunity")
    keep = where >= 0
    return frame.loc[keep], lines.subset(keep), where[keep]


def _stage_entries(history: pd.DataFrame, lines: Lines, deals: _Deals, mapping: NameMapping,
                   options: SalesforceOptions, found: _Found) -> tuple[pd.DataFrame, Origin, pd.DataFrame]:
    """OpportunityHistory -> stage entries (rows whose stage differs from the one before, in
    canonical terms) and the amount / close-date snapshot of every row (for changes where field
    history is missing)."""
    rows, lines, deal_row = _on_deals(history, lines, "OpportunityId", deals, found, "the history of")
    at = parse_times(text_column(rows, "CreatedDate"), options.times)
    report_times(found.problems, lines, "CreatedDate", at)
    names = text_column(rows, "StageName")
    canonical = _canonical_stage(names, mapping)
    stage = canonical.where(canonical.notna(), _normal(names))
    amount_text = text_column(rows, "Amount")
    amount, bad_amount = parse_numbers(amount_text)
    report_rows(found.problems, lines, "Amount", bad_amount, "Amount is not a number", "bad_number")
    close = parse_times(text_column(rows, "CloseDate"), options.times)
    report_times(found.problems, lines, "CloseDate", close)
    snap = pd.DataFrame({
        "deal": deal_row, "at": at.values.array, "position": np.arange(len(rows)),
        "stage": stage.to_numpy(dtype=object), "name": names.to_numpy(dtype=object), "amount": amount,
        "close": close.values.array,
    }).sort_values(["deal", "at", "position"], kind="stable")
    snap.attrs = {"amount": find_header(rows, "Amount") is not None, "close": find_header(rows, "CloseDate") is not None}
    new_deal = snap["deal"].ne(snap["deal"].shift()).to_numpy()
    changed = snap["stage"].ne(snap["stage"].shift()).to_numpy()
    entries = snap.loc[new_deal | changed]
    table = pd.DataFrame({
        "deal_id": deals.ids[entries["deal"].to_numpy()], "stage": entries["name"].to_numpy(dtype=object),
        "entered_at": entries["at"].array,
    })
    origin = Origin.of_lines(lines, {"deal_id": "OpportunityId", "stage": "StageName", "entered_at": "CreatedDate"})
    snap["row"] = lines.rows[snap["position"].to_numpy()]
    snap["key"] = [lines.keys[p] for p in snap["position"].tolist()]
    return table, origin.take(entries["position"].to_numpy()), snap


def _snapshot_changes(snap: pd.DataFrame, deals: _Deals, tracked: pd.DataFrame | None,
                      file: str) -> tuple[pd.DataFrame | None, Origin]:
    """Amount and close-date changes between consecutive OpportunityHistory rows of a deal, for
    the (deal, field) pairs OpportunityFieldHistory has no changes of (``tracked``: its changes)."""
    parts, origins = [], []
    same_deal = snap["deal"].eq(snap["deal"].shift()).to_numpy()
    for name, column, header in (("amount", "amount", "Amount"), ("expected_close_date", "close", "CloseDate")):
        if not snap.attrs.get(column):
            continue
        covered = set() if tracked is None else set(tracked.loc[tracked["field"] == name, "deal_id"])
        uncovered = ~pd.Series(deals.ids[snap["deal"].to_numpy()]).isin(covered).to_numpy()
        value = snap[column]
        before = value.shift()
        changed = uncovered & same_deal & ~(value.eq(before) | (value.isna() & before.isna())).to_numpy()
        picked = snap.loc[changed]
        old, new = before.loc[changed], value.loc[changed]
        text = (lambda v: _number_text(v.to_numpy(dtype=float))) if name == "amount" else _date_text
        parts.append(pd.DataFrame({
            "deal_id": deals.ids[picked["deal"].to_numpy()], "field": name, "old_value": text(old),
            "new_value": text(new), "changed_at": picked["at"].array,
        }))
        origins.append(Origin.of(file, picked["row"].to_numpy(), picked["key"].tolist(), {
            "deal_id": "OpportunityId", "field": header, "old_value": f"{header} (the row before)",
            "new_value": header, "changed_at": "CreatedDate"}))
    return (pd.concat(parts, ignore_index=True) if parts else None), Origin.concat(origins)


def _field_changes(field_history: pd.DataFrame, lines: Lines, deals: _Deals, options: SalesforceOptions,
                   found: _Found) -> tuple[pd.DataFrame | None, Origin, pd.DataFrame]:
    """OpportunityFieldHistory -> amount and close-date changes, and the StageName changes (stage
    entries where there is no OpportunityHistory). Other tracked fields are counted in a note."""
    rows, lines, deal_row = _on_deals(field_history, lines, "OpportunityId", deals, found, "the history of")
    at = parse_times(text_column(rows, "CreatedDate"), options.times)
    report_times(found.problems, lines, "CreatedDate", at)
    shown_field = text_column(rows, "Field")
    field_name = shown_field.map(lambda v: v.replace(" ", "").casefold() if isinstance(v, str) else "")
    tracked = field_name.map(TRACKED).to_numpy(dtype=object)
    other = pd.isna(tracked) & field_name.ne("stagename").to_numpy()
    if other.any():
        counts = shown_field[other].fillna("(blank)").value_counts()
        found.notes.append(f"{lines.file}: changes of fields the contract does not track left out: "
                           + ", ".join(f"{name} {count}" for name, count in counts.items()))
    old_text, new_text = text_column(rows, "OldValue"), text_column(rows, "NewValue")
    parts, origins = [], []
    for name in ("amount", "expected_close_date"):
        mask = tracked == name
        if not mask.any():
            continue
        sub = lines.subset(mask)
        if name == "amount":
            old, bad_old = parse_numbers(old_text[mask])
            new, bad_new = parse_numbers(new_text[mask])
            old_out, new_out = _number_text(old), _number_text(new)
            report_rows(found.problems, sub, "OldValue", bad_old, "amount value: not a number", "bad_value")
            report_rows(found.problems, sub, "NewValue", bad_new, "amount value: not a number", "bad_value")
        else:
            old_p, new_p = parse_times(old_text[mask], options.times), parse_times(new_text[mask], options.times)
            old_out, new_out = _date_text(old_p.values), _date_text(new_p.values)
            report_times(found.problems, sub, "OldValue", old_p)
            report_times(found.problems, sub, "NewValue", new_p)
        parts.append(pd.DataFrame({
            "deal_id": deals.ids[deal_row[mask]], "field": name, "old_value": old_out, "new_value": new_out,
            "changed_at": at.values.array[mask],
        }))
        origins.append(Origin.of_lines(sub, {"deal_id": "OpportunityId", "field": "Field", "old_value": "OldValue",
                                             "new_value": "NewValue", "changed_at": "CreatedDate"}))
    stage_mask = field_name.eq("stagename").to_numpy()
    stage_lines = lines.subset(stage_mask)
    stage_changes = pd.DataFrame({
        "deal": deal_row[stage_mask], "at": at.values.array[stage_mask], "row": stage_lines.rows,
        "key": stage_lines.keys, "old": old_text[stage_mask].to_numpy(dtype=object),
        "new": new_text[stage_mask].to_numpy(dtype=object),
    })
    table = pd.concat(parts, ignore_index=True) if parts else None
    return table, Origin.concat(origins), stage_changes


def _entries_from_field_history(changes: pd.DataFrame, deals: _Deals, file: str) -> tuple[pd.DataFrame, Origin]:
    """Stage entries from StageName changes when there is no OpportunityHistory: the first change's
    old stage, entered when the deal was created, then each new stage when it was set."""
    changes = changes.sort_values(["deal", "at", "row"], kind="stable")
    first = changes.loc[changes["deal"].ne(changes["deal"].shift()).to_numpy()]
    table = pd.DataFrame({
        "deal_id": np.concatenate([deals.ids[first["deal"].to_numpy()], deals.ids[changes["deal"].to_numpy()]]),
        "stage": np.concatenate([first["old"].to_numpy(dtype=object), changes["new"].to_numpy(dtype=object)]),
        "entered_at": pd.concat([deals.created.iloc[first["deal"].to_numpy()], pd.Series(changes["at"].array)],
                                ignore_index=True).array,
    })
    origin = Origin.of(file, np.concatenate([first["row"].to_numpy(), changes["row"].to_numpy()]),
                       first["key"].tolist() + changes["key"].tolist(),
                       {"deal_id": "OpportunityId", "stage": "OldValue / NewValue", "entered_at": "CreatedDate"})
    return table, origin


def _closed_at(deals: _Deals, entries: pd.DataFrame | None, mapping: NameMapping) -> np.ndarray:
    """When each closed deal closed: its first won/lost stage entry, else its CloseDate (a date,
    taken at 00:00 UTC, or at the creation time on the day the deal was created)."""
    closed_at = not_before(deals.close_date.values, deals.close_date.date_only, deals.created)
    if entries is not None and len(entries):
        terminal = entries.loc[_canonical_stage(entries["stage"], mapping).isin(CLOSED_STAGES).to_numpy()]
        first = terminal.groupby("deal_id", sort=False)["entered_at"].min().astype("datetime64[us, UTC]")
        from_history = pd.Series(first.reindex(deals.ids).array)
        closed_at = closed_at.where(from_history.isna(), from_history).astype("datetime64[us, UTC]")
    is_closed = deals.frame["outcome"].isin(CLOSED_STAGES).to_numpy()
    return closed_at.where(pd.Series(is_closed), pd.NaT).astype("datetime64[us, UTC]").array


def _contacts(roles: pd.DataFrame, lines: Lines, people: pd.DataFrame | None, deals: _Deals, mapping: NameMapping,
              options: SalesforceOptions, found: _Found) -> tuple[pd.DataFrame, Origin]:
    """OpportunityContactRole -> contacts; seniority from the Contact's Title (``titles``).

    A role left blank in Salesforce is ``other`` (on the deal, in no named role)."""
    rows, lines, deal_row = _on_deals(roles, lines, "OpportunityId", deals, found, "a role on")
    added = parse_times(text_column(rows, "CreatedDate"), options.times)
    report_times(found.problems, lines, "CreatedDate", added)
    role = text_column(rows, "Role")
    contact = text_column(rows, "ContactId")
    seniority = np.full(len(rows), None, dtype=object)
    if people is not None:
        titles = pd.Series(text_column(people, "Title").to_numpy(dtype=object),
                           index=id_key(text_column(people, "Id")).to_numpy(dtype=object))
        titles = titles.loc[~titles.index.duplicated()]
        picked = pd.Series(titles.reindex(id_key(contact).to_numpy(dtype=object)).to_numpy(dtype=object))
        seniority = seniority_of_titles(picked, mapping.section("seniority")).to_numpy(dtype=object)
    added_at = not_before(added.values, added.date_only, deals.created.iloc[deal_row])
    table = pd.DataFrame({
        "deal_id": deals.ids[deal_row], "contact_id": contact.to_numpy(dtype=object),
        "role": role.where(role.notna(), "other").to_numpy(dtype=object), "seniority": seniority,
        "added_at": added_at.array,
    })
    origin = Origin.of_lines(lines, {
        "deal_id": "OpportunityId", "contact_id": "ContactId", "role": "Role",
        "seniority": "ContactId -> Contact.Title", "added_at": "CreatedDate"})
    return table, origin


ACTIVITY_SOURCES = {
    "Task": {"activity_id": "Id", "deal_id": "WhatId", "contact_id": "WhoId", "type": "TaskSubtype / Type",
             "direction": "CallType", "occurred_at": "CompletedDateTime / ActivityDate",
             "duration_min": "CallDurationInSeconds"},
    "Event": {"activity_id": "Id", "deal_id": "WhatId", "contact_id": "WhoId", "type": "Type",
              "direction": "(outbound)", "occurred_at": "ActivityDateTime / StartDateTime / ActivityDate",
              "duration_min": "DurationInMinutes"},
}


def _first_time(frame: pd.DataFrame, names: tuple[str, ...], options: SalesforceOptions, lines: Lines,
                found: _Found) -> ParsedTimes:
    """The first of ``names`` that has a value, per row (e.g. CompletedDateTime, else ActivityDate)."""
    values = pd.Series(pd.NaT, index=range(len(frame)), dtype="datetime64[us, UTC]")
    date_only = np.zeros(len(frame), dtype=bool)
    bad = np.zeros(len(frame), dtype=bool)
    for name in names:
        if find_header(frame, name) is None:
            continue
        parsed = parse_times(text_column(frame, name), options.times)
        report_times(found.problems, lines, name, parsed)
        take = values.isna().to_numpy() & parsed.values.notna().to_numpy()
        values = values.where(~pd.Series(take), pd.Series(parsed.values.array))
        date_only[take] = parsed.date_only[take]
        bad |= parsed.bad
    return ParsedTimes(values.astype("datetime64[us, UTC]"), date_only, bad, {})


def _activities(obj: str, frame: pd.DataFrame, lines: Lines, deals: _Deals, contacts: pd.DataFrame | None,
                mapping: NameMapping, options: SalesforceOptions, as_of: pd.Timestamp | None,
                found: _Found) -> tuple[pd.DataFrame, Origin]:
    """Task or Event -> activities (calls, emails, meetings, demos on an opportunity)."""
    rows, lines, deal_row = _on_deals(frame, lines, "WhatId", deals, found, "on")
    sources = ACTIVITY_SOURCES[obj]
    types = mapping.section("activity_type")
    declared = text_column(rows, "Type")
    declared_type = declared.map(lambda v: types.get(normalize_name(v)) if isinstance(v, str) else None).astype(object)
    keep = np.ones(len(rows), dtype=bool)

    def leave_out(mask: np.ndarray, column: str, reason, rule: str) -> None:
        mask = np.asarray(mask, dtype=bool) & keep
        report_rows(found.skipped, lines, column, mask, reason, rule)
        keep[mask] = False

    if obj == "Task":
        shown_subtype, shown_type = text_column(rows, "TaskSubtype").tolist(), declared.tolist()
        subtype = text_column(rows, "TaskSubtype").map(lambda v: v.casefold() if isinstance(v, str) else None)
        kind = subtype.map(TASK_SUBTYPES).astype(object)
        kind = kind.where(kind.notna(), declared_type)
        done, bad_done = flag_column(rows, "IsClosed")
        report_rows(found.problems, lines, "IsClosed", bad_done, "IsClosed is not true or false", "bad_flag")
        leave_out(done.eq(False).to_numpy(), "IsClosed", "not done yet (IsClosed is false): an open task", "open_task")
        leave_out(kind.isna().to_numpy(), "TaskSubtype, Type",
                  lambda p: (f"a to-do, not a call, email, meeting or demo (TaskSubtype {_shown(shown_subtype[p])}, "
                             f"Type {_shown(shown_type[p])}); a line '<Type>: <activity type>' under "
                             "'activity_type:' in a mapping file keeps such tasks"), "not_an_activity")
        call_type = text_column(rows, "CallType")
        internal = call_type.map(lambda v: isinstance(v, str) and normalize_name(v) == "internal").to_numpy(dtype=bool)
        leave_out(internal, "CallType", "an internal call, not with the customer", "internal_call")
        direction = call_type.where(call_type.notna(), "outbound")
        when = _first_time(rows, ("CompletedDateTime", "ActivityDate", "CreatedDate"), options, lines, found)
        seconds, bad_seconds = parse_numbers(text_column(rows, "CallDurationInSeconds"))
        report_rows(found.problems, lines, "CallDurationInSeconds", bad_seconds, "not a number", "bad_number")
        duration = seconds / 60.0
    else:
        child, _ = flag_column(rows, "IsChild")
        leave_out(child.eq(True).to_numpy(), "IsChild", "a copy of a group event for another invitee (IsChild is true)",
                  "child_event")
        kind = declared_type.where(declared_type.notna(), "meeting")
        direction = pd.Series(["outbound"] * len(rows), index=rows.index, dtype=object)
        when = _first_time(rows, ("ActivityDateTime", "StartDateTime", "ActivityDate"), options, lines, found)
        minutes, bad_minutes = parse_numbers(text_column(rows, "DurationInMinutes"))
        report_rows(found.problems, lines, "DurationInMinutes", bad_minutes, "not a number", "bad_number")
        if find_header(rows, "EndDateTime") is not None and find_header(rows, "StartDateTime") is not None:
            start = parse_times(text_column(rows, "StartDateTime"), options.times).values
            end = parse_times(text_column(rows, "EndDateTime"), options.times).values
            span = ((end - start).dt.total_seconds() / 60.0).to_numpy(dtype=float, na_value=np.nan)
            minutes = np.where(np.isfinite(minutes), minutes, span)
        duration = minutes
    created = deals.created.iloc[deal_row].reset_index(drop=True)
    occurred = not_before(when.values, when.date_only, created)
    if as_of is not None:
        leave_out((occurred > as_of).fillna(False).to_numpy(dtype=bool), sources["occurred_at"],
                  "after the export: it has not happened yet", "after_export")
    leave_out((occurred < created).fillna(False).to_numpy(dtype=bool), sources["occurred_at"],
              "before the opportunity was created", "before_created")

    who = text_column(rows, "WhoId")
    if contacts is not None:
        pairs = pd.Series(id_key(contacts["deal_id"]) + "|" + id_key(contacts["contact_id"]))
        lookup = pd.Series(contacts["contact_id"].to_numpy(dtype=object), index=pairs.to_numpy(dtype=object))
        lookup = lookup.loc[~lookup.index.duplicated()]
        named = pd.Series(deals.key[deal_row], dtype=object) + "|" + pd.Series(id_key(who).to_numpy(dtype=object))
        contact_id = _none_where_missing(named.map(lookup)).to_numpy(dtype=object)
        unnamed = int((who.notna().to_numpy() & pd.isna(contact_id) & keep).sum())
        if unnamed:
            found.notes.append(f"{lines.file}: {unnamed} kept without a contact: their WhoId is a lead, or a "
                               "contact with no role on that opportunity")
    else:
        contact_id = who.where(who.astype(str).str.startswith("003"), None).to_numpy(dtype=object)
    table = pd.DataFrame({
        "activity_id": text_column(rows, "Id").to_numpy(dtype=object), "deal_id": deals.ids[deal_row],
        "contact_id": contact_id, "type": kind.to_numpy(dtype=object), "direction": direction.to_numpy(dtype=object),
        "occurred_at": occurred.array, "duration_min": duration,
    })
    origin = Origin.of_lines(lines, sources)
    return table.loc[keep].reset_index(drop=True), origin.take(np.flatnonzero(keep))


# ---------------------------------------------------------------------------------------------
# Wiring.


def import_salesforce(files: Mapping[str, pd.DataFrame], mapping: NameMapping,
                      options: SalesforceOptions = SalesforceOptions()) -> Imported:
    """Build the contract's tables from Salesforce object files (file name -> text frame, as read).

    ``SourceError`` when the files cannot make an export at all (no Opportunity file, a required
    field missing); everything else is gathered into the result (problems, rows left out, warnings).
    """
    where, ignored = find_objects(files)
    if "Opportunity" not in where:
        raise SourceError(f"no Opportunity.csv among the files ({', '.join(sorted(files)) or 'none'}); "
                          f"export the objects as {', '.join(f'{o}.csv' for o in OBJECTS)}")
    found = _Found()
    if ignored:
        found.notes.append(f"files ignored (not a Salesforce object read here): {', '.join(ignored)}")
    objects: dict[str, tuple[Lines, pd.DataFrame]] = {}
    for obj, file in where.items():
        frame = files[file]
        check_fields(obj, file, frame)
        key = "OpportunityId" if obj in ("OpportunityHistory", "OpportunityFieldHistory") else "Id"
        lines = Lines.of(file, frame, key)
        frame = _drop_deleted(lines, frame, found)
        objects[obj] = (Lines.of(file, frame, key), frame)  # rows still numbered by their place in the file
    as_of = options.as_of if options.as_of is not None else export_time({o: f for o, (_, f) in objects.items()},
                                                                        options.times)
    deals, mapping = _deals(objects["Opportunity"][1], objects["Opportunity"][0], objects.get("Account"), mapping,
                            options, as_of, found)
    tables: dict[str, pd.DataFrame] = {}
    origins: dict[str, Origin] = {}

    entries = entry_origin = snapshots = None
    if "OpportunityHistory" in objects:
        lines, frame = objects["OpportunityHistory"]
        entries, entry_origin, snapshots = _stage_entries(frame, lines, deals, mapping, options, found)
    changes, change_origin = None, Origin.concat([])
    if "OpportunityFieldHistory" in objects:
        lines, frame = objects["OpportunityFieldHistory"]
        changes, change_origin, stage_changes = _field_changes(frame, lines, deals, options, found)
        if entries is None and len(stage_changes):
            entries, entry_origin = _entries_from_field_history(stage_changes, deals, lines.file)
    if snapshots is not None:
        file = objects["OpportunityHistory"][0].file
        more, more_origin = _snapshot_changes(snapshots, deals, changes, file)
        if more is not None and len(more):
            counts = more["field"].value_counts().sort_index()
            found.notes.append(f"{file}: changes taken from its snapshots (deals OpportunityFieldHistory has no "
                               "such changes of): " + ", ".join(f"{name} {n}" for name, n in counts.items()))
            changes = more if changes is None else pd.concat([changes, more], ignore_index=True)
            change_origin = Origin.concat([change_origin, more_origin])
    deals.frame["closed_at"] = _closed_at(deals, entries, mapping)
    tables["deals"] = deals.frame
    origins["deals"] = Origin.of_lines(deals.lines, deals.frame.attrs["sources"])
    if entries is not None:
        tables["stage_history"], origins["stage_history"] = entries, entry_origin
    if changes is not None:
        tables["field_history"], origins["field_history"] = changes, change_origin
    contacts = None
    if "OpportunityContactRole" in objects:
        lines, frame = objects["OpportunityContactRole"]
        people = objects["Contact"][1] if "Contact" in objects else None
        contacts, origins["contacts"] = _contacts(frame, lines, people, deals, mapping, options, found)
        tables["contacts"] = contacts
    elif "Contact" in objects:
        found.notes.append(f"{where['Contact']}: not used without OpportunityContactRole (which says who is on which deal)")
    parts = [_activities(obj, objects[obj][1], objects[obj][0], deals, contacts, mapping, options, as_of, found)
             for obj in ("Task", "Event") if obj in objects]
    if parts:
        tables["activities"] = pd.concat([p[0] for p in parts], ignore_index=True)
        origins["activities"] = Origin.concat([p[1] for p in parts])
    return Imported(tables=tables, origins=origins, mapping=mapping, problems=found.problems, skipped=found.skipped,
                    warnings=found.warnings, notes=found.notes,
                    comparison=_comparison(objects["Opportunity"][1], as_of))


COMPARISON_COLUMNS = ("deal_id", "crm_stage", "crm_probability", "crm_forecast_category", "exported_at")


def _comparison(opp: pd.DataFrame, as_of: pd.Timestamp | None) -> pd.DataFrame | None:
    """Salesforce's own estimate per deal at export time, kept beside the export for comparison:
    Probability (the stage table reps see, as a share) and ForecastCategoryName. Never a feature:
    they are export-time values, and for a closed deal they are its outcome."""
    if find_header(opp, "Probability") is None and find_header(opp, "ForecastCategoryName") is None:
        return None
    probability, _ = parse_numbers(text_column(opp, "Probability"))
    return pd.DataFrame({
        "deal_id": text_column(opp, "Id").to_numpy(), "crm_stage": text_column(opp, "StageName").to_numpy(),
        "crm_probability": probability / 100.0,
        "crm_forecast_category": text_column(opp, "ForecastCategoryName").to_numpy(),
        "exported_at": [None if as_of is None else as_of.strftime("%Y-%m-%dT%H:%M:%SZ")] * len(opp),
    })
