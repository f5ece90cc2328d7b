"""The feature registry: one ordered list of every model feature, its meaning, unit and phrasing.

Training, serving, the docs and the explanation sentences all read this list; the pipeline
(``features.pointintime.pipeline.build_features``) returns exactly these columns, in this order.
``python -m features.pointintime.definitions`` prints docs/features.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

FAMILIES: tuple[str, ...] = ("stage", "decision_chain", "engagement", "context", "calendar")
KINDS: tuple[str, ...] = ("numeric", "categorical", "flag")

# Window lengths (days) shared by the pipeline and the feature descriptions.
ENGAGED_WINDOW_DAYS = 30
SHORT_WINDOW_DAYS = 7
TREND_WINDOW_DAYS = 14
# Decision-chain roles with features of their own: engaged in the last 30 days, days since engaged
# and share of the last 30 days' contacted activities; the first two also the share of their
# activities that are meetings. The pipeline computes exactly these.
ENGAGED_ROLES: tuple[str, ...] = ("decision_maker", "economic_buyer", "champion")
MEETING_ROLES: tuple[str, ...] = ENGAGED_ROLES[:2]
# Pseudo-count pulling owner/account win rates towards the global rate for small histories.
WIN_RATE_PRIOR_DEALS = 5.0
# First month (1-12) of the fiscal year when the feature state names none: calendar quarters.
DEFAULT_FISCAL_YEAR_START_MONTH = 1

# What a feature or a model can need from an export, beyond the deals table's required columns.
# ``features.pointintime.inputs.find_inputs`` tells which of them an export has (and, if not, why).
INPUTS: dict[str, str] = {
    "stage_history": "the stage_history table",
    "history:expected_close_date": "expected_close_date changes in field_history",
    "history:amount": "amount changes in field_history",
    "history:owner_id": "owner_id changes (a history the data contract does not keep yet)",
    "contacts": "the contacts table",
    "activities": "the activities table",
    "activities.customer_talk_ratio": "recorded-call talk ratios (activities.customer_talk_ratio)",
    "activities.next_step_set": "recorded-call next steps (activities.next_step_set)",
    "deals.lead_source": "deals.lead_source values",
    "deals.segment": "deals.segment values",
    "deals.region": "deals.region values",
    "deals.product": "deals.product values",
}

# Deal fields that change during a deal's life, and the input their value as of a moment is
# rebuilt from. The deals row holds their value at export time, i.e. the future of every training
# snapshot: without the history input, training never reads them (docs/features.md, "No future").
CHANGEABLE_FIELDS: dict[str, str] = {
    "stage": "stage_history",
    "expected_close_date": "history:expected_close_date",
    "amount": "history:amount",
    # Deals change hands (a rep leaves; lost deals parked with a manager or a queue user). The
    # contract keeps no owner history, so the owner features stay out of training: on generated
    # exports (no reassignments) they were worth 0.0006-0.002 test AUC.
    "owner_id": "history:owner_id",
}

# What each model needs besides the deals table and its outcome. The slip label is "not won by
# the expected close date known at the snapshot": without that date's history there is no label
# (an export-time close date is often the actual close date, which the CRM sets on closing).
MODEL_NEEDS: dict[str, tuple[str, ...]] = {
    "win": (),
    "slip": ("history:expected_close_date",),
}


@dataclass(frozen=True)
class Feature:
    """One model feature: its name, family, meaning, unit, kind and how to say it to a manager.

    ``phrases`` holds ``str.format`` templates keyed by case: ``value`` (any number), ``zero``
    (the value is 0), ``one`` (the value is 1), ``under_one`` (0 <= value < 1), ``true`` / ``false`` (flags) and ``missing`` (NaN). Templates may use
    ``{value}`` and any other column of the feature row (e.g. ``{current_stage}``).
    ``needs`` names the inputs (keys of ``INPUTS``) the feature is computed from; training leaves
    a feature out of the models, missing (NaN) in every row, when its export lacks one of them.
    """

    name: str
    family: str
    description: str
    unit: str
    kind: str = "numeric"
    phrases: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"feature {self.name}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        unknown = [need for need in self.needs if need not in INPUTS]
        if unknown:
            raise ValueError(f"feature {self.name}: needs unknown inputs {unknown}; known: {', '.join(INPUTS)}")


def _role_label(role: str) -> str:
    return role.replace("_", " ")


def _role_features(role: str) -> list[Feature]:
    label = _role_label(role)
    return [
        Feature(
            f"{role}_engaged_30d", "decision_chain",
            f"1 if an activity with a {label} contact happened in the last {ENGAGED_WINDOW_DAYS} days.",
            "flag", "flag",
            {"true": f"{label.capitalize()} engaged in the last {ENGAGED_WINDOW_DAYS} days",
             "false": f"No {label} engaged in the last {ENGAGED_WINDOW_DAYS} days",
             "missing": f"Unknown whether a {label} is engaged (no contact or activity log)"},
        ),
        Feature(
            f"days_since_{role}_engaged", "decision_chain",
            f"Days since the last activity with a {label} contact; missing if never.",
            "days", "numeric",
            {"value": f"{label.capitalize()} last engaged {{value:.0f}} day{{s}} ago",
             "under_one": f"{label.capitalize()} engaged within the last day",
             "missing": f"No {label} ever engaged"},
        ),
    ]


def _role_share_features() -> list[Feature]:
    shares = [
        Feature(
            f"{role}_activity_share_{ENGAGED_WINDOW_DAYS}d", "decision_chain",
            f"Share of the last {ENGAGED_WINDOW_DAYS} days' activities with a contact of the deal that were "
            f"with a {label} contact; missing when there were none.",
            "share", "numeric",
            {"value": f"{label.capitalize()} in {{value:.0%}} of contacted activities in the last {ENGAGED_WINDOW_DAYS} days",
             "zero": f"{label.capitalize()} in none of the contacted activities in the last {ENGAGED_WINDOW_DAYS} days",
             "missing": f"No activity with a known contact in the last {ENGAGED_WINDOW_DAYS} days"},
        )
        for role, label in ((role, _role_label(role)) for role in ENGAGED_ROLES)
    ]
    meeting_shares = [
        Feature(
            f"{role}_meeting_share", "decision_chain",
            f"Share of the activities so far with a {label} contact that were meetings; missing when there were none.",
            "share", "numeric",
            {"value": f"{{value:.0%}} of the activities with a {label} were meetings",
             "zero": f"No meeting among the activities with a {label}",
             "missing": f"No activity with a {label} yet"},
        )
        for role, label in ((role, _role_label(role)) for role in MEETING_ROLES)
    ]
    meetings = Feature(
        f"decision_maker_meetings_{ENGAGED_WINDOW_DAYS}d", "decision_chain",
        f"Meetings with a decision maker contact in the last {ENGAGED_WINDOW_DAYS} days.", "count", "numeric",
        {"value": f"{{value:.0f}} meeting{{s}} with a decision maker in the last {ENGAGED_WINDOW_DAYS} days",
         "zero": f"No meeting with a decision maker in the last {ENGAGED_WINDOW_DAYS} days",
         "missing": "No contact or activity data"},
    )
    return [*shares, *meeting_shares, meetings]


def _activity_count(kind: str, days: int) -> Feature:
    label = "activities" if kind == "activities" else f"{kind}s"
    what = "activities of any type" if kind == "activities" else f"activities of type {kind}"
    return Feature(
        f"{label}_{days}d", "engagement",
        f"Number of {what} in the last {days} days.", "count", "numeric",
        {"value": f"{{value:.0f}} {label} in the last {days} days",
         "zero": f"No {label} in the last {days} days",
         "missing": "No activity log"},
    )


FEATURES: tuple[Feature, ...] = (
    # --- stage duration and velocity ---------------------------------------------------------
    Feature("current_stage", "stage", "Stage the deal was in as of as_of (from stage_history).", "stage",
            "categorical", {"value": "In stage {value}", "missing": "Stage unknown"}),
    Feature("days_in_stage", "stage", "Days since the deal last entered its current stage.", "days", "numeric",
            {"value": "In {current_stage} for {value:.0f} day{s}", "missing": "Time in stage unknown"}),
    Feature("days_in_stage_vs_won", "stage",
            "days_in_stage divided by the median days that won deals spent in that stage (fitted state).",
            "ratio", "numeric",
            {"value": "In {current_stage} for {days_in_stage:.0f} days, {value:.1f}x what won deals take",
             "missing": "No won-deal benchmark for this stage"}),
    Feature("deal_age_days", "stage", "Days since the deal was created.", "days", "numeric",
            {"value": "Deal is {value:.0f} day{s} old"}),
    Feature("stage_changes", "stage", "Number of stage entries after the first one.", "count", "numeric",
            {"value": "{value:.0f} stage changes", "zero": "Never moved stage", "missing": "No stage history"}),
    Feature("stage_back_steps", "stage", "Number of moves back to an earlier open stage.", "count", "numeric",
            {"value": "Moved back a stage {value:.0f} time{s}", "zero": "Never moved back a stage",
             "missing": "No stage history"}),
    Feature("days_to_expected_close", "stage",
            "Days from as_of to the expected close date known at as_of (negative: overdue).", "days", "numeric",
            {"value": "Expected to close in {value:.0f} days", "missing": "Expected close date unknown"}),
    Feature("close_date_pushes", "stage", "Number of times the expected close date moved later.", "count",
            "numeric", {"value": "Close date pushed {value:.0f} time{s}", "zero": "Close date never pushed",
                        "missing": "No field history"}),
    Feature("close_date_days_pushed", "stage", "Total days the expected close date moved later.", "days",
            "numeric", {"value": "Close date pushed by {value:.0f} day{s} in total", "zero": "Close date never pushed",
                        "missing": "No field history"}),
    Feature("planned_days_at_creation", "stage",
            "Days from the deal's creation to the expected close date it was created with (the first plan).",
            "days", "numeric",
            {"value": "Planned to close {value:.0f} day{s} after creation", "missing": "First close date unknown"}),
    Feature("amount_change_ratio", "stage", "Amount as of as_of divided by the amount at creation.", "ratio",
            "numeric", {"value": "Amount is {value:.2f}x its initial value", "missing": "Amount history unknown"}),
    Feature("largest_amount_cut", "stage",
            "Smallest new/old ratio of a single amount change so far, capped at 1 (1: never cut). "
            "A budget cut shows as one low ratio; gradual discounting as several ratios near 1.",
            "ratio", "numeric",
            {"value": "Amount once cut to {value:.0%} of its previous value in one change",
             "one": "Amount never cut", "missing": "Amount history unknown"}),
    # --- decision-chain coverage --------------------------------------------------------------
    Feature("contacts_count", "decision_chain", "Contacts added to the deal.", "count", "numeric",
            {"value": "{value:.0f} contact{s} on the deal", "zero": "No contacts on the deal",
             "missing": "No contact data"}),
    Feature("roles_present", "decision_chain", "Distinct decision-chain roles among the deal's contacts.",
            "count", "numeric", {"value": "{value:.0f} distinct roles on the deal", "zero": "No roles on the deal",
                                 "missing": "No contact data"}),
    Feature("roles_engaged_30d", "decision_chain",
            f"Distinct roles with an activity in the last {ENGAGED_WINDOW_DAYS} days.", "count", "numeric",
            {"value": f"{{value:.0f}} roles engaged in the last {ENGAGED_WINDOW_DAYS} days",
             "zero": f"No role engaged in the last {ENGAGED_WINDOW_DAYS} days",
             "missing": "No contact or activity data"}),
    *(feature for role in ENGAGED_ROLES for feature in _role_features(role)),
    *_role_share_features(),
    Feature("max_seniority_engaged_30d", "decision_chain",
            f"Highest seniority level engaged in the last {ENGAGED_WINDOW_DAYS} days "
            "(1 individual .. 5 c_level; 0 nobody).", "level", "numeric",
            {"value": f"Most senior contact engaged in {ENGAGED_WINDOW_DAYS} days is level {{value:.0f}} of 5",
             "zero": f"No contact of known seniority engaged in {ENGAGED_WINDOW_DAYS} days",
             "missing": "No contact or activity data"}),
    Feature("contacts_engaged", "decision_chain", "Distinct contacts with at least one activity so far.", "count",
            "numeric", {"value": "{value:.0f} contact{s} engaged so far", "zero": "No contact engaged yet",
                        "missing": "No activity log"}),
    Feature("top_contact_share", "decision_chain",
            "Share of the deal's contact activities that went to its most-contacted person (single-threading).",
            "share", "numeric",
            {"value": "{value:.0%} of contact activities go to one person",
             "missing": "No activities with a named contact"}),
    # --- engagement frequency and recency -----------------------------------------------------
    _activity_count("activities", SHORT_WINDOW_DAYS),
    _activity_count("activities", ENGAGED_WINDOW_DAYS),
    _activity_count("call", SHORT_WINDOW_DAYS),
    _activity_count("meeting", SHORT_WINDOW_DAYS),
    _activity_count("email", SHORT_WINDOW_DAYS),
    _activity_count("demo", SHORT_WINDOW_DAYS),
    _activity_count("call", ENGAGED_WINDOW_DAYS),
    _activity_count("meeting", ENGAGED_WINDOW_DAYS),
    _activity_count("email", ENGAGED_WINDOW_DAYS),
    _activity_count("demo", ENGAGED_WINDOW_DAYS),
    Feature("inbound_share", "engagement", "Share of all activities so far that were inbound (customer-initiated).",
            "share", "numeric", {"value": "{value:.0%} of activities came from the customer",
                                 "missing": "No activities yet"}),
    Feature("days_since_last_activity", "engagement", "Days since the last activity; missing if none yet.",
            "days", "numeric", {"value": "Last activity {value:.0f} day{s} ago", "under_one": "Last activity within the last day",
                                "missing": "No activity yet"}),
    Feature("days_since_last_inbound", "engagement", "Days since the customer last reached out; missing if never.",
            "days", "numeric", {"value": "Customer last reached out {value:.0f} day{s} ago",
                                "under_one": "Customer reached out within the last day",
                                "missing": "Customer has never reached out"}),
    Feature("activity_trend_14d", "engagement",
            f"(last {TREND_WINDOW_DAYS} days - the {TREND_WINDOW_DAYS} before) / (their sum); 0 if both empty.",
            "ratio -1..1", "numeric",
            {"value": f"Activity trend over {TREND_WINDOW_DAYS} days: {{value:+.2f}}",
             "missing": "No activity log"}),
    Feature("meetings_held", "engagement", "Meetings held so far.", "count", "numeric",
            {"value": "{value:.0f} meeting{s} held", "zero": "No meeting held yet", "missing": "No activity log"}),
    Feature("mean_customer_talk_ratio", "engagement", "Mean customer talk ratio over recorded calls so far.",
            "share", "numeric", {"value": "Customer talks {value:.0%} of recorded calls",
                                 "missing": "No recorded calls"}),
    Feature("next_step_rate", "engagement", "Share of recorded calls so far that ended with a next step set.",
            "share", "numeric", {"value": "{value:.0%} of recorded calls set a next step",
                                 "missing": "No recorded calls"}),
    Feature(f"inbound_share_{ENGAGED_WINDOW_DAYS}d", "engagement",
            f"Share of the last {ENGAGED_WINDOW_DAYS} days' activities that were inbound; missing when there were none.",
            "share", "numeric", {"value": f"{{value:.0%}} of the last {ENGAGED_WINDOW_DAYS} days' activities came from the customer",
                                 "missing": f"No activity in the last {ENGAGED_WINDOW_DAYS} days"}),
    Feature(f"next_step_rate_{ENGAGED_WINDOW_DAYS}d", "engagement",
            f"Share of the last {ENGAGED_WINDOW_DAYS} days' recorded calls that ended with a next step set; "
            "missing when there were none.",
            "share", "numeric", {"value": f"{{value:.0%}} of the last {ENGAGED_WINDOW_DAYS} days' recorded calls set a next step",
                                 "missing": f"No recorded call in the last {ENGAGED_WINDOW_DAYS} days"}),
    Feature(f"customer_talk_ratio_{ENGAGED_WINDOW_DAYS}d", "engagement",
            f"Mean customer talk ratio over the last {ENGAGED_WINDOW_DAYS} days' recorded calls; missing when there were none.",
            "share", "numeric", {"value": f"Customer talked {{value:.0%}} of the last {ENGAGED_WINDOW_DAYS} days' recorded calls",
                                 "missing": f"No recorded call in the last {ENGAGED_WINDOW_DAYS} days"}),
    # --- context ------------------------------------------------------------------------------
    Feature("amount", "context", "Deal amount as of as_of (reconstructed from field_history).", "currency",
            "numeric", {"value": "Amount {value:,.0f}", "missing": "Amount unknown"}),
    Feature("amount_vs_segment_median", "context",
            "amount divided by the median first amount (amount at creation) of the same segment's deals "
            "closed at or before as_of (fitted state).", "ratio", "numeric",
            {"value": "Amount is {value:.1f}x the typical {segment} deal",
             "missing": "No closed deals of this segment to compare the amount with"}),
    Feature("first_amount_vs_segment_median", "context",
            "The amount the deal was created with, divided by the same segment median as amount_vs_segment_median.",
            "ratio", "numeric",
            {"value": "Created at {value:.1f}x the typical {segment} deal",
             "missing": "No closed deals of this segment to compare the first amount with"}),
    Feature("deal_type", "context", "new_business, expansion or renewal.", "category", "categorical",
            {"value": "Deal type {value}", "missing": "Deal type unknown"}),
    Feature("segment", "context", "Customer segment.", "category", "categorical",
            {"value": "Segment {value}", "missing": "Segment unknown"}),
    Feature("region", "context", "Sales region.", "category", "categorical",
            {"value": "Region {value}", "missing": "Region unknown"}),
    Feature("product", "context", "Product sold.", "category", "categorical",
            {"value": "Product {value}", "missing": "Product unknown"}),
    Feature("lead_source", "context", "Where the lead came from.", "category", "categorical",
            {"value": "Lead source {value}", "missing": "Lead source unknown"}),
    Feature("owner_win_rate", "context",
            "Owner's win rate over deals closed at or before as_of, smoothed towards the global rate.",
            "share", "numeric", {"value": "Owner wins {value:.0%} of closed deals",
                                 "missing": "No closed deals yet to judge the owner"}),
    Feature("owner_closed_deals", "context", "Owner's deals closed at or before as_of.", "count", "numeric",
            {"value": "Owner has closed {value:.0f} deals", "zero": "Owner has not closed a deal yet"}),
    Feature("account_win_rate", "context",
            "Account's win rate over deals closed at or before as_of, smoothed towards the global rate.",
            "share", "numeric", {"value": "Account won {value:.0%} of past deals",
                                 "missing": "No closed deals yet to judge the account"}),
    Feature("account_closed_deals", "context", "Account's deals closed at or before as_of.", "count", "numeric",
            {"value": "Account has {value:.0f} closed deals", "zero": "First deal with this account"}),
    # --- sales calendar -----------------------------------------------------------------------
    Feature("days_to_quarter_end", "calendar",
            "Days from as_of to the end of its fiscal quarter (the first moment of the next quarter, UTC; "
            "the fiscal year's first month is in the feature state, default January).", "days", "numeric",
            {"value": "{value:.0f} day{s} to the end of the fiscal quarter",
             "under_one": "Last day of the fiscal quarter"}),
    Feature("days_to_fiscal_year_end", "calendar",
            "Days from as_of to the end of its fiscal year (the first moment of the next fiscal year, UTC).",
            "days", "numeric",
            {"value": "{value:.0f} day{s} to the end of the fiscal year",
             "under_one": "Last day of the fiscal year"}),
    Feature("expected_close_in_quarter_last_month", "calendar",
            "1 if the expected close date known at as_of falls in the last month of a fiscal quarter.", "flag", "flag",
            {"true": "Expected to close in the last month of a quarter",
             "false": "Expected to close outside the last month of a quarter",
             "missing": "Expected close date unknown"}),
    Feature("days_since_close_date_moved", "calendar",
            "Days since the expected close date last moved (a field_history change at or before as_of); "
            "missing if it never moved.", "days", "numeric",
            {"value": "Close date last moved {value:.0f} day{s} ago", "under_one": "Close date moved within the last day",
             "missing": "Close date never moved"}),
)


def _role_engagement_names() -> tuple[str, ...]:
    return (
        "roles_engaged_30d", "max_seniority_engaged_30d",
        *(name for role in ENGAGED_ROLES for name in (f"{role}_engaged_30d", f"days_since_{role}_engaged")),
        *(f"{role}_activity_share_{ENGAGED_WINDOW_DAYS}d" for role in ENGAGED_ROLES),
        *(f"{role}_meeting_share" for role in MEETING_ROLES),
        f"decision_maker_meetings_{ENGAGED_WINDOW_DAYS}d",
    )


# Features read off recorded calls' optional columns: talk ratio (all so far, last 30 days), then next steps.
CALL_METRIC_FEATURES = ("mean_customer_talk_ratio", f"customer_talk_ratio_{ENGAGED_WINDOW_DAYS}d",
                         "next_step_rate", f"next_step_rate_{ENGAGED_WINDOW_DAYS}d")
# The inputs of each feature (``Feature.needs``), by group: the tables and tracked fields the
# pipeline's family functions read. Features not listed need only the deals table's required columns.
_NEEDS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("stage_history",), ("current_stage", "days_in_stage", "days_in_stage_vs_won", "stage_changes", "stage_back_steps")),
    (("history:expected_close_date",), ("days_to_expected_close", "close_date_pushes", "close_date_days_pushed",
                                        "planned_days_at_creation",
                                        "expected_close_in_quarter_last_month", "days_since_close_date_moved")),
    (("history:amount",), ("amount_change_ratio", "largest_amount_cut", "amount")),
    (("history:amount", "deals.segment"), ("amount_vs_segment_median", "first_amount_vs_segment_median")),
    (("history:owner_id",), ("owner_win_rate", "owner_closed_deals")),
    (("contacts",), ("contacts_count", "roles_present")),
    (("contacts", "activities"), _role_engagement_names()),
    (("activities",), ("contacts_engaged", "top_contact_share",
                       *(f.name for f in FEATURES if f.family == "engagement"
                         and f.name not in CALL_METRIC_FEATURES))),
    (("activities", "activities.customer_talk_ratio"), CALL_METRIC_FEATURES[:2]),
    (("activities", "activities.next_step_set"), CALL_METRIC_FEATURES[2:]),
    *((((f"deals.{column}",), (column,)) for column in ("lead_source", "segment", "region", "product"))),
)
FEATURE_NEEDS: dict[str, tuple[str, ...]] = {name: needs for needs, names in _NEEDS for name in names}
if set(FEATURE_NEEDS) - {f.name for f in FEATURES}:  # a typo would silently drop a requirement
    raise ValueError(f"_NEEDS names unknown features: {sorted(set(FEATURE_NEEDS) - {f.name for f in FEATURES})}")
FEATURES = tuple(replace(f, needs=FEATURE_NEEDS.get(f.name, ())) for f in FEATURES)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "categorical")


def get_feature(name: str) -> Feature:
    """Look a feature up by name; raises KeyError listing the known names."""
    try:
        return FEATURES_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}; known features: {', '.join(FEATURE_NAMES)}") from None


def _is_missing(value) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value) or (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


# Template fields filled by ``describe_feature`` itself; every other field names a feature of the row.
TEMPLATE_BUILTINS: frozenset[str] = frozenset({"value", "s"})


def describe_feature(name: str, value, row: dict | None = None) -> str:
    """Phrase one feature value as a sentence a sales manager understands.

    >>> describe_feature("decision_maker_engaged_30d", 0.0)
    'No decision maker engaged in the last 30 days'
    >>> describe_feature("days_in_stage_vs_won", 2.3, {"current_stage": "negotiate", "days_in_stage": 41})
    'In negotiate for 41 days, 2.3x what won deals take'
    >>> describe_feature("days_since_last_activity", float("nan"))
    'No activity yet'
    >>> describe_feature("stage_back_steps", 1.0), describe_feature("days_since_last_activity", 0.4)
    ('Moved back a stage 1 time', 'Last activity within the last day')
    """
    feature = get_feature(name)
    phrases = feature.phrases
    context = {k: v for k, v in (row or {}).items() if isinstance(k, str) and k.isidentifier()}
    if _is_missing(value):
        return phrases.get("missing", f"{name} unknown")
    if feature.kind == "flag":
        key = "true" if bool(value) else "false"
        return phrases.get(key, f"{name}: {key}")
    if feature.kind == "numeric" and "zero" in phrases and value == 0:
        return phrases["zero"]
    if feature.kind == "numeric" and "one" in phrases and value == 1:
        return phrases["one"]
    if feature.kind == "numeric" and "under_one" in phrases and 0 <= value < 1:
        return phrases["under_one"]
    template = phrases.get("value", f"{name} = {{value}}")
    # {s}: the plural ending of the unit after a rounded count ("1 day", "2 days").
    plural = "" if isinstance(value, (int, float)) and round(value) == 1 else "s"
    try:
        return template.format(**{**context, "value": value, "s": plural})
    except (KeyError, ValueError, TypeError):
        # A template field missing from (or unformattable in) the row: fall back to the plain value.
        return f"{name} = {value}"


def render_docs() -> str:
    """The Markdown of docs/features.md: the method notes, then one table per family."""
    lines = [DOC_HEADER.rstrip(), ""]
    titles = {
        "stage": "Stage duration and velocity",
        "decision_chain": "Decision-chain coverage",
        "engagement": "Engagement frequency and recency",
        "context": "Context",
        "calendar": "Sales calendar",
    }
    lines.append(f"## The features ({len(FEATURES)}, in model order)")
    lines.append("")
    for family in FAMILIES:
        lines += [f"### {titles[family]}", "", "| # | name | kind | unit | meaning | needs |", "|---|---|---|---|---|---|"]
        for i, f in enumerate(FEATURES, start=1):
            if f.family == family:
                needs = ", ".join(f"`{need}`" for need in f.needs) or "deals"
                lines.append(f"| {i} | `{f.name}` | {f.kind} | {f.unit} | {f.description} | {needs} |")
        lines.append("")
    return "\n".join(lines)


DOC_HEADER = """\
# Point-in-time features

