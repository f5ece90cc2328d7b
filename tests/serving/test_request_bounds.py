"""Bounded work per request (issue 20 part 2): row limits read from a Parquet footer or a CSV's line
ends before a table is read, a limit on one deal's events, and one text rule on both routes.

Fast tier: the service's in-process app and the upload functions. The same bombs against a real
``dealrisk serve``: ``test_request_bounds_server.py``.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.contract.io import TableShape, TableTooLarge, read_table_bytes, table_shape
from serving.limits import RequestLimits
from serving.request import tables_from_body
from serving.schemas import EXAMPLE_REQUEST
from serving.scoring import RequestError, read_request_tables, table_request
from tests.serving.test_service import body, post
from tests.serving.test_tables import problems_of, upload

BOMB_ROWS = 2_000_000
ACTIVITY_HEADER = b"activity_id,deal_id,contact_id,type,direction,occurred_at,duration_min\n"


def parquet_bomb(rows: int = BOMB_ROWS) -> bytes:
    """An activities table of ``rows`` identical rows: a few dozen KiB of Parquet."""
    def same(value: str) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([value]))

    table = pa.table({"activity_id": same("X-1"), "deal_id": same("D-1001"), "type": same("call"),
                      "direction": same("outbound"), "occurred_at": same("2026-03-05T15:00:00Z"),
                      "contact_id": same("C-1"), "duration_min": pa.array(np.full(rows, 30.0))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def csv_bomb(rows: int) -> bytes:
    """An activities table of ``rows`` rows of empty cells: 7 bytes a row."""
    return ACTIVITY_HEADER + b",,,,,,\n" * rows


def parquet_bytes(frame: pd.DataFrame | pa.Table, **options) -> bytes:
    buffer = io.BytesIO()
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def csv_files(open_request: dict, **tables: pd.DataFrame) -> dict[str, bytes]:
    """The request's tables as CSV bytes, some replaced."""
    frames = {**tables_from_body(open_request), **tables}
    return {name: frame.to_csv(index=False).encode() for name, frame in frames.items()}


