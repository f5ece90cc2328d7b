"""What an export holds of the inputs features and models need, and what training skips for lack of it.

``find_inputs(export, before)`` checks every input of ``features.pointintime.definitions.INPUTS``
(optional tables, tracked-field histories, nullable deal columns) and says, for each one the
export lacks, why, in words a data scientist can act on. ``plan_skips`` turns that into what
training leaves out: features (missing, NaN, in every row and not in the models), changeable deal
fields whose export-time value would be the future of every snapshot, and models without a label.
Each skipped thing is one line (``Skips.lines``) for the console, the report and ``GET /model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.contract.schema import Export
from features.pointintime.definitions import (
    CATEGORICAL_FEATURES,
    CHANGEABLE_FIELDS,
    FAMILIES,
    FEATURES,
    INPUTS,
    MODEL_NEEDS,
)
from features.pointintime.events import parse_as_of

# Features listed by name in a line before the rest are counted ("... and 8 more").
LISTED_FEATURES = 6


def _rows_before(frame: pd.DataFrame, column: str, before: pd.Timestamp | None) -> pd.DataFrame:
    return frame if before is None else frame.loc[(frame[column] < before).to_numpy()]


def _has_values(frame: pd.DataFrame | None, column: str) -> bool:
    return frame is not None and column in frame.columns and bool(frame[column].notna().any())


def find_inputs(export: Export, before=None) -> dict[str, str | None]:
    """Each input of ``INPUTS``: None when the export has it, else the reason it does not.

    With ``before`` (the training cutoff), only events and deals before it count: an input that
    starts later cannot teach a model trained on earlier snapshots.

    >>> from tests.factories import make_export
    >>> found = find_inputs(make_export(drop=("activities",)))
    >>> found["activities"], found["contacts"], found["history:amount"], found["history:owner_id"][:40]
    ('there is no activities table', None, None, 'the data contract keeps no owner history')
    """
    cutoff = None if before is None else parse_as_of(before)
    later = "" if cutoff is None else " before the training cutoff"
    deals = _rows_before(export.deals, "created_at", cutoff)
    found: dict[str, str | None] = {}
    for table, time_column in (("stage_history", "entered_at"), ("contacts", "added_at"), ("activities", "occurred_at")):
        frame = export.table(table)
        if frame is None:
            found[table] = f"there is no {table} table"
        else:
            found[table] = None if len(_rows_before(frame, time_column, cutoff)) else f"the {table} table has no rows{later}"
    activities = export.activities
    for column in ("customer_talk_ratio", "next_step_set"):
        key = f"activities.{column}"
        if activities is None:
            found[key] = "there is no activities table"
        elif column not in activities.columns:
            found[key] = f"activities have no {column} column"
        else:
            found[key] = None if _has_values(_rows_before(activities, "occurred_at", cutoff), column) \
                else f"activities.{column} is empty{later}"
    history = export.field_history
    for name in ("expected_close_date", "amount"):
        current = _has_values(deals, name)
        rows = None if history is None else _rows_before(history.loc[(history["field"] == name).to_numpy()], "changed_at", cutoff)
        if rows is not None and len(rows):
            found[f"history:{name}"] = None
        elif not current:
            found[f"history:{name}"] = f"deals have no {name} and " + (
                "there is no field_history" if history is None else f"field_history has no {name} changes{later}")
        else:
            found[f"history:{name}"] = (
                ("there is no field_history" if history is None else f"field_history has no {name} changes{later}")
                + f", so the deals' {name} is its value at export time, the future of every training snapshot"
            )
    found["history:owner_id"] = (
        "the data contract keeps no owner history (field_history tracks expected_close_date and amount only), "
        "so the deals' owner_id is its owner at export time, the future of every training snapshot"
    )
    for column in ("lead_source", "segment", "region", "product"):
        found[f"deals.{column}"] = None if _has_values(deals, column) else f"deals have no {column}"
    return {key: found[key] for key in INPUTS}


def missing_inputs(found: dict[str, str | None]) -> dict[str, str]:
    """Only the inputs the export lacks, with their reasons."""
    return {key: reason for key, reason in found.items() if reason is not None}


@dataclass(frozen=True)
class Skips:
    """What training leaves out, each with its reason.

    ``models``: model -> reason; ``fields``: changeable deal field -> reason its export-time value
    is not used; ``features``: feature -> the input it lacks (the first of its ``needs`` missing);
    ``reasons``: input -> why the export lacks it. ``lines()``: one sentence per skipped thing.
    """

    models: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The console/report/``GET /model`` lines: models first, then one per missing input (``INPUTS`` order).

        >>> plan_skips({"deals.region": "deals have no region", "stage_history": "there is no stage_history table"}).lines()
        ['stage not used for training snapshots: there is no stage_history table; left out: current_stage, days_in_stage, days_in_stage_vs_won, stage_changes, stage_back_steps', 'features missing (NaN), not used by the models: region: deals have no region']
        """
        out = [f"{model} model not trained: {reason}" for model, reason in self.models.items()]
        by_input: dict[str, list[str]] = {}
        for name, key in self.features.items():
            by_input.setdefault(key, []).append(name)
        history_of = {key: name for name, key in CHANGEABLE_FIELDS.items()}
        for key, names in sorted(by_input.items(), key=lambda item: list(INPUTS).index(item[0])):
            if key in history_of:
                out.append(f"{history_of[key]} not used for training snapshots: {self.reasons[key]}; "
                           f"left out: {describe_features(names)}")
            else:
                out.append(f"features missing (NaN), not used by the models: {describe_features(names)}: {self.reasons[key]}")
        return out

    def to_dict(self) -> dict:
        return {"models": dict(self.models), "fields": dict(self.fields), "features": dict(self.features),
                "reasons": dict(self.reasons), "lines": self.lines()}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Skips":
        """Rebuild from ``to_dict()`` (the lines are derived again); None or {}: nothing skipped."""
        data = data or {}
        try:
            return cls(**{key: {str(k): str(v) for k, v in dict(data.get(key) or {}).items()}
                          for key in ("models", "fields", "features", "reasons")})
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"skipped: expected {{'models': {{...}}, 'fields': {{...}}, 'features': {{...}}}} ({exc!r})") from exc


