"""ASGI middleware in front of the scoring routes: bearer-token auth, body-size limit, media type.

Runs before BentoML parses anything, so an oversized or unauthenticated request costs nothing
and never reaches the models. Health, readiness, metrics and the OpenAPI spec stay open.
"""

from __future__ import annotations

import hmac
import json

from serving.batcher import ARRIVALS
from serving.config import ServingConfig

PROTECTED_PATHS: frozenset[str] = frozenset({"/score", "/score/tables", "/model"})
# Routes with a request body, and the media type each takes.
BODY_MEDIA_TYPES: dict[str, bytes] = {"/score": b"application/json", "/score/tables": b"multipart/form-data"}


async def _send_json(send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Reject unauthenticated (401), oversized (413) and wrong-media-type (415) requests to scoring routes."""

    def __init__(self, app, config: ServingConfig | None = None) -> None:
        self.app = app
        self.config = config or ServingConfig.from_env()
        self._token = None if self.config.api_token is None else f"Bearer {self.config.api_token}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") not in PROTECTED_PATHS:
            await self.app(scope, receive, send)
            return
        path = scope["path"].rstrip("/")
        headers = dict(scope.get("headers") or [])
        if self._token is not None and not hmac.compare_digest(headers.get(b"authorization", b""), self._token):
            await _send_json(
                send, 401, {"error": "missing or wrong bearer token (send 'Authorization: Bearer <token>')"},
                [(b"www-authenticate", b"Bearer")],
            )
            return
        if path not in BODY_MEDIA_TYPES or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        wanted = BODY_MEDIA_TYPES[path]
        media_type = headers.get(b"content-type", wanted).split(b";")[0].strip().lower()
        if media_type != wanted:
            await _send_json(send, 415, {"error": f"content-type must be {wanted.decode()}",
                                         "problems": [{"field": "content-type", "reason": f"not {wanted.decode()}"}]})
            return
        limit = self.config.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _send_json(send, 413, _too_large(limit))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(send, 413, _too_large(limit))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        with ARRIVALS.receiving():  # the coalescer waits a moment for requests counted here
            await self.app(scope, replay, send)


def _too_large(limit: int) -> dict:
    return {
        "error": f"request body larger than the limit of {limit} bytes; split the deals over several requests",
        "problems": [{"field": "body", "reason": f"more than {limit} bytes"}],
    }