@pytest.fixture
def never_read(monkeypatch):
    """Fail the request if an uploaded table is parsed (the limits must answer first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("an uploaded table was read")

    monkeypatch.setattr("serving.scoring.read_table_bytes", refuse)


# --- row limits: from the footer or the line ends, before a table is read -----------------------


def test_a_parquet_bomb_is_413_naming_the_part_before_it_is_read(client, open_request, never_read):
    bomb = parquet_bomb()
    assert len(bomb) < 100_000  # 2,000,000 rows in a few dozen KiB
    files = {"deals": ("deals.csv", csv_files(open_request)["deals"]), "activities": ("activities.parquet", bomb)}
    response = client.post("/score/tables", files=files, data={"as_of": open_request["as_of"]})
    assert response.status_code == 413, response.text
    answer = response.json()
    assert answer["error"].startswith("the uploaded activities table is too large")
    problem = answer["problems"][0]
    assert (problem["field"], problem["table"]) == ("activities", "activities")
    assert problem["reason"] == "2,000,000 rows in its footer; the limit is 250,000 (DEALRISK_MAX_TABLE_ROWS)"


def test_a_csv_bomb_is_413_naming_the_part_before_it_is_read(client, open_request, never_read):
    files = {"deals": ("deals.csv", csv_files(open_request)["deals"]), "activities": ("a.csv", csv_bomb(250_001))}
    response = client.post("/score/tables", files=files, data={"as_of": open_request["as_of"]})
    assert response.status_code == 413, response.text
    problem = response.json()["problems"][0]
    assert problem["field"] == "activities"
    assert problem["reason"] == "250,001 rows (lines after the header); the limit is 250,000 (DEALRISK_MAX_TABLE_ROWS)"


def test_row_limits_are_settings_and_the_deals_table_has_the_deals_limit(open_request):
    files = csv_files(open_request)  # 5 deals, 4 to 60 rows in each event table
    rows = {name: len(frame) for name, frame in tables_from_body(open_request).items()}
    biggest = max((n, name) for name, n in rows.items() if name != "deals")
    table_request(files, None, RequestLimits(max_table_rows=biggest[0]))  # at the limit: accepted
    with pytest.raises(RequestError) as caught:
        table_request(files, None, RequestLimits(max_table_rows=biggest[0] - 1))
    assert caught.value.status == 413 and caught.value.problems[0].field == biggest[1]
    with pytest.raises(RequestError) as caught:
        table_request(files, None, RequestLimits(max_deals=4))
    assert caught.value.status == 413
    assert caught.value.problems[0].reason == "5 rows (lines after the header); the limit is 4 (DEALRISK_MAX_DEALS)"


def test_the_limits_come_from_the_environment(monkeypatch):
    from serving.config import ConfigError, ServingConfig

    assert ServingConfig().limits == RequestLimits()
    monkeypatch.setenv("DEALRISK_MAX_TABLE_ROWS", "1000")
    monkeypatch.setenv("DEALRISK_MAX_DEAL_EVENTS", "50")
    limits = ServingConfig.from_env().limits
    assert (limits.max_table_rows, limits.max_deal_events) == (1000, 50)
    for name in ("DEALRISK_MAX_TABLE_ROWS", "DEALRISK_MAX_DEAL_EVENTS"):
        monkeypatch.setenv(name, "0")
        with pytest.raises(ConfigError, match=name):
            ServingConfig.from_env()
        monkeypatch.setenv(name, "10")


def test_a_table_at_the_default_row_limit_fits_the_default_body_limit(export):
    """The documented fit: every event table, 250,000 rows of the generated export's widths, as CSV
    is under the 32 MiB body."""
    limits = RequestLimits()
    for name in ("stage_history", "field_history", "contacts", "activities"):
        frame = getattr(export, name)
        bytes_a_row = len(frame.to_csv(index=False).encode()) / len(frame)
        assert bytes_a_row * limits.max_table_rows < limits.max_body_bytes, name


@pytest.mark.parametrize(
    ("data", "rows", "columns"),
    [
        (b"deal_id,stage\nD1,qualify\nD2,propose\n", 2, ("deal_id", "stage")),
        (b"deal_id,stage\r\nD1,qualify\r\nD2,propose", 2, ("deal_id", "stage")),  # CRLF, no final line end
        (b"deal_id,stage\rD1,qualify\rD2,propose\r", 2, ("deal_id", "stage")),  # old Mac line ends
        ("\ufeffdeal_id,\"stage\"\nD1,qualify\n".encode(), 1, ("deal_id", "stage")),  # byte-order mark, quotes
        (b"deal_id\n", 0, ("deal_id",)),
        (b"", 0, ()),
    ],
)
def test_csv_rows_are_counted_from_line_ends_at_least_as_many_as_there_are(data, rows, columns):
    shape = table_shape(data)
    assert (shape.kind, shape.rows, shape.columns) == ("CSV", rows, columns)
    assert shape.rows >= len(read_table_bytes(data)) if data else True


def test_a_csv_header_of_thousands_of_columns_is_refused_before_it_is_split():
    with pytest.raises(TableTooLarge, match="100,000 columns"):
        table_shape(b"a," * 99_999 + b"a\n1\n")


def test_parquet_rows_columns_and_nesting_come_from_the_footer():
    frame = pd.DataFrame({"deal_id": ["D1", "D2", "D3"], "amount": [1.0, 2.0, 3.0]}, index=[7, 8, 9])
    shape = table_shape(parquet_bytes(pa.Table.from_pandas(frame)))  # pandas' index column is not a column
    assert shape == TableShape("Parquet", 3, ("deal_id", "amount"), (), shape.data_bytes)
    nested = pa.table({"deal_id": ["D1"], "stage": pa.array([["qualify", "propose"]])})
    assert table_shape(parquet_bytes(nested)).nested == ("stage",)


def test_a_nested_parquet_column_is_422(open_request):
    deals = tables_from_body(open_request)["deals"]
    table = pa.Table.from_pandas(deals, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("stage"), "stage", pa.array([[s] for s in deals["stage"]]))
    with pytest.raises(RequestError) as caught:
        table_request({"deals": parquet_bytes(table)}, None)
    assert caught.value.status == 422
    problem = caught.value.problems[0]
    assert (problem.field, problem.column) == ("deals.stage", "stage") and "a cell holds one value" in problem.reason


def test_parquet_that_unpacks_beyond_the_body_limit_is_413(open_request):
    long = "y" * 1_000_000
    # Plain pages: the footer's uncompressed size tells, before anything is read.
    plain = parquet_bytes(pa.table({"deal_id": [long] * 40}), compression="zstd", use_dictionary=False)
    assert len(plain) < 200_000
    with pytest.raises(RequestError) as caught:
        table_request({"deals": csv_files(open_request)["deals"], "activities": plain}, None)
    assert caught.value.status == 413 and "bytes of data uncompressed" in caught.value.problems[0].reason
    # A dictionary page: one value, 50,000 rows pointing at it; the footer does not tell, the
    # dictionary read does, before the values are copied into rows.
    dictionary = parquet_bytes(pa.table({"deal_id": pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(50_000, dtype=np.int32)), pa.array([long]))}), compression="zstd")
    assert len(dictionary) < 10_000
    request = table_request({"deals": csv_files(open_request)["deals"], "activities": dictionary}, None)
    with pytest.raises(RequestError) as caught:
        read_request_tables(request, 2000)
    assert caught.value.status == 413
    problem = caught.value.problems[0]
    assert problem.field == "activities"
    assert problem.reason == "decodes to 50,000,200,000 bytes; the limit is 33,554,432 (DEALRISK_MAX_BODY_BYTES)"


def test_parquet_read_with_a_size_limit_equals_the_plain_read(open_request):
    tables = tables_from_body(open_request, typed=True)
    for frame in tables.values():
        data = parquet_bytes(frame)
        pd.testing.assert_frame_equal(read_table_bytes(data, max_bytes=1 << 25), read_table_bytes(data))


# --- columns: only the contract's, on /score/tables as on /score ---------------------------------


def test_an_unknown_column_on_score_tables_is_422_naming_table_and_column(client, open_request):
    tables = tables_from_body(open_request)
    tables["contacts"] = tables["contacts"].assign(ssn="078-05-1120")
    response = upload(client, tables, open_request["as_of"])
    assert response.status_code == 422, response.text
    problem = problems_of(response)[0]
    assert (problem["field"], problem["table"], problem["column"]) == ("contacts.ssn", "contacts", "ssn")
    assert problem["reason"].startswith("unknown column 'ssn'; the contacts table's columns are deal_id, contact_id")
    assert "078-05-1120" not in response.text


def test_a_renamed_column_is_refused_with_the_column_it_probably_is(open_request):
    deals = tables_from_body(open_request)["deals"].rename(columns={"created_at": "Created At"})
    with pytest.raises(RequestError) as caught:
        table_request({"deals": deals.to_csv(index=False).encode()}, None)
    assert "unknown column 'Created At' (probably created_at?)" in caught.value.problems[0].reason


def test_context_columns_and_the_outcome_columns_are_the_contract_s(client, open_request):
    tables = tables_from_body(open_request)
    tables["deals"] = tables["deals"].assign(context_industry="Banking", outcome="open", closed_at="")
    assert upload(client, tables, open_request["as_of"]).status_code == 200


# --- one text rule: at most 200 characters, no control character, on both routes -----------------

BAD_TEXT = {
    "a 1 MB cell": "x" * 1_000_000,
    "a NUL byte": "Platform\x00",
    "an escape sequence": "\x1b[31mPlatform",
    "a line break": "Plat\nform",
    "a C1 control": "Platform\x85",
}


@pytest.mark.parametrize("value", list(BAD_TEXT.values()), ids=list(BAD_TEXT))
def test_bad_text_is_refused_on_both_routes(client, open_request, value):
    request = body(EXAMPLE_REQUEST)
    request["deals"][0]["product"] = value
    by_json = post(client, request)
    assert by_json.status_code == 400, by_json.text[:500]  # /score's schema: a 400 naming the field
    assert by_json.json()["detail"][0]["loc"][-1] == "product"
    tables = tables_from_body(request)
    by_tables = upload(client, tables, request["as_of"])
    assert by_tables.status_code == 422, by_tables.text[:500]
    problem = problems_of(by_tables)[0]
    assert (problem["field"], problem["row"]) == ("deals[row 1].product", 1)
    control = f"U+{ord(value.strip('Platform')[0]):04X}"
    assert problem["reason"] in ("has 1,000,000 characters; at most 200",
                                 f"holds a control character ({control}); ids, names and other text are printable")
    assert value not in by_tables.text


@pytest.mark.parametrize("deal_id", ["D-1\x00", "D-1\r\n", "D-1\x1b]8;;http://x\x07", "D-1\x7f"])
def test_control_characters_in_a_deal_id_are_refused_on_both_routes(client, deal_id):
    request = body(EXAMPLE_REQUEST)
    request["deals"][0]["deal_id"] = deal_id
    by_json = post(client, request)
    assert by_json.status_code == 400, by_json.text[:500]
    assert by_json.json()["detail"][0]["loc"][-1] == "deal_id"
    by_tables = upload(client, tables_from_body(request), request["as_of"], fmt="parquet")
    assert by_tables.status_code == 422, by_tables.text[:500]
    fields = [p["field"] for p in problems_of(by_tables)]
    assert "deals[row 1].deal_id" in fields
    assert "activities[row 1].deal_id" in fields  # every table that carries it


def test_text_at_the_limit_passes_on_both_routes(client):
    request = body(EXAMPLE_REQUEST)
    request["deals"][0]["product"] = "é" * 200  # characters, not bytes
    assert post(client, request).status_code == 200
    assert upload(client, tables_from_body(request), request["as_of"]).status_code == 200


def test_the_spec_states_the_text_rule(client):
    deal = client.get("/docs.json").json()["components"]["schemas"]["Deal"]["properties"]
    assert deal["deal_id"]["maxLength"] == 200
    assert deal["deal_id"]["pattern"] == r"^[^\x00-\x1f\x7f-\x9f]*$"


# --- events a deal: both routes ---------------------------------------------------------------------


def many_events(n_activities: int) -> dict:
    """The example request with its deal's activities copied to ``n_activities`` (ids kept unique)."""
    request = body(EXAMPLE_REQUEST)
    deal = request["deals"][0]
    first = deal["activities"][0]
    deal["activities"] = [dict(first, activity_id=f"X-{i}") for i in range(n_activities)]
    return request


