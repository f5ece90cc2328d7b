"""Next best actions: the steps a rep can take on an open deal, ranked by what the model says each is worth.

For each open deal, each action of a small catalog is written into the deal's history as of
``as_of`` (a meeting with the economic buyer, an email answering the customer, ...), and the deal
is re-scored through the path every score takes: ``build_features_as_of`` on the history, then
the bundle's calibrated win probability (``features.model.predict``). An action's gain is the
calibrated win probability with the step minus without it, in points (0-100). Why from the model
and not from a rule list: the model that says a deal is at risk is the one that says which step
moves it the most, and a rule could recommend a step the model does not reward.

**What a gain is, and is not** (``GAIN_NOTE``, shown with the actions): the model's estimate for
a deal whose history holds the step, learned from deals that did or did not have such events. It
is not a promise that taking the step causes the gain: deals whose economic buyer took meetings
won more often partly because they were healthier to begin with.

The catalog (``DEFAULT_ACTIONS``) holds only steps a rep can take, each as data plus a function
that writes the rows of the contract's tables (ids unique, values of ``features.contract.schema``)
that logging the step today would add. Never a stage move, never a close-date push. An action
writes only into tables the export has: a table the CRM does not keep leaves its features
missing, and creating one would turn "unknown" into "known" and show a gain no step earns.
"Confirm the close date" logs the date unchanged, which moves no feature the model reads (a
confirmation is not a push, and the date known as of now stays the same), so it scores a gain of
exactly 0 and is never shown; it stays in the catalog so that a model that learns from
confirmations would rank it without code changes.

Guards: a gain below ``MIN_GAIN_POINTS`` is "not recommended" and never shown, so a negative
gain never reads as a step to take. Negative gains happen although the win model's monotone
constraints cover the features the actions raise (``training.config``): an action moves several
features at once, and some share features fall mechanically (an outbound touch lowers the inbound
share; a meeting with the economic buyer lowers the decision maker's share of activity).

Vectorised: the scored deals' histories are copied once per action that applies to them (a
derived deal id per copy, the action's rows appended), and one feature build and one prediction
run over all the (deal x action) variants; the deals as they are take one more build, whose
features also tell the actions what each deal has (contacts engaged, the close date).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from features.contract.cells import OUTPUT_DTYPE_OBJECTS
from features.contract.schema import TABLES, Export
from features.model.explain import frame_from_blocks
from features.model.predict import encode_bundle_matrix, raw_probability
from features.pointintime.events import Codebook, parse_as_of, to_micros
from features.pointintime.pipeline import build_features_as_of, select_open_deals
from features.pointintime.state import FeatureState

GAIN_NOTE = (
    "Gains are the model's estimate of the win probability with the step logged today against without it, "
    "learned from past deals; not a promise that the step causes the gain."
)
# Under half a point the sentence would read "+0 points"; such steps are not recommended.
MIN_GAIN_POINTS = 0.5
ID_PREFIX = "nba"  # ids of the rows an action writes: nba-<action>-<deal_id>
_VARIANT = "\x1f"  # unit separator between a deal id and its variant number (as serving's merged batches)
MEETING_MINUTES = 30.0

ActionRows = dict[str, pd.DataFrame]  # table name -> rows to append (contract columns, original deal ids)


@dataclass(frozen=True)
class Situation:
    """What the actions read about the scored deals as of ``as_of``: nothing later.

    ``contacts`` / ``activities``: the deals' rows at or before ``as_of``, in file order (None when
    the export has no such table); ``features``: their features as of ``as_of`` (one row per deal,
    in ``deal_ids`` order); ``tables``: the tables the export has.
    """

    as_of: pd.Timestamp
    deal_ids: tuple[str, ...]
    contacts: pd.DataFrame | None
    activities: pd.DataFrame | None
    features: pd.DataFrame
    tables: frozenset[str]
    activity_ids: pd.Series | None  # every activity id of the export: new ones avoid them (unique table-wide)
    contact_ids: pd.Series | None  # every contact id of the export: new ones avoid them all


@dataclass(frozen=True)
class Action:
    """One step a rep can take: ``key`` (stable, for code), ``label`` (the sentence's verb phrase),
    ``writes`` (what logging it adds, for the docs) and ``rows``: the rows it appends per deal."""

    key: str
    label: str
    writes: str
    rows: Callable[[Situation], ActionRows]


# --- the rows each action writes ---------------------------------------------------------------------


def _last_per_deal(frame: pd.DataFrame, time_column: str, columns: tuple[str, ...], where=None) -> dict[str, np.ndarray]:
    """Each deal's last row by ``time_column`` (ties: the later row in file order, as the features),
    among the rows ``where`` is true: its ``deal_id`` and ``columns`` as object arrays (None: missing).

    Columns are read as arrays, not as a frame of the rows: a one-deal request pays pandas' fixed
    cost per call, not per row.
    """
    deal_ids = frame["deal_id"].to_numpy(dtype=object)
    rows = np.arange(len(deal_ids)) if where is None else np.flatnonzero(where)
    deal, _ = pd.factorize(deal_ids[rows])
    order = np.lexsort((rows, to_micros(frame[time_column])[rows], deal))
    last = rows[order[np.append(deal[order][1:] != deal[order][:-1], True)]] if len(rows) else rows
    out = {"deal_id": deal_ids[last]}
    for column in columns:
        values = frame[column].to_numpy(dtype=object)[last]
        out[column] = np.where(pd.isna(values), None, values)
    return out


def _by_deal(last: dict[str, np.ndarray], column: str) -> dict:
    return dict(zip(last["deal_id"].tolist(), last[column].tolist()))


def _new_ids(key: str, deal_ids: np.ndarray, taken: pd.Series | None) -> np.ndarray:
    """``nba-<key>-<deal_id>``, suffixed ``-2``, ``-3``, ... where an id is already ``taken``."""
    ids = np.array([f"{ID_PREFIX}-{key}-{deal}" for deal in deal_ids], dtype=object)
    if taken is None or not len(ids):
        return ids
    suffix = 2
    while True:
        hits = Codebook(ids.tolist()).encode(taken)  # position among ``ids`` of each taken id, -1: none
        clash = np.unique(hits[hits >= 0])
        if not len(clash):
            return ids
        ids[clash] = [f"{ID_PREFIX}-{key}-{deal}-{suffix}" for deal in deal_ids[clash]]
        suffix += 1


def rows_frame(table: str, columns: dict) -> pd.DataFrame:
    """Rows of the contract table ``table`` in the contract's in-memory dtypes (those ``check_tables``
    gives), so that appending them converts nothing. A scalar is repeated for every row.

    >>> rows_frame("contacts", {"deal_id": ["D1"], "contact_id": ["C9"], "role": "champion", "seniority": None,
    ...                         "added_at": pd.Timestamp("2026-03-01", tz="UTC")}).dtypes.astype(str).tolist()
    ['str', 'str', 'str', 'str', 'datetime64[us, UTC]']
    """
    n = len(columns["deal_id"])
    typed = {}
    for name, values in columns.items():
        dtype = OUTPUT_DTYPE_OBJECTS[TABLES[table].column(name).kind]
        if isinstance(values, pd.Timestamp):
            values = np.full(n, values.tz_convert("UTC").as_unit("us").asm8)  # UTC wall time, as the pipeline
        elif np.ndim(values) == 0:
            values = np.full(n, values, dtype=object if values is None or isinstance(values, str) else None)
        typed[name] = np.asarray(values, dtype=dtype) if isinstance(dtype, np.dtype) else pd.array(values, dtype=dtype)
    return frame_from_blocks(typed, pd.RangeIndex(n))


def _as_table(rows: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``table``'s columns in its dtypes (converting only what differs)."""
    if list(rows.columns) != list(table.columns):
        rows = rows.reindex(columns=table.columns)
    differ = {name: dtype for name, dtype in table.dtypes.items() if rows[name].dtype != dtype}
    return rows.astype(differ) if differ else rows


