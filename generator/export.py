"""Realistic CRM export generator: a forward simulation of deals, with its ground truth kept apart.

``generate_export`` is the pure core: it simulates ``n_deals`` deals day by day (vectorised over
all open deals, see ``generator.simulation``), records what a CRM would record (stage changes,
close-date and amount changes, contacts, activities) and returns the five contract tables in
the raw shape written to disk, plus the true win probabilities (``truth``) and, for messy
exports, the list of planted problems. ``run_generate`` is the CLI edge: files, progress, summary.
See docs/generator.md for the generative story.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table as RichTable

from features.contract.check import check_tables
from features.contract.io import write_frame, write_tables
from features.contract.partitioned import write_partitioned
from features.contract.schema import (
    ACTIVITY_TYPES,
    DEAL_TYPES,
    ROLES,
    SENIORITIES,
    STAGES,
    TABLES,
    Export,
)
from features.contract.violations import ContractError
from generator.messy import plant_problems
from generator.simulation import (
    LOST,
    MAX_CONTACTS,
    N_OPEN,
    WON,
    DayOutcome,
    DealState,
    SimulationParams,
    advance_day,
    estimate_creation_probabilities,
    estimate_outcome_probabilities,
    open_deals,
    sigmoid,
)

DEFAULT_EXPORT_DATE = pd.Timestamp("2026-07-01T00:00:00Z")
TRUTH_COLUMNS = ["deal_id", "as_of", "true_win_probability", "true_slip_probability", "kind"]
# The hidden state behind each truth row (``generate_export(hidden_state=True)``; never in the
# truth file): the simulation's DealState fields that enter the day's health or its pace.
HIDDEN_STATE_COLUMNS = ["quality", "pace", "momentum", "budget", "champion", "dm", "eb"]
Progress = Callable[[str, int, int], None]

SEGMENTS = ("smb", "mid_market", "enterprise")
SEGMENT_PROBS = (0.5, 0.35, 0.15)
SEGMENT_AMOUNT = (9_000.0, 35_000.0, 140_000.0)  # median first-year value
SEGMENT_PACE = (0.3, 0.0, -0.35)  # log speed
SEGMENT_PLANNED_WEEKS = ((4, 11), (6, 15), (9, 22))  # rep's first close-date estimate
REGIONS = ("north_america", "emea", "apac", "latam")
REGION_PROBS = (0.45, 0.3, 0.15, 0.1)
PRODUCTS = ("core", "analytics", "platform", "add_on")
LEAD_SOURCES = ("inbound", "outbound", "referral", "partner", "event")
LEAD_SOURCE_PROBS = (0.3, 0.35, 0.1, 0.12, 0.13)
LEAD_SOURCE_EFFECT = (0.3, -0.3, 0.6, 0.2, 0.0)
DEAL_TYPE_EFFECT = (0.0, 0.5, 1.0)  # new_business, expansion, renewal
ACTIVITY_RATE = (0.11, 0.17, 0.2, 0.18, 0.15)  # activities per day by open stage
ACTIVITY_TYPE_PROBS = np.array(
    [
        # call  meeting email demo
        [0.40, 0.10, 0.48, 0.02],  # identify
        [0.30, 0.20, 0.38, 0.12],  # qualify
        [0.25, 0.25, 0.35, 0.15],  # propose
        [0.28, 0.30, 0.38, 0.04],  # negotiate
        [0.25, 0.20, 0.53, 0.02],  # contract
    ]
)
SENIORITY_PROBS = np.array(
    [
        # individual manager director vp   c_level
        [0.00, 0.02, 0.18, 0.40, 0.40],  # decision_maker
        [0.00, 0.05, 0.30, 0.40, 0.25],  # economic_buyer
        [0.10, 0.45, 0.35, 0.10, 0.00],  # champion
        [0.55, 0.35, 0.10, 0.00, 0.00],  # technical_evaluator
        [0.30, 0.40, 0.25, 0.05, 0.00],  # influencer
        [0.70, 0.25, 0.05, 0.00, 0.00],  # business_user
        [0.30, 0.50, 0.20, 0.00, 0.00],  # procurement
        [0.50, 0.35, 0.15, 0.00, 0.00],  # other
    ]
)


@dataclass(frozen=True)
class ObservationParams:
    """How the hidden state shows in what the CRM records (weights on the log-odds of each event)."""

    activity_momentum: float = 1.0  # activity rate x exp(this x momentum)
    activity_quality: float = 0.6
    activity_fit: float = 0.2
    activity_key_person: float = 0.8  # engaged decision maker / economic buyer: more meetings and calls
    inbound_momentum: float = 1.2
    inbound_budget: float = 1.0  # budget trouble: fewer inbound touches
    inbound_fit: float = 0.4
    inbound_quality: float = 1.2
    inbound_champion: float = 0.9  # a strong champion reaches out: inbound odds + this x champion strength
    dm_weight: float = 20.0  # decision maker's weight when picking an activity's contact: 0.02 + this x dm^2
    eb_weight: float = 6.0  # economic buyer's: (0.02 + this x eb^2) x exp(eb_budget x budget level)
    eb_budget: float = 1.5
    talk_momentum: float = 0.1
    talk_fit: float = 0.1
    talk_quality: float = 0.08
    next_step_momentum: float = 0.9
    next_step_budget: float = 0.6
    next_step_quality: float = 1.8
    next_step_dm: float = 1.2
    next_step_champion: float = 0.6
    talk_champion: float = 0.1
    amount_fit: float = 0.3  # first amount x exp(this x fit + amount_budget_start x static budget)
    amount_budget_start: float = 0.8
    amount_account: float = 0.8  # ... x exp(this x (account fit + owner skill)): good accounts buy more
    plan_fit: float = 0.3  # first planned weeks x exp(-this x fit - plan_pace x the deal's own pace noise
    plan_pace: float = 1.0  # - plan_quality x the deal's static quality): a well-qualified lead is planned shorter
    plan_quality: float = 0.5
    key_person_meeting: float = 0.8  # an activity with the DM / EB is a meeting with probability this x engagement
    cut_amount_prob: float = 0.9  # a budget cut reduces the amount the same day with this probability
    cut_amount_log: float = -0.45
    cut_push_prob: float = 0.85  # ... and pushes the close date
    push_rate: float = 0.012  # daily push probability of a deal in poor health (x sigmoid(-health))
    amount_change_rate: float = 0.002  # daily, x2 in propose, x4 in negotiate
    amount_change_log: float = -0.03
    amount_budget: float = 0.3  # mean log amount change per unit of budget level


OBSERVE = ObservationParams()


@dataclass(frozen=True)
class GeneratedExport:
    """A simulated export: raw contract tables, the hidden truth, and planted problems (messy)."""

    tables: dict[str, pd.DataFrame]
    truth: pd.DataFrame
    planted: pd.DataFrame | None = None


@dataclass
class EventLog:
    """Columns of one kind of event, appended day by day, concatenated at the end."""

    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in self.columns}

    def add(self, **arrays: np.ndarray) -> None:
        for name in self.columns:
            self.parts[name].append(np.asarray(arrays[name]))

    def collect(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) if parts else np.array([]) for name, parts in self.parts.items()}


def draw_choice(probs: tuple[float, ...] | np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``size`` category codes with fixed probabilities."""
    probs = np.asarray(probs, dtype=float)
    return np.minimum(np.searchsorted(np.cumsum(probs) / probs.sum(), rng.random(size)), len(probs) - 1)


