"""Score a request: JSON deals -> contract tables -> features (training's code) -> explained scores.

The steps are plain functions so that the service stays thin and tests can call them directly:

- ``frames_from_request``: flatten the request's deals and their histories into the contract's
  raw tables, remembering which request field every row came from;
- ``check_request``: the SAME contract check as file loads (``features.contract.check_tables``)
  plus the request's own rules (no event after ``as_of``, only open deals), every problem named
  by its request field;
- ``score_request``: features with ``features.pointintime.pipeline.build_features`` and the fitted state, then
  ``features.model.explain.explain_scores`` (which predicts with ``features.model.predict``), as one vectorised
  batch for all deals of the request.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pydantic_core
from pydantic import TypeAdapter

from features.contract.cells import TIMESTAMP_RANGE, timestamp_in_range
from features.contract.check import check_tables
from features.contract.hints import extra_column_hints
from features.contract.io import TableTooLarge, read_table_bytes, table_shape
from features.contract.load import read_export_tables
from features.contract.schema import (
    CLOSED_STAGES,
    EVENT_TABLES,
    TABLES,
    TIMESTAMP_DTYPE,
    context_columns,
)
from features.contract.violations import show_value, shown_text
from features.model.actions import GAIN_NOTE, actions_by_deal, next_best_actions
from features.model.explain import explain_scores, frame_from_blocks
from features.model.grades import ExplainConfig, value_at_risk_from
from features.pointintime.events import Codebook, to_micros
from features.pointintime.events import parse_as_of
from features.pointintime.pipeline import build_features, build_features_as_of, select_open_deals
from features.pointintime.snapshots import export_end
from features.pointintime.state import FeatureState
from portfolio.store import score_rows
from serving.limits import CONTROL_CHARACTER, MAX_TEXT_CHARS, RequestLimits
from serving.schemas import AsOf, ScoreRequest

# as_of may lie at most this far in the future (clock skew between the CRM and the service).
MAX_AS_OF_AHEAD = pd.Timedelta(days=1)
_ROW_PATTERN = re.compile(r"row (\d+)")


@dataclass(frozen=True)
class Problem:
    """One reason a request cannot be scored, named by its request field."""

    field: str
    reason: str
    table: str | None = None
    column: str | None = None
    row: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class RequestError(ValueError):
    """A request that cannot be scored; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, problems: list[Problem] | tuple[Problem, ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = list(problems)

    def to_dict(self, limit: int = 50) -> dict:
        return {
            "error": self.message,
            "problems": [p.to_dict() for p in self.problems[:limit]],
            "problem_count": len(self.problems),
        }


@dataclass
class LoadedModel:
    """The champion bundle with its fitted feature state and name mapping, built once at startup."""

    bundle: object  # features.model.bundle.ModelBundle
    state: object  # features.pointintime.state.FeatureState
    mapping: object = None  # features.contract.mapping name mapping (None: the shipped default)
    info: dict = field(default_factory=dict)

    @property
    def versions(self) -> dict[str, str | None]:
        """Registry versions; slip None when the champion has no slip model (every slip probability is then null)."""
        slip = self.bundle.versions.get("slip", "") if self.bundle.has("slip") else None
        return {"win": str(self.bundle.versions.get("win", "")), "slip": None if slip is None else str(slip)}


def load_model(bundle, mapping=None) -> LoadedModel:
    """Rebuild the fitted feature state of a bundle; ``ValueError`` names what is wrong.

    ``mapping``: the name mapping requests are checked with (``ServingConfig.mapping``, from
    ``DEALRISK_MAPPING``); None for the shipped default.
    """
    return LoadedModel(bundle=bundle, state=FeatureState.from_dict(bundle.feature_state), mapping=mapping)


# --- request -> contract tables ----------------------------------------------------------------

DEAL_COLUMNS = (
    "deal_id", "account_id", "owner_id", "created_at", "amount", "deal_type", "lead_source", "segment",
    "region", "product", "stage", "expected_close_date",
)
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "stage_history": ("stage", "entered_at"),
    "field_history": ("field", "old_value", "new_value", "changed_at"),
    "contacts": ("contact_id", "role", "seniority", "added_at"),
    "activities": (
        "activity_id", "contact_id", "type", "direction", "occurred_at", "duration_min",
        "customer_talk_ratio", "next_step_set",
    ),
}


