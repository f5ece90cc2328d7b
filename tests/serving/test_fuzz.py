"""Schemathesis against the service's own OpenAPI spec, in process: no input may cause a 5xx, and
every answer is one the spec documents.

Cases are generated from /docs.json (valid and invalid bodies), sent through the started
in-process client, and checked with schemathesis' ``not_a_server_error`` and the checks that the
answer's status, media type and body are the documented ones (``RESPONSE_CHECKS``). The number
of examples is bounded so the test stays fast; tests/serving/test_http.py runs schemathesis with
all its checks against a real ``dealrisk serve``.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

EXAMPLES = 25
RESPONSE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def transport_kwargs(case, base_url: str) -> dict:
    """httpx keyword arguments of a schemathesis case.

    Multipart parts whose generated content is not text or bytes (e.g. an integer form field)
    are sent as their JSON text, as any HTTP client must: httpx cannot encode them and would
    break off the upload mid-body (in the in-process transport, a stuck request).
    """
    import json

    kwargs = case.as_transport_kwargs(base_url=base_url)
    files = kwargs.get("files")
    if files:
        kwargs["files"] = [
            (name, (part[0], part[1] if isinstance(part[1], (bytes, str)) else json.dumps(part[1]), *part[2:]))
            for name, part in (files.items() if isinstance(files, dict) else files)
        ]
    return kwargs


def send(client, case):
    """Send a schemathesis case through the in-process (httpx-based) client."""
    kwargs = transport_kwargs(case, "http://testserver")
    data = kwargs.pop("data", None)
    if data is not None:
        kwargs["content"] = data
    if not kwargs.get("cookies"):
        kwargs.pop("cookies", None)  # per-request cookies are deprecated in the test client
    kwargs.pop("timeout", None)
    kwargs.pop("allow_redirects", None)
    return client.request(**kwargs)


@pytest.fixture(scope="module")
def schema(client):
    return schemathesis.openapi.from_dict(client.get("/docs.json").json())


@pytest.mark.parametrize(
    ("route", "mode"),
    [
        (("/score", "POST"), GenerationMode.POSITIVE),
        (("/score", "POST"), GenerationMode.NEGATIVE),
        (("/score/tables", "POST"), GenerationMode.POSITIVE),
        (("/score/tables", "POST"), GenerationMode.NEGATIVE),
        (("/model", "GET"), GenerationMode.POSITIVE),  # no parameters: nothing invalid to generate
    ],
    ids=["score-valid", "score-invalid", "tables-valid", "tables-invalid", "model"],
)
def test_no_server_error_from_generated_requests(client, schema, route, mode):
    operation = schema[route[0]][route[1]]
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        response = send(client, case)
        seen.append(response.status_code)
        case.validate_response(response, checks=RESPONSE_CHECKS)

    run()
    assert seen and all(status < 500 for status in seen)
