"""Request and response models of the scoring service (pydantic), with a complete example.

A request carries one or many deals, each with its own history in the data contract's shape
(``features.contract.schema``): the deal's fields, ``stage_history``, ``field_history``, ``contacts`` and
``activities``. Names of stages, roles, seniorities, activity types and directions may be the
CRM's own (e.g. Salesforce's "Negotiation/Review"): the same mapping and contract check as file
loads turn them into canonical names or reject them with a reason.

Every model forbids unknown fields, rejects NaN/inf, and hides input values in its error
messages so that deal contents never reach a log.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, TypedDict

from features.contract.schema import EVENT_TABLES
from serving.limits import MAX_TEXT_CHARS, TEXT_PATTERN

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, hide_input_in_errors=True, str_max_length=1000)

# Ids and other free text: serving.limits' text rule (at most 200 characters, no control character).
Id = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=TEXT_PATTERN)]
# The years of the contract's supported range (features.contract.schema.TIMESTAMP_MIN to TIMESTAMP_MAX,
# 1970-01-01 to 2200-01-01), as the spec's pattern states them; tests/serving/test_spec_truth.py
# checks the two agree.
TIMESTAMP_YEARS = "(?:19[7-9][0-9]|2[01][0-9][0-9])"
# What the spec promises a timestamp looks like: RFC 3339 in UTC (upper-case T and Z, or +00:00),
# inside the supported range. The contract reads a little more (a date alone, no offset, a space for
# T), said in the description; a pattern with [0-9], not \d, because \d is any Unicode digit to Python.
TIMESTAMP_PATTERN = (
    f"^{TIMESTAMP_YEARS}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-]00:00)$"
)
TIMESTAMP_DESCRIPTION = (
    "ISO 8601 UTC timestamp, e.g. 2026-03-31T14:05:00Z, from 1970-01-01T00:00:00Z to 2200-01-01T00:00:00Z. "
    "Also read: a date alone (midnight), no offset (UTC), a space instead of T; a non-zero offset is refused (422)."
)
# Event times stay text here: the data contract parses them exactly as it parses CSV cells
# (ISO 8601 in UTC, e.g. 2026-03-31T14:05:00Z), so a request and a file load accept the same.
Timestamp = Annotated[
    str,
    Field(min_length=1, max_length=40, json_schema_extra={"format": "date-time", "pattern": TIMESTAMP_PATTERN},
          description=TIMESTAMP_DESCRIPTION),
]
Name = Annotated[str, Field(min_length=1, max_length=200)]


def refuse_numbers(value: object) -> object:
    """An ``as_of`` is date-time text: a number, or text of digits alone, is refused rather than read as Unix time.

    pydantic's lax datetime reads ``1700000000`` and ``"1700000000"`` as seconds since 1970; the
    spec says a date-time string, and so does the service.
    """
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 date-time such as 2026-06-30T00:00:00Z")
    return value


_NUMBER = re.compile(r"\s*[-+]?[0-9]+(?:\.[0-9]*)?\s*")
AsOf = Annotated[datetime, BeforeValidator(refuse_numbers), Field(json_schema_extra={"pattern": TIMESTAMP_PATTERN})]
"""The type of ``as_of`` on both routes (``/score/tables`` reads its part with it too)."""


def names_of(section: str, which: str = "") -> dict:
    """Spec marker of a field holding a name of the contract's mapping ``section`` (stage, role, ...).

    The served spec (``serving.openapi``) replaces it with a pattern and a list of the names the
    service's mapping accepts (canonical names and the CRM's own, matched ignoring case and extra
    spaces); ``which="open"``: only names of open stages.
    """
    return {"x-names": f"{section}:{which}" if which else section}


# History records are TypedDicts, not models: validated just as strictly, but parsed into plain
# dicts, which halves the cost of parsing a request with long histories.


@with_config(STRICT)
class StageEntry(TypedDict):
    """The deal entered ``stage`` at ``entered_at`` (back-steps allowed)."""

    stage: Annotated[Name, Field(description="Stage entered (identify, qualify, propose, negotiate, contract).",
                                 json_schema_extra=names_of("stage", "open"))]
    entered_at: Timestamp


CHANGED_VALUE = ("The value as text: a timestamp (as created_at) when field is expected_close_date, a finite number "
                 "when it is amount; anything else is refused (422).")


@with_config(STRICT)
class FieldChange(TypedDict):
    """A change of a tracked field (``expected_close_date`` or ``amount``)."""

    field: Literal["expected_close_date", "amount"]
    old_value: NotRequired[Optional[Annotated[str, Field(max_length=100, pattern=TEXT_PATTERN, description=CHANGED_VALUE)]]]
    new_value: NotRequired[Optional[Annotated[str, Field(max_length=100, pattern=TEXT_PATTERN, description=CHANGED_VALUE)]]]
    changed_at: Timestamp


@with_config(STRICT)
class Contact(TypedDict):
    """A person on the deal and their role in the decision chain."""

    contact_id: Id
    role: Annotated[
        Name,
        Field(description="decision_maker, economic_buyer, champion, technical_evaluator, influencer, "
              "business_user, procurement or other (or a mapped CRM name such as 'Economic Buyer').",
              json_schema_extra=names_of("role")),
    ]
    seniority: NotRequired[Optional[Annotated[
        Name, Field(description="individual, manager, director, vp or c_level.", json_schema_extra=names_of("seniority"))
    ]]]
    added_at: Timestamp


@with_config(STRICT)
class Activity(TypedDict):
    """A logged call, meeting, email or demo."""

    activity_id: Id
    contact_id: NotRequired[Optional[Id]]
    type: Annotated[Name, Field(description="call, meeting, email or demo.", json_schema_extra=names_of("activity_type"))]
    direction: Annotated[Name, Field(description="outbound or inbound.", json_schema_extra=names_of("direction"))]
    occurred_at: Timestamp
    duration_min: NotRequired[Optional[Annotated[float, Field(strict=True, ge=0, le=100_000)]]]
    customer_talk_ratio: NotRequired[
        Optional[Annotated[float, Field(strict=True, ge=0, le=1, description="Recorded calls only: customer's share of talk time.")]]
    ]
    next_step_set: NotRequired[Optional[Annotated[bool, Field(strict=True, description="Recorded calls only.")]]]


class Deal(BaseModel):
    """One open deal and its full history up to ``as_of``."""

    model_config = STRICT
    deal_id: Id
    account_id: Id
    owner_id: Id
    created_at: Timestamp
    amount: Annotated[float, Field(strict=True, ge=0, le=1e13)]  # strict: true is not 1.0
    deal_type: Literal["new_business", "expansion", "renewal"]
    lead_source: Optional[Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=TEXT_PATTERN)]] = None
    segment: Optional[Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=TEXT_PATTERN)]] = None
    region: Optional[Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=TEXT_PATTERN)]] = None
    product: Optional[Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=TEXT_PATTERN)]] = None
    stage: Name = Field(description="Current (open) stage.", json_schema_extra=names_of("stage", "open"))
    expected_close_date: Optional[Timestamp] = None
    stage_history: Optional[Annotated[list[StageEntry], Field(min_length=1, max_length=1000)]] = Field(
        default=None, description="Stage entries; omit (null) only if the CRM keeps no stage history."
    )
    field_history: Optional[Annotated[list[FieldChange], Field(max_length=5000)]] = Field(
        default=None, description="Close-date and amount changes; null when the CRM does not track them."
    )
    contacts: Optional[Annotated[list[Contact], Field(max_length=1000)]] = Field(
        default=None, description="Contacts on the deal; null when the CRM has no contact roles."
    )
    activities: Optional[Annotated[list[Activity], Field(max_length=20000)]] = Field(
        default=None, description="Logged activities; null when the CRM has no activity log."
    )


EXAMPLE_REQUEST: dict = {
    "as_of": "2026-06-30T00:00:00Z",
    "deals": [
        {
            "deal_id": "D-1001",
            "account_id": "A-204",
            "owner_id": "U-7",
            "created_at": "2026-03-02T09:00:00Z",
            "amount": 48000.0,
            "deal_type": "new_business",
            "lead_source": "inbound",
            "segment": "mid_market",
            "region": "emea",
            "product": "platform",
            "stage": "negotiate",
            "expected_close_date": "2026-07-31T00:00:00Z",
            "stage_history": [
                {"stage": "identify", "entered_at": "2026-03-02T09:00:00Z"},
                {"stage": "qualify", "entered_at": "2026-03-16T10:00:00Z"},
                {"stage": "propose", "entered_at": "2026-04-13T14:00:00Z"},
                {"stage": "negotiate", "entered_at": "2026-05-20T11:00:00Z"},
            ],
            "field_history": [
                {
                    "field": "expected_close_date",
                    "old_value": "2026-06-30T00:00:00Z",
                    "new_value": "2026-07-31T00:00:00Z",
                    "changed_at": "2026-06-10T08:00:00Z",
                }
            ],
            "contacts": [
                {"contact_id": "C-1", "role": "champion", "seniority": "manager", "added_at": "2026-03-02T09:00:00Z"},
                {
                    "contact_id": "C-2",
                    "role": "decision_maker",
                    "seniority": "vp",
                    "added_at": "2026-04-13T14:00:00Z",
                },
            ],
            "activities": [
                {
                    "activity_id": "X-1",
                    "contact_id": "C-1",
                    "type": "call",
                    "direction": "outbound",
                    "occurred_at": "2026-03-05T15:00:00Z",
                    "duration_min": 30.0,
                    "customer_talk_ratio": 0.55,
                    "next_step_set": True,
                },
                {
                    "activity_id": "X-2",
                    "contact_id": "C-2",
                    "type": "meeting",
                    "direction": "outbound",
                    "occurred_at": "2026-04-20T10:00:00Z",
                    "duration_min": 60.0,
                },
                {
                    "activity_id": "X-3",
                    "contact_id": "C-1",
                    "type": "email",
                    "direction": "inbound",
                    "occurred_at": "2026-06-18T12:00:00Z",
                },
            ],
        }
    ],
}


class ScoreRequest(BaseModel):
    """One or many deals to score, each with its history, as of one moment."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        hide_input_in_errors=True,
        json_schema_extra={"example": EXAMPLE_REQUEST},
    )
    as_of: Optional[AsOf] = Field(
        default=None,
        description="Score as of this moment: an ISO 8601 date-time, e.g. 2026-06-30T00:00:00Z (an offset is converted "
        "to UTC, none means UTC), from 1970-01-01 to 2200-01-01 and at most a day ahead of the server's clock; "
        "null or left out: now. Events after it are refused (422).",
    )
    deals: Annotated[list[Deal], Field(min_length=1)] = Field(description="Deals to score (at least one).")
    next_best_actions: bool = Field(
        default=False, strict=True,
        description="true: also answer each deal's next best actions, up to 3 steps a rep can take (engage the "
        "economic buyer, engage a decision maker, a second contact, a meeting this week, reply to the customer, "
        "confirm the close date) ranked by the model's gain in win probability. The gain is the model's estimate, "
        "not a promise of cause. false (default): the answer is unchanged.",
    )


