"""In-process tests of the scoring service (BentoML ASGI app, models from a real MLflow store)."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pandas as pd
import pytest

from features.model.explain import explain_scores
from features.model.grades import ExplainConfig
from serving.schemas import EXAMPLE_REQUEST, ModelInfo, ScoreResponse

WARNING_CODES = {"no_activity", "ghosted", "single_threaded", "no_decision_maker", "stalled_in_stage",
                 "close_date_pushed", "close_date_passed"}


def body(request: dict) -> dict:
    return copy.deepcopy(request)


def post(client, payload, **headers):
    if isinstance(payload, (bytes, str)):
        return client.post("/score", content=payload, headers={"content-type": "application/json", **headers})
    return client.post("/score", json=payload, headers=headers)


def assert_same_answer(left, right, rel: float = 1e-9) -> None:
    """Equal JSON answers, numbers up to float rounding (batch sums may add in another order)."""
    if isinstance(left, dict):
        assert isinstance(right, dict) and left.keys() == right.keys()
        for key in left:
            assert_same_answer(left[key], right[key], rel)
    elif isinstance(left, list):
        assert isinstance(right, list) and len(left) == len(right)
        for a, b in zip(left, right):
            assert_same_answer(a, b, rel)
    elif isinstance(left, float) and not isinstance(left, bool):
        assert right == pytest.approx(left, rel=rel, abs=1e-12)
    else:
        assert left == right


# --- the answer ---------------------------------------------------------------------------------


def test_example_request_in_the_spec_scores_200(client):
    spec = client.get("/docs.json").json()
    example = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]["example"]
    assert example == EXAMPLE_REQUEST
    response = post(client, example)
    assert response.status_code == 200, response.text
    assert [d["deal_id"] for d in response.json()["deals"]] == ["D-1001"]


def test_every_field_of_the_answer(client, open_request, loaded_model, export):
    from features.pointintime.pipeline import build_features

    ids = [d["deal_id"] for d in open_request["deals"]]
    points = pd.DataFrame({"deal_id": ids, "as_of": pd.Series([pd.Timestamp(open_request["as_of"])] * len(ids),
                                                               dtype="datetime64[us, UTC]")})
    amounts_vs_segment = dict(zip(ids, build_features(export, points, loaded_model.state)["amount_vs_segment_median"]))
    response = post(client, open_request)
    assert response.status_code == 200, response.text
    answer = ScoreResponse.model_validate(response.json())
    config = ExplainConfig()
    assert [d.deal_id for d in answer.deals] == [d["deal_id"] for d in open_request["deals"]]
    assert answer.as_of == pd.Timestamp(open_request["as_of"])
    assert answer.model_versions.model_dump() == loaded_model.versions
    for deal, sent in zip(answer.deals, open_request["deals"]):
        p = deal.win_probability
        assert 0 < p < 1 and 0 < deal.slip_probability < 1
        assert deal.score == int(np.clip(round(p * 100), 1, 99))
        expected_grade = next((g for g, cut in config.grade_cutoffs if p >= cut), "D")
        assert deal.grade == expected_grade
        typical = (1 - p) * amounts_vs_segment[deal.deal_id]  # value at risk in typical deals of the segment
        sized = np.isfinite(typical)
        high = p < 0.30 and (not sized or typical >= 1.0)
        medium = p < 0.50 and (not sized or typical >= 0.5)
        assert deal.risk_level == ("high" if high else "medium" if medium else "low")
        assert deal.amount == pytest.approx(sent["amount"])
        assert deal.value_at_risk == pytest.approx(sent["amount"] * (1 - p))
        assert 0 < len(deal.factors_up) <= 5 and 0 < len(deal.factors_down) <= 5
        ups = [f.contribution for f in deal.factors_up]
        downs = [f.contribution for f in deal.factors_down]
        assert all(c > 0 for c in ups) and ups == sorted(ups, reverse=True)
        assert all(c < 0 for c in downs) and downs == sorted(downs)
        names = set(loaded_model.bundle.features["names"])
        for factor in deal.factors_up + deal.factors_down:
            assert factor.feature in names
            assert factor.sentence and "{" not in factor.sentence
        assert {w.code for w in deal.warnings} <= WARNING_CODES
        assert all(w.message for w in deal.warnings)
        assert deal.model_versions == answer.model_versions


def test_answer_equals_offline_scoring_of_the_same_deals(client, open_request, export, loaded_model):
    from features.pointintime.pipeline import build_features

    answer = post(client, open_request).json()
    ids = [d["deal_id"] for d in open_request["deals"]]
    as_of = pd.Timestamp(open_request["as_of"])
    points = pd.DataFrame({"deal_id": ids, "as_of": pd.Series([as_of] * len(ids), dtype="datetime64[us, UTC]")})
    offline = explain_scores(loaded_model.bundle, build_features(export, points, loaded_model.state))
    for served, (_, row) in zip(answer["deals"], offline.iterrows()):
        assert served["deal_id"] == row["deal_id"]
        assert served["win_probability"] == pytest.approx(row["win_probability"], abs=1e-12)
        assert served["slip_probability"] == pytest.approx(row["slip_probability"], abs=1e-12)
        assert served["grade"] == row["grade"] and served["risk_level"] == row["risk_level"]
        assert [f["feature"] for f in served["factors_up"]] == [f["feature"] for f in row["factors_up"]]
        assert [f["sentence"] for f in served["factors_down"]] == [f["sentence"] for f in row["factors_down"]]
        assert served["warnings"] == row["warnings"]


def test_batch_answer_equals_one_deal_answers(client, open_request):
    batch = post(client, open_request).json()["deals"]
    for i, deal in enumerate(open_request["deals"]):
        single = post(client, {"as_of": open_request["as_of"], "deals": [deal]}).json()["deals"][0]
        assert_same_answer(single, batch[i])


def test_renaming_the_deal_id_changes_nothing_but_the_id(client, open_request):
    original = post(client, open_request).json()["deals"][0]
    renamed = body(open_request)
    renamed["deals"] = renamed["deals"][:1]
    renamed["deals"][0]["deal_id"] = "ANOTHER-ID"
    answer = post(client, renamed).json()["deals"][0]
    assert answer["deal_id"] == "ANOTHER-ID"
    assert_same_answer({**answer, "deal_id": original["deal_id"]}, original)


def test_missing_optional_tables_score_with_missing_features(client):
    request = body(EXAMPLE_REQUEST)
    for table in ("activities", "contacts", "field_history"):
        request["deals"][0][table] = None
    response = post(client, request)
    assert response.status_code == 200, response.text
    deal = response.json()["deals"][0]
    values = {f["feature"]: f["value"] for f in deal["factors_up"] + deal["factors_down"]}
    assert values.get("days_since_last_activity", None) is None


def test_as_of_defaults_to_now(client):
    request = body(EXAMPLE_REQUEST)
    del request["as_of"]
    response = post(client, request)
    assert response.status_code == 200, response.text
    as_of = pd.Timestamp(response.json()["as_of"])
    assert abs(as_of - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(minutes=5)


def test_crm_names_are_mapped_like_file_loads(client):
    request = body(EXAMPLE_REQUEST)
    request["deals"][0]["stage"] = "Negotiation/Review"
    request["deals"][0]["contacts"][1]["role"] = "Economic Buyer"
    response = post(client, request)
    assert response.status_code == 200, response.text


def test_model_route(client, loaded_model, store):
    response = client.get("/model")
    assert response.status_code == 200
    info = ModelInfo.model_validate(response.json())
    assert info.model_versions.model_dump() == loaded_model.versions
    assert info.run_ids == {"win": store["run_id"], "slip": store["run_id"]}
    assert info.trained_at == "2026-06-30T00:00:00+00:00"
    assert info.metrics["test_auc"] == 0.5
    assert [f["name"] for f in info.features] == list(loaded_model.bundle.features["names"])
    assert all(f["description"] for f in info.features)
    assert info.thresholds["warnings"]["no_activity_days"] == 14.0


def test_health_and_spec_stay_on(client):
    # /readyz and /metrics need the real server's metrics setup: checked in test_http.py
    assert client.get("/healthz").status_code == 200
    paths = client.get("/docs.json").json()["paths"]
    assert {"/score", "/model"} <= set(paths)


# --- safety: auth and limits (the guard in front of the app; one service app per process) --------


def guarded_client(**settings):
    """A client of ``RequestGuard`` in front of a tiny app that echoes the body it received."""
    from dataclasses import replace

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from serving.config import ServingConfig
    from serving.guard import RequestGuard

    async def echo(request):
        return JSONResponse({"bytes": len(await request.body())})

    app = Starlette(routes=[Route("/score", echo, methods=["POST"]), Route("/model", echo),
                            Route("/healthz", echo)])
    return TestClient(RequestGuard(app, replace(ServingConfig(), **settings)))


def test_bearer_token_required_when_set():
    client = guarded_client(api_token="s3cret")
    assert client.post("/score", json={}).status_code == 401
    assert client.post("/score", json={}, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/score", json={}, headers={"authorization": "s3cret"}).status_code == 401
    assert client.get("/model").status_code == 401
    assert client.post("/score", json={}, headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/model", headers={"authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert guarded_client().post("/score", json={}).status_code == 200


def test_token_comes_from_the_environment(monkeypatch):
    from serving.config import ServingConfig

    monkeypatch.setenv("DEALRISK_API_TOKEN", "from-env")
    assert ServingConfig.from_env().api_token == "from-env"
    assert "from-env" not in repr(ServingConfig.from_env())


def test_body_size_limit_is_413_with_a_reason():
    client = guarded_client(max_body_bytes=1000)
    response = client.post("/score", content=b"x" * 1001, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["error"]
    assert client.post("/score", content=b"x" * 1000, headers={"content-type": "application/json"}).json() == {
        "bytes": 1000
    }


def test_chunked_body_over_the_limit_is_413():
    def chunks():
        yield b'{"deals": ['
        for _ in range(100):
            yield b" " * 1000

    response = guarded_client(max_body_bytes=50_000).post(
        "/score", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_wrong_media_type_is_415(client):
    response = client.post("/score", content=b"deals=1", headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415


def test_too_many_deals_is_413_with_a_reason(client):
    from serving.config import ServingConfig

    limit = ServingConfig().max_deals
    many = body(EXAMPLE_REQUEST)
    many["deals"] = [dict(many["deals"][0], deal_id=f"D-{i}") for i in range(limit + 1)]
    response = post(client, many)
    assert response.status_code == 413
    assert f"too many deals: {limit + 1} > limit {limit}" in response.json()["error"]


def test_bad_settings_are_named(monkeypatch):
    from serving.config import ConfigError, ServingConfig

    monkeypatch.setenv("DEALRISK_MAX_DEALS", "lots")
    with pytest.raises(ConfigError, match="DEALRISK_MAX_DEALS"):
        ServingConfig.from_env()
    monkeypatch.delenv("DEALRISK_MAX_DEALS")
    monkeypatch.setenv("DEALRISK_WARNING_THRESHOLDS", '{"no_activity_dayz": 3}')
    with pytest.raises(ConfigError, match="no_activity_dayz"):
        ServingConfig.from_env()
    monkeypatch.setenv("DEALRISK_WARNING_THRESHOLDS", '{"no_activity_days": 3}')
    assert ServingConfig.from_env().explain.warnings.no_activity_days == 3.0
    for bad in ("soon", "-1", "nan", "5000"):
        monkeypatch.setenv("DEALRISK_BATCH_LINGER_MS", bad)
        with pytest.raises(ConfigError, match="DEALRISK_BATCH_LINGER_MS"):
            ServingConfig.from_env()
    monkeypatch.setenv("DEALRISK_BATCH_LINGER_MS", "0")
    assert ServingConfig.from_env().batch_linger_ms == 0.0


# --- malformed requests: a 4xx naming the field, never a 500 ------------------------------------


def _with(path: str, value, base: dict = EXAMPLE_REQUEST) -> dict:
    """The example with one field (dotted path, list indices as numbers) replaced or deleted."""
    request = body(base)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = request
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return request


_DELETE = object()

BAD_REQUESTS = {
    "missing deals": (_with("deals", _DELETE), 400, "deals"),
    "empty deals": (_with("deals", []), 400, "deals"),
    "missing field": (_with("deals.0.created_at", _DELETE), 400, "created_at"),
    "wrong type": (_with("deals.0.amount", "lots"), 400, "amount"),
    "negative amount": (_with("deals.0.amount", -5.0), 400, "amount"),
    "boolean amount": (_with("deals.0.amount", True), 400, "amount"),
    "number as text": (_with("deals.0.activities.0.duration_min", "30"), 400, "duration_min"),
    "bad date": (_with("deals.0.created_at", "last tuesday"), 422, "deals[0].created_at"),
    "date of the wrong type": (_with("deals.0.created_at", 20260302), 400, "created_at"),
    "stage entered before the deal was created": (
        _with("deals.0.stage_history.0.entered_at", "2026-01-01T00:00:00Z"), 422, "deals[0].stage_history[0]",
    ),
    "unknown field": (_with("deals.0.colour", "red"), 400, "colour"),
    "unknown deal type": (_with("deals.0.deal_type", "gift"), 400, "deal_type"),
    "empty stage history": (_with("deals.0.stage_history", []), 400, "stage_history"),
    "talk ratio above 1": (_with("deals.0.activities.0.customer_talk_ratio", 1.5), 400, "customer_talk_ratio"),
    "unknown stage": (_with("deals.0.stage", "daydreaming"), 422, "deals[0].stage"),
    "unknown history stage": (_with("deals.0.stage_history.1.stage", "limbo"), 422, "deals[0].stage_history[1].stage"),
    "unknown role": (_with("deals.0.contacts.1.role", "janitor"), 422, "deals[0].contacts[1].role"),
    "unknown activity type": (_with("deals.0.activities.0.type", "smoke signal"), 422, "deals[0].activities[0].type"),
    "event before the deal existed": (
        _with("deals.0.activities.0.occurred_at", "2025-01-01T00:00:00Z"), 422, "deals[0].activities[0]",
    ),
    "future event beyond as_of": (
        _with("deals.0.activities.2.occurred_at", "2026-07-15T00:00:00Z"), 422, "deals[0].activities[2].occurred_at",
    ),
    "deal created after as_of": (_with("as_of", "2026-01-01T00:00:00Z"), 422, "deals[0].created_at"),
    "as_of far in the future": (_with("as_of", "2999-01-01T00:00:00Z"), 422, "as_of"),
    "closed deal": (_with("deals.0.stage", "won"), 422, "deals[0].stage"),
    "duplicate deal ids": ({**body(EXAMPLE_REQUEST), "deals": [EXAMPLE_REQUEST["deals"][0]] * 2}, 422, "deal_id"),
    "activity with an unknown contact": (
        _with("deals.0.activities.0.contact_id", "C-404"), 422, "deals[0].activities[0]",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_malformed_request_gets_4xx_naming_the_field(client, name):
    request, status, field = BAD_REQUESTS[name]
    response = post(client, request)
    assert response.status_code == status, (name, response.text)
    assert field in response.text, (name, response.text)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"[]",
        b"null",
        b'{"deals": "many"}',
        json.dumps(EXAMPLE_REQUEST).replace("48000.0", "NaN").encode(),
        json.dumps(EXAMPLE_REQUEST).replace("48000.0", "Infinity").encode(),
        json.dumps(EXAMPLE_REQUEST).replace("48000.0", "1e999").encode(),
        b"\xff\xfe\x00garbage",
    ],
    ids=["bad-json", "empty-body", "array", "null", "deals-not-list", "nan", "infinity", "overflow", "binary"],
)
def test_unparseable_or_non_finite_body_gets_400(client, raw):
    response = post(client, raw)
    assert response.status_code == 400, response.text
    assert response.json()["error"]


def test_no_deal_contents_in_logs(client, caplog):
    secret = "SECRET-ACCOUNT-7731"
    bad = _with("deals.0.account_id", secret)
    bad = _with("deals.0.amount", f"{secret}", bad)
    with caplog.at_level(logging.DEBUG):
        assert post(client, bad).status_code == 400
        assert post(client, _with("deals.0.contacts.0.role", secret)).status_code == 422
        assert post(client, _with("deals.0.account_id", secret)).status_code == 200
    logged = "\n".join(
        record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    assert secret not in logged