def test_a_deal_with_more_events_than_the_limit_is_413_on_score(client):
    request = many_events(20_000)  # + 4 stage entries, 1 field change, 2 contacts: 20,007
    response = post(client, request)
    assert response.status_code == 413, response.text[:500]
    problem = response.json()["problems"][0]
    assert problem["field"] == "deals[0]"
    assert problem["reason"] == (
        "deal 'D-1001' has 20,007 events (stage_history 4, field_history 1, contacts 2, activities 20,000); the limit "
        "is 20,000 stage_history, field_history, contacts and activities rows a deal (DEALRISK_MAX_DEAL_EVENTS)")


def test_a_deal_with_more_events_than_the_limit_is_413_on_score_tables(client):
    request = many_events(20_000)
    response = upload(client, tables_from_body(request), request["as_of"])
    assert response.status_code == 413, response.text[:500]
    answer = response.json()
    assert answer["error"].startswith("too many events for one deal: deal 'D-1001' has 20,007 events")
    assert (answer["problems"][0]["field"], answer["problems"][0]["table"]) == ("activities", "activities")


def test_the_events_limit_counts_every_event_table_of_a_deal(open_request):
    tables = tables_from_body(open_request)
    events = pd.concat([tables[name]["deal_id"] for name in ("stage_history", "field_history", "contacts", "activities")])
    most = int(events.value_counts().max())
    files = csv_files(open_request)
    read_request_tables(table_request(files, None, RequestLimits(max_deal_events=most)), 2000)
    with pytest.raises(RequestError) as caught:
        read_request_tables(table_request(files, None, RequestLimits(max_deal_events=most - 1)), 2000)
    assert caught.value.status == 413
    assert f"has {most:,} events" in caught.value.problems[0].reason