class Factor(BaseModel):
    """One feature's push on the win probability."""

    feature: str = Field(description="Feature name (see GET /model for the list).")
    value: Optional[float | str | bool] = Field(description="The deal's value of the feature (null: missing).")
    contribution: float = Field(
        description="SHAP contribution to the win model's log-odds (before calibration); > 0 raises the win probability."
    )
    sentence: str = Field(description="The factor in plain words.")


class DealWarning(BaseModel):
    """A rule-based warning worth showing (thresholds: see the README)."""

    code: Literal[
        "no_activity", "ghosted", "single_threaded", "no_decision_maker", "stalled_in_stage", "close_date_pushed",
        "close_date_passed",
    ]
    message: str


class ModelVersions(BaseModel):
    """Registered model versions that produced a score."""

    win: str
    slip: Optional[str] = Field(
        description="null: the champion has no slip model (its training export had no expected close date history; "
        "GET /model says why), so every slip_probability is null."
    )


class NextBestAction(BaseModel):
    """A step a rep can take on the deal and what the model says it is worth (an estimate, not a promise)."""

    action: str = Field(description="engage_economic_buyer, engage_decision_maker, second_contact, meeting, reply "
                        "or confirm_close_date.")
    label: str = Field(description="The step in words, e.g. 'Engage the economic buyer'.")
    gain_points: float = Field(
        description="Win probability with the step logged today minus without it, in points (0-100): the model's "
        "estimate, not a promise of cause. At least 0.5: smaller or negative gains are not recommended."
    )
    win_probability_after: float = Field(ge=0, le=1, description="Calibrated win probability with the step logged today.")
    sentence: str = Field(description="The step and its gain, e.g. 'Engage the economic buyer: +12 points'.")


