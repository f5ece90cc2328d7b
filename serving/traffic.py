"""How the workers' traffic is counted and spread: bounded request metrics, and kept-alive
connections that end so that clients come back through the fair accept.

- ``RouteLabelledMetrics``: BentoML's request metrics (``bentoml_service_request_total``,
  ``..._request_duration_seconds``, ``..._request_in_progress``) carry an ``endpoint`` label, which
  BentoML fills with the raw request path (``RunnerTrafficMetricsMiddleware`` reads
  ``scope["path"]``). Every distinct path was a new series: 3,000 GETs of random paths grew
  ``/metrics`` from 10.5 KB to 12.5 MB and a worker by 206 MB. This subclass hands BentoML a scope
  whose path is the route template the request matches (``/score``, ``/page/deals/{deal_id}``) or
  ``UNMATCHED`` for any path no route serves, and gives the app inside it the real scope back, so
  routing, the access log and everything else see the real path; only the label changes.
  BentoML has no setting for the label and builds its metrics middleware outside every middleware
  a service adds (``add_asgi_middleware``), where the path is read before ours could run, so
  ``install_route_labels`` puts this class in the place BentoML takes its class from
  (``bentoml._internal.server.http.instruments``, read when a worker builds its app). Done in the
  worker processes at import (``serving.service.configure_worker_process``), before the app exists.
- ``WorkerConnections``: each answer names the worker that gave it (``X-Dealrisk-Worker``, the
  worker index 1, 2, ...), and a kept-alive connection older than ``DEALRISK_CONNECTION_SECONDS``
  gets ``Connection: close`` on its next answer. Without it, a worker restarted after a crash
  never got a connection back: the clients' connections had all moved to the surviving worker and
  stayed there (after a ``kill -9`` under 8 clients the new worker served 0 requests for the next
  40 s and throughput halved). Clients reconnect at once, through the fair accept, which hands the
  connection to the worker holding fewer.
"""

from __future__ import annotations

import re
import time

from starlette.routing import Mount, compile_path

from serving.config import ServingConfig

# The ``endpoint`` label of every request whose path no route serves (404s of scanners and typos).
UNMATCHED = "unmatched"
# Where the real path waits while BentoML's metrics middleware sees the template.
REAL_PATH_KEY = "dealrisk.real_path"
WORKER_HEADER = b"x-dealrisk-worker"


def route_templates(routes, prefix: str = "") -> list[str]:
    """The path templates of ``routes`` and of every app mounted among them, in routing order.

    A mount whose app has routes (the managers' page, the FastAPI app) is walked; one without
    (static files) is its prefix and ``{path:path}``. FastAPI keeps routes added with
    ``include_router`` (BentoML does that for the class's routes) in a wrapper holding the
    included router as ``original_router``.

    >>> from starlette.routing import Route
    >>> from starlette.staticfiles import StaticFiles
    >>> static = Mount("/static", app=StaticFiles(directory=".", check_dir=False))
    >>> page = Mount("/page", routes=[Route("/deals/{deal_id:path}", None), static])
    >>> route_templates([Route("/score", None), page])
    ['/score', '/page/deals/{deal_id:path}', '/page/static/{path:path}']
    """
    templates: list[str] = []
    for route in routes:
        if isinstance(route, Mount):
            inner = route.routes
            if inner:
                templates += route_templates(inner, prefix + route.path)
            else:
                templates.append(f"{prefix}{route.path}/{{path:path}}")
        elif (included := getattr(route, "original_router", None)) is not None:
            include_prefix = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            templates += route_templates(included.routes, prefix + include_prefix)
        elif isinstance(getattr(route, "path", None), str):
            templates.append(prefix + route.path)
    return templates


class RouteLabels:
    """The ``endpoint`` label of a path: the first route template it matches, else ``UNMATCHED``.

    >>> labels = RouteLabels(["/score", "/page/deals/{deal_id:path}"])
    >>> labels("/score"), labels("/page/deals/D-1/x"), labels("/wp-admin/../etc/passwd")
    ('/score', '/page/deals/{deal_id}', 'unmatched')
    """

    def __init__(self, templates: list[str]) -> None:
        self._routes: list[tuple[re.Pattern, str]] = []
        for template in templates:
            regex, path_format, _ = compile_path(template)
            self._routes.append((regex, path_format))

    def __call__(self, path: str) -> str:
        for regex, path_format in self._routes:
            if regex.match(path):
                return path_format
        return UNMATCHED


