"""The CRM export data contract: tables, columns, allowed values.

This module is data only. Loading and checking live in ``features.contract``; every other
module (generator, feature pipeline, training, serving) reads table and column names from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

OPEN_STAGES: tuple[str, ...] = ("identify", "qualify", "propose", "negotiate", "contract")
CLOSED_STAGES: tuple[str, ...] = ("won", "lost")
STAGES: tuple[str, ...] = OPEN_STAGES + CLOSED_STAGES
STAGE_ORDER: dict[str, int] = {stage: i for i, stage in enumerate(OPEN_STAGES)}

# The stage table: the probability a CRM shows for a deal in each open stage. Salesforce's default
# Opportunity stage probabilities, mapped onto the canonical stages: Prospecting 10% -> identify;
# Qualification 10% / Needs Analysis 20% -> qualify; Value Proposition 50%, Id. Decision Makers 60%,
# Perception Analysis 70% -> propose; Proposal/Price Quote 75%, Negotiation/Review 90% -> negotiate;
# contract (verbal yes) 90%. The baseline the models must beat (training) and the forecast's
# "stage-table estimate" beside the model's (portfolio), so both read it from here.
DEFAULT_STAGE_PROBABILITIES: dict[str, float] = {
    "identify": 0.10,
    "qualify": 0.20,
    "propose": 0.60,
    "negotiate": 0.80,
    "contract": 0.90,
}

ROLES: tuple[str, ...] = (
    "decision_maker",
    "economic_buyer",
    "champion",
    "technical_evaluator",
    "influencer",
    "business_user",
    "procurement",
    "other",
)
# Ordered from least to most senior; features use the position as "seniority level".
SENIORITIES: tuple[str, ...] = ("individual", "manager", "director", "vp", "c_level")
SENIORITY_LEVEL: dict[str, int] = {s: i + 1 for i, s in enumerate(SENIORITIES)}

DEAL_TYPES: tuple[str, ...] = ("new_business", "expansion", "renewal")
OUTCOMES: tuple[str, ...] = ("open", "won", "lost")
ACTIVITY_TYPES: tuple[str, ...] = ("call", "meeting", "email", "demo")
DIRECTIONS: tuple[str, ...] = ("outbound", "inbound")
TRACKED_FIELDS: tuple[str, ...] = ("expected_close_date", "amount")

# Canonical in-memory dtypes after loading. Timestamps are tz-aware UTC.
TIMESTAMP_DTYPE = "datetime64[us, UTC]"

# The supported range of every timestamp of the contract and of a request's as_of, both ends
# included. A CRM's deals, events and close dates lie well inside it; a time outside it is a
# placeholder (1900-01-01, 0001-01-01, 9999-12-31) or a mistake, and is reported as one wherever
# times are read (``dealrisk validate``, ``/score``, ``/score/tables``). Inside it every time and
# every difference of two fits pandas' nanosecond timestamps (1677-09-21 to 2262-04-11).
TIMESTAMP_MIN = pd.Timestamp("1970-01-01T00:00:00Z")
TIMESTAMP_MAX = pd.Timestamp("2200-01-01T00:00:00Z")


@dataclass(frozen=True)
class Column:
    """One column of a contract table.

    kind: ``id`` (non-empty string), ``text`` (free string), ``choice`` (one of ``allowed``),
    ``timestamp`` (UTC), ``number`` (float), ``flag`` (boolean).
    """

    name: str
    kind: str
    required: bool = True  # the column must be present in the file
    nullable: bool = False  # empty cells are allowed
    allowed: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    description: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # columns that identify a row (unique where ``unique_key``)
    unique_key: bool = True
    required: bool = False  # the table must be present in the export
    description: str = ""
    time_column: str | None = None  # the event time; None for ``deals``
    extra: dict = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


DEALS = Table(
    name="deals",
    required=True,
    key=("deal_id",),
    description="One row per deal (Salesforce: Opportunity), in its state at export time.",
    columns=(
        Column("deal_id", "id"),
        Column("account_id", "id"),
        Column("owner_id", "id"),
        Column("created_at", "timestamp"),
        Column("amount", "number", min_value=0.0),
        Column("deal_type", "choice", allowed=DEAL_TYPES),
        Column("lead_source", "text", nullable=True),
        Column("segment", "text", nullable=True),
        Column("region", "text", nullable=True),
        Column("product", "text", nullable=True),
        Column("stage", "choice", allowed=STAGES, description="current stage"),
        Column("expected_close_date", "timestamp", nullable=True, description="current value"),
        Column("closed_at", "timestamp", nullable=True),
        Column("outcome", "choice", allowed=OUTCOMES),
    ),
)

STAGE_HISTORY = Table(
    name="stage_history",
    key=("deal_id", "entered_at", "stage"),
    unique_key=False,
    time_column="entered_at",
    description="One row per stage entry (Salesforce: OpportunityHistory); back-steps allowed.",
    columns=(
        Column("deal_id", "id"),
        Column("stage", "choice", allowed=STAGES),
        Column("entered_at", "timestamp"),
    ),
)

FIELD_HISTORY = Table(
    name="field_history",
    key=("deal_id", "field", "changed_at"),
    unique_key=False,
    time_column="changed_at",
    description="One row per change of a tracked field (Salesforce: OpportunityFieldHistory).",
    columns=(
        Column("deal_id", "id"),
        Column("field", "choice", allowed=TRACKED_FIELDS),
        Column("old_value", "text", nullable=True),
        Column("new_value", "text", nullable=True),
        Column("changed_at", "timestamp"),
    ),
)

CONTACTS = Table(
    name="contacts",
    key=("deal_id", "contact_id"),
    time_column="added_at",
    description="One row per contact on a deal (Salesforce: OpportunityContactRole).",
    columns=(
        Column("deal_id", "id"),
        Column("contact_id", "id"),
        Column("role", "choice", allowed=ROLES),
        Column("seniority", "choice", allowed=SENIORITIES, nullable=True),
        Column("added_at", "timestamp"),
    ),
)

ACTIVITIES = Table(
    name="activities",
    key=("activity_id",),
    time_column="occurred_at",
    description="One row per logged call, meeting, email or demo (Salesforce: Task / Event).",
    columns=(
        Column("activity_id", "id"),
        Column("deal_id", "id"),
        Column("contact_id", "id", nullable=True),
        Column("type", "choice", allowed=ACTIVITY_TYPES),
        Column("direction", "choice", allowed=DIRECTIONS),
        Column("occurred_at", "timestamp"),
        Column("duration_min", "number", nullable=True, min_value=0.0),
        Column(
            "customer_talk_ratio", "number", required=False, nullable=True,
            min_value=0.0, max_value=1.0, description="recorded calls only",
        ),
        Column("next_step_set", "flag", required=False, nullable=True, description="recorded calls only"),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (DEALS, STAGE_HISTORY, FIELD_HISTORY, CONTACTS, ACTIVITIES)
}
EVENT_TABLES: tuple[str, ...] = ("stage_history", "field_history", "contacts", "activities")

# Static context of a deal beyond the columns above (industry, company size, ...): deals columns
# named ``context_<name>``, declared static by whoever wrote the export (``dealrisk import table``
# declares them in its mapping, ``dealrisk import salesforce`` writes the Account's industry). They
# hold what was known when the deal was created and does not change, so, unlike amount or stage,
# their export-time value is no leak. The check keeps them as nullable text after the contract's
# columns of ``Export.deals``; no feature reads them yet (docs/importers.md, "Static context").
CONTEXT_PREFIX = "context_"


def context_columns(columns) -> list[str]:
    """The static context columns among a deals table's column labels, in their order.

    >>> context_columns(["deal_id", "context_industry", "Context_x", "context_"])
    ['context_industry']
    """
    return [c for c in columns if isinstance(c, str) and c.startswith(CONTEXT_PREFIX) and len(c) > len(CONTEXT_PREFIX)]


@dataclass(frozen=True)
class Export:
    """A validated CRM export: canonical names, canonical dtypes.

    ``deals`` is always present. An optional table that the export did not contain is ``None``
    (features that need it are then missing, not zero); a table that was present but holds no
    rows for a deal is an empty frame.
    """

    deals: pd.DataFrame
    stage_history: pd.DataFrame | None = None
    field_history: pd.DataFrame | None = None
    contacts: pd.DataFrame | None = None
    activities: pd.DataFrame | None = None

    def table(self, name: str) -> pd.DataFrame | None:
        return getattr(self, name)

    def tables(self) -> dict[str, pd.DataFrame | None]:
        return {name: self.table(name) for name in TABLES}