def activity_rows(situation: Situation, key: str, deal_ids, contact_ids, kind: str, direction: str) -> pd.DataFrame:
    """One activity per deal at ``as_of``: ``kind`` (call, meeting, email) in ``direction``, with the
    contact (None: no contact). Talk ratio and next step stay unrecorded: the step is logged, not
    its outcome."""
    deal_ids = np.asarray(deal_ids, dtype=object)
    return rows_frame("activities", {
        "activity_id": _new_ids(key, deal_ids, situation.activity_ids),
        "deal_id": deal_ids,
        "contact_id": np.asarray(contact_ids, dtype=object),
        "type": kind,
        "direction": direction,
        "occurred_at": situation.as_of,
        "duration_min": np.nan if kind == "email" else MEETING_MINUTES,
        "customer_talk_ratio": np.nan,
        "next_step_set": None,
    })


def contact_rows(situation: Situation, key: str, deal_ids, role: str) -> pd.DataFrame:
    """A new contact of ``role`` on each deal, added at ``as_of``; seniority unknown (not invented)."""
    deal_ids = np.asarray(deal_ids, dtype=object)
    return rows_frame("contacts", {
        "deal_id": deal_ids, "contact_id": _new_ids(key, deal_ids, situation.contact_ids), "role": role,
        "seniority": None, "added_at": situation.as_of,
    })


