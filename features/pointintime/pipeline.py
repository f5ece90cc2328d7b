"""Point-in-time features: ``build_features(export, points, state)`` for training and serving alike.

Every event table is sorted once by (deal, time) with running sums; each point's features are
then read off with binary searches (``np.searchsorted``) at ``as_of`` and at ``as_of - window``.
No per-deal Python loop: the cost is O((events + points) log events) for any number of deals, and
the same code on a one-deal export is the serving path. The primitives (sorted event index,
codebooks, points, field-history reconstruction) are in ``features.pointintime.events``; the feature
definitions in ``features.pointintime.definitions``. See docs/features.md for the rules.
"""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
from pandas.api.internals import create_dataframe_from_blocks

from features.contract.schema import (
    ACTIVITY_TYPES,
    ROLES,
    SENIORITY_LEVEL,
    STAGES,
    TIMESTAMP_DTYPE,
    Export,
)
from features.pointintime.definitions import (
    CALL_METRIC_FEATURES,
    CATEGORICAL_FEATURES,
    ENGAGED_ROLES,
    ENGAGED_WINDOW_DAYS,
    FEATURE_NAMES,
    MEETING_ROLES,
    SHORT_WINDOW_DAYS,
    TREND_WINDOW_DAYS,
    WIN_RATE_PRIOR_DEALS,
)
from features.pointintime.events import (
    DAY_US,
    DIRECTION_CODES,
    OPEN_STAGE_CODES,
    ROLE_CODES,
    SENIORITY_CODES,
    STAGE_CODES,
    STAGE_NAMES,
    STR_DTYPE,
    TYPE_CODES,
    Codebook,
    EventIndex,
    Points,
    as_float,
    days_of,
    deal_codes,
    extract_field_changes,
    factorize_values,
    forward_fill_last,
    group_cumcount,
    nan_array,
    parse_as_of,
    prepare_deals_as_of,
    prepare_points,
    reconstruct_field,
    to_micros,
)
from features.pointintime.state import FeatureState

# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


def compute_stage_features(export: Export, pts: Points, state: FeatureState) -> dict[str, np.ndarray]:
    """Stage as of as_of, time in it (absolute and vs won deals), stage changes and back-steps."""
    n = len(pts.as_of)
    created = pts.micros(export.deals, "created_at")[pts.deal_row]
    out: dict[str, np.ndarray] = {"deal_age_days": days_of(pts.as_of - created)}
    history = export.stage_history
    if history is None:
        out.update({k: nan_array(n) for k in ("days_in_stage", "days_in_stage_vs_won", "stage_changes", "stage_back_steps")})
        out["current_stage"] = STAGE_NAMES.take(np.full(n, len(STAGES), dtype=np.int64))
        return out
    codes, known = deal_codes(pts, history)
    stage = pts.codes(history, "stage", STAGE_CODES).astype(float)
    index = EventIndex(codes[known], pts.micros(history, "entered_at")[known])
    stage_sorted = stage[known][index.order]
    is_open = np.isin(stage_sorted, OPEN_STAGE_CODES)
    back = np.zeros(len(index), dtype=float)
    if len(index) > 1:
        same_deal = index.codes[1:] == index.codes[:-1]
        back[1:] = same_deal & is_open[1:] & is_open[:-1] & (stage_sorted[1:] < stage_sorted[:-1])
    index.add_running_sum("back", back)
    start, stop = index.locate(pts.deal_row, pts.as_of)
    count = (stop - start).astype(float)
    current = index.last_value(stage_sorted, start, stop)
    entered = index.last_value(index.times.astype(float), start, stop)
    days_in_stage = (pts.as_of - entered) / DAY_US
    current_name = STAGE_NAMES.take(np.nan_to_num(current, nan=len(STAGES)).astype(np.int64))
    typical = np.array([state.won_stage_days.get(s, np.nan) for s in STAGES] + [np.nan])
    typical_days = typical[np.nan_to_num(current, nan=len(STAGES)).astype(int)]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(typical_days > 0, days_in_stage / typical_days, np.nan)
    out.update(
        current_stage=current_name,
        days_in_stage=days_in_stage,
        days_in_stage_vs_won=ratio,
        stage_changes=np.maximum(count - 1, 0),
        stage_back_steps=index.window_sum("back", stop, start),
    )
    return out