class DealScore(BaseModel):
    """The explained score of one deal."""

    deal_id: str
    win_probability: float = Field(
        ge=0, le=1,
        description="Calibrated probability that the deal is eventually won (of deals scored 0.3, about 30% win); "
        "a probability, not a rank.",
    )
    score: int = Field(ge=1, le=99, description="Win probability in percent, rounded and clipped to 1-99.")
    grade: Literal["A", "B", "C", "D"] = Field(description="A: win >= 0.60, B: >= 0.40, C: >= 0.20, D: below.")
    slip_probability: Optional[float] = Field(
        ge=0, le=1, description="Calibrated probability that the deal is not won by its current expected close date; "
        "null when the champion has no slip model (model_versions.slip is null), never a made-up number."
    )
    risk_level: Literal["low", "medium", "high"] = Field(
        description="What the deal puts at stake, value at risk counted in typical deals of its segment (value at risk "
        "/ the segment's median amount): high: win < 0.30 and >= 1.0 typical deal at risk; medium: win < 0.50 and "
        ">= 0.5; else low. A deal that cannot be sized is levelled by win alone. Slip is not part of it."
    )
    amount: float
    value_at_risk: float = Field(description="amount x (1 - win_probability).")
    factors_up: list[Factor] = Field(description="Up to 5 factors raising the win probability, strongest first.")
    factors_down: list[Factor] = Field(description="Up to 5 factors lowering the win probability, strongest first.")
    warnings: list[DealWarning]
    model_versions: ModelVersions
    next_best_actions: Optional[list[NextBestAction]] = Field(
        default=None,
        description="Only when the request sets next_best_actions: up to 3 steps, best first (empty: no step gains "
        "0.5 points). The gains are the model's estimate, not a promise of cause.",
    )


