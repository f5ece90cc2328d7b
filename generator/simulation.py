"""Simulation engine of the CRM export generator: each deal's hidden state and its daily dynamics.

The engine works on whole arrays of deals at once (numpy, no per-deal loops). The same
``advance_day`` step drives the main simulation (which also turns the state into observable
CRM events, in ``generator.export``) and the Monte Carlo continuations that give the true
win probability of a state. Arrays inside a ``DealState`` are updated in place: this is the
simulator's working memory, never a frame handed to callers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from features.contract.schema import OPEN_STAGES, ROLES

ROLE_CODE: dict[str, int] = {role: i for i, role in enumerate(ROLES)}
DECISION_MAKER = ROLE_CODE["decision_maker"]
ECONOMIC_BUYER = ROLE_CODE["economic_buyer"]
CHAMPION = ROLE_CODE["champion"]
N_OPEN = len(OPEN_STAGES)
WON = N_OPEN  # stage codes 0..4 are the open stages, then won and lost
LOST = N_OPEN + 1
MAX_CONTACTS = 10
# Random-walk innovations are uniform with unit variance: cheaper to draw than normals, and their
# sums over days are as good as Gaussian.
UNIT_UNIFORM = np.float32(np.sqrt(12.0))


@dataclass(frozen=True)
class SimulationParams:
    """Rates and weights of the hidden dynamics (per day unless said otherwise)."""

    momentum_keep: float = 0.95
    momentum_noise: float = 0.28
    momentum_shock_rate: float = 0.003
    momentum_shock_size: float = -1.5
    budget_cut_rate: float = 0.0015
    budget_cut_mean: float = -1.0
    budget_recovery: float = 0.998
    # health = quality + weights . (momentum, budget, champion, dm, eb) + offset (log-odds scale)
    health_weights: tuple[float, float, float, float, float] = (0.7, 1.0, 0.5, 1.8, 0.6)
    health_offset: float = -2.6
    advance_rate: tuple[float, ...] = (0.35, 0.3, 0.25, 0.25)
    advance_gate: tuple[float, ...] = (0.5, 0.8, 1.1, 1.3)
    advance_slope: float = 1.0  # how sharply stage speed depends on health
    key_person_floor: float = 0.05  # share of the advance/win rate without an engaged DM or EB
    back_rate: float = 0.004
    win_rate: float = 0.3
    win_gate: float = 1.3
    loss_rate: float = 0.006
    loss_gate: float = 0.6
    loss_stage_factor: tuple[float, ...] = (0.4, 0.7, 1.0, 1.0, 0.8)
    loss_base: float = 0.1
    loss_stale_days: float = 45.0  # loss hazard grows with (days in stage / this) squared: stalled deals die
    max_age_days: int = 540  # pipeline clean-up: still open at this age -> lost
    contact_rate: float = 0.02
    dm_join_rate: float = 0.04
    eb_join_rate: float = 0.02
    initial_role_probs: tuple[float, ...] = (0.06, 0.04, 0.15, 0.15, 0.25, 0.25, 0.0, 0.10)


# Probability of each role for a contact joining in each open stage (decision maker and economic
# buyer mostly join through their own processes, so they are rare here).
JOIN_ROLE_PROBS = np.array(
    [
        # dm    eb    champ tech  infl  buser proc  other
        [0.02, 0.01, 0.22, 0.20, 0.20, 0.20, 0.00, 0.15],  # identify
        [0.03, 0.02, 0.20, 0.25, 0.18, 0.17, 0.02, 0.13],  # qualify
        [0.03, 0.03, 0.12, 0.25, 0.18, 0.17, 0.10, 0.12],  # propose
        [0.03, 0.04, 0.08, 0.12, 0.15, 0.13, 0.35, 0.10],  # negotiate
        [0.03, 0.04, 0.05, 0.08, 0.10, 0.10, 0.50, 0.10],  # contract
    ]
)


@dataclass
class DealState:
    """Hidden state of a batch of deals, one array element per deal."""

    quality: np.ndarray  # static log-odds: fit, budget at start, owner skill, account, type, source
    pace: np.ndarray  # static speed multiplier: fit and segment
    momentum: np.ndarray
    budget: np.ndarray  # budget shocks since creation (0 = as planned)
    champion: np.ndarray  # champion strength, 0 without a champion
    dm: np.ndarray  # decision-maker engagement in [0, 1], 0 without a decision maker
    eb: np.ndarray  # economic-buyer engagement in [0, 1]
    stage: np.ndarray  # 0..4 open stages, 5 won, 6 lost
    age: np.ndarray  # days since creation
    days_in_stage: np.ndarray
    n_contacts: np.ndarray
    roles: np.ndarray  # (deals, MAX_CONTACTS) role codes, -1 for an empty slot
    role_mask: np.ndarray  # bit r set when role r is on the deal

    @classmethod
    def fresh(cls, quality: np.ndarray, pace: np.ndarray) -> DealState:
        """New deals in ``identify`` with no contacts yet."""
        n = len(quality)
        zeros = np.zeros(n, np.float32)
        return cls(
            quality=np.asarray(quality, dtype=np.float32).copy(), pace=np.asarray(pace, dtype=np.float32).copy(),
            momentum=zeros.copy(), budget=zeros.copy(), champion=zeros.copy(), dm=zeros.copy(),
            eb=zeros.copy(), stage=np.zeros(n, np.int8), age=np.zeros(n, np.int32),
            days_in_stage=np.zeros(n, np.int32), n_contacts=np.zeros(n, np.int8),
            roles=np.full((n, MAX_CONTACTS), -1, np.int8), role_mask=np.zeros(n, np.int16),
        )

    def take(self, index: np.ndarray) -> DealState:
        """A copy of the state of the deals at ``index`` (repeats allowed)."""
        return DealState(**{f.name: getattr(self, f.name)[index].copy() for f in fields(self)})

    def __len__(self) -> int:
        return len(self.quality)


@dataclass(frozen=True)
class DayOutcome:
    """What happened to the active deals in one simulated day."""

    active: np.ndarray  # deal indices that were simulated
    health: np.ndarray  # their health that day (aligned with ``active``)
    contact_deals: np.ndarray
    contact_slots: np.ndarray
    contact_roles: np.ndarray
    moved_deals: np.ndarray
    moved_to: np.ndarray  # new stage codes (WON / LOST close the deal)
    budget_cut_deals: np.ndarray  # deals whose budget was cut that day (the CRM shows it, see record_day)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def add_contacts(
    state: DealState, deals: np.ndarray, roles: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Put one new contact with ``roles`` on each of ``deals`` (unique); return their slots.

    Key people arrive with an engagement level: a decision maker is engaged from the start
    only sometimes (a strong champion helps), otherwise listed but hardly reachable.
    """
    slots = state.n_contacts[deals].astype(np.int64)
    state.roles[deals, slots] = roles
    state.n_contacts[deals] += 1
    state.role_mask[deals] |= np.left_shift(np.int16(1), roles.astype(np.int16))
    if len(deals) == 0:
        return slots
    draws = rng.random((3, len(deals)))
    engaged_p = sigmoid(-0.5 + 1.2 * state.champion[deals])
    dm_level = np.where(draws[0] < engaged_p, 0.45 + 0.55 * draws[1], 0.12 * draws[1])
    eb_level = np.where(draws[0] < 0.55, 0.4 + 0.6 * draws[1], 0.12 * draws[1])
    is_dm, is_eb, is_ch = roles == DECISION_MAKER, roles == ECONOMIC_BUYER, roles == CHAMPION
    state.dm[deals[is_dm]] = dm_level[is_dm]
    state.eb[deals[is_eb]] = eb_level[is_eb]
    state.champion[deals[is_ch]] = np.clip(0.3 + 1.1 * draws[2][is_ch], 0.0, 2.0)
    return slots