def engage_role_rows(role: str, key: str) -> Callable[[Situation], ActionRows]:
    """A meeting at ``as_of`` with the deal's contact of ``role`` (the most recently added one);
    a deal without one gets such a contact added first. Needs contacts and activities tables."""

    def rows(situation: Situation) -> ActionRows:
        if not {"contacts", "activities"} <= situation.tables:
            return {}
        deals = np.asarray(situation.deal_ids, dtype=object)
        contacts = situation.contacts
        contact_of = _by_deal(_last_per_deal(contacts, "added_at", ("contact_id",), where=contacts["role"] == role),
                              "contact_id")
        missing = np.array([deal not in contact_of for deal in deals], dtype=bool)
        added = contact_rows(situation, key, deals[missing], role)
        contact_of.update(zip(added["deal_id"], added["contact_id"]))
        meetings = activity_rows(situation, key, deals, [contact_of[d] for d in deals], "meeting", "outbound")
        return {"contacts": added, "activities": meetings} if len(added) else {"activities": meetings}

    return rows


def second_contact_rows(situation: Situation) -> ActionRows:
    """For deals with exactly one contact engaged so far: a call at ``as_of`` with a contact of the
    deal not engaged yet (the most recently added), or with a new contact of role ``other`` (the
    contract's role when the rep's choice is not known) added first."""
    if not {"contacts", "activities"} <= situation.tables:
        return {}
    engaged_one = situation.features["contacts_engaged"].to_numpy(dtype=float) == 1
    deals = np.asarray(situation.deal_ids, dtype=object)[engaged_one]
    if not len(deals):
        return {}
    activities, contacts = situation.activities, situation.contacts
    engaged = set((activities["deal_id"].astype(object) + _VARIANT + activities["contact_id"].astype(object))
                  [activities["contact_id"].notna()].tolist())
    pair = contacts["deal_id"].astype(object) + _VARIANT + contacts["contact_id"].astype(object)
    wanted = Codebook(deals.tolist()).encode(contacts["deal_id"]) >= 0
    idle = _last_per_deal(contacts, "added_at", ("contact_id",), where=~pair.isin(engaged).to_numpy() & wanted)
    contact_of = _by_deal(idle, "contact_id")
    missing = np.array([deal not in contact_of for deal in deals], dtype=bool)
    added = contact_rows(situation, "second_contact", deals[missing], "other")
    contact_of.update(zip(added["deal_id"], added["contact_id"]))
    calls = activity_rows(situation, "second_contact", deals, [contact_of[d] for d in deals], "call", "outbound")
    return {"contacts": added, "activities": calls} if len(added) else {"activities": calls}


