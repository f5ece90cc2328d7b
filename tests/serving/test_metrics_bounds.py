"""``/metrics`` stays small whatever paths clients ask for, and can be put behind the bearer token.

BentoML labelled its request metrics with the raw request path: every distinct path was a new
series in each worker (3,000 GETs of random paths grew ``/metrics`` from 10.5 KB to 12.5 MB and
made each scrape take seconds). With ``serving.traffic`` the label is the route template, and every
path no route serves counts under ``endpoint="unmatched"``. A real ``dealrisk serve`` (2 workers,
``DEALRISK_METRICS_TOKEN=on``) takes 10,000 GETs of random paths over keep-alive connections.

Slow tier: a server start-up and 10,000 requests on two cores.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import sys
import threading
from pathlib import Path

import httpx
import pytest

from serving.process import free_port, start_server, stop_server
from serving.schemas import EXAMPLE_REQUEST

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")
TOKEN = "metrics-bounds-test-token"
RANDOM_PATHS = 10_000
CLIENTS = 8
# What 10,000 unknown paths may add to /metrics: the series of one more label value per worker.
ALLOWED_GROWTH_BYTES = 8 * 1024
REQUEST_TOTAL = re.compile(r'^bentoml_service_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """``dealrisk serve`` on the test store with a token required on ``/metrics`` too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=store["uri"], MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True",
               DEALRISK_API_TOKEN=TOKEN, DEALRISK_METRICS_TOKEN="on")
    port = free_port()
    log = tmp_path_factory.mktemp("metrics-bounds") / "serve.log"
    try:
        process = start_server([DEALRISK, "serve", "--port", str(port)], f"http://127.0.0.1:{port}/readyz", log,
                               env=env, cwd=ROOT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "log": log}
    finally:
        stop_server(process)


def metrics_text(url: str) -> str:
    answer = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert answer.status_code == 200, answer.text[:500]
    return answer.text


def requests_by_endpoint(text: str) -> dict[tuple[str, str], float]:
    """(endpoint, status) -> requests counted, summed over the workers."""
    counts: dict[tuple[str, str], float] = {}
    for match in REQUEST_TOTAL.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        key = (labels.get("endpoint", ""), labels.get("http_response_code", ""))
        counts[key] = counts.get(key, 0.0) + float(match.group("value"))
    return counts


def get_random_paths(port: int, count: int, clients: int, stem: str) -> list[int]:
    """``count`` GETs of distinct random paths from ``clients`` threads, each on one keep-alive connection."""
    statuses: list[int] = []
    lock = threading.Lock()
    per_client = -(-count // clients)

    def client(k: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        seen = []
        try:
            for i in range(k * per_client, min((k + 1) * per_client, count)):
                connection.request("GET", f"/{stem}/{i}/{secrets.token_hex(6)}")
                answer = connection.getresponse()
                answer.read()
                seen.append(answer.status)
        finally:
            connection.close()
            with lock:
                statuses.extend(seen)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_metrics_needs_the_token_when_the_option_is_on(server):
    url = server["url"]
    for headers in ({}, {"authorization": "Bearer wrong"}):
        refused = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "# HELP" not in refused.text
    assert "bentoml_service_request_total" in metrics_text(url)


def test_random_paths_leave_metrics_within_a_few_kilobytes(server):
    url, port = server["url"], server["port"]
    headers = {"authorization": f"Bearer {TOKEN}"}
    for _ in range(4):  # both workers' known series exist before the first measurement
        assert httpx.post(f"{url}/score", json=EXAMPLE_REQUEST, headers=headers, timeout=60).status_code == 200
        assert httpx.get(f"{url}/nowhere", timeout=30).status_code == 404
    before = metrics_text(url)
    stem = f"probe{secrets.token_hex(4)}"
    statuses = get_random_paths(port, RANDOM_PATHS, CLIENTS, stem)
    after = metrics_text(url)

    assert len(statuses) == RANDOM_PATHS and set(statuses) == {404}
    growth = len(after.encode()) - len(before.encode())
    assert growth <= ALLOWED_GROWTH_BYTES, (
        f"/metrics grew by {growth:,} bytes ({len(before):,} -> {len(after):,}) after {RANDOM_PATHS:,} random paths")
    assert stem not in after
    counted_before, counted_after = requests_by_endpoint(before), requests_by_endpoint(after)
    unmatched = counted_after.get(("unmatched", "404"), 0) - counted_before.get(("unmatched", "404"), 0)
    assert unmatched == RANDOM_PATHS
    assert counted_after.get(("/score", "200"), 0) >= 4