def _utc(value: datetime | None) -> pd.Timestamp | None:
    """A request time as a UTC timestamp; a time without offset is read as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return pd.Timestamp(value).tz_convert("UTC")


def frames_from_request(request: ScoreRequest) -> tuple[dict[str, pd.DataFrame], dict[str, RowPaths]]:
    """Flatten the request into raw contract tables and the request path of every row.

    A history table is present when at least one deal sends it (a list, possibly empty) and
    absent (``None`` for every deal) otherwise - then the features that need it are missing.
    One pass over the parsed request per table, no per-row pandas work.
    """
    return frames_from_deals(request.deals)


def frames_from_deals(deals: list, prefixes: list[str] | None = None) -> tuple[dict[str, pd.DataFrame], dict[str, RowPaths]]:
    """``frames_from_request`` for a list of deals; ``prefixes`` (one per deal) namespace the deal
    and activity ids when deals of several requests share one batch."""
    deal_ids = [d.deal_id for d in deals] if prefixes is None else [p + d.deal_id for p, d in zip(prefixes, deals)]
    raw: dict[str, pd.DataFrame] = {}
    paths: dict[str, RowPaths] = {"deals": RowPaths.of("deals", np.ones(len(deals), dtype=int))}
    # One object-dtype frame per table (what a JSON request gives: Python values), built in one
    # go; the contract check parses and types every column as it does for CSV text.
    raw["deals"] = _object_frame(
        {
            "deal_id": deal_ids,
            **{c: [getattr(d, c) for d in deals] for c in DEAL_COLUMNS if c != "deal_id"},
            "closed_at": [None] * len(deals),
            "outcome": ["open"] * len(deals),
        },
        len(deals),
    )
    for table, columns in TABLE_COLUMNS.items():
        lists = [getattr(d, table) for d in deals]
        if all(items is None for items in lists):
            continue
        counts = np.array([len(items) if items else 0 for items in lists], dtype=int)
        rows = [row for items in lists if items for row in items]
        frame = {"deal_id": np.repeat(np.array(deal_ids, dtype=object), counts)}
        for column in columns:
            values = [row.get(column) for row in rows]
            if column == "activity_id" and prefixes is not None:
                values = [p + v for p, v in zip(np.repeat(np.array(prefixes, dtype=object), counts), values)]
            frame[column] = values
        raw[table] = _object_frame(frame, len(rows))
        paths[table] = RowPaths.of(table, counts)
    return raw, paths


def _object_frame(columns: dict, n_rows: int) -> pd.DataFrame:
    """``pd.DataFrame(columns, dtype=object)`` built as one object block (a fifth of the cost for
    the few rows of a one-deal request)."""
    return frame_from_blocks({name: np.asarray(values, dtype=object) if isinstance(values, np.ndarray) else values
                              for name, values in columns.items()}, pd.RangeIndex(n_rows))


@dataclass(frozen=True)
class RowPaths:
    """Request path of each row of a flattened table, formatted only when a problem needs it."""

    table: str
    deal: np.ndarray  # position of the row's deal in the request
    item: np.ndarray  # position of the row in that deal's list

    @classmethod
    def of(cls, table: str, counts: np.ndarray) -> "RowPaths":
        deal = np.repeat(np.arange(len(counts)), counts)
        starts = np.cumsum(counts) - counts
        return cls(table, deal, np.arange(len(deal)) - np.repeat(starts, counts))

    def __len__(self) -> int:
        return len(self.deal)

    def __getitem__(self, position: int) -> str:
        if self.table == "deals":
            return f"deals[{int(self.deal[position])}]"
        return f"deals[{int(self.deal[position])}].{self.table}[{int(self.item[position])}]"


# --- checks -------------------------------------------------------------------------------------


def _position(row) -> int | None:
    """0-based position of a contract violation's row (``"row 3 (deal_id=D1)"`` counts from 1)."""
    match = _ROW_PATTERN.match(str(row))
    return int(match.group(1)) - 1 if match else None


def _row_number(paths: dict, table: str | None, position: int | None) -> int | None:
    """The row number a problem of an uploaded table reports: data rows counted from 1, the header
    not counted, as ``dealrisk validate`` and the generator's planted.csv count them. A JSON
    request has no rows (its problems name list positions), so None there."""
    if position is None or not isinstance(paths.get(table), TablePaths):
        return None
    return int(position) + 1


def _field_of(paths: dict[str, RowPaths], table: str | None, column: str | None, position: int | None) -> str:
    """The request field of a (table, column, position) cell, e.g. ``deals[0].activities[2].type``."""
    if table in paths and position is not None and 0 <= position < len(paths[table]):
        base = paths[table][position]
    elif table == "deals" or table is None:
        base = "deals"
    else:
        base = f"deals[*].{table}"
    return f"{base}.{column}" if column and column != "-" else base


def check_contract(raw: dict[str, pd.DataFrame], paths: dict[str, RowPaths], mapping=None):
    """Run the data contract on the request's tables; ``RequestError(422)`` naming every violation."""
    result = check_tables(raw, mapping=mapping)
    if result.violations:
        problems = [
            Problem(
                field=_field_of(paths, v.table, v.column, _position(v.row)),
                reason=str(v.reason),
                table=v.table,
                column=v.column,
                row=_row_number(paths, v.table, _position(v.row)),
            )
            for v in result.violations
        ]
        raise RequestError(422, "the request breaks the data contract", problems)
    return result.export