def reconstruct_tracked_fields(export: Export, pts: Points) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """expected_close_date and amount as known at each point (``events.reconstruct_field``), parsed once."""
    changes = None if export.field_history is None else extract_field_changes(pts, export.field_history)
    return reconstruct_field(export, pts, "expected_close_date", changes), reconstruct_field(export, pts, "amount", changes)


def compute_field_features(export: Export, pts: Points, close: dict[str, np.ndarray], amount: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Days to expected close, close-date pushes, the first plan's length, amount as known at as_of and its largest single cut."""
    created = pts.micros(export.deals, "created_at")[pts.deal_row]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(amount["initial"] > 0, amount["value"] / amount["initial"], np.nan)
    return {
        "days_to_expected_close": (close["value"] - pts.as_of) / DAY_US,
        "close_date_pushes": close["pushes"],
        "close_date_days_pushed": close["days_pushed"],
        "planned_days_at_creation": (close["initial"] - created) / DAY_US,
        "amount_change_ratio": ratio,
        "largest_amount_cut": amount["largest_cut"],
        "amount": amount["value"],
    }


def fiscal_period_end(micros: np.ndarray, start_month: int, months: int) -> np.ndarray:
    """First moment (UTC, float microseconds) of the fiscal period after the one holding each time.

    Periods of ``months`` months (3: quarters, 12: years) counted from ``start_month`` (1-12); NaN
    in, NaN out.

    >>> t = np.array([pd.Timestamp("2026-03-31T12:00Z").value / 1000, np.nan])
    >>> [pd.Timestamp(v * 1000, tz="UTC").date().isoformat() for v in fiscal_period_end(t, 1, 3)[:1]]
    ['2026-04-01']
    >>> pd.Timestamp(fiscal_period_end(t, 2, 12)[0] * 1000, tz="UTC").date().isoformat()
    '2027-02-01'
    """
    micros = np.asarray(micros, dtype=float)
    out = nan_array(len(micros))
    known = ~np.isnan(micros)
    month = micros[known].astype(np.int64).astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    shift = start_month - 1  # months since 1970-01 of the fiscal calendar's first period start
    end = (np.floor_divide(month - shift, months) + 1) * months + shift
    out[known] = end.astype("datetime64[M]").astype("datetime64[us]").astype(np.int64).astype(float)
    return out


def in_quarter_last_month(micros: np.ndarray, start_month: int) -> np.ndarray:
    """1.0 where a time falls in the third month of its fiscal quarter, 0.0 elsewhere, NaN for NaN.

    >>> t = np.array([pd.Timestamp(d).value / 1000 for d in ("2026-03-15", "2026-04-01", "2026-01-31")])
    >>> in_quarter_last_month(t, 1).tolist(), in_quarter_last_month(t, 2).tolist()
    ([1.0, 0.0, 0.0], [0.0, 1.0, 1.0])
    """
    micros = np.asarray(micros, dtype=float)
    out = nan_array(len(micros))
    known = ~np.isnan(micros)
    month = micros[known].astype(np.int64).astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    out[known] = (np.mod(month - (start_month - 1), 3) == 2).astype(float)
    return out


def compute_calendar_features(pts: Points, state: FeatureState, close: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Days to the fiscal quarter's and year's end from as_of; the expected close date's quarter month and last move.

    The fiscal year starts in the state's ``fiscal_year_start_month``. The close-date features use
    the date as known at as_of (``close``: ``events.reconstruct_field``), nothing later.
    """
    month = state.fiscal_year_start_month
    as_of = pts.as_of.astype(float)
    return {
        "days_to_quarter_end": (fiscal_period_end(as_of, month, 3) - as_of) / DAY_US,
        "days_to_fiscal_year_end": (fiscal_period_end(as_of, month, 12) - as_of) / DAY_US,
        "expected_close_in_quarter_last_month": in_quarter_last_month(close["value"], month),
        "days_since_close_date_moved": (as_of - close["last_moved"]) / DAY_US,
    }


def compute_contact_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Contacts on the deal and distinct roles present, counting contacts from their added_at."""
    n = len(pts.as_of)
    contacts = export.contacts
    if contacts is None:
        return {"contacts_count": nan_array(n), "roles_present": nan_array(n)}
    codes, known = deal_codes(pts, contacts)
    role = pts.codes(contacts, "role", ROLE_CODES)[known]
    index = EventIndex(codes[known], pts.micros(contacts, "added_at")[known], {r: role == i for i, r in enumerate(ROLES)})
    start, stop = index.locate(pts.deal_row, pts.as_of)
    roles_present = sum((index.window_sum(r, stop, start) > 0).astype(float) for r in ROLES)
    return {"contacts_count": (stop - start).astype(float), "roles_present": roles_present}


def compute_activity_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Activity counts by window and type, inbound share and recency, trend, call metrics, threading."""
    n = len(pts.as_of)
    activities = export.activities
    names = [f"activities_{SHORT_WINDOW_DAYS}d", f"activities_{ENGAGED_WINDOW_DAYS}d"]
    names += [f"{t}s_{d}d" for d in (SHORT_WINDOW_DAYS, ENGAGED_WINDOW_DAYS) for t in ACTIVITY_TYPES]
    names += ["inbound_share", "days_since_last_activity", "days_since_last_inbound", "activity_trend_14d",
              "meetings_held", "contacts_engaged", "top_contact_share", f"inbound_share_{ENGAGED_WINDOW_DAYS}d"]
    names += list(CALL_METRIC_FEATURES)
    if activities is None:
        return {name: nan_array(n) for name in names}
    codes, known = deal_codes(pts, activities)
    kind = pts.codes(activities, "type", TYPE_CODES)[known]
    inbound = (pts.codes(activities, "direction", DIRECTION_CODES)[known] == 1).astype(float)
    values = {t: kind == i for i, t in enumerate(ACTIVITY_TYPES)} | {"inbound": inbound}
    for metric in ("customer_talk_ratio", "next_step_set"):
        if metric in activities.columns:
            metric_values = as_float(pts.read(activities, metric))[known]
            values[metric] = metric_values
            values[f"{metric}_n"] = ~np.isnan(metric_values)
    index = EventIndex(codes[known], pts.micros(activities, "occurred_at")[known], values)
    start, stop = index.locate(pts.deal_row, pts.as_of)

    def window(days: int) -> np.ndarray:
        return index.stop(pts.deal_row, pts.as_of - days * DAY_US)

    total = (stop - start).astype(float)
    out: dict[str, np.ndarray] = {}
    lows = {days: window(days) for days in (SHORT_WINDOW_DAYS, TREND_WINDOW_DAYS, ENGAGED_WINDOW_DAYS, 2 * TREND_WINDOW_DAYS)}
    for days in (SHORT_WINDOW_DAYS, ENGAGED_WINDOW_DAYS):
        out[f"activities_{days}d"] = (stop - lows[days]).astype(float)
        for t in ACTIVITY_TYPES:
            out[f"{t}s_{days}d"] = index.window_sum(t, stop, lows[days])
    month = lows[ENGAGED_WINDOW_DAYS]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["inbound_share"] = np.where(total > 0, index.window_sum("inbound", stop, start) / total, np.nan)
        in_month = (stop - month).astype(float)
        out[f"inbound_share_{ENGAGED_WINDOW_DAYS}d"] = np.where(in_month > 0, index.window_sum("inbound", stop, month) / in_month, np.nan)
        last_time = index.last_value(index.times.astype(float), start, stop)
        out["days_since_last_activity"] = (pts.as_of - last_time) / DAY_US
        last_inbound = forward_fill_last(np.asarray(values["inbound"], dtype=bool)[index.order], index.codes)
        inbound_pos = index.last_value(last_inbound, start, stop, fill=-1)
        inbound_time = np.where(inbound_pos >= 0, index.times[np.maximum(inbound_pos, 0)], np.nan) if len(index) else nan_array(n)
        out["days_since_last_inbound"] = (pts.as_of - inbound_time) / DAY_US
        recent = (stop - lows[TREND_WINDOW_DAYS]).astype(float)
        before = (lows[TREND_WINDOW_DAYS] - lows[2 * TREND_WINDOW_DAYS]).astype(float)
        out["activity_trend_14d"] = np.where(recent + before > 0, (recent - before) / (recent + before), 0.0)
        out["meetings_held"] = index.window_sum("meeting", stop, start)
        call_metrics = zip(("customer_talk_ratio",) * 2 + ("next_step_set",) * 2, CALL_METRIC_FEATURES, (start, month) * 2)
        for metric, name, lo in call_metrics:  # mean over recorded calls so far, and over the last 30 days
            if metric in values:
                counted = index.window_sum(f"{metric}_n", stop, lo)
                out[name] = np.where(counted > 0, index.window_sum(metric, stop, lo) / counted, np.nan)
            else:
                out[name] = nan_array(n)
    out |= _threading_features(pts, activities, known, index, start, stop)
    return {name: out[name] for name in names}


def _threading_features(pts: Points, activities: pd.DataFrame, known: np.ndarray, index: EventIndex, start, stop) -> dict:
    """Distinct contacts engaged so far and the share of contact activities on the top contact."""
    contact_code = pts.read(activities, "contact_id", "factorized", factorize_values)[0][known][index.order]
    has_contact = contact_code >= 0
    running = group_cumcount(index.codes, contact_code) + 1
    running = np.where(has_contact, running, 0)
    index.add_running_sum("with_contact", has_contact.astype(float))
    index.add_running_sum("new_contact", (has_contact & (running == 1)).astype(float))
    # Running max per deal: deals are sorted ascending, so offsetting by deal code resets the max.
    offset = index.codes.astype(np.int64) * (len(index) + 1)
    top = (np.maximum.accumulate(running + offset) - offset) if len(index) else running
    top_count = index.last_value(top.astype(float), start, stop, fill=0.0)
    with_contact = index.window_sum("with_contact", stop, start)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(with_contact > 0, top_count / with_contact, np.nan)
    return {"contacts_engaged": index.window_sum("new_contact", stop, start), "top_contact_share": share}


def match_contacts(pts: Points, contacts: pd.DataFrame, activities: pd.DataFrame, activity_deal: np.ndarray) -> np.ndarray:
    """Row of ``contacts`` for each activity's (deal_id, contact_id); -1 where there is none."""
    if not len(contacts):
        return np.full(len(activities), -1, dtype=np.int64)
    contact_deal = pts.codes(contacts, "deal_id", pts.deals)
    contact_code, contact_ids = pts.read(contacts, "contact_id", "factorized", factorize_values)
    activity_code = Codebook(contact_ids).encode(pts.read(activities, "contact_id"))
    width = np.int64(len(contact_ids) + 1)
    contact_key = contact_deal.astype(np.int64) * width + contact_code
    activity_key = activity_deal.astype(np.int64) * width + activity_code
    order = np.argsort(contact_key, kind="stable")
    position = np.minimum(np.searchsorted(contact_key[order], activity_key), len(contacts) - 1)
    found = (contact_key[order][position] == activity_key) & (activity_code >= 0) & (activity_deal >= 0)
    return np.where(found, order[position], -1)


def compute_role_engagement_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Roles and seniority engaged in the last 30 days; decision maker / economic buyer / champion recency.

    An activity engages its contact's role from the later of its time and the contact's added_at.
    The decision maker's and economic buyer's shares of the 30-day window count these activities
    (those with a contact of the deal): NaN when the window holds none.
    """
    n = len(pts.as_of)
    names = ["roles_engaged_30d", "max_seniority_engaged_30d"]
    names += [name for r in ENGAGED_ROLES for name in (f"{r}_engaged_30d", f"days_since_{r}_engaged")]
    names += [f"{r}_activity_share_{ENGAGED_WINDOW_DAYS}d" for r in ENGAGED_ROLES]
    names += [f"{r}_meeting_share" for r in MEETING_ROLES]
    names += [f"decision_maker_meetings_{ENGAGED_WINDOW_DAYS}d"]
    activities, contacts = export.activities, export.contacts
    if activities is None or contacts is None:
        return {name: nan_array(n) for name in names}
    codes, known = deal_codes(pts, activities)
    matched = match_contacts(pts, contacts, activities, codes)
    keep = known & (matched >= 0)
    contact_row = matched[keep]
    role = pts.codes(contacts, "role", ROLE_CODES)[contact_row]
    level = (pts.codes(contacts, "seniority", SENIORITY_CODES) + 1)[contact_row]  # 0: unknown seniority
    effective = np.maximum(pts.micros(activities, "occurred_at")[keep], pts.micros(contacts, "added_at")[contact_row])
    values = {r: role == i for i, r in enumerate(ROLES)} | {f"level_{v}": level == v for v in SENIORITY_LEVEL.values()}
    meeting = pts.codes(activities, "type", TYPE_CODES)[keep] == ACTIVITY_TYPES.index("meeting")
    for r in MEETING_ROLES:
        values[f"{r}_meeting"] = meeting & (role == ROLES.index(r))
    index = EventIndex(codes[keep], effective, values)
    start, stop = index.locate(pts.deal_row, pts.as_of)
    lo = index.stop(pts.deal_row, pts.as_of - ENGAGED_WINDOW_DAYS * DAY_US)
    out: dict[str, np.ndarray] = {}
    out["roles_engaged_30d"] = sum((index.window_sum(r, stop, lo) > 0).astype(float) for r in ROLES)
    max_level = np.zeros(n)
    for v in SENIORITY_LEVEL.values():
        max_level = np.where(index.window_sum(f"level_{v}", stop, lo) > 0, float(v), max_level)
    out["max_seniority_engaged_30d"] = max_level
    role_sorted = role[index.order]
    for r in ENGAGED_ROLES:
        out[f"{r}_engaged_30d"] = (index.window_sum(r, stop, lo) > 0).astype(float)
        last = index.last_value(forward_fill_last(role_sorted == ROLES.index(r), index.codes), start, stop, fill=-1)
        last_time = np.where(last >= 0, index.times[np.maximum(last, 0)], np.nan) if len(index) else nan_array(n)
        out[f"days_since_{r}_engaged"] = (pts.as_of - last_time) / DAY_US
    in_window = (stop - lo).astype(float)
    out[f"decision_maker_meetings_{ENGAGED_WINDOW_DAYS}d"] = index.window_sum("decision_maker_meeting", stop, lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r in ENGAGED_ROLES:
            out[f"{r}_activity_share_{ENGAGED_WINDOW_DAYS}d"] = np.where(in_window > 0, index.window_sum(r, stop, lo) / in_window, np.nan)
        for r in MEETING_ROLES:  # engaged executives take meetings: the share of their activities that are meetings
            with_role = index.window_sum(r, stop, start)
            out[f"{r}_meeting_share"] = np.where(with_role > 0, index.window_sum(f"{r}_meeting", stop, start) / with_role, np.nan)
    return {name: out[name] for name in names}


_WIN_HISTORY_CACHE: dict[int, tuple[weakref.ref, dict]] = {}


def _win_history(state: FeatureState) -> dict:
    """Closed-deal history of the state, indexed by owner, by account and overall (cached per state).

    Serving applies one state to many requests; building the index once keeps one-deal calls cheap.
    """
    cached = _WIN_HISTORY_CACHE.get(id(state))
    if cached is not None and cached[0]() is state:
        return cached[1]
    built = _index_win_history(state)
    _WIN_HISTORY_CACHE[id(state)] = (weakref.ref(state, lambda _, key=id(state): _WIN_HISTORY_CACHE.pop(key, None)), built)
    return built


def _index_win_history(state: FeatureState) -> dict:
    history = state.closed_history()
    closed = to_micros(history["closed_at"]) if len(history) else np.zeros(0, dtype=np.int64)
    won = history["won"].to_numpy(dtype=float)
    built = {"all": EventIndex(np.zeros(len(history), dtype=np.int64), closed, {"won": won})}
    for key in ("owner_id", "account_id"):
        ids = Codebook(pd.unique(history[key].to_numpy(dtype=object)))
        built[key] = (ids, EventIndex(ids.encode(history[key]), closed, {"won": won}))
    built["segment"] = _index_segment_amounts(state.closed_amount_history())
    return built


def _index_segment_amounts(history: pd.DataFrame) -> tuple[Codebook, EventIndex, np.ndarray]:
    """Closed deals by segment and closing time, with the running median of their first amounts.

    ``medians[i]``: the median first amount of the segment's deals up to sorted position ``i``
    (its closing time and earlier), NaN while none has a known amount. A loop over the few
    segments, each one expanding median.
    """
    segments = Codebook(pd.unique(history["segment"].dropna().to_numpy(dtype=object)))
    index = EventIndex(segments.encode(history["segment"]), to_micros(history["closed_at"]))
    amounts = history["first_amount"].to_numpy(dtype=float)[index.order]
    medians = np.full(len(index), np.nan)
    bounds = np.flatnonzero(np.diff(index.codes, prepend=-2, append=-1))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if index.codes[lo] >= 0:  # missing segments (-1) get no median
            medians[lo:hi] = pd.Series(amounts[lo:hi]).expanding().median().to_numpy()
    return segments, index, medians


def compute_segment_amount_features(export: Export, pts: Points, state: FeatureState, amount: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The amount as of as_of, and the one the deal was created with, over the median first amount
    of the segment's deals closed at or before as_of (``amount``: ``events.reconstruct_field``)."""
    segments, index, medians = _win_history(state)["segment"]
    code = pts.codes(export.deals, "segment", segments)[pts.deal_row]
    start, stop = index.locate(code, pts.as_of)
    median = np.where(code >= 0, index.last_value(medians, start, stop), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"amount_vs_segment_median": np.where(median > 0, amount["value"] / median, np.nan),
                "first_amount_vs_segment_median": np.where(median > 0, amount["initial"] / median, np.nan)}


def compute_win_rate_features(export: Export, pts: Points, state: FeatureState) -> dict[str, np.ndarray]:
    """Owner's and account's closed deals and smoothed win rate, over deals closed at or before as_of."""
    history = _win_history(state)
    overall = history["all"]
    start, stop = overall.locate(np.zeros(len(pts.as_of), dtype=np.int64), pts.as_of)
    global_n = (stop - start).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        global_rate = np.where(global_n > 0, overall.window_sum("won", stop, start) / global_n, np.nan)
    out: dict[str, np.ndarray] = {}
    for key, prefix in (("owner_id", "owner"), ("account_id", "account")):
        ids, index = history[key]
        code = pts.codes(export.deals, key, ids)[pts.deal_row]
        # Unknown ids get code -1: an empty slice (no closed deals), hence the global rate.
        start, stop = index.locate(code, pts.as_of)
        closed = np.where(code >= 0, stop - start, 0).astype(float)
        wins = np.where(code >= 0, index.window_sum("won", stop, start), 0.0)
        out[f"{prefix}_closed_deals"] = closed
        out[f"{prefix}_win_rate"] = (wins + WIN_RATE_PRIOR_DEALS * global_rate) / (closed + WIN_RATE_PRIOR_DEALS)
    return out


def compute_context_features(export: Export, pts: Points) -> dict[str, np.ndarray]:
    """Categorical deal attributes, taken from the deals row (not tracked, assumed constant)."""
    deals = export.deals
    names = pts.read(deals, "", "names")
    return {name: _take_text(pts.read(deals, name), pts.deal_row) if name in names
            else np.full(len(pts.as_of), np.nan, dtype=object)  # a column the export lacks: missing
            for name in ("deal_type", "segment", "region", "product", "lead_source")}


def _take_text(values, rows: np.ndarray):
    """Rows of a text array: a "str" array stays one (no object round trip)."""
    if values.dtype == STR_DTYPE:
        if len(rows) == len(values) and (rows == np.arange(len(rows))).all():
            return values.copy()  # every deal in order (a request): no take; a copy, as blocks are not copied
        return values.take(rows)
    return pd.Series(values).to_numpy(dtype=object, na_value=np.nan)[rows]


# --------------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------------


def build_features(export: Export, points: pd.DataFrame, state: FeatureState) -> pd.DataFrame:
    """Features of each (deal_id, as_of) point from events at or before as_of only.

    Returns one row per point, in the points' order and index: deal_id, as_of, then every
    registry feature in registry order. The same call on a one-deal export serves one request.

    >>> from tests.factories import make_export
    >>> from features.pointintime.state import fit_feature_state
    >>> export = make_export()
    >>> points = pd.DataFrame({"deal_id": ["D1"], "as_of": [pd.Timestamp("2026-03-01", tz="UTC")]})
    >>> row = build_features(export, points, fit_feature_state(export, "2026-12-31")).iloc[0]
    >>> row["current_stage"], float(row["days_in_stage"]), float(row["top_contact_share"])
    ('negotiate', 14.0, 0.6)
    """
    pts = prepare_points(export, points)
    return frame_from_columns(compute_features(export, pts, state), pts, points.index)


def build_features_as_of(export: Export, as_of, state: FeatureState) -> pd.DataFrame:
    """``build_features`` for every deal of the export at one ``as_of``: a scoring request's call.

    The same frame as ``build_features`` with points ``export.deals["deal_id"]`` at ``as_of`` (the
    deals' index), without building that points frame.

    >>> from tests.factories import make_export
    >>> from features.pointintime.state import fit_feature_state
    >>> export = make_export()
    >>> state = fit_feature_state(export, "2026-12-31")
    >>> points = pd.DataFrame({"deal_id": export.deals["deal_id"], "as_of": pd.Timestamp("2026-03-01", tz="UTC")})
    >>> build_features_as_of(export, "2026-03-01", state).equals(build_features(export, points, state))
    True
    """
    pts = prepare_deals_as_of(export, as_of)
    return frame_from_columns(compute_features(export, pts, state), pts, export.deals.index)


def compute_features(export: Export, pts: Points, state: FeatureState) -> dict[str, np.ndarray]:
    """Every family's features of the points, as arrays by feature name."""
    columns: dict[str, np.ndarray] = {}
    columns |= compute_stage_features(export, pts, state)
    close, amount = reconstruct_tracked_fields(export, pts)
    columns |= compute_field_features(export, pts, close, amount)
    columns |= compute_calendar_features(pts, state, close)
    columns |= compute_contact_features(export, pts)
    columns |= compute_role_engagement_features(export, pts)
    columns |= compute_activity_features(export, pts)
    columns |= compute_win_rate_features(export, pts, state)
    columns |= compute_segment_amount_features(export, pts, state, amount)
    columns |= compute_context_features(export, pts)
    return columns


def frame_from_columns(columns: dict[str, np.ndarray], pts: Points, index: pd.Index) -> pd.DataFrame:
    """The feature frame, built once from plain arrays: deal_id, as_of, then the registry's features.

    Fixed dtypes whatever the values: "str" for categoricals (even all-missing), float64
    otherwise. Arrays, not Series, so that pandas does no per-column alignment (a one-deal
    request pays for the frame, not for the rows).
    """
    n = len(pts.as_of)
    numeric = np.empty((len(_NUMERIC_POSITIONS), n), dtype=np.float64)  # the frame's float block, one row per column
    for i, name in enumerate(_NUMERIC_NAMES):
        numeric[i] = columns[name]
    as_of = pts.as_of_stamps.copy()  # blocks are taken as they are: no memory shared with the points
    blocks = [(numeric, _NUMERIC_POSITIONS), (_as_text(pts.deal_id).copy(), np.array([0])), (as_of, np.array([1]))]
    blocks += [(_as_text(columns[name]), np.array([j])) for j, name in _TEXT_POSITIONS]
    return create_dataframe_from_blocks(blocks, index=index, columns=_FRAME_COLUMNS)


def _as_text(values) -> pd.api.extensions.ExtensionArray:
    """A categorical feature as a "str" array (kept when it already is one)."""
    if isinstance(values, pd.api.extensions.ExtensionArray) and values.dtype == STR_DTYPE:
        return values
    return pd.array(values, dtype="str")


_FRAME_COLUMNS = pd.Index(("deal_id", "as_of") + FEATURE_NAMES)
_NUMERIC_NAMES = tuple(name for name in FEATURE_NAMES if name not in CATEGORICAL_FEATURES)
_NUMERIC_POSITIONS = np.array([j for j, name in enumerate(_FRAME_COLUMNS) if name in _NUMERIC_NAMES])
_TEXT_POSITIONS = tuple((j, name) for j, name in enumerate(_FRAME_COLUMNS) if name in CATEGORICAL_FEATURES)


def subset_export(export: Export, deal_ids) -> Export:
    """The export restricted to the given deals (every table; absent tables stay absent)."""
    wanted = set(map(str, deal_ids))
    tables = {
        name: None if table is None else table[table["deal_id"].isin(wanted)].reset_index(drop=True)
        for name, table in export.tables().items()
    }
    return Export(**tables)


def select_open_deals(export: Export, as_of) -> pd.DataFrame:
    """Points (deal_id, as_of) for every deal open at as_of: created at or before, not closed at or before."""
    as_of = parse_as_of(as_of)
    deals = export.deals
    is_open = (deals["created_at"] <= as_of) & ~(deals["closed_at"].notna() & (deals["closed_at"] <= as_of))
    ids = deals.loc[is_open, "deal_id"].to_numpy()
    return pd.DataFrame({"deal_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype=TIMESTAMP_DTYPE)})

