"""The service as operators see it (``serving.operations``, ``serving.run``): a 4xx is one warning
line without a traceback, ``/docs.json`` names dealrisk and its version, a port in use is one line
and exit status 1. Fast tier: the in-process service and a real ``dealrisk serve`` that stops at
its port check; ``test_operations_server.py`` reads a real server's log and metrics.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serving.schemas import EXAMPLE_REQUEST

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")


def post(client, body) -> object:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/score", content=content, headers={"content-type": "application/json"})


def logged(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("body", "status", "line"),
    [
        (b"{not json", 400, "dealrisk: POST /score answered 400: 1 validation error"),
        ({"deals": "many"}, 400, "(first problem: deals)"),
        ({**EXAMPLE_REQUEST, "deals": [{**EXAMPLE_REQUEST["deals"][0], "stage": "SECRET-STAGE"}]}, 422,
         "dealrisk: POST /score answered 422: the request breaks the data contract (first problem: deals[0].stage)"),
    ],
    ids=["unparseable", "wrong-type", "unknown-stage"],
)
def test_a_4xx_is_one_warning_line_without_a_traceback(client, caplog, body, status, line):
    with caplog.at_level(logging.INFO):
        assert post(client, body).status_code == status
    records = logged(caplog)
    assert [r.levelno for r in records] == [logging.WARNING], [r.getMessage() for r in records]
    assert line in records[0].getMessage()
    assert "SECRET" not in records[0].getMessage()  # problem reasons may quote values: never logged
    assert all(r.exc_info is None for r in caplog.records)  # BentoML's ERROR-with-traceback record is gone


def test_refusals_of_the_guard_are_logged_too(caplog):
    """The log middleware sits outside the guard, so its 401/413/415 are one warning line each."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from serving.config import ServingConfig
    from serving.guard import RequestGuard
    from serving.operations import ClientErrorLog

    async def ok(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/score", ok, methods=["POST"]), Route("/healthz", ok)])
    client = TestClient(ClientErrorLog(RequestGuard(app, ServingConfig(api_token="t", max_body_bytes=10))))
    with caplog.at_level(logging.INFO):
        assert client.post("/score", content=b"{}", headers={"content-type": "application/json"}).status_code == 401
        headers = {"authorization": "Bearer t"}
        assert client.post("/score", content=b"x" * 20, headers=headers | {"content-type": "application/json"}).status_code == 413
        assert client.post("/score", content=b"{}", headers=headers | {"content-type": "text/plain"}).status_code == 415
        assert client.get("/healthz").status_code == 200
    messages = [r.getMessage() for r in logged(caplog)]
    assert messages == [
        "dealrisk: POST /score answered 401: missing or wrong bearer token (send 'Authorization: Bearer <token>')",
        "dealrisk: POST /score answered 413: request body larger than the limit of 10 bytes; split the deals over "
        "several requests (first problem: body)",
        "dealrisk: POST /score answered 415: content-type must be application/json (first problem: content-type)",
    ]


def test_bentoml_4xx_tracebacks_are_dropped_and_5xx_ones_kept(caplog):
    from bentoml.exceptions import BadInput, InternalServerError
    from pydantic import BaseModel, ValidationError

    from serving.operations import BENTOML_EXCEPTION_MESSAGE, BENTOML_HTTP_LOGGER, quiet_client_error_tracebacks

    class Body(BaseModel):
        n: int

    quiet_client_error_tracebacks()
    quiet_client_error_tracebacks()  # idempotent: one filter
    bentoml_logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    assert len(bentoml_logger.filters) == 1
    errors = {}
    try:
        Body.model_validate({"n": "x"})
    except ValidationError as exc:
        errors["validation"] = exc
    errors["bad input"] = BadInput("not JSON")
    errors["server"] = InternalServerError("boom")
    errors["bug"] = RuntimeError("a bug")
    with caplog.at_level(logging.INFO, logger=BENTOML_HTTP_LOGGER):
        for name, exc in errors.items():
            bentoml_logger.error(BENTOML_EXCEPTION_MESSAGE, f"/{name}", "POST", exc_info=(type(exc), exc, None))
    assert [r.args[0] for r in caplog.records] == ["/server", "/bug"]
    assert all(r.exc_info for r in caplog.records)


def test_docs_json_names_dealrisk_and_its_version(client):
    info = client.get("/docs.json").json()["info"]
    assert info["title"] == "dealrisk"
    assert info["version"] == importlib.metadata.version("dealrisk")
    assert "win-probability" in info["description"] and "\n" not in info["description"]
    assert "BentoML" not in json.dumps(info)


def test_a_port_in_use_is_one_line_and_exit_status_1(store):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")} | {"MLFLOW_TRACKING_URI": store["uri"]}
        done = subprocess.run([DEALRISK, "serve", "--port", str(port)], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=120)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"dealrisk serve: port {port} on 127.0.0.1 is in use (another process listens there; 'ss -ltnp' names it); "
        "pass --port to use another"
    ]


def test_a_host_that_cannot_be_listened_on_is_one_line():
    from serving.run import port_problem

    assert "is not an IP address" in port_problem("localhost", 3000)
    assert port_problem("192.0.2.1", 3000).startswith("dealrisk serve: cannot listen on 192.0.2.1:3000 (")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert port_problem("127.0.0.1", free) is None