def meeting_rows(situation: Situation) -> ActionRows:
    """A meeting at ``as_of`` with the contact the deal last had an activity with (else the most
    recently added contact, else no named contact). Needs an activities table."""
    if "activities" not in situation.tables:
        return {}
    deals = np.asarray(situation.deal_ids, dtype=object)
    contact_of: dict = {}
    if situation.contacts is not None:
        contact_of |= _by_deal(_last_per_deal(situation.contacts, "added_at", ("contact_id",)), "contact_id")
    activities = situation.activities
    contact_of |= _by_deal(_last_per_deal(activities, "occurred_at", ("contact_id",),
                                          where=activities["contact_id"].notna().to_numpy()), "contact_id")
    contacts = [contact_of.get(deal) for deal in deals]
    return {"activities": activity_rows(situation, "meeting", deals, contacts, "meeting", "outbound")}


def reply_rows(situation: Situation) -> ActionRows:
    """For deals whose last activity is inbound (the customer had the last word): an outbound email
    at ``as_of`` to the same contact (None when the inbound one named none)."""
    if "activities" not in situation.tables or not len(situation.activities):
        return {}
    last = _last_per_deal(situation.activities, "occurred_at", ("direction", "contact_id"))
    waiting = last["direction"] == "inbound"
    return {"activities": activity_rows(situation, "reply", last["deal_id"][waiting], last["contact_id"][waiting],
                                        "email", "outbound")}


def confirm_close_rows(situation: Situation) -> ActionRows:
    """For deals whose expected close date known as of ``as_of`` is not past: a field_history row
    logging that date unchanged (old = new). A past date cannot be confirmed, only moved, which is
    a push and never proposed. Needs a field_history table.

    The date is read from the features (``days_to_expected_close``), i.e. as the model sees it.
    """
    if "field_history" not in situation.tables:
        return {}
    days = situation.features["days_to_expected_close"].to_numpy(dtype=float)
    keep = np.isfinite(days) & (days >= 0)
    deals = np.asarray(situation.deal_ids, dtype=object)[keep]
    as_of_us = situation.as_of.value // 1000
    close_us = as_of_us + np.rint(days[keep] * 86_400_000_000).astype(np.int64)
    text = [s + "Z" for s in np.datetime_as_string(close_us.astype("datetime64[us]"), unit="us").tolist()]
    return {"field_history": rows_frame("field_history", {
        "deal_id": deals, "field": "expected_close_date", "old_value": text, "new_value": text,
        "changed_at": situation.as_of,
    })}


DEFAULT_ACTIONS: tuple[Action, ...] = (
    Action("engage_economic_buyer", "Engage the economic buyer",
           "a meeting today with the deal's economic buyer (a new economic-buyer contact first if none)",
           engage_role_rows("economic_buyer", "engage_economic_buyer")),
    Action("engage_decision_maker", "Engage a decision maker",
           "a meeting today with the deal's decision maker (a new decision-maker contact first if none)",
           engage_role_rows("decision_maker", "engage_decision_maker")),
    Action("second_contact", "Engage a second contact",
           "deals with one contact engaged: a call today with another contact of the deal (a new one if none)",
           second_contact_rows),
    Action("meeting", "Hold a meeting this week",
           "a meeting today with the contact last spoken to", meeting_rows),
    Action("reply", "Reply to the customer's last message",
           "deals whose last activity is inbound: an outbound email today to that contact", reply_rows),
    Action("confirm_close_date", "Confirm the close date",
           "deals whose expected close date is not past: the date logged again, unchanged", confirm_close_rows),
)


# --- applying and scoring -------------------------------------------------------------------------------


def situation_as_of(export: Export, deal_ids, as_of, features: pd.DataFrame) -> Situation:
    """The ``Situation`` of ``deal_ids`` as of ``as_of``; ``features`` are their features (same order)."""
    as_of = parse_as_of(as_of).as_unit("us")
    deals = Codebook([str(d) for d in deal_ids])

    def as_of_rows(name: str) -> pd.DataFrame | None:
        table = export.table(name)
        if table is None:
            return None
        keep = (deals.encode(table["deal_id"]) >= 0) & (table[TABLES[name].time_column] <= as_of).to_numpy()
        return table[keep]

    def ids(name: str, column: str) -> pd.Series | None:
        table = export.table(name)
        return None if table is None else table[column]

    return Situation(
        as_of=as_of, deal_ids=tuple(map(str, deal_ids)), contacts=as_of_rows("contacts"),
        activities=as_of_rows("activities"), features=features.reset_index(drop=True),
        tables=frozenset(name for name, table in export.tables().items() if table is not None),
        activity_ids=ids("activities", "activity_id"), contact_ids=ids("contacts", "contact_id"),
    )