def check_times(export, paths: dict[str, RowPaths], as_of: pd.Timestamp) -> None:
    """Reject closed deals and events after ``as_of`` (``RequestError(422)`` naming each field)."""
    problems: list[Problem] = []
    deals = export.deals
    limit = _micros(as_of)
    closed = np.isin(deals["stage"].to_numpy(dtype=object), CLOSED_STAGES)
    for i in np.flatnonzero(closed):
        problems.append(Problem(f"{paths['deals'][i]}.stage", "the deal is closed; only open deals are scored",
                                "deals", "stage", _row_number(paths, "deals", i)))
    late = to_micros(deals["created_at"]) > limit  # NaT is int64 min: never late
    for i in np.flatnonzero(late):
        problems.append(Problem(f"{paths['deals'][i]}.created_at", f"is after as_of ({as_of.isoformat()})",
                                "deals", "created_at", _row_number(paths, "deals", i)))
    for table in EVENT_TABLES:
        frame = export.table(table)
        if frame is None or table not in paths or len(frame) == 0:
            continue
        column = TABLES[table].time_column
        for i in np.flatnonzero(to_micros(frame[column]) > limit):
            problems.append(Problem(f"{_field_of(paths, table, None, i)}.{column}",
                                    f"is after as_of ({as_of.isoformat()}); send only events up to as_of",
                                    table, column, _row_number(paths, table, i)))
    if problems:
        raise RequestError(422, "the request has events after as_of or closed deals", problems)


def _micros(stamp: pd.Timestamp) -> int:
    """A UTC timestamp as int64 microseconds since the epoch (``features.pointintime.pipeline.to_micros`` units).

    Read in the timestamp's own unit: ``Timestamp.value`` is nanoseconds and overflows before 1677.
    """
    return int(stamp.as_unit("us").asm8.view(np.int64))


def resolve_as_of(request: ScoreRequest | "TableRequest", now: pd.Timestamp | None = None) -> pd.Timestamp:
    """The request's ``as_of`` in UTC (default: now); ``RequestError(422)`` if outside the contract's
    timestamp range or far in the future."""
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    if request.as_of is None:
        return now.floor("s")
    if not timestamp_in_range(request.as_of):
        raise RequestError(422, "as_of is outside the supported range", [
            Problem("as_of", f"{show_value(request.as_of.isoformat())} is outside the supported range {TIMESTAMP_RANGE}")
        ])
    as_of = _utc(request.as_of)
    if as_of > now + MAX_AS_OF_AHEAD:
        raise RequestError(422, "as_of is in the future", [Problem("as_of", "is more than one day after now")])
    return as_of


# --- scoring ------------------------------------------------------------------------------------


def build_request_features(model: LoadedModel, export, as_of: pd.Timestamp) -> pd.DataFrame:
    """Point-in-time features of every deal of the request as of ``as_of`` (training's code)."""
    return build_features_as_of(export, as_of, model.state)


