"""ASGI middleware in front of the scoring routes and the managers' page: bearer-token auth,
body-size limit, media type.

Runs before BentoML parses anything, so an oversized or unauthenticated request costs nothing
and never reaches the models. Health, readiness and the OpenAPI spec stay open; so does
``/metrics`` unless ``DEALRISK_METRICS_TOKEN=on`` puts it behind the same bearer token
(``METRICS_PATH``; Prometheus sends it with its ``authorization`` scrape setting).

With ``DEALRISK_API_TOKEN`` set, the page (``PAGE_PATH`` and below, ``serving.page``) takes the
same bearer header as the scoring routes, or, for people in a browser, the session cookie its
login form sets (``session_value``: an HMAC of the token, never the token itself; HttpOnly,
SameSite=Strict). Only the login form and the page's style sheet are open. Every comparison is
constant-time (``hmac.compare_digest``), here and in the login form (``token_matches``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import quote

from serving.batcher import ARRIVALS
from serving.config import ServingConfig

PROTECTED_PATHS: frozenset[str] = frozenset({"/score", "/score/tables", "/model"})
# BentoML's Prometheus endpoint: protected only with DEALRISK_METRICS_TOKEN=on.
METRICS_PATH = "/metrics"
# The managers' page (serving.page), mounted here by the service; everything under it is protected
# but the login form and the style sheet the form uses.
PAGE_PATH = "/page"
PAGE_OPEN_PATHS: frozenset[str] = frozenset({f"{PAGE_PATH}/login", f"{PAGE_PATH}/logout"})
PAGE_OPEN_PREFIX = f"{PAGE_PATH}/static/"
SESSION_COOKIE = "dealrisk_session"
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


def token_matches(given: str, token: str) -> bool:
    """Whether ``given`` is ``token``, in constant time (the login form's check).

    >>> token_matches("s3cret", "s3cret"), token_matches("s3cre", "s3cret")
    (True, False)
    """
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def session_value(token: str) -> str:
    """The page's session cookie for ``token``: an HMAC of a fixed label keyed by the token.

    The cookie never carries the token itself (a cookie leaked from a browser does not open the
    scoring routes), and changing ``DEALRISK_API_TOKEN`` ends every session.
    """
    return hmac.new(token.encode("utf-8"), b"dealrisk page session v1", hashlib.sha256).hexdigest()


def request_cookie(headers: dict[bytes, bytes], name: str) -> bytes:
    """The value of cookie ``name`` in a request's ``cookie`` header (b"" when absent).

    >>> request_cookie({b"cookie": b"a=1; dealrisk_session=abc"}, "dealrisk_session")
    b'abc'
    """
    wanted = name.encode("ascii") + b"="
    for part in headers.get(b"cookie", b"").split(b";"):
        part = part.strip()
        if part.startswith(wanted):
            return part[len(wanted):]
    return b""


def is_page_path(path: str) -> bool:
    """Whether ``path`` is the page or below it."""
    return path == PAGE_PATH or path.startswith(PAGE_PATH + "/")


class RequestGuard:
    """Reject unauthenticated (401), oversized (413) and wrong-media-type (415) requests to scoring
    routes, and unauthenticated requests to the page (401; a browser is sent to the login form)."""

    def __init__(self, app, config: ServingConfig | None = None) -> None:
        self.app = app
        self.config = config or ServingConfig.from_env()
        self._token = None if self.config.api_token is None else f"Bearer {self.config.api_token}".encode()
        self._session = None if self.config.api_token is None else session_value(self.config.api_token).encode()
        self._protected = PROTECTED_PATHS | ({METRICS_PATH} if self.config.metrics_token else set())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self._token is not None and is_page_path(scope.get("path", "")):
            await self._guard_page(scope, receive, send)
            return
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") not in self._protected:
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

    async def _guard_page(self, scope, receive, send) -> None:
        """The page with a token set: the bearer header or the session cookie, else refused."""
        path = scope["path"]
        headers = dict(scope.get("headers") or [])
        authorised = (
            path in PAGE_OPEN_PATHS or path.startswith(PAGE_OPEN_PREFIX)
            or hmac.compare_digest(headers.get(b"authorization", b""), self._token)
            or hmac.compare_digest(request_cookie(headers, SESSION_COOKIE), self._session)
        )
        if authorised:
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD") and b"text/html" in headers.get(b"accept", b""):
            # A person in a browser: to the login form, which comes back here once signed in.
            wanted = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
            location = f"{PAGE_PATH}/login?next={quote(wanted, safe='')}".encode("latin-1")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location), (b"content-length", b"0"), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await _send_json(
            send, 401, {"error": "missing or wrong bearer token (send 'Authorization: Bearer <token>', "
                                 f"or sign in at {PAGE_PATH}/login)"},
            [(b"www-authenticate", b"Bearer")],
        )


def _too_large(limit: int) -> dict:
    return {
        "error": f"request body larger than the limit of {limit} bytes; split the deals over several requests",
        "problems": [{"field": "body", "reason": f"more than {limit} bytes"}],
    }