def draw_roles(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one role code per row of a (n, roles) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1).astype(np.int8)


def open_deals(
    state: DealState, deals: np.ndarray, rng: np.random.Generator, params: SimulationParams
) -> tuple[np.ndarray, np.ndarray]:
    """Give newly created deals their first contact; return (slots, roles)."""
    probs = np.broadcast_to(np.asarray(params.initial_role_probs), (len(deals), len(ROLES)))
    roles = draw_roles(probs, rng)
    return add_contacts(state, deals, roles, rng), roles


def advance_day(
    state: DealState, active: np.ndarray | None, rng: np.random.Generator, params: SimulationParams
) -> DayOutcome:
    """Advance deals by one day: hidden state, contacts joining, stage moves and closing.

    ``active`` holds the indices of the deals to simulate, or None for every deal in ``state``
    (the fast path of the Monte Carlo continuations). Closed deals never move again.
    """
    def get(values: np.ndarray) -> np.ndarray:
        return values if active is None else values[active]

    def put(name: str, values: np.ndarray) -> None:
        if active is None:
            setattr(state, name, values)
        else:
            getattr(state, name)[active] = values

    k = len(state) if active is None else len(active)
    index = np.arange(k) if active is None else active
    u = rng.random((4, k), dtype=np.float32)
    stage = get(state.stage)
    is_open = stage < N_OPEN
    mask = get(state.role_mask)

    momentum = params.momentum_keep * get(state.momentum) + params.momentum_noise * UNIT_UNIFORM * (u[3] - 0.5)
    momentum = np.where(u[0] < params.momentum_shock_rate, momentum + params.momentum_shock_size, momentum)
    budget = params.budget_recovery * get(state.budget)
    cut = np.flatnonzero((u[0] >= params.momentum_shock_rate) & (u[0] < params.momentum_shock_rate + params.budget_cut_rate))
    budget[cut] += params.budget_cut_mean + 0.4 * rng.standard_normal(len(cut), dtype=np.float32)
    engagement = {}
    for name, role, step, top in (("champion", CHAMPION, 0.03, 2.0), ("dm", DECISION_MAKER, 0.025, 1.0), ("eb", ECONOMIC_BUYER, 0.025, 1.0)):
        level = get(getattr(state, name)).copy()
        present = np.flatnonzero((mask >> role) & 1)
        level[present] = np.clip(
            level[present] + 0.01 * momentum[present] + step * UNIT_UNIFORM * (rng.random(len(present), dtype=np.float32) - 0.5),
            0.0, top,
        )
        engagement[name] = level
        put(name, level)
    champion, dm, eb = engagement["champion"], engagement["dm"], engagement["eb"]
    put("momentum", momentum)
    put("budget", budget)
    w = params.health_weights
    health = (
        get(state.quality) + w[0] * momentum + w[1] * budget + w[2] * champion + w[3] * dm + w[4] * eb
        + params.health_offset
    )

    # Contacts: the champion brings in the decision maker; the economic buyer comes late.
    has_dm = (mask >> DECISION_MAKER) & 1 > 0
    has_eb = (mask >> ECONOMIC_BUYER) & 1 > 0
    room = is_open & (get(state.n_contacts) < MAX_CONTACTS)
    open_stage = np.minimum(stage, N_OPEN - 1)
    stage_level = open_stage.astype(np.float32)
    zero = np.float32(0.0)
    p_dm = np.where(~has_dm, params.dm_join_rate * stage_level * (0.6 + champion), zero)
    p_eb = np.where(~has_eb & (stage >= 2), params.eb_join_rate * (stage_level - 1) * (0.5 + dm), zero)
    p_any = params.contact_rate * (1 + 0.3 * stage_level) * np.exp(0.3 * momentum)
    joins = room & (u[1] < p_dm + p_eb + p_any)
    join_roles = np.where(
        u[1] < p_dm, DECISION_MAKER, np.where(u[1] < p_dm + p_eb, ECONOMIC_BUYER, -1)
    ).astype(np.int8)[joins]
    generic = join_roles < 0
    if generic.any():
        join_roles[generic] = draw_roles(JOIN_ROLE_PROBS[open_stage[joins][generic]], rng)
    contact_deals = index[joins]
    contact_slots = add_contacts(state, contact_deals, join_roles, rng)

    # Stage moves and closing, drawn from the health of the day (one exp for all hazards).
    neg_exp = np.exp(-health)
    key_person = params.key_person_floor + (1 - params.key_person_floor) * np.maximum(dm, eb)
    pad = (0.0, 0.0)
    rate = np.asarray(params.advance_rate + (params.win_rate,) + pad, dtype=np.float32)[stage]
    gate = np.exp(params.advance_slope * np.asarray(params.advance_gate + (params.win_gate,) + pad, dtype=np.float32))[stage]
    slope_exp = neg_exp if params.advance_slope == 1.0 else np.exp(-params.advance_slope * health)
    p_fwd = rate * get(state.pace) / (1 + gate * slope_exp) * np.where(stage >= 2, key_person, np.float32(1.0))
    p_back = np.where(is_open & (stage >= 1), params.back_rate * neg_exp / (1 + neg_exp), np.float32(0.0))
    days_in_stage = get(state.days_in_stage)
    p_loss = (
        params.loss_rate * (params.loss_base + np.square(days_in_stage.astype(np.float32) / params.loss_stale_days))
        * neg_exp / (neg_exp + np.exp(-params.loss_gate)) * np.asarray(params.loss_stage_factor + pad, dtype=np.float32)[stage]
    )
    draw = u[2]
    lost = draw < p_loss
    fwd = ~lost & (draw < p_loss + p_fwd)
    back = ~lost & ~fwd & (draw < p_loss + p_fwd + p_back)
    age = get(state.age) + 1
    lost |= is_open & (age >= params.max_age_days)
    new_stage = np.where(fwd, stage + 1, np.where(back, stage - 1, stage)).astype(np.int8)
    new_stage[lost] = LOST  # forward from contract (stage 4) is WON
    moved = new_stage != stage
    put("stage", new_stage)
    put("age", age)
    put("days_in_stage", np.where(moved, 0, days_in_stage + 1).astype(np.int32))
    return DayOutcome(
        active=index, health=health, contact_deals=contact_deals, contact_slots=contact_slots,
        contact_roles=join_roles, moved_deals=index[moved], moved_to=new_stage[moved],
        budget_cut_deals=index[cut],
    )