class ScoreResponse(BaseModel):
    """Explained scores, in the order of the request's deals."""

    as_of: datetime
    model_versions: ModelVersions
    deals: list[DealScore]
    next_best_actions_note: Optional[str] = Field(
        default=None,
        description="With next best actions only: their gains are the model's estimate of the win probability with "
        "the step logged today, learned from past deals; not a promise that the step causes the gain.",
    )


class ModelInfo(BaseModel):
    """The champion models the service is using."""

    model_versions: ModelVersions
    model_names: dict[str, str]
    run_ids: dict[str, Optional[str]] = Field(description="Training run of each model (null: no such model).")
    trained_at: Optional[str] = Field(default=None, description="When the champion was trained (UTC).")
    metrics: dict = Field(description="Headline held-out metrics as recorded by training.")
    features: list[dict] = Field(description="Model features in order: name, description, categorical.")
    thresholds: dict = Field(description="Grade, risk-level and warning thresholds in use.")
    skipped: list[str] = Field(
        default_factory=list,
        description="What training left out for lack of data, one sentence each, e.g. 'slip model not trained: deals "
        "have no expected_close_date and there is no field_history' (empty: nothing).",
    )


class ErrorProblem(BaseModel):
    """One reason a request is refused, named by its request field (table, column and row for uploads)."""

    field: str = Field(description="The request field, e.g. deals[0].contacts[1].role, activities[row 17].type, "
                       "body or content-type.")
    reason: str = Field(description="What is wrong and what was expected; a quoted value is cut short and its "
                        "control characters escaped.")
    table: Optional[str] = Field(default=None, description="The contract table the field belongs to.")
    column: Optional[str] = Field(default=None, description="The contract column.")
    row: Optional[int] = Field(default=None, description="Row of an uploaded table, counted from 1 after the header.")


class ErrorBody(BaseModel):
    """A refusal by the service: what is wrong, and (for most) each problem by its request field."""

    error: str = Field(description="The refusal in one sentence.")
    problems: list[ErrorProblem] = Field(default_factory=list, description="The problems, up to 50 (absent: none named).")
    problem_count: Optional[int] = Field(default=None, description="How many problems there are in all.")


class ValidationProblem(BaseModel):
    """One of pydantic's errors, as BentoML answers them for a ``POST /score`` body (never the input value)."""

    type: str = Field(description="pydantic's error type, e.g. missing, extra_forbidden, string_too_long.")
    loc: list[str | int] = Field(description="Where in the body, e.g. [\"deals\", 0, \"amount\"].")
    msg: str = Field(description="What is wrong, in words.")
    url: Optional[str] = Field(default=None, description="pydantic's page on the error type.")