Generated by `python -m features.pointintime.definitions` from `features/pointintime/definitions.py`; do not edit by hand
(a test keeps the two in sync).

Every feature of a deal is computed **as of** a moment `as_of` from events at or before it
(`<= as_of`) and nothing later. One function, `features.pointintime.pipeline.build_features(export, points,
state)`, computes them for a whole export of (deal_id, as_of) points in training and for a
one-deal export at serving time, so the two cannot drift apart.

## What is reconstructed, and what is never used

- The `deals` row holds the deal **as it is at export time**. `outcome`, `closed_at`, the current
  `stage`, the current `expected_close_date` and the current `amount` are never read as features.
- **Stage** as of `as_of` is the stage of the last `stage_history` entry at or before `as_of`
  (entries at the same instant keep their file order). Without a `stage_history` table, or
  before the first entry, the stage features are missing (NaN), never the deal's current stage.
- **expected_close_date and amount** as of `as_of`: the `new_value` of the last `field_history`
  change at or before `as_of`; if the deal's first change is later than `as_of`, that change's
  `old_value`; if the deal has no change of that field at all, the deals row's value (it never
  changed). **Without a `field_history` table these values are unknown as of `as_of` and are
  missing (NaN)**: the deals row's value may be the future.
- `deal_type`, `segment`, `region`, `product`, `lead_source`, `account_id` and `created_at` are
  not tracked by the contract and are taken from the deals row as constant. `owner_id` is too,
  for the features of one computation, but training does not use the owner features (below).