def simulate_to_close(
    state: DealState, rng: np.random.Generator, params: SimulationParams
) -> np.ndarray:
    """Run every deal in ``state`` (consumed) forward until it closes; return a won flag per deal."""
    return simulate_close(state, rng, params)[0]


def simulate_close(
    state: DealState, rng: np.random.Generator, params: SimulationParams
) -> tuple[np.ndarray, np.ndarray]:
    """Run every deal in ``state`` (consumed) forward until it closes: a won flag per deal and the
    step it closed on (1 = the first simulated day; 0 for a deal closed already).

    Closed deals are dropped from the working state once they are a fifth of it, so each step
    works on whole arrays without index gathers. A closed deal never moves again and its
    ``days_in_stage`` counts the days since it closed, which gives its closing step for free.
    """
    won = state.stage == WON
    closed_step = np.zeros(len(state), np.int32)
    index = np.arange(len(state))
    work = state.take(np.flatnonzero(state.stage < N_OPEN))
    index = index[state.stage < N_OPEN]
    step = 0
    while len(work):
        advance_day(work, None, rng, params)
        step += 1
        is_open = work.stage < N_OPEN
        if is_open.sum() < 0.8 * len(work):
            won[index[~is_open]] = work.stage[~is_open] == WON
            closed_step[index[~is_open]] = step - work.days_in_stage[~is_open]
            work, index = work.take(np.flatnonzero(is_open)), index[is_open]
    return won, closed_step


