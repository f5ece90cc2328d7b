"""The service's writes to the score store (``DEALRISK_STORE_WRITE=on``): what ``POST /score`` and
``/score/tables`` answer is what the store holds, re-sent calls replace instead of duplicating,
a store that cannot be opened stops the service, a failed write never fails an answer. Fast tier:
the service's batch function with the champion of the test MLflow store and a real SQLite store;
slow tier: a real ``dealrisk serve`` writing to a real PostgreSQL server.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from portfolio.store import ScoreStore, StoreError
from serving.config import ConfigError, ServingConfig
from serving.schemas import ScoreRequest
from serving.scoring import table_request
from serving.service import score_batch, store_sink
from tests.portfolio.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")
AS_OF = "2026-06-30T12:00:00Z"


def _config(url: str) -> ServingConfig:
    return replace(ServingConfig(), store_write=True, store_url=url)


def _request(open_request: dict, as_of: str = AS_OF) -> ScoreRequest:
    return ScoreRequest.model_validate({**open_request, "as_of": as_of})


def _answers(outcomes: list) -> list[dict]:
    assert all(isinstance(o, bytes) for o in outcomes), outcomes
    return [json.loads(o) for o in outcomes]


def test_store_write_setting(monkeypatch):
    monkeypatch.delenv("DEALRISK_STORE_WRITE", raising=False)
    monkeypatch.delenv("DEALRISK_STORE_URL", raising=False)
    assert ServingConfig.from_env().store_write is False
    monkeypatch.setenv("DEALRISK_STORE_WRITE", "on")
    monkeypatch.setenv("DEALRISK_STORE_URL", "postgresql://me:secret@db/scores")
    config = ServingConfig.from_env()
    assert config.store_write is True and config.store_url == "postgresql://me:secret@db/scores"
    assert "secret" not in repr(config)
    monkeypatch.setenv("DEALRISK_STORE_WRITE", "sometimes")
    with pytest.raises(ConfigError, match="DEALRISK_STORE_WRITE must be on or off, got 'sometimes'"):
        ServingConfig.from_env()


def test_no_sink_unless_switched_on(tmp_path):
    assert store_sink(replace(ServingConfig(), store_url=f"sqlite:///{tmp_path / 's.db'}")) is None
    assert not (tmp_path / "s.db").exists()


def test_answers_are_stored_as_an_api_run(loaded_model, open_request, tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    config = _config(url)
    sink = store_sink(config)
    [answer] = _answers(score_batch(loaded_model, config, [_request(open_request)], sink=sink))
    store = ScoreStore.open(url)
    stored = store.history().set_index("deal_id")
    assert stored.index.tolist() == sorted(d["deal_id"] for d in answer["deals"])
    for scored in answer["deals"]:
        row = stored.loc[scored["deal_id"]]
        assert row["as_of"] == pd.Timestamp(AS_OF)
        assert row["win_probability"] == scored["win_probability"]
        assert row["slip_probability"] == scored["slip_probability"]
        assert (row["score"], row["grade"], row["risk_level"]) == (scored["score"], scored["grade"], scored["risk_level"])
        assert row["value_at_risk"] == pytest.approx(scored["value_at_risk"])
        assert row["factors_down"] == scored["factors_down"] and row["warnings"] == scored["warnings"]
        assert (row["win_version"], row["slip_version"]) == (scored["model_versions"]["win"], scored["model_versions"]["slip"])
        sent = next(d for d in open_request["deals"] if d["deal_id"] == scored["deal_id"])
        assert row["owner_id"] == sent["owner_id"]
    runs = store.runs()
    assert runs[["source", "deals"]].values.tolist() == [["api", len(answer["deals"])]]
    # The same call again: one more run, the same rows.
    score_batch(loaded_model, config, [_request(open_request)], sink=sink)
    assert len(store.history()) == len(answer["deals"]) and len(store.runs()) == 2
    store.close()


def test_merged_requests_store_every_deal_under_its_own_id(loaded_model, open_request, tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    config = _config(url)
    first = {**open_request, "deals": open_request["deals"][:2]}
    second = {**open_request, "deals": open_request["deals"][2:4]}
    answers = _answers(score_batch(loaded_model, config, [_request(first), _request(second, "2026-07-01T00:00:00Z")],
                                   sink=store_sink(config)))
    store = ScoreStore.open(url)
    stored = store.history()
    sent = {(d["deal_id"], pd.Timestamp(a["as_of"])): d["win_probability"] for a in answers for d in a["deals"]}
    assert {(r.deal_id, r.as_of): r.win_probability for r in stored.itertuples()} == sent
    store.close()


def test_table_uploads_are_stored_too(loaded_model, open_request, tmp_path):
    from serving.request import tables_from_body

    url = f"sqlite:///{tmp_path / 'scores.db'}"
    config = _config(url)
    files = {}
    for name, frame in tables_from_body({**open_request, "as_of": AS_OF}).items():
        files[name] = frame.to_csv(index=False).encode()
    [answer] = _answers(score_batch(loaded_model, config, [table_request(files, AS_OF)], sink=store_sink(config)))
    store = ScoreStore.open(url)
    stored = store.history().set_index("deal_id")["win_probability"].to_dict()
    assert stored == {d["deal_id"]: d["win_probability"] for d in answer["deals"]}
    store.close()


def test_a_store_that_cannot_be_opened_stops_the_service(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot be opened"):
        store_sink(_config(f"sqlite:///{blocker / 'scores.db'}"))


def test_a_failed_write_is_logged_and_the_answer_still_sent(loaded_model, open_request, tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    config = _config(url)
    sink = store_sink(config)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE deal_scores"))
    engine.dispose()
    with caplog.at_level(logging.ERROR, logger="dealrisk.serving"):
        [answer] = _answers(score_batch(loaded_model, config, [_request(open_request)], sink=sink))
    assert len(answer["deals"]) == len(open_request["deals"])
    assert any("scores not stored" in r.getMessage() for r in caplog.records)
    # Nothing of the failed run is left: not even its run record.
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM scoring_runs")).scalar_one() == 0
    engine.dispose()


@pytest.mark.slow
def test_real_service_writes_to_postgresql(store, postgres_url, open_request, tmp_path):
    """``dealrisk serve`` with the store switched on: a CRM call lands in PostgreSQL."""
    from serving.process import free_port, start_server, stop_server

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=store["uri"], MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True",
               DEALRISK_STORE_WRITE="on", DEALRISK_STORE_URL=postgres_url)
    url = f"http://127.0.0.1:{port}"
    try:
        process = start_server([DEALRISK, "serve", "--port", str(port)], f"{url}/readyz", tmp_path / "serve.log",
                               env=env, cwd=ROOT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        response = httpx.post(f"{url}/score", json={**open_request, "as_of": AS_OF}, timeout=60)
        assert response.status_code == 200, response.text
        answer = response.json()
    finally:
        stop_server(process)
    scores = ScoreStore.open(postgres_url)
    stored = scores.history().set_index("deal_id")["win_probability"].to_dict()
    assert stored == {d["deal_id"]: d["win_probability"] for d in answer["deals"]}
    assert scores.runs()["source"].tolist() == ["api"]
    scores.close()
