"""POST /score/tables: deals sent as the contract's tables (CSV or Parquet files), not nested JSON."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from serving.request import tables_from_body
from tests.serving.test_service import assert_same_answer, post


def upload(client, tables: dict[str, pd.DataFrame], as_of: str | None = None, fmt: str = "csv", **headers):
    files = {}
    for name, frame in tables.items():
        buffer = io.BytesIO()
        if fmt == "csv":
            frame.to_csv(buffer, index=False)
        else:
            frame.to_parquet(buffer, index=False)
        files[name] = (f"{name}.{fmt}", buffer.getvalue(), "application/octet-stream")
    data = {} if as_of is None else {"as_of": as_of}
    return client.post("/score/tables", files=files, data=data, headers=headers)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_answer_equals_the_json_answer(client, open_request, fmt):
    by_json = post(client, open_request)
    assert by_json.status_code == 200, by_json.text
    by_tables = upload(client, tables_from_body(open_request), open_request["as_of"], fmt)
    assert by_tables.status_code == 200, by_tables.text
    assert_same_answer(by_tables.json(), by_json.json())


def test_typed_parquet_times_score_the_same(client, open_request):
    tables = tables_from_body(open_request, typed=True)
    assert isinstance(tables["activities"]["occurred_at"].dtype, pd.DatetimeTZDtype)
    answer = upload(client, tables, open_request["as_of"], "parquet")
    assert answer.status_code == 200, answer.text
    assert_same_answer(answer.json(), post(client, open_request).json())


def test_deals_in_table_order_and_outcome_columns_optional(client, open_request):
    tables = tables_from_body(open_request)
    tables["deals"] = tables["deals"].iloc[::-1]
    answer = upload(client, tables, open_request["as_of"])
    assert answer.status_code == 200, answer.text
    assert [d["deal_id"] for d in answer.json()["deals"]] == tables["deals"]["deal_id"].tolist()
    with_outcome = {**tables, "deals": tables["deals"].assign(outcome="open", closed_at="")}
    assert upload(client, with_outcome, open_request["as_of"]).json() == answer.json()


def problems_of(response) -> list[dict]:
    assert 400 <= response.status_code < 500, response.text
    return response.json()["problems"]


def test_a_contract_violation_names_table_column_and_row(client, open_request):
    tables = tables_from_body(open_request)
    tables["activities"] = tables["activities"].copy()
    tables["activities"].loc[3, "type"] = "carrier pigeon"
    response = upload(client, tables, open_request["as_of"])
    assert response.status_code == 422
    problem = problems_of(response)[0]
    # The fourth data row: row 4, as dealrisk validate and planted.csv count it.
    assert problem["field"] == "activities[row 4].type"
    assert (problem["table"], problem["column"], problem["row"]) == ("activities", "type", 4)
    assert "carrier pigeon" in problem["reason"]


def test_events_after_as_of_and_closed_deals_are_named(client, open_request):
    tables = tables_from_body(open_request)
    late = upload(client, tables, "2020-01-01T00:00:00Z")
    assert late.status_code == 422
    assert any(p["field"].startswith("deals[row 1].created_at") for p in problems_of(late))
    closed = {**tables, "deals": tables["deals"].assign(stage="won")}
    fields = [p["field"] for p in problems_of(upload(client, closed, open_request["as_of"]))]
    assert "deals[row 1].stage" in fields


@pytest.mark.parametrize(
    ("files", "data", "field"),
    [
        ({"activities": ("a.csv", b"deal_id\nD1\n")}, {}, "deals"),  # the deals table is required
        ({"deals": ("d.csv", b"")}, {}, "deals"),  # empty file
        ({"deals": ("d.parquet", b"PAR1 not really parquet")}, {}, "deals"),
        ({"deals": ("d.csv", b"\xff\xfe\x00\x01")}, {}, "deals"),  # not UTF-8
        ({"deals": ("d.csv", b"deal_id\nD1\n"), "invoices": ("i.csv", b"x\n1\n")}, {}, "invoices"),
        ({"deals": ("d.csv", b"deal_id\nD1\n")}, {"as_of": "last tuesday"}, "as_of"),
    ],
)
def test_a_bad_upload_gets_4xx_naming_the_part(client, files, data, field):
    response = client.post("/score/tables", files=files, data=data)
    assert field in [p["field"] for p in problems_of(response)]


def test_missing_columns_are_named(client):
    response = client.post("/score/tables", files={"deals": ("d.csv", b"deal_id\nD1\n")})
    assert response.status_code == 422
    problem = problems_of(response)[0]
    assert problem["table"] == "deals" and "required columns missing" in problem["reason"]
    assert {"account_id", "created_at", "stage"} <= set(problem["column"].split(", "))


def test_not_multipart_is_415_and_a_broken_form_is_400(client):
    assert client.post("/score/tables", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
    broken = client.post("/score/tables", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data"})
    assert broken.status_code == 400, broken.text
    assert problems_of(broken)[0]["field"] == "body"


def test_too_many_deals_is_413(loaded_model, open_request):
    from serving.scoring import RequestError, score_tables, table_request

    files = {name: frame.to_csv(index=False).encode() for name, frame in tables_from_body(open_request).items()}
    with pytest.raises(RequestError) as caught:
        score_tables(loaded_model, table_request(files, open_request["as_of"]), max_deals=2)
    assert caught.value.status == 413 and "too many deals: 5 > limit 2" in caught.value.message


def test_route_is_in_the_spec_with_its_parts(client):
    body = client.get("/docs.json").json()["paths"]["/score/tables"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["deals"]
    assert set(schema["properties"]) == {"deals", "stage_history", "field_history", "contacts", "activities", "as_of"}