- A contact counts from its `added_at`. An activity engages a contact's role from the later of the
  activity's `occurred_at` and the contact's `added_at` (a role is not known before the contact is
  on the deal).
- `contacts_engaged` and `top_contact_share` count activities by their `contact_id` as logged,
  whether or not the contact was on the deal yet (the activity itself is known at its time).
- Windows are half-open on the left: "the last 30 days" is `(as_of - 30 days, as_of]`.
- `decision_maker_activity_share_30d` / `economic_buyer_activity_share_30d` divide the window's
  activities with a contact of that role by its activities with any contact of the deal (both
  timed as above); missing when the window holds none.
- `largest_amount_cut` is the smallest `new_value / old_value` of one amount change at or before
  `as_of`, capped at 1 (increases and unparseable values count as 1); 1 when the amount never
  changed, missing without `field_history`.
- Sales calendar: the fiscal year starts in the state's `fiscal_year_start_month` (training's
  `features.fiscal_year_start_month`, default 1: January); its quarters are the 3-month periods
  from there. The end of a quarter or year is the first moment (00:00 UTC) of the next one, so
  `days_to_quarter_end` lies in (0, 92] and is 0.5 at noon on a quarter's last day.
  `expected_close_in_quarter_last_month` reads the expected close date known at `as_of` (as
  `days_to_expected_close` does); `days_since_close_date_moved` counts from the last
  `field_history` change of it at or before `as_of` whose new value differs from the old one
  (missing if none).