def explain_export(model: LoadedModel, export, as_of: pd.Timestamp,
                   config: ExplainConfig = ExplainConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features of every deal of a checked export as of ``as_of``, and their explained scores.

    The one scoring path after the contract check: ``POST /score``, ``/score/tables`` and
    ``dealrisk score`` all call it. Returns ``(features, explained)``, both in the order of
    ``export.deals``.
    """
    features = build_request_features(model, export, as_of)
    return features, with_current_amount(explain_scores(model.bundle, features, config), export.deals)


def with_current_amount(explained: pd.DataFrame, deals: pd.DataFrame) -> pd.DataFrame:
    """The answer's ``amount`` (and ``value_at_risk``) from the deals row where field_history cannot give it.

    Without a field_history the amount feature is missing (its history is unknown), and the
    answer said 0. A request's deal is the deal as of its as_of (no later event is accepted), so
    its amount is the amount then. The model's inputs are left as they are. ``explained`` is in
    the order of ``deals``.
    """
    amount = explained["amount"].to_numpy(dtype=float, na_value=np.nan)
    missing = np.isnan(amount)
    if not missing.any():
        return explained
    amount = np.where(missing, deals["amount"].to_numpy(dtype=float, na_value=np.nan), amount)
    return explained.assign(amount=amount, value_at_risk=value_at_risk_from(amount, explained["win_probability"].to_numpy(float)))


# Called with the store rows of every scored batch when the service writes to the score store
# (``DEALRISK_STORE_WRITE``); None: nothing is built. A sink must not raise: the answer is sent
# whatever becomes of the write (the service's sink logs a failed write).
ScoreSink = Callable[[pd.DataFrame], None]


def sink_rows(sink: ScoreSink | None, model: LoadedModel, explained: pd.DataFrame, features: pd.DataFrame,
              deals: pd.DataFrame) -> None:
    """Hand a scored batch's store rows (``portfolio.store.score_rows``) to ``sink``, if any."""
    if sink is not None:
        sink(score_rows(explained, features, deals, model.versions))


def score_request(model: LoadedModel, request: ScoreRequest, config: ExplainConfig = ExplainConfig(),
                  sink: ScoreSink | None = None) -> dict:
    """The JSON-ready answer for a request: one explained score per deal, in request order.

    Raises ``RequestError`` (4xx) for anything wrong with the request itself.
    """
    as_of = resolve_as_of(request)
    raw, paths = frames_from_request(request)
    export = check_contract(raw, paths, model.mapping)
    check_times(export, paths, as_of)
    features, explained = explain_export(model, export, as_of, config)
    sink_rows(sink, model, explained, features, export.deals)
    response = response_from_explained(explained, request, as_of, model.versions)
    return with_next_best_actions(response, model, export, as_of, features) if request.next_best_actions else response


def with_next_best_actions(response: dict, model: LoadedModel, export, as_of: pd.Timestamp, features: pd.DataFrame) -> dict:
    """``response`` with each deal's next best actions (``features.model.actions``: up to 3 steps a
    rep can take, by the model's gain in win probability) and ``next_best_actions_note``: the gains
    are the model's estimate, not a promise of cause. ``features`` are those the scores came from,
    so the deals are not built twice."""
    actions = dict(zip(features["deal_id"].astype(str), deal_actions(model, export, as_of, features)))
    deals = [{**deal, "next_best_actions": actions.get(deal["deal_id"], [])} for deal in response["deals"]]
    return {**response, "deals": deals, "next_best_actions_note": GAIN_NOTE}


def deal_actions(model: LoadedModel, export, as_of: pd.Timestamp, features: pd.DataFrame) -> list[list[dict]]:
    """Each deal's next best actions (best first, empty when no step is recommended), in the order of
    ``features``: the deals' own features, so they are not built again. The answer's and the store's."""
    deal_ids = features["deal_id"].astype(str).tolist()
    by_deal = actions_by_deal(next_best_actions(model.bundle, export, as_of, state=model.state, deal_ids=deal_ids,
                                                base_features=features))
    return [by_deal.get(deal_id, []) for deal_id in deal_ids]


RESPONSE_NUMBERS = ("win_probability", "slip_probability", "amount", "value_at_risk")


def records_from_explained(explained: pd.DataFrame, versions: dict) -> list[dict]:
    """One ``DealScore``-shaped dict per row of ``explain_scores`` output, in its row order.

    Column by column (one conversion per column, not per cell): non-finite numbers become 0.0,
    except slip probabilities of a champion without a slip model (``versions["slip"]`` None): null.
    """
    numbers = {}
    for key in RESPONSE_NUMBERS:
        values = explained[key].to_numpy(dtype=float, na_value=np.nan)
        numbers[key] = np.where(np.isfinite(values), values, 0.0).tolist()
    if versions.get("slip") is None:
        numbers["slip_probability"] = [None] * len(explained)
    return [
        {
            "deal_id": deal_id, "win_probability": win, "score": score, "grade": grade, "slip_probability": slip,
            "risk_level": risk, "amount": amount, "value_at_risk": at_risk, "factors_up": up, "factors_down": down,
            "warnings": warnings, "model_versions": versions,
        }
        for deal_id, win, score, grade, slip, risk, amount, at_risk, up, down, warnings in zip(
            explained["deal_id"].astype(str).tolist(), numbers["win_probability"],
            explained["score"].to_numpy(dtype=np.int64).tolist(), explained["grade"].tolist(),
            numbers["slip_probability"], explained["risk_level"].tolist(), numbers["amount"],
            numbers["value_at_risk"], explained["factors_up"].tolist(), explained["factors_down"].tolist(),
            explained["warnings"].tolist(),
        )
    ]


def response_from_records(records: list[dict], request: ScoreRequest, as_of: pd.Timestamp, versions: dict) -> dict:
    """The response dict (``serving.schemas.ScoreResponse`` shape), deals in request order."""
    wanted = [d.deal_id for d in request.deals]
    if [record["deal_id"] for record in records] != wanted:
        by_id = {record["deal_id"]: record for record in records}
        records = [by_id[deal_id] for deal_id in wanted]
    return {"as_of": as_of.isoformat(), "model_versions": versions, "deals": records}


def response_from_explained(explained: pd.DataFrame, request: ScoreRequest, as_of: pd.Timestamp, versions: dict) -> dict:
    """Assemble the response dict (``serving.schemas.ScoreResponse`` shape) in request order."""
    return response_from_records(records_from_explained(explained, versions), request, as_of, versions)


def dump_response(response: dict) -> bytes:
    """Serialise a response (pydantic-core's JSON writer); a NaN or inf would become null, never
    invalid JSON (``explain`` already turns missing values into None).

    >>> dump_response({"p": 0.5, "missing": float("nan")})
    b'{"p":0.5,"missing":null}'
    """
    return pydantic_core.to_json(response, inf_nan_mode="null")


# --- the contract's tables as files (POST /score/tables) ---------------------------------------

TABLE_PARTS = tuple(TABLES)  # the contract's tables, one upload part each


@dataclass(frozen=True)
class TableRequest:
    """Deals sent as the contract's tables, one CSV or Parquet file each, instead of nested JSON.

    The files are read in the scoring thread, so the number of deals is not known when the
    request is queued: a table request is never merged with other requests (``deals`` is empty
    for the coalescer's count).
    """

    files: dict[str, bytes]
    as_of: datetime | None = None
    deals: tuple = ()
    limits: RequestLimits = field(default_factory=RequestLimits)


@dataclass(frozen=True)
class TablePaths:
    """Request field of each row of an uploaded table: ``activities[row 17]``, the row counted as
    everywhere (data rows from 1, the header not counted: ``dealrisk validate``'s ``row 17``)."""

    table: str
    rows: int

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, position: int) -> str:
        return f"{self.table}[row {int(position) + 1}]"


