"""Which contract column a renamed header probably is: ``created`` -> ``created_at``, ``CloseDate`` ->
``expected_close_date``.

A spreadsheet or another CRM writes its own headers; when a required column is missing, the
report names the header that most likely holds it, so the fix is a rename (or a line in an
``dealrisk import table`` mapping), not a hunt. Only used when a column is missing or extra,
so the common path (every column present) costs nothing.
"""

from __future__ import annotations

import difflib
import re

from features.contract.schema import Table
from features.contract.violations import show_value

# Headers other CRMs and spreadsheets use for a contract column, in their matching form
# (``header_words``). Salesforce's API names first: an Opportunity exported as is.
KNOWN_HEADERS: dict[str, dict[str, str]] = {
    "deals": {
        "id": "deal_id", "opportunity id": "deal_id", "deal": "deal_id", "deal name": "deal_id",
        "account": "account_id", "company": "account_id", "customer": "account_id",
        "owner": "owner_id", "deal owner": "owner_id", "opportunity owner": "owner_id", "sales rep": "owner_id",
        "created date": "created_at", "created": "created_at", "create date": "created_at", "created on": "created_at",
        "value": "amount", "deal value": "amount", "revenue": "amount",
        "type": "deal_type", "opportunity type": "deal_type",
        "source": "lead_source",
        "stage name": "stage", "deal stage": "stage", "status": "stage",
        "close date": "expected_close_date", "expected close": "expected_close_date",
        "expected close date": "expected_close_date", "forecast close date": "expected_close_date",
        "closed": "closed_at", "closed date": "closed_at", "date closed": "closed_at", "close time": "closed_at",
        "is won": "outcome", "won": "outcome", "result": "outcome",
    },
    "stage_history": {
        "opportunity id": "deal_id", "stage name": "stage", "created date": "entered_at", "date": "entered_at",
        "changed at": "entered_at", "entered": "entered_at",
    },
    "field_history": {
        "opportunity id": "deal_id", "old value": "old_value", "new value": "new_value",
        "created date": "changed_at", "date": "changed_at",
    },
    "contacts": {
        "opportunity id": "deal_id", "contact": "contact_id", "created date": "added_at", "added": "added_at",
        "title": "seniority", "contact role": "role",
    },
    "activities": {
        "id": "activity_id", "what id": "deal_id", "opportunity id": "deal_id", "who id": "contact_id",
        "activity type": "type", "task subtype": "type", "call type": "direction",
        "activity date": "occurred_at", "activity date time": "occurred_at", "date": "occurred_at",
        "call duration in seconds": "duration_min", "duration in minutes": "duration_min", "duration": "duration_min",
        "talk ratio": "customer_talk_ratio",
    },
}
# Salesforce Opportunity API names: when a deals file has these, the importer is the fix.
SALESFORCE_OPPORTUNITY = frozenset({"StageName", "CloseDate", "IsWon", "IsClosed", "AccountId", "OwnerId", "CreatedDate"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[^0-9a-z]+")


def header_words(header: str) -> str:
    """A header in matching form: camelCase and separators split into lower-case words.

    >>> header_words("CloseDate"), header_words(" Deal_ID "), header_words("\\ufeffValue (EUR)")
    ('close date', 'deal id', 'value eur')
    """
    text = _CAMEL.sub(" ", str(header).replace("\ufeff", "").strip())
    return " ".join(_SEPARATORS.sub(" ", text.lower()).split())


def _stems(column: str) -> set[str]:
    """Forms a header may take for a contract column: its words, and without a unit-like last word."""
    words = column.split("_")
    forms = {" ".join(words)}
    if len(words) > 1 and words[-1] in ("at", "id", "date", "min"):
        forms.add(" ".join(words[:-1]))
    return forms


def suggest_columns(table: Table, found: list[str], wanted: list[str]) -> dict[str, str]:
    """For each contract column in ``wanted``, the header of ``found`` it most likely is (if any).

    In order: the same words (``Deal ID``, ``deal-id``), the column without its unit word
    (``created`` for created_at), a known CRM header (``CloseDate``, ``Company``), then a close
    spelling (``ammount``). Each header is suggested for one column at most.

    >>> from features.contract.schema import TABLES
    >>> suggest_columns(TABLES["deals"], ["created", "CloseDate", "Ammount", "Notes"],
    ...                 ["created_at", "expected_close_date", "amount", "owner_id"])
    {'created_at': 'created', 'expected_close_date': 'CloseDate', 'amount': 'Ammount'}
    """
    free = {header: header_words(header) for header in found if str(header) not in table.column_names}
    known = KNOWN_HEADERS.get(table.name, {})
    out: dict[str, str] = {}

    def take(column: str, test) -> None:
        if column in out:
            return
        for header, words in free.items():
            if test(column, words):
                out[column] = header
                del free[header]
                return

    for test in (
        lambda column, words: words.replace(" ", "") == column.replace("_", ""),
        lambda column, words: words in _stems(column),
        lambda column, words: known.get(words) == column,
        lambda column, words: difflib.SequenceMatcher(None, words, column.replace("_", " ")).ratio() >= 0.85,
    ):
        for column in wanted:
            take(column, test)
    return {column: out[column] for column in wanted if column in out}


def missing_column_hint(table: Table, found: list[str], missing: list[str]) -> str:
    """The hint after a missing-columns report: which headers are probably which column, and the importers."""
    guesses = suggest_columns(table, found, missing)
    parts = []
    if guesses:
        parts.append("probably renamed: " + ", ".join(f"{show_value(header)} is {column}?" for column, header in guesses.items())
                     + " (rename the header, or map it with 'dealrisk import table')")
    if table.name == "deals" and len(SALESFORCE_OPPORTUNITY & {str(c).strip() for c in found}) >= 2:
        parts.append("these are Salesforce Opportunity fields: 'dealrisk import salesforce' converts a Salesforce export")
    return "; " + "; ".join(parts) if parts else ""


def extra_column_hints(table: Table, extra: list[str], absent_optional: list[str]) -> dict[str, str]:
    """Extra headers that are probably an optional contract column the file left out (header -> column)."""
    return {header: column for column, header in suggest_columns(table, extra, absent_optional).items()}
