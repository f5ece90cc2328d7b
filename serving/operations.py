"""What operators see of the service besides its answers: one warning line per 4xx, and the spec's info.

- ``ClientErrorLog``: every 4xx the service answers, whoever answers it (the guard's 401/413/415,
  BentoML's 400 for a body pydantic rejects, the scoring code's 422, ...), is logged as one
  warning line: method, path, status, the answer's ``error`` and the field of its first problem.
  Never a deal's contents: no request body, no problem reason (a reason may quote a value).
- ``quiet_client_error_tracebacks``: BentoML logs the 400s it answers itself (a pydantic
  ``ValidationError`` while parsing ``/score``, a ``BentoMLException`` with a 4xx code) as an
  ERROR with the whole traceback (``bentoml._internal.server.http_app.log_exception``, called by
  ``_bentoml_impl.server.app.ServiceAppFactory.api_endpoint_wrapper``); a client's mistake is not
  the server's error, so those records are dropped and ``ClientErrorLog``'s line stands for them.
  Errors of the server (5xx) keep their tracebacks.
- ``OpenAPIInfo``: ``GET /docs.json`` names dealrisk, its version and what it does, instead of
  BentoML's boilerplate (the service's name, version "None", "BentoML Team" as contact), and is
  the spec ``serving.openapi.served_spec`` makes of BentoML's: every status each route answers,
  with its body's schema, and the names the service's mapping accepts.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

from features.contract.mapping import load_mapping
from serving.config import ConfigError, ServingConfig
from serving.openapi import served_spec

logger = logging.getLogger("dealrisk.serving")

# The logger and message of BentoML's exception records (bentoml._internal.server.http_app).
BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"
BENTOML_EXCEPTION_MESSAGE = "Exception on %s [%s]"
# Of a 4xx answer, the first bytes are read for its error message; larger bodies are cut there.
ERROR_BODY_BYTES = 4096
DESCRIPTION = ("Explained win-probability and slip-risk scores for open B2B deals, from the champion models "
               "of the MLflow registry.")


def service_info() -> dict:
    """The OpenAPI ``info`` block: dealrisk, its installed version, one line on what it does."""
    try:
        version = importlib.metadata.version("dealrisk")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "0+unknown"
    return {"title": "dealrisk", "version": version, "description": DESCRIPTION}


def client_error_line(method: str, path: str, status: int, body: bytes) -> str:
    """The warning line for a 4xx answer with ``body``: its error and first problem's field, if any.

    >>> client_error_line("POST", "/score", 422, b'{"error": "bad deals", "problems": [{"field": "deals[0].stage"}]}')
    'dealrisk: POST /score answered 422: bad deals (first problem: deals[0].stage)'
    >>> client_error_line("GET", "/nowhere", 404, b"Not Found")
    'dealrisk: GET /nowhere answered 404: Not Found'
    """
    error, first = _error_of(body)
    line = f"dealrisk: {method} {path} answered {status}"
    if error:
        line += f": {error}"
    if first:
        line += f" (first problem: {first})"
    return line


def _error_of(body: bytes) -> tuple[str, str]:
    """(error message, first problem's field) of an error body; reasons and values left out."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:200] if text and "\n" not in text else ""), ""
    if isinstance(data, list) and data and isinstance(data[0], dict):  # BentoML's 4xx: [{"error": ...}]
        data = data[0]
    if not isinstance(data, dict):
        return "", ""
    error = data.get("error") or (data.get("detail") if isinstance(data.get("detail"), str) else "")
    error = str(error or "")[:200]
    first = ""
    problems = data.get("problems")
    details = data.get("detail")
    if isinstance(problems, list) and problems and isinstance(problems[0], dict):
        first = str(problems[0].get("field") or "")
    elif isinstance(details, list) and details and isinstance(details[0], dict):  # pydantic's errors
        first = ".".join(str(part) for part in details[0].get("loc") or ())
    return error, first[:200]


class ClientErrorLog:
    """ASGI middleware: log every 4xx answer as one warning line (``client_error_line``).

    Added outside the request guard, so the guard's refusals are logged too. Other answers pass
    through untouched; of a 4xx, only the first ``ERROR_BODY_BYTES`` are kept to read its error.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def watch(message) -> None:
            nonlocal status
            await send(message)
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and 400 <= status < 500:
                if len(body) < ERROR_BODY_BYTES:
                    body.extend(message.get("body", b"")[: ERROR_BODY_BYTES - len(body)])
                if not message.get("more_body", False):
                    logger.warning(client_error_line(scope.get("method", ""), scope.get("path", ""), status,
                                                     bytes(body)))

        await self.app(scope, receive, watch)


class _DropClientErrorTracebacks(logging.Filter):
    """Drop BentoML's ERROR-with-traceback record of a 4xx it answers (``ClientErrorLog`` logs it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != BENTOML_EXCEPTION_MESSAGE or not record.exc_info:
            return True
        return client_error_status(record.exc_info[1]) is None


def client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx BentoML answers for ``exc`` (pydantic's ``ValidationError``: 400; a ``BentoMLException``
    with a 4xx code), or None for anything it answers with a 5xx."""
    if isinstance(exc, ValidationError):
        return 400
    if isinstance(exc, BentoMLException):
        status = int(exc.error_code.value)
        return status if 400 <= status < 500 else None
    return None


def quiet_client_error_tracebacks() -> None:
    """Install the filter on BentoML's HTTP logger (once per process; idempotent)."""
    bentoml_logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, _DropClientErrorTracebacks) for f in bentoml_logger.filters):
        bentoml_logger.addFilter(_DropClientErrorTracebacks())


class OpenAPIInfo:
    """ASGI middleware: ``GET /docs.json`` as ``serving.openapi.served_spec`` makes it, with
    ``service_info()`` as its ``info`` block.

    BentoML builds the spec's ``info`` from the service's name and its Bento's version (none when
    served from source), with BentoML's own team as the contact, and leaves out most of what the
    routes answer; this replaces the spec in the answer and leaves every other route untouched. The
    mapping and whether a token is required come from the service's settings (``config``, else the
    environment's; the default mapping where those cannot be read: the service then refuses to
    start anyway). An answer that is not a 200 JSON object passes unchanged.
    """

    def __init__(self, app, info: dict | None = None, config=None) -> None:
        self.app = app
        self.info = info or service_info()
        self.config = config

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/docs.json" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []

        async def rewrite(message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if start is not None and start["status"] == 200:
                body = self._with_info(body)
                start = {**start, "headers": [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                         + [(b"content-length", str(len(body)).encode())]}
            if start is not None:
                await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)

    def _with_info(self, body: bytes) -> bytes:
        try:
            spec = json.loads(body)
        except ValueError:
            return body
        if not isinstance(spec, dict):
            return body
        config = self.config
        if config is None:
            try:
                config = ServingConfig.from_env()
            except ConfigError:
                config = ServingConfig()
        mapping = config.mapping or load_mapping()
        return json.dumps(served_spec(spec, mapping, config.api_token is not None, self.info,
                                      metrics_token=config.metrics_token)).encode("utf-8")
