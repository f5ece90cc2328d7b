"""The spec is the behaviour (issue 20 part 8): every status a route answers is documented with its
body's schema, and what the schema allows the service accepts.

In process, against the started service: each status each route answers is produced by a real
request and its body checked against the schema ``/docs.json`` documents for that status; the
names a field accepts (stages, roles, ...) are exactly the service's mapping's; the timestamp
pattern is the contract's range. tests/serving/test_http.py runs schemathesis with all its
checks against a real ``dealrisk serve``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace

import jsonschema
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from features.contract.cells import parse_times
from features.contract.mapping import load_mapping, normalize_name
from serving.config import ServingConfig
from serving.guard import RequestGuard
from serving.openapi import accepted_names, names_pattern, served_spec
from serving.schemas import EXAMPLE_REQUEST, ROUTE_ANSWERS, TIMESTAMP_PATTERN


def _with_deal(**fields) -> dict:
    body = copy.deepcopy(EXAMPLE_REQUEST)
    body["deals"][0].update(fields)
    return body


def _many_deals(count: int) -> dict:
    body = copy.deepcopy(EXAMPLE_REQUEST)
    deal = {key: value for key, value in body["deals"][0].items() if key in ("account_id", "owner_id", "created_at",
                                                                           "amount", "deal_type", "stage")}
    body["deals"] = [{**deal, "deal_id": f"D-{n}"} for n in range(count)]
    return body


# (method, path, request keyword arguments, status it answers)
ANSWERS = [
    ("post", "/score", {"json": EXAMPLE_REQUEST}, 200),
    ("post", "/score", {"json": {**EXAMPLE_REQUEST, "as_of": None}}, 200),  # null: now
    ("post", "/score", {"json": {"deals": []}}, 400),
    ("post", "/score", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    ("post", "/score", {"json": {**EXAMPLE_REQUEST, "as_of": 1_782_000_000}}, 400),  # a number is not a date-time
    ("post", "/score", {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415),
    ("post", "/score", {"json": _with_deal(stage="0")}, 422),
    ("post", "/score", {"json": _many_deals(2001)}, 413),
    ("post", "/score/tables", {"files": [("deals", ("a.csv", b"deal_id\n1\n")), ("deals", ("b.csv", b"deal_id\n2\n"))]},
     400),  # a part sent twice
    ("post", "/score/tables", {"files": {"ssn": ("ssn.csv", b"ssn\n1\n", "text/csv")}}, 422),
    ("post", "/score/tables", {"json": {}}, 415),
    ("get", "/model", {}, 200),
    ("post", "/admin/reload", {}, 403),
    ("get", "/healthz", {}, 200),
    ("get", "/livez", {}, 200),
    ("get", "/readyz", {}, 200),
]  # /metrics needs BentoML's metrics set-up of a real server: test_http.py's schemathesis run answers it


@pytest.fixture(scope="module")
def spec(client) -> dict:
    return client.get("/docs.json").json()


def documented(spec: dict, method: str, path: str, status: int, content_type: str) -> dict:
    """The schema the spec documents for this answer (fails when the status or media type is not documented)."""
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answers {status}, documented: {sorted(responses)}"
    content = responses[str(status)].get("content", {})
    media_type = content_type.split(";")[0].strip()
    assert media_type in content, f"{method.upper()} {path} {status} answers {media_type}, documented: {list(content)}"
    return content[media_type]["schema"]


def check_answer(spec: dict, method: str, path: str, response) -> None:
    schema = documented(spec, method, path, response.status_code, response.headers["content-type"])
    if response.headers["content-type"].startswith("application/json"):
        jsonschema.validate(response.json(), {**schema, "components": spec["components"]})


@pytest.mark.parametrize(("method", "path", "request_kwargs", "status"), ANSWERS,
                         ids=[f"{m} {p} {s} #{n}" for n, (m, p, _, s) in enumerate(ANSWERS)])
def test_every_answer_is_documented_with_its_body(client, spec, method, path, request_kwargs, status):
    response = client.request(method.upper(), path, **request_kwargs)
    assert response.status_code == status, response.text
    check_answer(spec, method, path, response)


def test_bentoml_400_detail_is_a_list_as_documented(client, spec):
    response = client.post("/score", json={**EXAMPLE_REQUEST, "surprise": 1})
    assert response.status_code == 400 and isinstance(response.json()["detail"], list)
    schema = spec["components"]["schemas"]["ValidationErrorBody"]
    assert schema["properties"]["detail"]["type"] == "array"


def test_guard_refusals_are_documented(client, spec):
    """401 with a token set (the guard in front of the running service), 413 for a declared body over the limit."""
    guarded = TestClient(RequestGuard(client.app, replace(ServingConfig(), api_token="s3cret", max_body_bytes=1000)))
    for method, path in (("post", "/score"), ("post", "/score/tables"), ("get", "/model")):
        response = guarded.request(method.upper(), path, json={})
        assert response.status_code == 401
        check_answer(spec, method, path, response)
    authorised = {"authorization": "Bearer s3cret"}
    response = guarded.post("/score", json=_many_deals(20), headers=authorised)
    assert response.status_code == 413
    check_answer(spec, "post", "/score", response)


def test_each_route_documents_exactly_its_answers(spec):
    for (method, path), answers in ROUTE_ANSWERS.items():
        assert set(spec["paths"][path][method]["responses"]) == {"200", *map(str, answers)}, path
    assert "404" not in spec["paths"]["/score"]["post"]["responses"]  # BentoML's, never answered by /score


def test_score_body_is_required_and_as_of_may_be_null(spec):
    body = spec["paths"]["/score"]["post"]["requestBody"]
    assert body["required"] is True
    as_of = body["content"]["application/json"]["schema"]["properties"]["as_of"]
    assert {"type": "null"} in as_of["anyOf"] and "now" in as_of["description"]
    assert spec["paths"]["/score/tables"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
        "additionalProperties"] is False


def test_no_security_scheme_without_a_token_and_bearer_with_one(spec):
    assert "security" not in spec["paths"]["/score"]["post"]
    with_token = served_spec(spec, load_mapping(), token_required=True)
    assert with_token["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, method in (("/score", "post"), ("/score/tables", "post"), ("/model", "get"), ("/admin/reload", "post")):
        assert with_token["paths"][path][method]["security"] == [{"bearer": []}]
    assert "security" not in with_token["paths"]["/healthz"]["get"]


def test_metrics_behind_the_token_is_documented(client, spec):
    """DEALRISK_METRICS_TOKEN=on: /metrics answers 401 without the token, and the spec says so."""
    assert "401" not in spec["paths"]["/metrics"]["get"]["responses"]  # off: /metrics is open
    with_metrics = served_spec(spec, load_mapping(), token_required=True, metrics_token=True)
    guarded = TestClient(RequestGuard(client.app, replace(ServingConfig(), api_token="s3cret", metrics_token=True)))
    response = guarded.get("/metrics")
    assert response.status_code == 401
    check_answer(with_metrics, "get", "/metrics", response)
    assert with_metrics["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]


# --- names: the spec's pattern accepts exactly the names the mapping reads ---------------------------------

NAME_FIELDS = [("Deal", "stage", "stage:open"), ("StageEntry", "stage", "stage:open"), ("Contact", "role", "role"),
               ("Contact", "seniority", "seniority"), ("Activity", "type", "activity_type"),
               ("Activity", "direction", "direction")]


def _property(spec: dict, model: str, field: str) -> dict:
    prop = spec["components"]["schemas"][model]["properties"][field]
    return next((branch for branch in prop.get("anyOf", [prop]) if branch.get("type") == "string"), prop)


@pytest.mark.parametrize(("model", "field", "marker"), NAME_FIELDS)
def test_name_fields_carry_the_mappings_pattern(spec, model, field, marker):
    prop = _property(spec, model, field)
    assert prop["pattern"] == names_pattern(accepted_names(load_mapping(), marker))
    assert "x-names" not in prop


def test_open_stage_fields_refuse_won_and_lost(spec):
    pattern = _property(spec, "Deal", "stage")["pattern"]
    assert re.fullmatch(pattern, "  Negotiation/Review ") and re.fullmatch(pattern, "NEGOTIATE")
    assert not re.fullmatch(pattern, "won") and not re.fullmatch(pattern, "Closed Won") and not re.fullmatch(pattern, "0")


def _accepted(names: dict[str, str], text: str) -> bool:
    """What the contract accepts (features.contract.mapping): the normalised text is a mapped name."""
    return normalize_name(text) in names


SECTION_NAMES = {marker: accepted_names(load_mapping(), marker) for marker in ("stage:open", "role", "activity_type")}


@pytest.mark.parametrize("marker", sorted(SECTION_NAMES))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_pattern_matches_what_the_mapping_accepts(marker, data):
    names = SECTION_NAMES[marker]
    pattern = names_pattern(names)
    spelled = st.sampled_from(sorted(names)).flatmap(lambda name: st.tuples(
        st.just(name), st.lists(st.booleans(), min_size=len(name), max_size=len(name)),
        st.integers(0, 2), st.integers(0, 2)).map(
        lambda t: " " * t[2] + "".join(c.upper() if up else c for c, up in zip(t[0], t[1])).replace(" ", "  ") + " " * t[3]))
    text = data.draw(st.one_of(st.from_regex(pattern, fullmatch=True), spelled, st.text(max_size=30)))
    if re.fullmatch(pattern, text):
        assert _accepted(names, text), text  # what the spec allows, the service reads
    elif _accepted(names, text):
        assert re.search(r"\s", text.replace(" ", "")), text  # refused by the pattern only for tabs, newlines, ...


def test_a_mapping_file_adds_its_names_to_the_spec(spec, tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("stage:\n  Verbal Commit: contract\nrole:\n  Budget Holder: economic_buyer\n", encoding="utf-8")
    mine = served_spec(spec, load_mapping(path), token_required=False)
    assert re.fullmatch(_property(mine, "Deal", "stage")["pattern"], "verbal  COMMIT")
    assert re.fullmatch(_property(mine, "Contact", "role")["pattern"], "Budget Holder")
    assert not re.fullmatch(_property(spec, "Deal", "stage")["pattern"], "verbal commit")
    assert "verbal commit (contract)" in _property(mine, "Deal", "stage")["description"]


# --- timestamps: the pattern is the contract's range and form -----------------------------------------------


def test_timestamp_pattern_states_the_contract_range():
    from features.contract.schema import TIMESTAMP_MAX, TIMESTAMP_MIN

    first, last = TIMESTAMP_MIN.year, TIMESTAMP_MAX.year
    assert TIMESTAMP_MIN == TIMESTAMP_MIN.normalize() and (TIMESTAMP_MAX.month, TIMESTAMP_MAX.day) == (1, 1)
    for year, inside in ((first - 1, False), (first, True), (last - 1, True), (last, False), (9999, False), (1, False)):
        assert bool(re.fullmatch(TIMESTAMP_PATTERN, f"{year:04d}-06-15T10:00:00Z")) is inside, year


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.from_regex(TIMESTAMP_PATTERN, fullmatch=True))
def test_every_timestamp_the_pattern_allows_the_contract_reads(text):
    from datetime import datetime

    try:
        datetime.strptime(text[:10], "%Y-%m-%d")
    except ValueError:
        return  # 2026-02-30: the pattern's days run to 31 in every month; format date-time refuses it
    _, missing, malformed, not_utc = parse_times(pa.array([text]))
    assert not missing[0] and not malformed[0] and not not_utc[0], text


def test_as_of_number_is_refused_and_text_is_read(client):
    body = json.loads(json.dumps(EXAMPLE_REQUEST))
    for value in (1_782_000_000, "1782000000", True):
        response = client.post("/score", json={**body, "as_of": value})
        assert response.status_code == 400, value
        assert response.json()["detail"][0]["loc"] == ["as_of"]
    assert client.post("/score", json={**body, "as_of": "2026-06-30T00:00:00+02:00"}).status_code == 200


def test_as_of_part_of_an_upload_is_read_as_the_json_as_of(client):
    """/score/tables reads its as_of with the same type: digits alone are not Unix time there either."""
    import io

    from serving.request import tables_from_body

    files = {}
    for name, frame in tables_from_body(EXAMPLE_REQUEST).items():
        buffer = io.BytesIO()
        frame.to_csv(buffer, index=False)
        files[name] = (f"{name}.csv", buffer.getvalue(), "text/csv")
    refused = client.post("/score/tables", files=files, data={"as_of": "1782000000"})
    assert refused.status_code == 422 and [p["field"] for p in refused.json()["problems"]] == ["as_of"]
    assert client.post("/score/tables", files=files, data={"as_of": EXAMPLE_REQUEST["as_of"]}).status_code == 200