def draw_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one category code per row of a probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def text_array(values: np.ndarray, missing: np.ndarray | None = None) -> pd.api.extensions.ExtensionArray:
    """Fixed-width ASCII bytes -> a pandas ``str`` array, through Arrow (no Python objects)."""
    arrow = pa.array(values, type=pa.binary(), mask=missing).cast(pa.string())
    return pd.array(arrow, dtype="str")


def name_array(names: tuple[str, ...], codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Category codes -> their names as a pandas ``str`` array."""
    return text_array(np.array(names, dtype="S")[np.asarray(codes, dtype=np.int64)])


def write_digits(chars: np.ndarray, column: int, values: np.ndarray, width: int) -> None:
    """Write zero-padded decimal ``values`` into ``chars[:, column:column + width]`` (ASCII)."""
    values = values.copy()
    for position in range(column + width - 1, column - 1, -1):
        chars[:, position] = values % 10 + ord("0")
        values //= 10


def civil_dates(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Days since 1970-01-01 -> (year, month, day) arrays."""
    dates = days.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (dates - months).astype(np.int64) + 1
    return year, month, day


def to_minutes(days: np.ndarray) -> np.ndarray:
    """Days since the start of the span (float) -> whole minutes since it, as every written timestamp rounds them."""
    return np.floor(np.nan_to_num(np.asarray(days, dtype=float)) * 1440.0).astype(np.int64)


def format_timestamps(days: np.ndarray, start: pd.Timestamp) -> np.ndarray:
    """Days since ``start`` (float) -> ISO-8601 UTC bytes to the minute, e.g. b"2025-03-01T10:15:00Z"."""
    return format_minutes(to_minutes(days), start)


def format_minutes(minutes: np.ndarray, start: pd.Timestamp) -> np.ndarray:
    """Whole minutes since ``start`` -> ISO-8601 UTC bytes, e.g. b"2025-03-01T10:15:00Z"."""
    base_minutes = int(start.tz_convert("UTC").tz_localize(None).to_datetime64().astype("datetime64[m]").astype(np.int64))
    minutes = np.asarray(minutes, dtype=np.int64) + base_minutes
    year, month, day = civil_dates(minutes // 1440)
    chars = np.frombuffer(b"0000-00-00T00:00:00Z", dtype=np.uint8)[None, :].repeat(len(minutes), axis=0)
    write_digits(chars, 0, year, 4)
    write_digits(chars, 5, month, 2)
    write_digits(chars, 8, day, 2)
    write_digits(chars, 11, minutes % 1440 // 60, 2)
    write_digits(chars, 14, minutes % 60, 2)
    return chars.view("S20").ravel()


def format_dates(days: np.ndarray, start: pd.Timestamp) -> np.ndarray:
    """Whole days since ``start`` -> ISO date bytes, e.g. b"2025-03-01"."""
    base_days = int(start.tz_convert("UTC").tz_localize(None).to_datetime64().astype("datetime64[D]").astype(np.int64))
    year, month, day = civil_dates(np.asarray(days, dtype=np.int64) + base_days)
    chars = np.frombuffer(b"0000-00-00", dtype=np.uint8)[None, :].repeat(len(year), axis=0)
    write_digits(chars, 0, year, 4)
    write_digits(chars, 5, month, 2)
    write_digits(chars, 8, day, 2)
    return chars.view("S10").ravel()


def format_ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Integer ids -> zero-padded id bytes, e.g. b"D0000042" (wider when a number needs it)."""
    numbers = np.asarray(numbers, dtype=np.int64).copy()
    if len(numbers) and numbers.max() >= 10**width:
        width = len(str(int(numbers.max())))
    size = len(prefix) + width
    chars = np.empty((len(numbers), size), dtype=np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    for position in range(size - 1, len(prefix) - 1, -1):
        chars[:, position] = numbers % 10 + ord("0")
        numbers //= 10
    return chars.view(f"S{size}").ravel()


@dataclass(frozen=True)
class Population:
    """Static attributes of the deals, drawn before the simulation (index = deal, sorted by creation)."""

    created: np.ndarray  # creation time, days since the start of the span
    account: np.ndarray
    owner: np.ndarray
    segment: np.ndarray
    region: np.ndarray
    product: np.ndarray
    lead_source: np.ndarray
    base_quality: np.ndarray  # fit, budget, account fit and owner skill (type is added at creation)
    fit: np.ndarray
    budget: np.ndarray  # the static part of the budget (part of base_quality; shows in the CRM, see record_day)
    pace_noise: np.ndarray
    type_draw: np.ndarray
    amount_draw: np.ndarray
    planned_weeks: np.ndarray


def draw_population(n_deals: int, span_days: int, rng: np.random.Generator) -> Population:
    """Draw accounts (several deals each, Zipf-like), owners of different skill and deal attributes."""
    n_accounts = max(3, int(n_deals * 0.35))
    n_owners = max(4, min(400, n_deals // 150))
    account_segment = draw_choice(SEGMENT_PROBS, n_accounts, rng)
    account_region = draw_choice(REGION_PROBS, n_accounts, rng)
    account_fit = rng.normal(0.0, 0.3, n_accounts)
    owner_skill = rng.normal(0.0, 0.3, n_owners)
    account = draw_choice(rng.pareto(1.5, n_accounts) + 1.0, n_deals, rng)
    owner = rng.integers(0, n_owners, n_deals)
    # The pipeline grows over time: creation density rises by 40% across the span.
    u = rng.random(n_deals)
    created = np.minimum(np.sort(span_days * (np.sqrt(1 + u * (1.4**2 - 1)) - 1) / 0.4), span_days - 1e-3)
    segment = account_segment[account]
    low = np.array([w[0] for w in SEGMENT_PLANNED_WEEKS])[segment]
    high = np.array([w[1] for w in SEGMENT_PLANNED_WEEKS])[segment]
    fit = rng.normal(0.0, 0.7, n_deals)
    budget = rng.normal(0.0, 0.3, n_deals)
    lead_source = draw_choice(LEAD_SOURCE_PROBS, n_deals, rng)
    pace_noise = rng.normal(0.0, 0.12, n_deals)
    base_quality = (0.4 * fit + budget + account_fit[account] + owner_skill[owner]
                    + np.asarray(LEAD_SOURCE_EFFECT)[lead_source] - 0.5)
    return Population(
        created=created, account=account, owner=owner, segment=segment, region=account_region[account],
        product=draw_choice((0.45, 0.25, 0.2, 0.1), n_deals, rng), lead_source=lead_source,
        base_quality=base_quality,
        fit=fit, budget=budget, pace_noise=pace_noise, type_draw=rng.random(n_deals),
        # The rep's first estimates already reflect the deal: a well-fitting deal is sized larger (so is
        # one with a healthy budget) and planned shorter.
        amount_draw=rng.normal(0.0, 0.5, n_deals) + OBSERVE.amount_fit * fit + OBSERVE.amount_budget_start * budget
        + OBSERVE.amount_account * (account_fit[account] + owner_skill[owner]),
        planned_weeks=np.maximum(2, np.round(rng.integers(low, high + 1) * np.exp(
            -OBSERVE.plan_fit * fit - OBSERVE.plan_pace * pace_noise - OBSERVE.plan_quality * base_quality
        ))).astype(np.int64),
    )


@dataclass(frozen=True)
class Simulation:
    """Everything the day-by-day simulation produced, as arrays (deal indices, times in days)."""

    state: DealState  # final state of every deal
    deal_type: np.ndarray
    amount: np.ndarray
    expected_close: np.ndarray  # whole days
    closed_at: np.ndarray  # NaN while open
    stages: dict[str, np.ndarray]
    fields: dict[str, np.ndarray]
    contacts: dict[str, np.ndarray]
    activities: dict[str, np.ndarray]
    snapshot_deals: np.ndarray
    snapshot_as_of: np.ndarray  # whole days: the snapshot is the state at the end of day as_of - 1
    snapshot_states: DealState | None
    snapshot_expected_close: np.ndarray | None = None  # whole days, as known at as_of (the slip label's date)
    # Weekly grid (``capture_grid``): the state of each open deal at the midnight starting the day of
    # each of its weekly points created_at + 7k days, k >= 1 (the training snapshots' grid).
    grid_deals: np.ndarray | None = None
    grid_weeks: np.ndarray | None = None  # k
    grid_states: DealState | None = None
    grid_expected_close: np.ndarray | None = None


def concat_states(states: list[DealState]) -> DealState | None:
    """One DealState from several (None when empty)."""
    if not states:
        return None
    names = DealState.__dataclass_fields__
    return DealState(**{name: np.concatenate([getattr(s, name) for s in states]) for name in names})


def simulate_deals(
    pop: Population,
    span_days: int,
    truth_snapshots: int,
    rng: np.random.Generator,
    params: SimulationParams,
    progress: Progress | None = None,
    capture_grid: bool = False,
) -> Simulation:
    """Simulate all deals day by day from the start of the span to the export date.

    ``capture_grid`` keeps each open deal's hidden state on its weekly grid (see ``Simulation``)
    without drawing a random number, so the export is the same with or without it.
    """
    n = len(pop.created)
    state = DealState.fresh(np.zeros(n), np.ones(n))
    deal_type = np.zeros(n, np.int64)
    amount = np.zeros(n)
    expected_close = np.zeros(n, np.int64)
    closed_at = np.full(n, np.nan)
    account_wins = np.zeros(pop.account.max() + 1, np.int64)
    stages = EventLog(("deal", "stage", "time"))
    fields = EventLog(("deal", "field", "old", "new", "time"))
    contacts = EventLog(("deal", "slot", "role", "time"))
    activities = EventLog(("deal", "slot", "type", "inbound", "time", "duration", "talk_ratio", "next_step"))
    snap_deals: list[np.ndarray] = []
    snap_days: list[np.ndarray] = []
    snap_states: list[DealState] = []
    snap_expected: list[np.ndarray] = []
    snaps_per_day = rng.multinomial(truth_snapshots, np.full(span_days, 1.0 / span_days))
    day_start = np.searchsorted(pop.created, np.arange(span_days + 1))
    type_probs = np.array([[0.9, 0.06, 0.04], [0.25, 0.4, 0.35]])  # without / with an earlier win
    # A deal created on day d0 has its weekly points on days d0 + 7k; the state at that midnight is
    # the state after day d0 + 7k - 1. Deals by d0 mod 7, in creation order, find them each day.
    created_day = np.floor(pop.created).astype(np.int64)
    by_weekday = [np.flatnonzero(created_day % 7 == r) for r in range(7)] if capture_grid else []
    grid_deals: list[np.ndarray] = []
    grid_weeks: list[np.ndarray] = []
    grid_states: list[DealState] = []
    grid_expected: list[np.ndarray] = []

    for day in range(span_days):
        n_created = day_start[day]
        active = np.flatnonzero(state.stage[:n_created] < N_OPEN)
        if len(active):
            outcome = advance_day(state, active, rng, params)
            record_day(day, outcome, state, pop, amount, expected_close, rng, contacts, activities, fields)
            if len(outcome.moved_deals):
                times = day + rng.uniform(0.86, 0.95, len(outcome.moved_deals))
                stages.add(deal=outcome.moved_deals, stage=outcome.moved_to, time=times)
                closing = outcome.moved_to >= N_OPEN
                closed_at[outcome.moved_deals[closing]] = times[closing]
                won_deals = outcome.moved_deals[outcome.moved_to == WON]
                np.add.at(account_wins, pop.account[won_deals], 1)

        new = np.arange(day_start[day], day_start[day + 1])
        if len(new):
            has_win = (account_wins[pop.account[new]] > 0).astype(np.int64)
            cum = np.cumsum(type_probs[has_win], axis=1)
            deal_type[new] = (pop.type_draw[new][:, None] > cum).sum(axis=1)
            state.quality[new] = pop.base_quality[new] + np.asarray(DEAL_TYPE_EFFECT)[deal_type[new]]
            state.pace[new] = np.exp(
                0.4 * pop.fit[new] + np.asarray(SEGMENT_PACE)[pop.segment[new]]
                + 0.2 * (deal_type[new] == 2) + pop.pace_noise[new]
            )
            size = np.asarray(SEGMENT_AMOUNT)[pop.segment[new]] * np.exp(pop.amount_draw[new])
            size *= np.array([1.0, 0.45, 0.9])[deal_type[new]]
            amount[new] = np.maximum(500.0, np.round(size / 100.0) * 100.0)
            expected_close[new] = np.floor(pop.created[new]).astype(np.int64) + 7 * pop.planned_weeks[new]
            slots, roles = open_deals(state, new, rng, params)
            contacts.add(deal=new, slot=slots, role=roles, time=pop.created[new])
            stages.add(deal=new, stage=np.zeros(len(new), np.int64), time=pop.created[new])

        wanted = snaps_per_day[day]
        if wanted:
            open_now = np.flatnonzero(state.stage[: day_start[day + 1]] < N_OPEN)
            picked = np.sort(rng.choice(open_now, size=min(wanted, len(open_now)), replace=False))
            snap_deals.append(picked)
            snap_days.append(np.full(len(picked), day + 1))
            snap_states.append(state.take(picked))
            snap_expected.append(expected_close[picked].copy())
        if capture_grid and day >= 6:
            candidates = by_weekday[(day + 1) % 7]
            candidates = candidates[: np.searchsorted(candidates, day_start[day - 5])]  # created by day - 6
            due = candidates[state.stage[candidates] < N_OPEN]
            if len(due):
                grid_deals.append(due)
                grid_weeks.append((day + 1 - created_day[due]) // 7)
                grid_states.append(state.take(due))
                grid_expected.append(expected_close[due].copy())
        if progress is not None and (day % 10 == 0 or day == span_days - 1):
            progress("simulate", day + 1, span_days)

    return Simulation(
        state=state, deal_type=deal_type, amount=amount, expected_close=expected_close, closed_at=closed_at,
        stages=stages.collect(), fields=fields.collect(), contacts=contacts.collect(),
        activities=activities.collect(),
        snapshot_deals=np.concatenate(snap_deals) if snap_deals else np.array([], np.int64),
        snapshot_as_of=np.concatenate(snap_days) if snap_days else np.array([], np.int64),
        snapshot_states=concat_states(snap_states),
        snapshot_expected_close=np.concatenate(snap_expected) if snap_expected else np.array([], np.int64),
        grid_deals=np.concatenate(grid_deals) if grid_deals else np.array([], np.int64),
        grid_weeks=np.concatenate(grid_weeks) if grid_weeks else np.array([], np.int64),
        grid_states=concat_states(grid_states),
        grid_expected_close=np.concatenate(grid_expected) if grid_expected else np.array([], np.int64),
    )


def record_day(
    day: int,
    outcome: DayOutcome,
    state: DealState,
    pop: Population,
    amount: np.ndarray,
    expected_close: np.ndarray,
    rng: np.random.Generator,
    contacts: EventLog,
    activities: EventLog,
    fields: EventLog,
) -> None:
    """Turn one day of hidden state into what the CRM records: contacts, activities, field changes.

    Times within the day keep a deal's events in a causal order: contacts join (0.20-0.25),
    activities happen (0.25-0.80), fields change (budget-cut changes 0.80-0.81, others 0.81-0.85),
    then the stage moves (0.86-0.95).
    """
    if len(outcome.contact_deals):
        contacts.add(
            deal=outcome.contact_deals, slot=outcome.contact_slots, role=outcome.contact_roles,
            time=day + rng.uniform(0.2, 0.25, len(outcome.contact_deals)),
        )
    active = outcome.active
    stage = np.minimum(state.stage[active], N_OPEN - 1).astype(np.int64)
    momentum = state.momentum[active]
    budget = pop.budget[active] + state.budget[active]  # budget level: static part + cuts since creation
    rate = np.asarray(ACTIVITY_RATE)[stage] * np.exp(
        OBSERVE.activity_momentum * momentum + OBSERVE.activity_quality * state.quality[active]
        + OBSERVE.activity_fit * pop.fit[active]
        + OBSERVE.activity_key_person * np.maximum(state.dm[active], state.eb[active])
    )
    counts = rng.poisson(rate)
    pick = np.repeat(np.arange(len(active)), counts)
    if len(pick):
        deals = active[pick]
        k = len(deals)
        kind = draw_rows(ACTIVITY_TYPE_PROBS[stage[pick]], rng)
        champion, dm, eb = state.champion[deals], state.dm[deals], state.eb[deals]
        level = budget[pick]
        inbound = rng.random(k) < sigmoid(
            -1.1 + OBSERVE.inbound_momentum * momentum[pick] + OBSERVE.inbound_champion * champion + OBSERVE.inbound_budget * level
            + OBSERVE.inbound_fit * pop.fit[deals] + OBSERVE.inbound_quality * state.quality[deals]
        )
        roles = state.roles[deals]
        weight = np.where(roles >= 0, 1.0, 0.0)
        weight = np.where(roles == 2, 1.0 + 2.0 * champion[:, None], weight)
        # An engaged decision maker takes a large share of the activities, a listed but unengaged one hardly any.
        weight = np.where(roles == 0, 0.02 + OBSERVE.dm_weight * np.square(dm)[:, None], weight)
        # The economic buyer talks to the vendor while there is budget to spend and goes quiet after a cut.
        eb_weight = (0.02 + OBSERVE.eb_weight * np.square(eb)) * np.exp(OBSERVE.eb_budget * np.clip(level, -2.0, 1.0))
        weight = np.where(roles == 1, eb_weight[:, None], weight)
        cum = np.cumsum(weight, axis=1)
        slot = np.minimum((cum < (rng.random(k) * cum[:, -1])[:, None]).sum(axis=1), MAX_CONTACTS - 1)
        slot = np.where(rng.random(k) < 0.08, -1, slot)  # a few activities are logged without a contact
        # An engaged decision maker or economic buyer takes meetings, not just emails and calls.
        role = np.where(slot >= 0, roles[np.arange(k), np.maximum(slot, 0)], -1)
        engagement = np.where(role == 0, dm, np.where(role == 1, eb, 0.0))
        kind = np.where(rng.random(k) < OBSERVE.key_person_meeting * engagement, 1, kind)
        duration = np.select(
            [kind == 0, kind == 1, kind == 3],
            [rng.integers(3, 46, k), 30.0 * rng.integers(1, 3, k), rng.integers(45, 91, k)],
            np.nan,
        )
        recorded = (kind <= 1) & (rng.random(k) < 0.85)
        talk = np.clip(
            0.35 + OBSERVE.talk_momentum * momentum[pick] + OBSERVE.talk_champion * champion + OBSERVE.talk_fit * pop.fit[deals]
            + OBSERVE.talk_quality * state.quality[deals]
            + rng.normal(0, 0.1, k),
            0.02, 0.95,
        )
        next_step = rng.random(k) < sigmoid(
            -0.3 + OBSERVE.next_step_momentum * momentum[pick] + OBSERVE.next_step_dm * dm + OBSERVE.next_step_budget * level
            + OBSERVE.next_step_champion * champion
            + OBSERVE.next_step_quality * state.quality[deals]
        )
        activities.add(
            deal=deals, slot=slot, type=kind, inbound=inbound, time=day + rng.uniform(0.25, 0.8, k),
            duration=duration, talk_ratio=np.where(recorded, np.round(talk, 3), np.nan),
            next_step=np.where(recorded, next_step.astype(float), np.nan),
        )

    # A budget cut shows in the CRM the day it happens: mostly an amount cut, often a close-date push.
    cut = outcome.budget_cut_deals[state.stage[outcome.budget_cut_deals] < N_OPEN]
    if len(cut):
        u = rng.random((2, len(cut)))
        reduced = cut[u[0] < OBSERVE.cut_amount_prob]
        change_amount(reduced, np.exp(rng.normal(OBSERVE.cut_amount_log, 0.1, len(reduced))), day, (0.80, 0.81), amount, fields, rng)
        delayed = cut[u[1] < OBSERVE.cut_push_prob]
        push_close(delayed, expected_close[delayed] + 7 * rng.integers(3, 10, len(delayed)), day, (0.80, 0.81), expected_close, fields, rng)

    # Close-date pushes (overdue dates, or a deal losing health) and amount changes on open deals:
    # a healthy budget holds or expands the amount, a tight one gets discounts.
    is_open = state.stage[active] < N_OPEN
    still_open, health, level = active[is_open], outcome.health[is_open], budget[is_open]
    u = rng.random((3, len(still_open)))
    overdue = expected_close[still_open] <= day + 2
    push = (overdue & (u[0] < 0.35)) | (~overdue & (u[0] < OBSERVE.push_rate * sigmoid(-health)))
    pushed = still_open[push]
    new = np.where(
        overdue[push], day + 7 * rng.integers(2, 9, len(pushed)), expected_close[pushed] + 7 * rng.integers(2, 7, len(pushed))
    )
    push_close(pushed, new, day, (0.81, 0.85), expected_close, fields, rng)
    open_stage = state.stage[still_open]
    change = u[1] < OBSERVE.amount_change_rate * (1.0 + (open_stage == 2) + 3.0 * (open_stage == 3))
    changed = still_open[change]
    factor = np.exp(rng.normal(OBSERVE.amount_change_log + OBSERVE.amount_budget * level[change], 0.1, len(changed)))
    change_amount(changed, factor, day, (0.81, 0.85), amount, fields, rng)


def push_close(
    deals: np.ndarray, new: np.ndarray, day: int, window: tuple[float, float], expected_close: np.ndarray, fields: EventLog,
    rng: np.random.Generator,
) -> None:
    """Move the expected close date of ``deals`` (unique) to ``new``; log it at a time of day in ``window``."""
    if len(deals) == 0:
        return
    old = expected_close[deals]
    expected_close[deals] = new
    fields.add(deal=deals, field=np.zeros(len(deals), np.int64), old=old.astype(float), new=new.astype(float),
               time=day + rng.uniform(*window, len(deals)))


def change_amount(
    deals: np.ndarray, factor: np.ndarray, day: int, window: tuple[float, float], amount: np.ndarray, fields: EventLog,
    rng: np.random.Generator,
) -> None:
    """Multiply the amount of ``deals`` (unique) by ``factor`` (rounded to 100); log real changes in ``window``."""
    old = amount[deals]
    new = np.maximum(500.0, np.round(old * factor / 100.0) * 100.0)
    real = new != old
    amount[deals[real]] = new[real]
    fields.add(deal=deals[real], field=np.ones(int(real.sum()), np.int64), old=old[real], new=new[real],
               time=day + rng.uniform(*window, int(real.sum())))


def build_tables(sim: Simulation, pop: Population, start: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The five contract tables in their raw on-disk shape (ISO-8601 UTC strings, canonical names)."""
    n = len(pop.created)
    deal_ids = format_ids("D", np.arange(1, n + 1), 7)
    closed = ~np.isnan(sim.closed_at)
    final_stage = sim.state.stage.astype(np.int64)
    deals = pd.DataFrame(
        {
            "deal_id": text_array(deal_ids),
            "account_id": text_array(format_ids("A", pop.account + 1, 6)),
            "owner_id": text_array(format_ids("U", pop.owner + 1, 4)),
            "created_at": text_array(format_timestamps(pop.created, start)),
            "amount": sim.amount,
            "deal_type": name_array(DEAL_TYPES, sim.deal_type),
            "lead_source": name_array(LEAD_SOURCES, pop.lead_source),
            "segment": name_array(SEGMENTS, pop.segment),
            "region": name_array(REGIONS, pop.region),
            "product": name_array(PRODUCTS, pop.product),
            "stage": name_array(STAGES, final_stage),
            "expected_close_date": text_array(format_timestamps(sim.expected_close.astype(float), start)),
            "closed_at": text_array(format_timestamps(sim.closed_at, start), missing=~closed),
            "outcome": name_array(("open", "won", "lost"), np.where(final_stage == WON, 1, np.where(final_stage == LOST, 2, 0))),
        }
    )

    st = sim.stages
    order = np.lexsort((st["time"], st["deal"]))
    stage_history = pd.DataFrame(
        {
            "deal_id": text_array(deal_ids[st["deal"][order].astype(np.int64)]),
            "stage": name_array(STAGES, st["stage"][order]),
            "entered_at": text_array(format_timestamps(st["time"][order], start)),
        }
    )

    fh = sim.fields
    order = np.argsort(fh["time"], kind="stable")
    is_date = fh["field"][order] == 0
    old, new = fh["old"][order], fh["new"][order]
    old_text = np.where(is_date, format_dates(np.where(is_date, old, 0), start), np.char.mod("%.0f", old).astype("S"))
    new_text = np.where(is_date, format_dates(np.where(is_date, new, 0), start), np.char.mod("%.0f", new).astype("S"))
    field_history = pd.DataFrame(
        {
            "deal_id": text_array(deal_ids[fh["deal"][order].astype(np.int64)]),
            "field": name_array(("expected_close_date", "amount"), fh["field"][order]),
            "old_value": text_array(old_text),
            "new_value": text_array(new_text),
            "changed_at": text_array(format_timestamps(fh["time"][order], start)),
        }
    )

    ct = sim.contacts
    order = np.argsort(ct["time"], kind="stable")
    ct_deal = ct["deal"][order].astype(np.int64)
    ct_role = ct["role"][order].astype(np.int64)
    seniority = draw_rows(SENIORITY_PROBS[ct_role], np.random.default_rng(n))
    not_filled = np.random.default_rng(n + 1).random(len(seniority)) < 0.03  # sometimes left empty
    contacts = pd.DataFrame(
        {
            "deal_id": text_array(deal_ids[ct_deal]),
            "contact_id": text_array(format_ids("C", ct_deal * MAX_CONTACTS + ct["slot"][order].astype(np.int64), 8)),
            "role": name_array(ROLES, ct_role),
            "seniority": text_array(np.array(SENIORITIES, dtype="S")[seniority], missing=not_filled),
            "added_at": text_array(format_timestamps(ct["time"][order], start)),
        }
    )

    ac = sim.activities
    order = np.argsort(ac["time"], kind="stable")
    ac_deal = ac["deal"][order].astype(np.int64)
    slot = ac["slot"][order].astype(np.int64)
    next_step = ac["next_step"][order]
    activities = pd.DataFrame(
        {
            "activity_id": text_array(format_ids("T", np.arange(1, len(order) + 1), 9)),
            "deal_id": text_array(deal_ids[ac_deal]),
            "contact_id": text_array(format_ids("C", ac_deal * MAX_CONTACTS + np.maximum(slot, 0), 8), missing=slot < 0),
            "type": name_array(ACTIVITY_TYPES, ac["type"][order]),
            "direction": name_array(("outbound", "inbound"), ac["inbound"][order].astype(np.int64)),
            "occurred_at": text_array(format_timestamps(ac["time"][order], start)),
            "duration_min": ac["duration"][order],
            "customer_talk_ratio": ac["talk_ratio"][order],
            "next_step_set": text_array(np.where(next_step > 0.5, b"true", b"false"), missing=np.isnan(next_step)),
        }
    )
    tables = {
        "deals": deals, "stage_history": stage_history, "field_history": field_history,
        "contacts": contacts, "activities": activities,
    }
    return {name: frame[TABLES[name].column_names] for name, frame in tables.items()}


# The maturity rule of features.pointintime.snapshots (SnapshotConfig.maturity_quantile; the generator
# may not import it): training labels only deals created at least this quantile of the cycle time
# before the export's end, and tests on the latest of them.
MATURITY_QUANTILE = 0.9
MATURITY_MARGIN_DAYS = 3.0  # a few deals past the horizon too: the export's end and rounding differ slightly
MINUTES_PER_WEEK = 7 * 1440


def select_grid_points(
    sim: Simulation, pop: Population, span_days: int, n_deals: int, per_deal: int, rng: np.random.Generator
) -> np.ndarray:
    """Rows of ``sim.grid_*`` that get a truth: up to ``per_deal`` weekly points of each of the
    ``n_deals`` most recently created deals whose outcome training can know.

    Those deals are the test period of ``dealrisk train`` (the later creation cohort of the mature
    closed deals, features.pointintime.snapshots' maturity rule), so the truth lands where the
    model is tested instead of being spread over two years. A point counts when it is strictly
    before the deal's (written, minute-rounded) close, as training's snapshots are; among a deal's
    points the ``per_deal`` kept are drawn at random.
    """
    empty = np.array([], np.int64)
    if sim.grid_states is None or not len(sim.grid_deals) or n_deals <= 0 or per_deal <= 0:
        return empty
    closed = ~np.isnan(sim.closed_at)
    if not closed.any():
        return empty
    horizon = float(np.quantile(sim.closed_at[closed] - pop.created[closed], MATURITY_QUANTILE))
    eligible = np.flatnonzero(closed & (pop.created <= span_days - horizon + MATURITY_MARGIN_DAYS))[-n_deals:]
    chosen = np.zeros(len(pop.created), bool)
    chosen[eligible] = True
    deals, weeks = sim.grid_deals, sim.grid_weeks
    rows = np.flatnonzero(chosen[deals])
    as_of = to_minutes(pop.created[deals[rows]]) + MINUTES_PER_WEEK * weeks[rows]
    rows = rows[as_of < to_minutes(sim.closed_at[deals[rows]])]
    rows = rows[np.lexsort((rng.random(len(rows)), deals[rows]))]  # by deal, in random order within it
    deal = deals[rows]
    first = np.r_[True, deal[1:] != deal[:-1]] if len(rows) else np.array([], bool)
    rank = np.arange(len(rows)) - np.maximum.accumulate(np.where(first, np.arange(len(rows)), 0))
    return np.sort(rows[rank < per_deal])


def build_truth(
    sim: Simulation,
    pop: Population,
    start: pd.Timestamp,
    rng: np.random.Generator,
    params: SimulationParams,
    n_paths: int,
    progress: Progress | None = None,
    grid_rows: np.ndarray | None = None,
    grid_rng: np.random.Generator | None = None,
    hidden_state: bool = False,
) -> pd.DataFrame:
    """True win and slip probabilities: every deal at creation, the sampled open (deal, as_of)
    moments and the chosen weekly-grid points (``grid_rows`` of ``sim.grid_*``, with ``grid_rng``).
    ``hidden_state``: each row also carries the state the probability conditions on
    (``HIDDEN_STATE_COLUMNS``; at creation quality and pace, the rest still 0).

    Slip is the training label's event: not won by the calendar day of the expected close date
    known at ``as_of``. A continuation from the state at midnight of day D simulates day D first,
    so "won by day E" is "won within E - D + 1 simulated days".
    """
    n = len(pop.created)
    deal_ids = format_ids("D", np.arange(1, n + 1), 7)
    if progress is not None:
        progress("truth at creation", 0, 1)
    # A new deal is first simulated the day after its creation; its first close date is 7 x planned weeks later.
    creation, creation_by = estimate_creation_probabilities(
        sim.state.quality, sim.state.pace, rng, params, win_within=7 * pop.planned_weeks
    )
    if progress is not None:
        progress("truth at creation", 1, 1)
    frames = [truth_frame(deal_ids, format_timestamps(pop.created, start), creation, creation_by, "creation")]
    states = [DealState.fresh(sim.state.quality, sim.state.pace)]

    def ticker(step: str, total: int) -> Callable[[int], None]:
        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            if progress is not None:
                progress(step, done[0], total)

        return tick

    if sim.snapshot_states is not None and len(sim.snapshot_deals):
        tick = ticker("truth at snapshots", len(sim.snapshot_deals))
        within = sim.snapshot_expected_close - sim.snapshot_as_of + 1
        snapshot, snapshot_by = estimate_outcome_probabilities(
            sim.snapshot_states, n_paths, rng, params, win_within=within, progress=tick
        )
        as_of = format_timestamps(sim.snapshot_as_of.astype(float), start)
        frames.append(truth_frame(deal_ids[sim.snapshot_deals], as_of, snapshot, snapshot_by, "snapshot"))
        states.append(sim.snapshot_states)
    if grid_rows is not None and len(grid_rows):
        deals = sim.grid_deals[grid_rows]
        weeks = sim.grid_weeks[grid_rows]
        as_of = to_minutes(pop.created[deals]) + MINUTES_PER_WEEK * weeks
        midnight = np.floor(pop.created[deals]).astype(np.int64) + 7 * weeks
        expected = expected_close_at(sim, deals, as_of, sim.grid_expected_close[grid_rows])
        tick = ticker("truth at weekly points", len(grid_rows))
        grid_states = sim.grid_states.take(grid_rows)
        grid, grid_by = estimate_outcome_probabilities(
            grid_states, n_paths, grid_rng, params, win_within=expected - midnight + 1, progress=tick,
        )
        frames.append(truth_frame(deal_ids[deals], format_minutes(as_of, start), grid, grid_by, "grid"))
        states.append(grid_states)
    truth = pd.concat(frames, ignore_index=True)[TRUTH_COLUMNS]
    if hidden_state:
        for column in HIDDEN_STATE_COLUMNS:
            truth[column] = np.concatenate([np.asarray(getattr(state, column), dtype=float) for state in states])
    return truth


def expected_close_at(sim: Simulation, deals: np.ndarray, as_of_minutes: np.ndarray, at_midnight: np.ndarray) -> np.ndarray:
    """The expected close day of ``deals`` as the CRM shows it at ``as_of_minutes``: the value at the
    midnight before, moved by a close-date change logged that day at or before ``as_of`` (as the
    slip label reads it from ``field_history``, whose times are rounded down to the minute)."""
    log = sim.fields
    dated = log["field"] == 0
    change_deal = log["deal"][dated].astype(np.int64)
    change_minute = to_minutes(log["time"][dated])
    span = int(max(change_minute.max(initial=0), as_of_minutes.max(initial=0))) + 1
    keys = change_deal * span + change_minute
    order = np.argsort(keys, kind="stable")
    keys, new = keys[order], log["new"][dated][order]
    last = np.searchsorted(keys, deals * span + as_of_minutes, side="right") - 1
    found = last >= 0
    same_day = np.zeros(len(deals), bool)
    same_day[found] = (keys[last[found]] // span == deals[found]) & (
        keys[last[found]] % span >= (as_of_minutes[found] // 1440) * 1440
    )
    return np.where(same_day, new[np.maximum(last, 0)], at_midnight).astype(np.int64)


def truth_frame(deal_ids: np.ndarray, as_of: np.ndarray, win: np.ndarray, won_by_close: np.ndarray, kind: str) -> pd.DataFrame:
    """Truth rows: P(win) and P(slip) = 1 - P(won by the expected close date), rounded to 4 places."""
    return pd.DataFrame(
        {
            "deal_id": text_array(deal_ids),
            "as_of": text_array(as_of),
            "true_win_probability": np.round(win, 4),
            "true_slip_probability": np.round(1.0 - won_by_close, 4),
            "kind": kind,
        }
    )


def generate_export(
    n_deals: int,
    seed: int,
    span_days: int = 730,
    export_date: pd.Timestamp | str | None = None,
    truth_snapshots: int = 2000,
    messy: bool = False,
    n_paths: int = 200,
    params: SimulationParams | None = None,
    progress: Progress | None = None,
    truth_grid_deals: int = 0,
    truth_grid_points: int = 1,
    hidden_state: bool = False,
) -> GeneratedExport:
    """Simulate a CRM export of ``n_deals`` deals created over ``span_days`` up to ``export_date``.

    Deterministic for a seed, and the tables do not depend on the truth settings. ``truth`` has
    one ``creation`` row per deal (``as_of`` = its ``created_at``), up to ``truth_snapshots``
    ``snapshot`` rows (deal open at a random midnight ``as_of``) and ``grid`` rows: up to
    ``truth_grid_points`` weekly points (``created_at + 7k days``, the training snapshots' grid)
    of each of the ``truth_grid_deals`` latest mature closed deals (``select_grid_points``: the
    test period). Each probability is estimated from ``n_paths`` continuations of the hidden state.
    The truth is off here by default (callers that only want tables pay nothing); the CLI turns
    the grid on. ``hidden_state`` adds the simulation's state behind every truth row
    (``HIDDEN_STATE_COLUMNS``): for diagnostics such as bench/truth_ceiling.py, never for a model
    or the truth file; the tables and probabilities are the same either way.
    """
    if n_deals < 1:
        raise ValueError(f"n_deals must be at least 1, got {n_deals}")
    if span_days < 1:
        raise ValueError(f"span_days must be at least 1, got {span_days}")
    for name, value in (("truth_snapshots", truth_snapshots), ("truth_grid_deals", truth_grid_deals),
                        ("truth_grid_points", truth_grid_points)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    export_at = DEFAULT_EXPORT_DATE if export_date is None else pd.Timestamp(export_date)
    export_at = (export_at.tz_localize("UTC") if export_at.tzinfo is None else export_at.tz_convert("UTC")).floor("D")
    start = export_at - pd.Timedelta(days=span_days)
    params = params or SimulationParams()
    # A fourth stream for the grid: the first three (and so the export and the other truth rows) stay as they were.
    sim_rng, truth_rng, messy_rng, grid_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    pop = draw_population(n_deals, span_days, sim_rng)
    grid = truth_grid_deals > 0 and truth_grid_points > 0
    sim = simulate_deals(pop, span_days, truth_snapshots, sim_rng, params, progress, capture_grid=grid)
    tables = build_tables(sim, pop, start)
    grid_rows = select_grid_points(sim, pop, span_days, truth_grid_deals, truth_grid_points, grid_rng) if grid else None
    truth = build_truth(sim, pop, start, truth_rng, params, n_paths, progress, grid_rows, grid_rng, hidden_state)
    planted = None
    if messy:
        tables, planted = plant_problems(tables, messy_rng)
    return GeneratedExport(tables=tables, truth=truth, planted=planted)


def summarize_export(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Rows per table, closed-deal win rate and median cycle days of won and lost deals."""
    deals = tables["deals"]
    summary: dict[str, float] = {f"rows_{name}": len(frame) for name, frame in tables.items()}
    outcome = deals["outcome"]
    closed = outcome.isin(["won", "lost"])
    summary["open_deals"] = int((outcome == "open").sum())
    summary["closed_win_rate"] = float((outcome[closed] == "won").mean()) if closed.any() else float("nan")
    created = pd.to_datetime(deals["created_at"], utc=True, format="ISO8601", errors="coerce")
    closed_at = pd.to_datetime(deals["closed_at"], utc=True, format="ISO8601", errors="coerce")
    cycle = (closed_at - created).dt.total_seconds() / 86400.0
    summary["median_cycle_days_won"] = float(cycle[outcome == "won"].median())
    summary["median_cycle_days_lost"] = float(cycle[outcome == "lost"].median())
    return summary


def checked_export(tables: dict[str, pd.DataFrame]) -> Export:
    """The generated tables through the contract check (``ContractError`` if they broke it)."""
    result = check_tables(tables)
    if result.export is None:
        raise ContractError(result.violations, result.counts)
    return result.export


def resolve_truth_path(out: Path, truth: Path | None) -> Path:
    """The truth file: ``truth.csv`` beside the export folder by default, never inside it."""
    out = Path(out)
    path = Path(truth) if truth is not None else out.parent / "truth.csv"
    if path.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"truth file {path} must not be inside the export folder {out}: it would leak the answers")
    return path


def run_generate(
    n_deals: int,
    seed: int,
    out: Path,
    truth: Path | None = None,
    span_days: int = 730,
    truth_snapshots: int = 2000,
    fmt: str = "csv",
    messy: bool = False,
    truth_grid_deals: int = 2000,
    truth_grid_points: int = 1,
    partitions: int | None = None,
) -> GeneratedExport:
    """CLI edge: generate, write the export (atomically) and the truth file beside it, print a summary.

    ``partitions``: write the export straight to the partitioned Parquet form the Dask engine
    reads (``features.contract.partitioned.write_partitioned``, after the contract check) instead
    of a folder of tables.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format must be csv or parquet, got {fmt!r}")
    if partitions is not None and messy:
        raise ValueError("--messy and --partitions do not go together: a partitioned export holds checked tables only, "
                         "and the planted dirt breaks the contract on purpose")
    truth_path = resolve_truth_path(out, truth)
    console = Console()
    began = time.perf_counter()
    with RichProgress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def report(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        result = generate_export(
            n_deals, seed, span_days=span_days, truth_snapshots=truth_snapshots, messy=messy, progress=report,
            truth_grid_deals=truth_grid_deals, truth_grid_points=truth_grid_points,
        )
        report("write files", 0, 1)
        if partitions is None:
            write_tables(result.tables, out, fmt=fmt)
        else:
            write_partitioned(checked_export(result.tables), out, partitions)
        write_frame(result.truth, truth_path)
        if result.planted is not None:
            write_frame(result.planted, truth_path.with_name("planted.csv"))
        report("write files", 1, 1)
    elapsed = time.perf_counter() - began

    summary = summarize_export(result.tables)
    table = RichTable(title=f"Generated export {out} (seed {seed})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name in TABLES:
        table.add_row(f"rows: {name}", f"{summary[f'rows_{name}']:,}")
    table.add_row("open deals at export", f"{summary['open_deals']:,}")
    table.add_row("closed-deal win rate", f"{summary['closed_win_rate']:.1%}")
    table.add_row("median cycle days, won", f"{summary['median_cycle_days_won']:.0f}")
    table.add_row("median cycle days, lost", f"{summary['median_cycle_days_lost']:.0f}")
    kinds = result.truth["kind"].value_counts()
    table.add_row("truth rows (creation + weekly + random)",
                  f"{len(result.truth):,} ({kinds.get('creation', 0):,} + {kinds.get('grid', 0):,} + {kinds.get('snapshot', 0):,})")
    if result.planted is not None:
        table.add_row("planted problems", f"{len(result.planted):,}")
    table.add_row("time taken", f"{elapsed:.1f} s")
    console.print(table)
    console.print(f"truth file: {truth_path}")
    return result