def route_labelled(metrics_middleware: type) -> type:
    """A subclass of BentoML's metrics middleware class that labels requests by route (see the module)."""

    class RouteLabelledMetrics(metrics_middleware):
        route_labelled = True

        def __init__(self, app, **options) -> None:
            super().__init__(_real_path(app), **options)
            self._labels: RouteLabels | None = None

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] in ("http", "websocket") and "app" in scope:
                if self._labels is None:  # the routes are complete once the first request comes
                    self._labels = RouteLabels(route_templates(scope["app"].routes))
                label = self._labels(scope["path"])
                if label != scope["path"]:
                    scope = {**scope, "path": label, REAL_PATH_KEY: scope["path"]}
            await super().__call__(scope, receive, send)

    RouteLabelledMetrics.__qualname__ = RouteLabelledMetrics.__name__ = f"RouteLabelled{metrics_middleware.__name__}"
    return RouteLabelledMetrics


def _real_path(app):
    """Wrap ``app`` so that it gets the request's real path back."""

    async def with_real_path(scope, receive, send) -> None:
        real = scope.get(REAL_PATH_KEY)
        if real is not None:
            scope = {**scope, "path": real}
            del scope[REAL_PATH_KEY]
        await app(scope, receive, send)

    return with_real_path


def install_route_labels() -> tuple[bool, str]:
    """Make BentoML build its request metrics with ``route_labelled``; (active, a sentence saying so or why not).

    Idempotent. A BentoML without the class (a changed private module) is left alone and named.
    """
    try:
        from bentoml._internal.server.http import instruments
        base = instruments.RunnerTrafficMetricsMiddleware
    except (ImportError, AttributeError) as exc:
        return False, f"request metrics labelled by raw path (BentoML's metrics middleware not found: {exc})"
    if not getattr(base, "route_labelled", False):
        instruments.RunnerTrafficMetricsMiddleware = route_labelled(base)
    return True, f"request metrics labelled by route template (any other path: endpoint=\"{UNMATCHED}\")"


class WorkerConnections:
    """ASGI middleware: name the worker in each answer, and end kept-alive connections older than ``max_seconds``.

    A connection is known by the client's address and port (``scope["client"]``), first seen at its
    first request; the answer that finds it ``max_seconds`` old carries ``Connection: close``, which
    uvicorn honours by closing it once the answer is sent, and the client opens a new one. An
    address not seen for ``FORGET_SECONDS`` is forgotten (the client closed it, or uvicorn did
    after its keep-alive timeout). ``max_seconds`` 0: connections are left open.
    """

    FORGET_SECONDS = 60.0

    def __init__(self, app, max_seconds: float | None = None, worker: int | None = None, clock=time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self.max_seconds = ServingConfig.from_env().connection_seconds if max_seconds is None else max_seconds
        if worker is None:
            from bentoml._internal.context import server_context

            worker = server_context.worker_index
        self._worker = None if worker is None else [(WORKER_HEADER, str(worker).encode())]
        self._opened: dict[tuple, list[float]] = {}  # client address -> [first seen, last seen]
        self._pruned = clock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (self._worker is None and not self.max_seconds):
            await self.app(scope, receive, send)
            return
        extra = list(self._worker or ())
        client = scope.get("client")
        if self.max_seconds and client:
            now = self.clock()
            seen = self._opened.setdefault(tuple(client), [now, now])
            seen[1] = now
            if now - seen[0] >= self.max_seconds:
                del self._opened[tuple(client)]
                extra.append((b"connection", b"close"))
            if now - self._pruned >= 1.0:
                self._prune(now)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _prune(self, now: float) -> None:
        self._pruned = now
        stale = [client for client, (_, last) in self._opened.items() if now - last > self.FORGET_SECONDS]
        for client in stale:
            del self._opened[client]