def table_request(files: dict[str, bytes], as_of: str | None, limits: RequestLimits = RequestLimits()) -> TableRequest:
    """Validate the parts of an upload: names and ``as_of``, then each table's size and columns
    from its header or footer (``check_upload_shapes``), before a row is read. ``RequestError``
    names a wrong part: 413 for one over a limit, 422 otherwise."""
    problems = [
        Problem(shown_text(name), f"unknown part; the parts are {', '.join(TABLE_PARTS)} and as_of")
        for name in files if name not in TABLE_PARTS
    ]
    if "deals" not in files:
        problems.append(Problem("deals", "required: the deals table (CSV or Parquet)"))
    moment = None
    if as_of not in (None, ""):
        try:
            moment = _datetime_parser().validate_python(as_of)
        except ValueError:
            problems.append(Problem("as_of", "not an ISO 8601 date-time such as 2026-06-30T00:00:00Z"))
    if problems:
        raise RequestError(422, "the upload is not a set of contract tables", problems)
    check_upload_shapes(files, limits)
    return TableRequest(files=dict(files), as_of=moment, limits=limits)


def check_upload_shapes(files: dict[str, bytes], limits: RequestLimits) -> None:
    """Each uploaded table's rows, size and columns from its CSV header and line ends or its Parquet
    footer, nothing parsed: ``RequestError(413)`` naming each part over a limit (the deals table
    over ``max_deals`` rows, another over ``max_table_rows``, a Parquet part whose data unpacks to
    more than ``max_body_bytes``, a footer or header too large to read), then ``RequestError(422)``
    for an unreadable first line or footer and for columns outside the contract: a request
    carries what the contract defines, as ``/score``'s schema forbids unknown fields (``dealrisk
    validate`` notes extra columns of an export and ignores them; a request's are refused, since
    they would be read and held for nothing), and a cell holds one value, never a list.
    """
    too_large: list[Problem] = []
    unreadable: list[Problem] = []
    columns: list[Problem] = []
    for name in TABLE_PARTS:
        if name not in files:
            continue
        try:
            shape = table_shape(files[name])
        except TableTooLarge as exc:
            too_large.append(Problem(name, f"{exc.count:,} {exc.what}; the limit is {exc.limit:,}", table=name))
            continue
        except ValueError as exc:
            unreadable.append(Problem(name, str(exc), table=name))
            continue
        limit, setting = ((limits.max_deals, "DEALRISK_MAX_DEALS") if name == "deals"
                          else (limits.max_table_rows, "DEALRISK_MAX_TABLE_ROWS"))
        counted = "rows in its footer" if shape.kind == "Parquet" else "rows (lines after the header)"
        if shape.rows > limit:
            too_large.append(Problem(name, f"{shape.rows:,} {counted}; the limit is {limit:,} ({setting})", table=name))
        if shape.kind == "Parquet" and shape.data_bytes > limits.max_body_bytes:
            too_large.append(Problem(name, f"{shape.data_bytes:,} bytes of data uncompressed; the limit is "
                                           f"{limits.max_body_bytes:,} (DEALRISK_MAX_BODY_BYTES)", table=name))
        columns += column_problems(name, shape.columns, shape.nested)
    if too_large:
        first = too_large[0]
        raise RequestError(413, f"the uploaded {first.field} table is too large: {first.reason}", too_large)
    if unreadable:
        raise RequestError(422, "an uploaded table cannot be read", unreadable)
    if columns:
        raise RequestError(422, "an uploaded table has columns outside the data contract", columns)


def column_problems(name: str, found: tuple[str, ...], nested: tuple[str, ...] = ()) -> list[Problem]:
    """An uploaded table's columns that the contract does not define (the deals table's static
    ``context_*`` columns are defined), and columns of lists, structs or maps, one problem each."""
    table = TABLES[name]
    known = set(table.column_names) | (set(context_columns(found)) if name == "deals" else set())
    unknown = [column for column in found if column not in known]
    likely = extra_column_hints(table, unknown, [c for c in table.column_names if c not in found]) if unknown else {}
    problems = []
    for column in unknown:
        hint = f" (probably {likely[column]}?)" if column in likely else ""
        shown = shown_text(column)
        problems.append(Problem(
            f"{name}.{shown}",
            f"unknown column {show_value(column)}{hint}; the {name} table's columns are {', '.join(table.column_names)}"
            + (" and context_<name> columns" if name == "deals" else ""),
            table=name, column=shown,
        ))
    for column in nested:
        if column in known:
            problems.append(Problem(f"{name}.{column}", "holds lists, structs or maps; a cell holds one value",
                                    table=name, column=column))
    return problems


@functools.cache
def _datetime_parser():
    """pydantic's date-time parser with the JSON request's ``as_of`` rules (``serving.schemas.AsOf``: no number)."""
    return TypeAdapter(AsOf)