def estimate_win_probability(
    state: DealState,
    n_paths: int,
    rng: np.random.Generator,
    params: SimulationParams,
    chunk_paths: int = 200_000,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """P(win | hidden state) per deal, by continuing each state ``n_paths`` times to its close."""
    return estimate_outcome_probabilities(state, n_paths, rng, params, chunk_paths=chunk_paths, progress=progress)[0]


def estimate_outcome_probabilities(
    state: DealState,
    n_paths: int,
    rng: np.random.Generator,
    params: SimulationParams,
    win_within: np.ndarray | None = None,
    chunk_paths: int = 200_000,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """P(win | hidden state) per deal and, with ``win_within`` (days per deal), P(won on one of the
    next ``win_within`` simulated days), from the same ``n_paths`` continuations of each state.

    The same random draws as ``estimate_win_probability``: asking for the second changes the first in nothing.
    """
    n = len(state)
    result = np.empty(n)
    within = None if win_within is None else np.empty(n)
    per_chunk = max(1, chunk_paths // n_paths)
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        paths = state.take(np.repeat(np.arange(start, stop), n_paths))
        won, steps = simulate_close(paths, rng, params)
        result[start:stop] = won.reshape(stop - start, n_paths).mean(axis=1)
        if within is not None:
            limit = np.repeat(np.asarray(win_within)[start:stop], n_paths)
            within[start:stop] = (won & (steps <= limit)).reshape(stop - start, n_paths).mean(axis=1)
        if progress is not None:
            progress(stop - start)
    return result, within


def estimate_creation_probability(
    quality: np.ndarray,
    pace: np.ndarray,
    rng: np.random.Generator,
    params: SimulationParams,
    grid_size: tuple[int, int] = (17, 7),
    n_paths: int = 200,
) -> np.ndarray:
    """P(win | state at creation) per deal (``estimate_creation_probabilities`` without the timing)."""
    return estimate_creation_probabilities(quality, pace, rng, params, grid_size=grid_size, n_paths=n_paths)[0]


def estimate_creation_probabilities(
    quality: np.ndarray,
    pace: np.ndarray,
    rng: np.random.Generator,
    params: SimulationParams,
    win_within: np.ndarray | None = None,
    grid_size: tuple[int, int] = (17, 7),
    n_paths: int = 200,
) -> tuple[np.ndarray, np.ndarray | None]:
    """P(win | state at creation) per deal and, with ``win_within``, P(won within that many days).

    At creation the hidden state is fully described by two numbers (quality, pace): momentum,
    budget shocks and engagement all start at zero and the first contact is still to be drawn.
    The probability is estimated by Monte Carlo on a grid of (quality, pace) and interpolated
    bilinearly, which is far cheaper than continuing every deal and as accurate; the timing part
    interpolates each cell's share of paths won by each day the same way.
    """
    q_grid = np.linspace(quality.min() - 1e-6, quality.max() + 1e-6, grid_size[0])
    p_grid = np.linspace(pace.min() - 1e-6, pace.max() + 1e-6, grid_size[1])
    qq, pp = np.meshgrid(q_grid, p_grid, indexing="ij")
    state = DealState.fresh(np.repeat(qq.ravel(), n_paths), np.repeat(pp.ravel(), n_paths))
    open_deals(state, np.arange(len(state)), rng, params)
    won, steps = simulate_close(state, rng, params)
    table = won.reshape(grid_size[0], grid_size[1], n_paths).mean(axis=2)
    qi = np.clip(np.searchsorted(q_grid, quality) - 1, 0, grid_size[0] - 2)
    pi = np.clip(np.searchsorted(p_grid, pace) - 1, 0, grid_size[1] - 2)
    qf = (quality - q_grid[qi]) / (q_grid[qi + 1] - q_grid[qi])
    pf = (pace - p_grid[pi]) / (p_grid[pi + 1] - p_grid[pi])

    def interpolate(cells: np.ndarray, *last: np.ndarray) -> np.ndarray:
        return (
            cells[(qi, pi, *last)] * (1 - qf) * (1 - pf) + cells[(qi + 1, pi, *last)] * qf * (1 - pf)
            + cells[(qi, pi + 1, *last)] * (1 - qf) * pf + cells[(qi + 1, pi + 1, *last)] * qf * pf
        )

    if win_within is None:
        return interpolate(table), None
    horizon = int(steps.max()) + 1
    won_on = np.zeros((grid_size[0] * grid_size[1], horizon))
    cell = np.repeat(np.arange(grid_size[0] * grid_size[1]), n_paths)
    np.add.at(won_on, (cell[won], steps[won]), 1.0 / n_paths)
    won_by = np.cumsum(won_on, axis=1).reshape(grid_size[0], grid_size[1], horizon)
    day = np.clip(np.asarray(win_within, dtype=np.int64), -1, horizon - 1)
    by = np.where(day < 0, 0.0, interpolate(won_by, np.maximum(day, 0)))
    return interpolate(table), by