# --- thin requests (issue 20 part 5): the deal's amount as sent -------------------------------------


def test_without_field_history_the_answer_has_the_amount_as_sent(client):
    request = body(EXAMPLE_REQUEST)
    request["deals"][0].update(amount=6000.0, field_history=None)
    answers = [post(client, request)]
    answers.append(upload(client, tables_from_body(request), request["as_of"]))  # no field_history part
    for response in answers:
        assert response.status_code == 200, response.text
        deal = response.json()["deals"][0]
        assert deal["amount"] == 6000.0
        assert deal["value_at_risk"] == pytest.approx(6000.0 * (1 - deal["win_probability"]))
    assert json.dumps(answers[0].json()["deals"]) == json.dumps(answers[1].json()["deals"])


def test_without_field_history_the_stored_row_has_the_close_date_as_sent(loaded_model, tmp_path):
    """The score store (what ``dealrisk rank`` and the managers' page read) keeps the deal's expected
    close date as sent, as the answer keeps its amount; the features stay without it."""
    from dataclasses import replace

    from portfolio.store import ScoreStore
    from serving.config import ServingConfig
    from serving.schemas import ScoreRequest
    from serving.service import score_batch, store_sink

    request = body(EXAMPLE_REQUEST)
    request["deals"][0].update(amount=6000.0, field_history=None)
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    config = replace(ServingConfig(), store_write=True, store_url=url)
    [answer] = score_batch(loaded_model, config, [ScoreRequest.model_validate(request)], sink=store_sink(config))
    assert isinstance(answer, bytes), answer
    store = ScoreStore.open(url)
    row = store.history().iloc[0]
    store.close()
    assert row["expected_close_date"] == pd.Timestamp(request["deals"][0]["expected_close_date"])
    assert row["amount"] == 6000.0
    factors = json.loads(answer)["deals"][0]["factors_up"] + json.loads(answer)["deals"][0]["factors_down"]
    assert all(f["value"] is None for f in factors if f["feature"] == "days_to_expected_close")