def append_rows(export: Export, rows: ActionRows) -> Export:
    """A new export with ``rows`` appended to their tables, in the tables' dtypes (inputs unchanged).

    Raises ``ValueError`` naming the table when rows go to a table the export does not have.
    """
    tables = {}
    for name, new in rows.items():
        table = export.table(name)
        if table is None:
            raise ValueError(f"{name}: the export has no {name} table; an action may only append to tables it has")
        unknown = sorted(set(new.columns) - set(table.columns))
        if unknown:
            raise ValueError(f"{name}: columns {unknown} are not columns of the export's {name} table")
        tables[name] = pd.concat([table, _as_table(new, table)], ignore_index=True)
    return replace(export, **tables)


def _variant_export(export: Export, situation: Situation, proposals: list[ActionRows]) -> tuple[Export, pd.DataFrame]:
    """The scored deals' histories copied once per action that applies to them, the action's rows
    appended, each copy under the deal id ``<deal_id>\\x1f<k>`` (k: the action's catalog position
    from 1). Returns the export and ``variants``: variant_id, deal_id, variant (k), in build order.

    Whole histories are copied, later events included: the features read nothing after ``as_of``,
    and a field's value as of ``as_of`` may come from a later change's ``old_value``. Rows are
    picked by the position of their deal among the scored ones (integer codes, no string match).
    """
    ids = np.asarray(situation.deal_ids, dtype=object)
    deals = Codebook(list(situation.deal_ids))
    # Per action: the scored deals it applies to (positions, in deal order) and their copies' ids.
    members = [np.unique(np.concatenate([deals.encode(t["deal_id"]) for t in rows.values()])) if rows
               else np.empty(0, dtype=np.int64) for rows in proposals]
    renamed = [ids + f"{_VARIANT}{k}" for k in range(1, len(proposals) + 1)]
    tables: dict[str, pd.DataFrame | None] = {}
    for name, table in export.tables().items():
        if table is None:
            tables[name] = None
            continue
        position = deals.encode(table["deal_id"])
        if name == "deals":  # one row per deal: each variant's row picked in the variants' order
            row_of = np.full(len(ids), -1, dtype=np.int64)
            row_of[position[position >= 0]] = np.flatnonzero(position >= 0)
            picked = [row_of[member] for member in members]
        else:
            picked = []
            for member in members:
                applies = np.zeros(len(ids) + 1, dtype=bool)  # the last slot: rows of other deals (-1)
                applies[member] = True
                picked.append(np.flatnonzero(applies[position]))
        # One take for every copy, one frame for every appended row: few pandas calls per table
        # (a one-deal request would otherwise pay pandas' fixed cost per table and action).
        new_ids = [renamed[k][position[rows]] for k, rows in enumerate(picked)]
        appended = [(k, rows[name]) for k, rows in enumerate(proposals) if name in rows and len(rows[name])]
        new_ids += [renamed[k][deals.encode(rows["deal_id"])] for k, rows in appended]
        parts = [table.iloc[np.concatenate(picked)] if picked else table.iloc[:0]]
        if appended:
            parts.append(_as_table(pd.concat([rows for _, rows in appended], ignore_index=True), table))
        copies = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
        variant_ids = np.concatenate([np.empty(0, dtype=object)] + new_ids)
        tables[name] = copies.assign(deal_id=pd.array(variant_ids, dtype=table["deal_id"].dtype))
    variants = pd.DataFrame({
        "variant_id": np.concatenate([np.empty(0, dtype=object)] + [renamed[k][m] for k, m in enumerate(members)]),
        "deal_id": np.concatenate([np.empty(0, dtype=object)] + [ids[m] for m in members]),
        "variant": np.repeat(np.arange(1, len(members) + 1), [len(m) for m in members]).astype(np.int64),
    })
    return Export(**tables), variants