class ValidationErrorBody(BaseModel):
    """BentoML's answer to a ``POST /score`` body that is not JSON or breaks the request schema."""

    error: str = Field(description="e.g. '2 validation errors for ScoreRequestIODescriptor'.")
    detail: list[ValidationProblem] = Field(description="pydantic's errors, one per problem.")


def _answer(model: type[BaseModel] | None, description: str, media_type: str = "application/json") -> dict:
    return {"model": model, "description": description, "media_type": media_type}


_UNAUTHORISED = _answer(ErrorBody, "Missing or wrong bearer token (only when DEALRISK_API_TOKEN is set); header "
                        "WWW-Authenticate: Bearer.")
_TOO_LARGE = _answer(ErrorBody, "Too large: a body over DEALRISK_MAX_BODY_BYTES (refused before it is read), more "
                     "deals than DEALRISK_MAX_DEALS, or a table or a deal's history over its row limit; the error "
                     "says which limit.")
_NOT_SCORED = _answer(ErrorBody, "Scoring failed inside the service (a defect, logged without the request's "
                      "contents); never a reaction to the request's values.")
_BREAKS_CONTRACT = (
    "The request breaks the data contract or the request's own rules, each problem named by its field: names of "
    "stages, roles, ... the service's mapping does not know, timestamps that cannot be read, are not UTC or lie "
    "outside 1970-2200, and the rules across fields that the schema cannot state: histories that disagree with "
    "the deal (the last stage entry is the current stage), events before the deal was created or after as_of, "
    "duplicate ids, an as_of more than a day ahead, a text with control characters."
)

# Every status each documented route answers besides its 200, with the body's model; the served
# spec (serving.openapi) states exactly these. Keys: (method, path).
ROUTE_ANSWERS: dict[tuple[str, str], dict[int, dict]] = {
    ("post", "/score"): {
        400: _answer(ValidationErrorBody, "The body is not JSON or breaks the request schema: missing, wrong-typed "
                     "or unknown fields, NaN or infinite numbers, strings over their length, empty lists."),
        401: _UNAUTHORISED,
        413: _TOO_LARGE,
        415: _answer(ErrorBody, "The body is not application/json."),
        422: _answer(ErrorBody, _BREAKS_CONTRACT),
        500: _NOT_SCORED,
    },
    ("post", "/score/tables"): {
        400: _answer(ErrorBody, "The body is not valid multipart/form-data, or a part is sent twice."),
        401: _UNAUTHORISED,
        413: _TOO_LARGE,
        415: _answer(ErrorBody, "The body is not multipart/form-data."),
        422: _answer(ErrorBody, "An unknown part, no deals part, an as_of that is not a date-time, a part that is not "
                     "a readable CSV or Parquet table, or a table that breaks the data contract (unknown columns "
                     "among them); problems name the table, column and row. " + _BREAKS_CONTRACT),
        500: _NOT_SCORED,
    },
    ("get", "/model"): {401: _UNAUTHORISED},
    ("post", "/admin/reload"): {
        401: _UNAUTHORISED,
        403: _answer(ErrorBody, "No DEALRISK_API_TOKEN is set and DEALRISK_RELOAD_WITHOUT_TOKEN is off."),
        500: _answer(None, "The new pair could not be loaded; the old one still serves (the answer's error says why).")
    },
}
"""Statuses besides 200 per route: ``{"model": pydantic model or None (the route's own 200 model), "description",
"media_type"}``."""


def _table_part(table: str, what: str) -> dict:
    return {"type": "string", "format": "binary",
            "description": f"The {table} table ({what}): CSV with a header row, or Parquet; columns as in the data contract."}


TABLES_UPLOAD_OPENAPI: dict = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["deals"],
                    "properties": {
                        "deals": _table_part("deals", "open deals; outcome and closed_at may be left out"),
                        **{table: _table_part(table, "optional") for table in EVENT_TABLES},
                        "as_of": {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN,
                                  "description": "Score as of this moment, as the JSON request's as_of (empty or "
                                  "left out: now)."},
                    },
                    # Any other part is refused (422 naming it).
                    "additionalProperties": False,
                }
            }
        },
    }
}
"""OpenAPI request body of ``POST /score/tables`` (the route reads the form itself)."""