def read_request_tables(request: TableRequest, max_deals: int) -> dict[str, pd.DataFrame]:
    """The uploaded files as raw contract tables; ``RequestError`` names an unreadable part.

    Deals are open by definition here, so ``outcome`` and ``closed_at`` may be left out of the
    deals table (they are filled as open); when present they are checked like any export's.
    """
    raw: dict[str, pd.DataFrame] = {}
    problems = []
    too_large = []
    for name in TABLE_PARTS:
        if name not in request.files:
            continue
        try:
            raw[name] = read_table_bytes(request.files[name], max_bytes=request.limits.max_body_bytes)
        except TableTooLarge as exc:
            too_large.append(Problem(name, f"decodes to {exc.count:,} bytes; the limit is {exc.limit:,} "
                                           "(DEALRISK_MAX_BODY_BYTES)", table=name))
        except ValueError as exc:
            problems.append(Problem(name, str(exc), table=name))
    if too_large:
        raise RequestError(413, f"the uploaded {too_large[0].field} table is too large: {too_large[0].reason}", too_large)
    if problems:
        raise RequestError(422, "an uploaded table cannot be read", problems)
    deals = raw["deals"]
    if len(deals) > max_deals:
        raise RequestError(413, f"too many deals: {len(deals)} > limit {max_deals}; split them over several requests")
    check_upload_events(raw, request.limits.max_deal_events)
    check_upload_text(raw)
    if "outcome" not in deals.columns:
        deals = deals.assign(outcome="open")
    if "closed_at" not in deals.columns:
        deals = deals.assign(closed_at=pd.Series([None] * len(deals), index=deals.index, dtype=object))
    raw["deals"] = deals
    return raw


def events_reason(deal_id, counts: dict[str, int], limit: int) -> str:
    """Why a deal has too many events: its rows per event table and the limit (both routes)."""
    rows = ", ".join(f"{table} {count:,}" for table, count in counts.items() if count)
    return (f"deal {show_value(deal_id)} has {sum(counts.values()):,} events ({rows}); the limit is {limit:,} "
            "stage_history, field_history, contacts and activities rows a deal (DEALRISK_MAX_DEAL_EVENTS)")


def check_deal_events(deals: list, limit: int) -> None:
    """``RequestError(413)`` naming each deal of a JSON request with more event rows than ``limit``."""
    problems = []
    for position, deal in enumerate(deals):
        counts = {table: len(getattr(deal, table) or ()) for table in EVENT_TABLES}
        if sum(counts.values()) > limit:
            problems.append(Problem(f"deals[{position}]", events_reason(deal.deal_id, counts, limit)))
    if problems:
        raise RequestError(413, f"too many events for one deal: {problems[0].reason}", problems)


def check_upload_events(raw: dict[str, pd.DataFrame], limit: int) -> None:
    """``RequestError(413)`` naming each deal with more rows than ``limit`` in the uploaded event
    tables together, the field being the table that holds most of them."""
    tables = [name for name in EVENT_TABLES if name in raw and "deal_id" in raw[name].columns]
    if sum(len(raw[name]) for name in tables) <= limit:
        return  # no deal can be over
    counts = pd.DataFrame({name: raw[name]["deal_id"].value_counts() for name in tables}).fillna(0).astype(np.int64)
    over = counts[counts.sum(axis=1) > limit]
    if over.empty:
        return
    problems = [
        Problem(str(row.idxmax()), events_reason(deal_id, row.to_dict(), limit), table=str(row.idxmax()))
        for deal_id, row in over.head(50).iterrows()
    ]
    raise RequestError(413, f"too many events for one deal: {problems[0].reason}", problems)


# Text problems reported a column at most (the count says how many there are).
TEXT_PROBLEMS_SHOWN = 50


def check_upload_text(raw: dict[str, pd.DataFrame]) -> None:
    """``serving.limits``' text rule on every text cell of the uploaded tables: at most
    ``MAX_TEXT_CHARS`` characters and no control character, as ``/score``'s schema requires of
    its ids and text. ``RequestError(422)`` naming table, column and row of each cell that breaks it.
    """
    problems: list[Problem] = []
    broken = 0
    for name, frame in raw.items():
        for column in frame.columns:
            cells = frame[column]
            if cells.dtype != object and not isinstance(cells.dtype, pd.StringDtype):
                continue  # typed Parquet columns: numbers, times, flags
            text = _text_array(cells)
            if not _may_break_text_rule(text):
                continue
            bad = pc.or_kleene(pc.greater(pc.utf8_length(text), MAX_TEXT_CHARS),
                               pc.match_substring_regex(text, CONTROL_CHARACTER))
            rows = np.flatnonzero(bad.fill_null(False).to_numpy(zero_copy_only=False))
            broken += len(rows)
            problems += [Problem(f"{name}[row {i + 1}].{column}", text_reason(cells.iloc[i]), name, str(column), int(i) + 1)
                         for i in rows[:TEXT_PROBLEMS_SHOWN]]
    if problems:
        raise RequestError(422, f"{broken:,} cells break the text rule (at most {MAX_TEXT_CHARS} characters, "
                                "no control character)", problems)


def text_reason(value: str) -> str:
    """Why a text cell breaks the rule: its length, or its first control character."""
    if len(value) > MAX_TEXT_CHARS:
        return f"has {len(value):,} characters; at most {MAX_TEXT_CHARS}"
    control = re.search(CONTROL_CHARACTER, value).group()
    return f"holds a control character (U+{ord(control):04X}); ids, names and other text are printable"