def win_probability(bundle, features: pd.DataFrame) -> np.ndarray:
    """The calibrated win probability of each feature row: ``predict_probabilities``' win column
    (the same steps), without the slip model the actions do not need."""
    if not len(features):
        return np.empty(0)
    booster, linear = bundle.halves("win")
    return bundle.win_calibration.apply(raw_probability(booster, linear, encode_bundle_matrix(bundle, features)))


def _deals_export(export: Export, deal_ids: list[str]) -> Export:
    """The export's rows of ``deal_ids`` only, its deals table in ``deal_ids`` order."""
    deals = Codebook(deal_ids)
    tables = {name: None if t is None else t[deals.encode(t["deal_id"]) >= 0] for name, t in export.tables().items()}
    position = deals.encode(tables["deals"]["deal_id"])
    return replace(Export(**tables), deals=tables["deals"].iloc[np.argsort(position, kind="stable")].reset_index(drop=True))


def evaluate_actions(
    bundle, export: Export, as_of, catalog: tuple[Action, ...] = DEFAULT_ACTIONS, *,
    state: FeatureState | None = None, deal_ids=None, base_features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every (deal, action) that applies, with its gain: the full table behind ``next_best_actions``.

    Args:
        bundle: the model bundle (``features.model.bundle.ModelBundle``).
        deal_ids: the deals to evaluate (default: every deal open at ``as_of``).
        state: the bundle's fitted feature state when the caller holds it (default: rebuilt).
        base_features: the deals' features as of ``as_of`` when the caller has built them
            (``build_features_as_of``, one row per deal in ``deal_ids`` order); default: built here.

    Returns ``deal_id, action, label, win_probability, win_probability_after, gain_points,
    recommended``, deals in ``deal_ids`` order, actions in catalog order. ``gain_points`` is the
    difference (negative where the model says the step lowers the score), rounded to 1e-6 points:
    running sums over a larger table round differently in the last bits (~1e-10 points), which
    would otherwise order equal gains at random; ``recommended`` is ``gain_points >= MIN_GAIN_POINTS``.
    """
    as_of = parse_as_of(as_of).as_unit("us")
    state = FeatureState.from_dict(bundle.feature_state) if state is None else state
    if deal_ids is None:
        deal_ids = select_open_deals(export, as_of)["deal_id"]
    deal_ids = [str(d) for d in deal_ids]
    known = set(export.deals["deal_id"].astype(str))
    unknown = [d for d in deal_ids if d not in known]
    if unknown:
        raise ValueError(f"deal_ids: {unknown[0]!r} is not a deal_id of the export's deals table")
    if len(set(deal_ids)) != len(deal_ids):
        raise ValueError("deal_ids: a deal is listed twice; each deal is evaluated once")
    if not deal_ids:
        return pd.DataFrame({"deal_id": pd.Series(dtype=object), "action": pd.Series(dtype=object),
                             "label": pd.Series(dtype=object), "win_probability": pd.Series(dtype=float),
                             "win_probability_after": pd.Series(dtype=float), "gain_points": pd.Series(dtype=float),
                             "recommended": pd.Series(dtype=bool)})
    if base_features is None:
        base_features = build_features_as_of(_deals_export(export, deal_ids), as_of, state)
    elif base_features["deal_id"].astype(str).tolist() != deal_ids:
        raise ValueError("base_features: rows must be the deals of deal_ids, in that order")
    situation = situation_as_of(export, deal_ids, as_of, base_features)
    proposals = [action.rows(situation) for action in catalog]
    variant_export, variants = _variant_export(export, situation, proposals)
    before = pd.Series(win_probability(bundle, base_features), index=deal_ids)
    after = win_probability(bundle, build_features_as_of(variant_export, as_of, state))
    keys = np.array([a.key for a in catalog], dtype=object)
    labels = np.array([a.label for a in catalog], dtype=object)
    action = variants["variant"].to_numpy() - 1
    deal = Codebook(deal_ids).encode(variants["deal_id"])
    order = np.lexsort((action, deal))  # by deal, then catalog order
    win_before = before.to_numpy()[deal[order]]
    gain = np.round((after[order] - win_before) * 100.0, 6) + 0.0  # + 0.0: no -0.0
    return pd.DataFrame({
        "deal_id": variants["deal_id"].to_numpy(dtype=object)[order],
        "action": keys[action[order]],
        "label": labels[action[order]],
        "win_probability": win_before,
        "win_probability_after": after[order],
        "gain_points": gain,
        "recommended": gain >= MIN_GAIN_POINTS,
    })


def next_best_actions(
    bundle, export: Export, as_of, top: int = 3, catalog: tuple[Action, ...] = DEFAULT_ACTIONS, *,
    state: FeatureState | None = None, deal_ids=None, base_features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The ``top`` recommended actions of each open deal, by the model's gain in win probability.

    Only gains of at least ``MIN_GAIN_POINTS`` are shown (a step the model says lowers the score,
    or moves it by nothing, is not recommended). Returns ``deal_id, rank, action, label,
    gain_points, win_probability, win_probability_after, sentence``, deals in ``deal_ids`` order
    (default: the deals open at ``as_of``), ranks from 1; a deal with no recommended action has no
    row. The gains are the model's estimate, not a promise of cause (``GAIN_NOTE``).
    """
    if int(top) < 1:
        raise ValueError(f"top: expected at least 1 action per deal, got {top!r}")
    tried = evaluate_actions(bundle, export, as_of, catalog, state=state, deal_ids=deal_ids, base_features=base_features)
    shown = tried[tried["recommended"].to_numpy()]
    # Rows come by deal; within a deal best gain first, equal gains in catalog order (stable sort).
    deal = pd.factorize(shown["deal_id"].to_numpy(dtype=object))[0]
    order = np.lexsort((-shown["gain_points"].to_numpy(), deal))
    first = np.flatnonzero(np.append(True, deal[order][1:] != deal[order][:-1]))
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.append(first, len(order)))) + 1
    keep = order[rank <= int(top)]
    labels, gains = shown["label"].to_numpy(dtype=object)[keep], shown["gain_points"].to_numpy(dtype=float)[keep]
    return pd.DataFrame({
        "deal_id": shown["deal_id"].to_numpy(dtype=object)[keep],
        "rank": rank[rank <= int(top)].astype(np.int64),
        "action": shown["action"].to_numpy(dtype=object)[keep],
        "label": labels,
        "gain_points": gains,
        "win_probability": shown["win_probability"].to_numpy(dtype=float)[keep],
        "win_probability_after": shown["win_probability_after"].to_numpy(dtype=float)[keep],
        "sentence": [action_sentence(label, gain) for label, gain in zip(labels, gains)],
    })


def action_sentence(label: str, gain_points: float) -> str:
    """The line a manager reads.

    >>> action_sentence("Engage the economic buyer", 12.4)
    'Engage the economic buyer: +12 points'
    >>> action_sentence("Hold a meeting this week", 0.6)
    'Hold a meeting this week: +1 point'
    """
    points = round(gain_points)
    return f"{label}: +{points} point{'' if points == 1 else 's'}"


def actions_by_deal(actions: pd.DataFrame) -> dict[str, list[dict]]:
    """``next_best_actions`` output as lists of plain dicts per deal id (rank order), for JSON and tables."""
    out: dict[str, list[dict]] = {}
    for deal_id, action, label, gain, after, sentence in zip(
        actions["deal_id"].tolist(), actions["action"].tolist(), actions["label"].tolist(),
        actions["gain_points"].tolist(), actions["win_probability_after"].tolist(), actions["sentence"].tolist(),
    ):
        out.setdefault(str(deal_id), []).append({"action": action, "label": label, "gain_points": float(gain),
                                                 "win_probability_after": float(after), "sentence": sentence})
    return out