def plan_skips(missing: dict[str, str]) -> Skips:
    """What training leaves out when the export lacks the ``missing`` inputs (input -> reason).

    >>> skips = plan_skips({"history:expected_close_date": "deals have no expected_close_date and there is no field_history"})
    >>> skips.models, list(skips.fields)
    ({'slip': 'deals have no expected_close_date and there is no field_history'}, ['expected_close_date'])
    """
    models = {}
    for model, needs in MODEL_NEEDS.items():
        lacking = [missing[need] for need in needs if need in missing]
        if lacking:
            models[model] = "; ".join(lacking)
    fields = {name: missing[key] for name, key in CHANGEABLE_FIELDS.items() if key in missing}
    features = {}
    for feature in FEATURES:
        lacking = [need for need in feature.needs if need in missing]
        if lacking:
            features[feature.name] = lacking[0]
    reasons = {key: missing[key] for key in INPUTS if key in missing}
    return Skips(models=models, fields=fields, features=features, reasons=reasons)


def describe_features(names: list[str]) -> str:
    """Feature names for a line: a whole family by its name, the rest listed (at most ``LISTED_FEATURES``).

    >>> describe_features([f.name for f in FEATURES if f.family == "engagement"] + ["top_contact_share"])
    'the engagement family (20 features), top_contact_share'
    """
    wanted = set(names)
    parts: list[str] = []
    single: list[str] = []
    for family in FAMILIES:
        members = [f.name for f in FEATURES if f.family == family]
        if len(members) > 1 and wanted.issuperset(members):
            parts.append(f"the {family} family ({len(members)} features)")
        else:
            single += [name for name in members if name in wanted]
    if len(single) > LISTED_FEATURES:
        single = single[:LISTED_FEATURES] + [f"and {len(single) - LISTED_FEATURES} more"]
        parts.append(", ".join(single[:-1]) + " " + single[-1])
    elif single:
        parts.append(", ".join(single))
    return ", ".join(parts)


def blank_features(frame: pd.DataFrame, names) -> pd.DataFrame:
    """``frame`` with the named feature columns missing in every row (NaN; categoricals a missing "str").

    Training's way of keeping a feature it may not use out of every row, whatever the export's
    current values say. Returns a new frame.

    >>> blank_features(pd.DataFrame({"amount": [1.0], "segment": ["smb"]}), ["amount", "segment"]).isna().sum().tolist()
    [1, 1]
    """
    names = [name for name in names if name in frame.columns]
    if not names:
        return frame
    n = len(frame)
    return frame.assign(**{
        name: pd.array([None] * n, dtype=pd.StringDtype(na_value=np.nan)) if name in CATEGORICAL_FEATURES else np.full(n, np.nan)
        for name in names
    })
