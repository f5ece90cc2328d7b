"""Schemathesis hooks for the run in tests/serving/test_http.py (``SCHEMATHESIS_HOOKS=tests.serving.schemathesis_hooks``).

The run accepts a 422 for schema-valid data: the data contract has rules across fields that JSON
Schema cannot state (the last stage entry is the current stage, no event before the deal was
created or after as_of, unique ids, a changed value's type follows its field), and
``/score/tables`` parts are files. The rules on one value the spec does state: names by the
mapping's pattern, timestamps by form and range, text by length and control characters. This
check fails a run where a schema-valid ``/score`` request is refused for one of those.
"""

from __future__ import annotations

import json

import schemathesis

# How the contract words a refusal of one value by itself (features.contract: an unknown name, a
# time it cannot read, one that is not UTC or lies outside the supported range).
SINGLE_VALUE_REASONS = ("unknown ", "not an ISO-8601", "not UTC", "outside the supported range")


@schemathesis.check
def schema_valid_values_are_read(ctx, response, case):
    """A schema-valid ``POST /score`` is never refused for a value the schema could have refused."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or case.path != "/score" or response.status_code != 422:
        return
    problems = json.loads(response.content).get("problems", [])
    refused = [p for p in problems if str(p.get("reason", "")).startswith(SINGLE_VALUE_REASONS)]
    if refused:
        raise AssertionError(f"a value the spec allows was refused: {refused[0].get('field')}: "
                             f"{str(refused[0].get('reason'))[:300]}")
