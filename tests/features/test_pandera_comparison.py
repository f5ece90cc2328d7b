"""Two pandera behaviours behind keeping the contract's own parsers (see ``features.contract.check``).

``bench/bench_contract.py`` measures pandera side by side with ``check_tables``; these tests pin
the two findings that are not about speed, each on the same tiny table for both, so that a pandera
upgrade that changes them fails here and the decision gets looked at again.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.errors import SchemaErrors

from features.contract.check import check_tables


def deals(**columns: list[object]) -> pd.DataFrame:
    """Three valid open deals as CSV text, with some columns replaced."""
    rows = {
        "deal_id": ["D1", "D2", "D3"], "account_id": ["A1", "A2", "A3"], "owner_id": ["O1", "O1", "O2"],
        "created_at": ["2026-01-01T00:00:00Z"] * 3, "amount": ["100", "200", "300"],
        "deal_type": ["new_business"] * 3, "lead_source": [None] * 3, "segment": [None] * 3, "region": [None] * 3,
        "product": [None] * 3, "stage": ["qualify"] * 3, "expected_close_date": [None] * 3, "closed_at": [None] * 3,
        "outcome": ["open"] * 3,
    }
    return pd.DataFrame({**rows, **columns}, dtype="str")


def pandera_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> list[tuple[str, object, object]]:
    """(check, failure case, row index or None) for each failure pandera reports lazily."""
    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        return [(c, v, None if pd.isna(i) else int(i)) for c, v, i in cases[["check", "failure_case", "index"]].values]
    return []


def test_one_unparseable_number_hides_the_columns_other_rows_from_pandera():
    frame = deals(amount=["12,5", "-300", "inf"])
    schema = pa.DataFrameSchema(
        {"amount": pa.Column(float, coerce=True, checks=[pa.Check.ge(0), pa.Check(lambda s: s.abs() < float("inf"))])}
    )

    failures = pandera_failures(schema, frame)
    ours = check_tables({"deals": frame}).violations

    # pandera: the failed coercion is located, but the column stays text, so the range and finite
    # checks raise on it and report no row; -300 and inf are not reported at all.
    assert ("coerce_dtype('float64')", "12,5", 0) in failures
    assert all(index is None for check, _, index in failures if not check.startswith(("coerce_dtype", "dtype")))
    assert not any(case in ("-300", -300.0, "inf") for _, case, _ in failures)
    assert [(v.rule, v.row) for v in ours] == [
        ("bad_number", "row 1 (deal_id=D1)"), ("bad_number", "row 3 (deal_id=D3)"), ("below_min", "row 2 (deal_id=D2)"),
    ]


@pytest.mark.parametrize("value", ["2026-01-01T10:00:00+02:00", "2026-01-01T10:00:00-05:00"])
def test_pandera_timestamp_coercion_takes_a_non_utc_offset_silently(value):
    frame = deals(created_at=["2026-01-01T00:00:00Z", value, "2026-01-02T00:00:00Z"])
    schema = pa.DataFrameSchema({"created_at": pa.Column(pd.DatetimeTZDtype("us", "UTC"), coerce=True)})

    validated = schema.validate(frame)  # no error: converted to UTC, the local wall time is gone
    ours = check_tables({"deals": frame}).violations

    assert validated["created_at"].iloc[1] == pd.Timestamp(value).tz_convert("UTC")
    assert [(v.column, v.rule, v.row) for v in ours] == [("created_at", "not_utc", "row 2 (deal_id=D2)")]
