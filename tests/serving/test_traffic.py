"""``serving.traffic`` in process: request metrics labelled by route, kept-alive connections ended by
age, the worker named in each answer; and the settings and the guard option around them.

The real server's behaviour (10,000 random paths against ``/metrics``, a worker killed under load)
is in the slow tier: ``test_metrics_bounds.py`` and ``test_worker_restart.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from serving.config import ConfigError, ServingConfig
from serving.guard import RequestGuard
from serving.traffic import (
    UNMATCHED,
    RouteLabels,
    WorkerConnections,
    install_route_labels,
    route_labelled,
    route_templates,
)

SERVICE_ROUTES = ["/score", "/score/tables", "/model", "/admin/reload", "/readyz", "/livez", "/healthz", "/metrics",
                  "/docs.json", "/schema.json", "/", "/page/", "/page/team", "/page/login"]


@pytest.fixture(scope="module")
def service_labels() -> RouteLabels:
    """The labels of the service's own app, built as a worker builds it (no models loaded)."""
    from serving.service import DealRiskService

    return RouteLabels(route_templates(DealRiskService.to_asgi().routes))


@pytest.mark.parametrize("path", SERVICE_ROUTES)
def test_each_route_of_the_service_is_its_own_label(service_labels, path):
    assert service_labels(path) == path


@pytest.mark.parametrize("path, label", [
    ("/page/deals/D-17", "/page/deals/{deal_id}"),
    ("/page/deals/a/b/c", "/page/deals/{deal_id}"),
    ("/page/static/page.css", "/page/static/{path}"),
    ("/static_content/swagger-ui.css", "/static_content/{path}"),
])
def test_paths_with_parameters_are_labelled_by_their_template(service_labels, path, label):
    assert service_labels(path) == label


@pytest.mark.parametrize("path", ["/wp-admin", "/.env", "/score/x", "/page/nope", "/model/../../etc/passwd",
                                  "/%00", "/" + "a" * 5000])
def test_every_other_path_is_one_label(service_labels, path):
    assert service_labels(path) == UNMATCHED


class RecordingMetrics:
    """Stands for BentoML's metrics middleware: records the path it is shown, then calls the app."""

    seen: list[str] = []

    def __init__(self, app, **options) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        RecordingMetrics.seen.append(scope["path"])
        await self.app(scope, receive, send)


def test_the_metrics_middleware_sees_the_template_and_the_app_the_real_path():
    RecordingMetrics.seen = []

    async def deal(request):
        return PlainTextResponse(f"{request.url.path} {request.path_params['deal_id']}")

    page = Starlette(routes=[Route("/deals/{deal_id:path}", deal)])
    app = Starlette(routes=[Mount("/page", app=page)])
    app.add_middleware(route_labelled(RecordingMetrics))
    client = TestClient(app)

    assert client.get("/page/deals/D-1").text == "/page/deals/D-1 D-1"
    assert client.get("/anything/else").status_code == 404
    assert RecordingMetrics.seen == ["/page/deals/{deal_id}", UNMATCHED]


def test_install_puts_the_labelling_class_where_bentoml_builds_its_metrics_from(monkeypatch):
    from bentoml._internal.server.http import instruments

    original = instruments.RunnerTrafficMetricsMiddleware
    monkeypatch.setattr(instruments, "RunnerTrafficMetricsMiddleware", original)
    active, line = install_route_labels()
    installed = instruments.RunnerTrafficMetricsMiddleware
    assert active and "labelled by route template" in line
    assert issubclass(installed, original) and installed.route_labelled
    install_route_labels()  # once only
    assert instruments.RunnerTrafficMetricsMiddleware is installed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def answer_headers(middleware: WorkerConnections, client=("127.0.0.1", 50123)) -> dict[bytes, bytes]:
    """The header fields of one answer of ``middleware`` to a request from ``client``."""
    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/livez", "headers": [], "client": client}
    asyncio.run(middleware(scope, receive, send))
    return dict(sent[0]["headers"])


async def ok_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_connection_older_than_the_limit_is_closed_after_its_next_answer():
    clock = Clock()
    middleware = WorkerConnections(ok_app, max_seconds=5, worker=2, clock=clock)
    first = answer_headers(middleware)
    assert first[b"x-dealrisk-worker"] == b"2" and b"connection" not in first
    clock.now += 4.9
    assert b"connection" not in answer_headers(middleware)
    assert b"connection" not in answer_headers(middleware, client=("127.0.0.1", 50999))  # another connection
    clock.now += 0.1
    assert answer_headers(middleware)[b"connection"] == b"close"
    assert b"connection" not in answer_headers(middleware)  # the client's next connection starts afresh
    assert b"connection" not in answer_headers(middleware, client=("127.0.0.1", 50999))


def test_connections_stay_open_with_the_limit_off_and_forgotten_clients_do_not_pile_up():
    clock = Clock()
    never = WorkerConnections(ok_app, max_seconds=0, worker=1, clock=clock)
    clock.now += 3600
    assert b"connection" not in answer_headers(never)
    middleware = WorkerConnections(ok_app, max_seconds=5, worker=None, clock=clock)
    for port in range(100):
        assert b"x-dealrisk-worker" not in answer_headers(middleware, client=("127.0.0.1", port))
    clock.now += WorkerConnections.FORGET_SECONDS + 1
    answer_headers(middleware, client=("127.0.0.1", 40000))
    assert len(middleware._opened) == 1


@pytest.mark.parametrize("raw, seconds", [("", 3.0), ("0", 0.0), ("2.5", 2.5)])
def test_the_connection_setting_reads_seconds(raw, seconds):
    assert ServingConfig.from_env({"DEALRISK_CONNECTION_SECONDS": raw}).connection_seconds == seconds


@pytest.mark.parametrize("raw", ["-1", "soon", "1e9"])
def test_a_bad_connection_setting_is_refused_naming_it(raw):
    with pytest.raises(ConfigError, match="DEALRISK_CONNECTION_SECONDS must be a number of seconds"):
        ServingConfig.from_env({"DEALRISK_CONNECTION_SECONDS": raw})


def test_the_metrics_token_option_needs_a_token_and_reads_on_and_off():
    with pytest.raises(ConfigError, match="DEALRISK_METRICS_TOKEN=on needs DEALRISK_API_TOKEN"):
        ServingConfig.from_env({"DEALRISK_METRICS_TOKEN": "on"})
    with pytest.raises(ConfigError, match="DEALRISK_METRICS_TOKEN must be on or off"):
        ServingConfig.from_env({"DEALRISK_METRICS_TOKEN": "maybe", "DEALRISK_API_TOKEN": "t"})
    assert ServingConfig.from_env({"DEALRISK_METRICS_TOKEN": "on", "DEALRISK_API_TOKEN": "t"}).metrics_token
    assert not ServingConfig.from_env({"DEALRISK_API_TOKEN": "t"}).metrics_token


async def metrics_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"# HELP x\nx 1\n"})


@pytest.mark.parametrize("metrics_token", [True, False])
def test_metrics_behind_the_token_only_with_the_option(metrics_token):
    config = replace(ServingConfig(), api_token="s3cret", metrics_token=metrics_token)
    client = TestClient(RequestGuard(metrics_app, config))
    for headers in ({}, {"authorization": "Bearer wrong"}):
        answer = client.get("/metrics", headers=headers)
        if metrics_token:
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
            assert "x 1" not in answer.text
        else:
            assert answer.status_code == 200
    assert client.get("/metrics", headers={"authorization": "Bearer s3cret"}).text == "# HELP x\nx 1\n"
    assert client.get("/livez").status_code == 200  # health stays open either way