def _may_break_text_rule(text: pa.Array | pa.ChunkedArray) -> bool:
    """Whether some cell of ``text`` may be too long or hold a control character, from its UTF-8
    bytes at once: no cell longer than ``MAX_TEXT_CHARS`` bytes, no byte below 0x20, no 0x7F and no
    C1 character (0xC2 0x80-0x9F) means none breaks the rule. Only the columns that may break it
    are checked cell by cell (a 1,000-deal upload: 3 ms instead of 65 ms)."""
    chunks = text.chunks if isinstance(text, pa.ChunkedArray) else [text]
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset:chunk.offset + len(chunk) + 1]
        if np.diff(offsets).max() > MAX_TEXT_CHARS:
            return True
        buffer = chunk.buffers()[2]
        data = np.frombuffer(buffer, dtype=np.uint8)[offsets[0]:offsets[-1]] if buffer is not None else np.empty(0, np.uint8)
        if (data < 0x20).any() or (data == 0x7F).any() or ((data[:-1] == 0xC2) & (data[1:] < 0xA0) & (data[1:] >= 0x80)).any():
            return True
    return False


def _text_array(cells: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The strings of a text or object column as Arrow strings (anything else null); a string
    column's own Arrow data where it has some."""
    try:
        return pa.array(cells, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([v if isinstance(v, str) else None for v in cells], type=pa.large_string())


def score_tables(model: LoadedModel, request: TableRequest, config: ExplainConfig = ExplainConfig(),
                 max_deals: int = 2000, sink: ScoreSink | None = None) -> dict:
    """The answer for an upload of contract tables: the same checks, features and explanations as
    ``score_request``, deals in the order of the deals table; ``RequestError`` for a bad upload."""
    as_of = resolve_as_of(request)
    raw = read_request_tables(request, max_deals)
    paths = {name: TablePaths(name, len(frame)) for name, frame in raw.items()}
    export = check_contract(raw, paths, model.mapping)
    check_times(export, paths, as_of)
    features, explained = explain_export(model, export, as_of, config)
    sink_rows(sink, model, explained, features, export.deals)
    records = records_from_explained(explained, model.versions)
    return {"as_of": as_of.isoformat(), "model_versions": model.versions, "deals": records}


# --- several requests as one batch ----------------------------------------------------------------

def score_requests(model: LoadedModel, requests: list[ScoreRequest], config: ExplainConfig = ExplainConfig(),
                   sink: ScoreSink | None = None) -> list:
    """Score several requests as ONE vectorised batch; one answer (dict) or RequestError each.

    This is how concurrent single-deal requests share one feature and model pass: their deals
    are flattened together, deal and activity ids prefixed by the request's number so that
    deals of different requests never meet (features of a deal depend only on its own rows and
    the fitted state). Any problem with the merged batch (a contract violation, an event after
    as_of, ...) sends every request down the one-request path instead, so each gets exactly the
    answer, or the error, it would get alone.
    """
    if len(requests) == 1:
        return [_answer_or_error(model, requests[0], config, sink)]
    alone = {k for k, request in enumerate(requests) if getattr(request, "next_best_actions", False)}
    if alone:
        # Next best actions re-score each deal's history as of its request's as_of: such a request
        # is answered on its own, the others still merged.
        rest = [k for k in range(len(requests)) if k not in alone]
        answers = dict(zip(rest, score_requests(model, [requests[k] for k in rest], config, sink))) if rest else {}
        answers |= {k: _answer_or_error(model, requests[k], config, sink) for k in sorted(alone)}
        return [answers[k] for k in range(len(requests))]
    try:
        as_ofs = [resolve_as_of(request) for request in requests]
        deals = [deal for request in requests for deal in request.deals]
        request_of = np.repeat(np.arange(len(requests)), [len(request.deals) for request in requests])
        prefixes = [f"{k}{_SEPARATOR}" for k in request_of]
        raw, _ = frames_from_deals(deals, prefixes)
        export = _check(raw, model.mapping)
        if export is None:
            raise RequestError(422, "the merged batch breaks the contract")
        as_of = pd.Series(np.array(as_ofs, dtype=object)[request_of], index=export.deals.index).astype(TIMESTAMP_DTYPE)
        _check_times_merged(export, as_of)
        points = pd.DataFrame({"deal_id": export.deals["deal_id"], "as_of": as_of})
        features = build_features(export, points, model.state)
        explained = with_current_amount(explain_scores(model.bundle, features, config), export.deals)
    except RequestError:
        return [_answer_or_error(model, request, config, sink) for request in requests]
    # build_features keeps the points' order, which is the order of the deals in the requests.
    explained = explained.assign(deal_id=[d.deal_id for d in deals])
    sink_rows(sink, model, explained, features, export.deals)
    records = records_from_explained(explained, model.versions)
    starts = np.concatenate([[0], np.cumsum([len(request.deals) for request in requests])]).tolist()
    return [
        response_from_records(records[starts[k]:starts[k + 1]], request, as_ofs[k], model.versions)
        for k, request in enumerate(requests)
    ]


_SEPARATOR = "\x1f"  # unit separator: keeps request number and deal id apart in merged batches


def _answer_or_error(model: LoadedModel, request: ScoreRequest, config: ExplainConfig, sink: ScoreSink | None = None):
    try:
        return score_request(model, request, config, sink)
    except RequestError as exc:
        return exc


def _check(raw: dict[str, pd.DataFrame], mapping):
    result = check_tables(raw, mapping=mapping)
    return None if result.violations else result.export


def _check_times_merged(export, as_of: pd.Series) -> None:
    """Any closed deal or event after its request's as_of: ``RequestError`` (the caller falls back)."""
    deals = export.deals
    limit = to_micros(as_of)
    if np.isin(deals["stage"].to_numpy(dtype=object), CLOSED_STAGES).any() or (to_micros(deals["created_at"]) > limit).any():
        raise RequestError(422, "closed deal or deal created after as_of")
    deal_row = Codebook(deals["deal_id"].to_numpy(dtype=object))
    for table in EVENT_TABLES:
        frame = export.table(table)
        if frame is None or len(frame) == 0:
            continue
        column = TABLES[table].time_column
        row = deal_row.encode(frame["deal_id"])
        # An event whose deal is unknown has no as_of to respect: the contract reports it.
        if (to_micros(frame[column]) > np.where(row >= 0, limit[row], np.iinfo(np.int64).max)).any():
            raise RequestError(422, f"event after as_of in {table}")


# --- a whole export (dealrisk score) --------------------------------------------------------------

# Deals per scoring batch of a whole export: the service's largest request (DEALRISK_MAX_DEALS),
# so the batch command runs exactly the batches the service runs, and the progress bar moves.
EXPORT_BATCH_DEALS = 2000


def read_export_checked(folder: Path, mapping=None):
    """An export folder through the service's contract check (``check_contract``).

    The tables are read as ``/score/tables`` reads an upload, so problems are named like its
    (``deals[row 17].stage``: table, row counted from 1 as ``dealrisk validate`` counts it, column). ``ContractError`` for a missing
    folder or an unreadable file, ``RequestError`` for contract violations.
    """
    raw = read_export_tables(Path(folder))
    paths = {name: TablePaths(name, len(frame)) for name, frame in raw.items()}
    return check_contract(raw, paths, mapping)


def resolve_export_as_of(export, as_of=None, end: pd.Timestamp | None = None) -> pd.Timestamp:
    """The moment to score an export as of: ``as_of`` if given, else the export's last event.

    ``ValueError`` when ``as_of`` is not a time or lies more than a day after the last event
    (the export cannot know what happened since). ``end``: the last event when it is already
    known (a partitioned export's, found on the Dask cluster); ``export`` is then not read.
    """
    end = export_end(export) if end is None else end
    if as_of is None:
        return end
    moment = parse_as_of(as_of)
    if moment > end + MAX_AS_OF_AHEAD:
        raise ValueError(f"as_of {moment.isoformat()} is after the export's last event ({end.isoformat()}); "
                         "the export cannot know what happened since")
    return moment


@dataclass(frozen=True)
class ScoredBatch:
    """One batch of an export's open deals, scored: the frames ``portfolio.store.score_rows`` takes."""

    export: object  # features.contract.schema.Export of the batch's deals only
    features: pd.DataFrame
    explained: pd.DataFrame

    def __len__(self) -> int:
        return len(self.explained)


def split_open_deals(export, as_of: pd.Timestamp, batch_deals: int = EXPORT_BATCH_DEALS) -> list:
    """The deals open at ``as_of``, as exports of at most ``batch_deals`` deals each.

    Each table is sorted by batch once (no per-batch scan of the whole export). A deal's
    features depend only on its own rows and the fitted state, so scoring the batches apart
    gives what scoring them together gives.
    """
    open_ids = select_open_deals(export, as_of)["deal_id"].to_numpy(dtype=object)
    batch_of = pd.Series(np.arange(len(open_ids)) // batch_deals, index=pd.Index(open_ids, dtype=object))
    n_batches = int(batch_of.max()) + 1 if len(open_ids) else 0
    pieces: dict[str, list] = {}
    for name, table in export.tables().items():
        if table is None:
            pieces[name] = [None] * n_batches
            continue
        batch = table["deal_id"].map(batch_of).to_numpy(dtype=float, na_value=np.nan)
        keep = np.flatnonzero(~np.isnan(batch))
        order = keep[np.argsort(batch[keep], kind="stable")]
        bounds = np.searchsorted(batch[order], np.arange(n_batches + 1))
        ordered = table.iloc[order]
        pieces[name] = [ordered.iloc[bounds[k]:bounds[k + 1]].reset_index(drop=True) for k in range(n_batches)]
    return [type(export)(**{name: parts[k] for name, parts in pieces.items()}) for k in range(n_batches)]


def score_export(model: LoadedModel, export, as_of: pd.Timestamp, config: ExplainConfig = ExplainConfig(),
                 batch_deals: int = EXPORT_BATCH_DEALS) -> Iterator[ScoredBatch]:
    """Score every deal open at ``as_of`` with the service's path (``explain_export``), batch by batch.

    A generator, so the caller can show progress and store each batch; the deals of the export
    that are not open at ``as_of`` (closed by then, or created later) are left out.
    """
    return score_batches(model, split_open_deals(export, as_of, batch_deals), as_of, config)


def score_batches(model: LoadedModel, batches: list, as_of: pd.Timestamp,
                  config: ExplainConfig = ExplainConfig()) -> Iterator[ScoredBatch]:
    """``score_export`` on batches already split by ``split_open_deals`` (a caller that counts them first)."""
    for batch in batches:
        features, explained = explain_export(model, batch, as_of, config)
        yield ScoredBatch(export=batch, features=features, explained=explained)