## No future: changeable fields without history

A deal field that changes during a deal's life (`CHANGEABLE_FIELDS`: the stage, rebuilt from
`stage_history`; `expected_close_date` and `amount`, rebuilt from their `field_history` changes;
`owner_id`, of which the contract keeps no history) is used at a training snapshot only as rebuilt
from its history. The deals row holds its value at export time: for a snapshot of a closed deal,
that is the future (a CRM that overwrites `amount` with the final booked value hands every lost
deal's snapshots a telling 0).

- Training looks at what the export holds **before its cutoff** (`features.pointintime.inputs.find_inputs`;
  the fitted state keeps it as `missing_inputs`). A field without its history there (no
  `stage_history`; no `field_history`; a `field_history` without a single change of that field;
  the owner always) is left out: every feature built on it is missing (NaN) in every training
  row, whatever the deals row holds, and the models do not use it. The console, the report
  (`skipped`) and `GET /model` name the field and the reason in one line, e.g. `amount not used for
  training snapshots: field_history has no amount changes, so the deals' amount is its value at
  export time, the future of every training snapshot; left out: amount_change_ratio, ...`.
- A field with changes for some deals counts as tracked: a deal without a change kept the deals
  row's value all its life (the rule above). A CRM that switched tracking on part-way would make
  older deals look unchanged; the leak alarm (`training.evaluate.leak_alarms`) is the net for that.
- The owner features (`owner_win_rate`, `owner_closed_deals`) stay out of training until the
  contract carries owner changes: deals change hands (a rep leaves, lost deals are parked with a
  manager), and on generated exports, which never reassign, they were worth 0.0006-0.002 test AUC.
- **Serving.** `build_features` itself is unchanged: for a request as of now, a deal without a
  change of a field reads the deals row, which is the value now (no future at that moment); the
  answer's `amount` and `value_at_risk` use it. The model does not: a feature training left out is
  not in the bundle's feature list, so its value reaches no score and no explanation. Feeding the
  current value to a model that saw only NaN in training would put in front of it a
  distribution it never learnt from; leaving it out keeps training and serving on the same inputs.

## What a feature or a model needs

Each feature declares its inputs (`Feature.needs`, the "needs" column below; `INPUTS` lists
them; "deals" means the deals table's required columns only); so does each model
(`MODEL_NEEDS`): the win model needs the deals and their outcome; the slip model needs
`expected_close_date` changes in `field_history`, because its label is "not won by the close date
known at the snapshot". What an export lacks is skipped with one line each, never a crash: `slip
model not trained: deals have no expected_close_date and there is no field_history`, `features
missing (NaN), not used by the models: the engagement family (20 features), contacts_engaged,
top_contact_share: there is no activities table`. A deals-only export trains a win model on what
the deals give: deal age, deal type and the other filled context columns, the account's win
history, and the sales calendar.

## How it is computed

Each event table is sorted once by (deal, time, file order) with running sums of what the
features count; a point's features are read off with binary searches at `as_of` and at
`as_of - window` (`features.pointintime.events.EventIndex`). There is no per-deal loop: the cost is
O((events + points) log events), one code path for a whole export (training snapshots) and for
a one-deal export (a serving request). `bench/feature_pipeline.py` measures both. The running sums
restart at each deal, so a deal's features are the same to the last bit whichever other deals
share the export: a whole export, a one-deal request, or one partition of a Dask run (`--engine dask`).

## Missing is not zero

A table the export does not contain makes the features that need it missing (NaN): no
`activities` table means no engagement features; no `contacts` table means no role features.
A table that is present but holds no rows for a deal gives counts of 0 (and "days since" stays
missing: it never happened). Role-engagement features need both `contacts` and `activities`.

## Fitted state (features.pointintime.state.FeatureState)

`fit_feature_state(export, cutoff)` learns from deals closed before `cutoff` only:

- the median days that **won** deals spent in each open stage (all visits of a stage summed per
  deal), the denominator of `days_in_stage_vs_won`;
- the closed-deal history `(owner_id, account_id, closed_at, won)`. Owner and account win rates
  of a point use only the deals of that history closed **at or before the point's `as_of`**:
  never one rate fitted over the whole training period, which would put a snapshot's own future
  outcome into its feature. Rates are smoothed: `(wins + 5 * global) / (closed + 5)`, where
  `global` is the win rate of all history deals closed at or before `as_of`; missing while
  nothing has closed yet.
- the segment and first amount (the amount at creation, from `field_history`) of each of those
  closed deals. `amount_vs_segment_median` divides a point's amount by the median first amount of
  its segment's deals closed **at or before the point's `as_of`** (as the win rates do), missing
  when none has; a state saved before these were kept gives it missing.

At serving time the state comes from the model bundle (`feature_state.json`) unchanged.

**Residual look-ahead (documented, deliberate):** the median stage durations are a population
constant fitted on all won deals closed before the cutoff, so an early training snapshot's
`days_in_stage_vs_won` divides by a median that includes deals which closed after that snapshot's
`as_of` - and, for a won training deal, its own stage durations (one deal among all the won
deals in each median). Beyond that population average it carries nothing of the snapshot's deal.
The serving state stops at the training cutoff, so the win-rate history at serving time is as
old as the model.

## Training snapshots and labels (features.pointintime.snapshots)

- `sample_snapshots(export, SnapshotConfig())` takes each closed deal weekly from `created_at`
  and at each stage entry, always strictly before `closed_at`.
- `label_snapshots(export, points)`: `won` = the deal was eventually won; `slipped` = the deal was
  not won by the expected close date known at `as_of` (won on a later calendar day, or lost: 1;
  missing when no expected close date was known). Open deals get no labels.
- Label maturity (right-censoring): lost deals take longer to close than won ones, so among recent
  deals the closed ones are mostly the quick wins. `select_mature_deals(export, end)` keeps only
  deals created at least N days before the data end, N being the 90th percentile of the observed
  creation-to-close cycle; within that set, deals still open are dropped too (they are few).
  N is itself estimated from deals that did close, so it is biased short; the 90th percentile
  leaves a margin (`SnapshotConfig.maturity_quantile`).
"""


if __name__ == "__main__":
    print(render_docs())
