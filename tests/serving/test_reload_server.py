"""A champion promoted while a real ``dealrisk serve`` answers: every worker switches, no request fails.

The server (BentoML, its 2 workers, ``DEALRISK_RELOAD_SECONDS=2``, a bearer token) serves v1 of a
temporary MLflow store that also holds v2 (the same models, another training date) and v3 (an
unreadable win booster). The tests move the ``champion`` aliases with MLflow's client while
client threads keep scoring, and read the answers' ``model_versions`` and the server log.
Slow tier: training fixtures, server start-up and the reloads take a minute or two on two cores.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from serving.process import free_port, start_server, stop_server
from serving.schemas import EXAMPLE_REQUEST
from tests.serving.conftest import register_bundle
from tests.serving.test_reload import promote

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")
TOKEN = "reload-token"
HEADERS = {"authorization": f"Bearer {TOKEN}"}
CLIENTS = 4
# The longest a test waits for the workers to act on a moved alias before it fails.
WAIT_SECONDS = 180
SWITCHED = re.compile(r"worker (\d+): champion switched \([^)]*\): .* -> deal-win v(\d+) ")
NOT_RELOADED = re.compile(r"worker (\d+): champion not reloaded \([^)]*\), still serving deal-win v(\d+) .*win_model\.txt")


@pytest.fixture(scope="module")
def versions_uri(tmp_path_factory, trained_bundle) -> str:
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('reload-server') / 'mlflow.db'}"
    register_bundle(trained_bundle, uri)
    later = copy.copy(trained_bundle)
    later.metrics = {**trained_bundle.metrics, "trained_at": "2026-07-31T00:00:00+00:00"}
    register_bundle(later, uri)
    broken_run = register_bundle(trained_bundle, uri)
    root = mlflow.MlflowClient(tracking_uri=uri).get_run(broken_run).info.artifact_uri.removeprefix("file://")
    (Path(root) / "bundle" / "win_model.txt").write_text("this is not a LightGBM model")
    promote(uri, "1")
    return uri


@pytest.fixture(scope="module")
def server(versions_uri, tmp_path_factory):
    from serving.service import DealRiskService

    port = free_port()
    log = tmp_path_factory.mktemp("reload-serve") / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=versions_uri, MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True",
               DEALRISK_API_TOKEN=TOKEN, DEALRISK_RELOAD_SECONDS="2")
    url = f"http://127.0.0.1:{port}"
    try:
        process = start_server([DEALRISK, "serve", "--port", str(port)], f"{url}/readyz", log, env=env, cwd=ROOT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield {"url": url, "log": log, "workers": DealRiskService.config["workers"]}
    finally:
        stop_server(process)


class ScoringLoop:
    """Client threads, each on its own keep-alive connection, scoring the example request until stopped."""

    def __init__(self, url: str, clients: int = CLIENTS) -> None:
        self.url = url
        self.seen: list[list[str]] = [[] for _ in range(clients)]  # win version of each answer, per client
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(clients)]

    def __enter__(self) -> "ScoringLoop":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self, k: int) -> None:
        with httpx.Client(headers=HEADERS, timeout=60) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.url}/score", json=EXAMPLE_REQUEST)
                except httpx.HTTPError as exc:
                    self.failures.append(f"client {k}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"client {k}: {response.status_code} {response.text[:300]}")
                    continue
                versions = response.json()["model_versions"]
                if versions["slip"] != versions["win"]:
                    self.failures.append(f"client {k}: a mixed pair {versions}")
                self.seen[k].append(versions["win"])

    def every_client_saw(self, version: str, times: int = 3) -> bool:
        return all(seen.count(version) >= times for seen in self.seen)


def wait_until(condition, what: str, log: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT_SECONDS} s: {what}\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def workers_logging(pattern: re.Pattern, version: str, log: Path, after: int) -> set[int]:
    """Workers whose log lines (after the first ``after`` characters) match ``pattern`` for ``version``."""
    return {int(m.group(1)) for m in pattern.finditer(log.read_text()[after:]) if m.group(2) == version}


def test_a_promotion_during_serving_switches_every_worker_without_a_failed_request(server, versions_uri):
    log, workers = server["log"], set(range(1, server["workers"] + 1))
    with ScoringLoop(server["url"]) as loop:
        wait_until(lambda: loop.every_client_saw("1"), "every client scoring with v1", log)
        mark = len(log.read_text())
        promote(versions_uri, "2")
        wait_until(lambda: workers_logging(SWITCHED, "2", log, mark) == workers and loop.every_client_saw("2"),
                   "every worker switched to v2 and every client answered by it", log)
    assert loop.failures == []
    for seen in loop.seen:  # one connection stays on one worker: v1 answers, then v2 ones, never back
        switch = seen.index("2")
        assert set(seen[:switch]) == {"1"} and set(seen[switch:]) == {"2"}, seen
    info = httpx.get(f"{server['url']}/model", headers=HEADERS, timeout=30).json()
    assert info["model_versions"] == {"win": "2", "slip": "2"}
    assert info["trained_at"] == "2026-07-31T00:00:00+00:00"


def test_the_reload_call_needs_the_token_and_switches_at_once(server, versions_uri):
    url, log = server["url"], server["log"]
    assert httpx.post(f"{url}/admin/reload", timeout=30).status_code == 401
    assert httpx.post(f"{url}/admin/reload", headers={"authorization": "Bearer wrong"}, timeout=30).status_code == 401
    mark = len(log.read_text())
    promote(versions_uri, "1")
    answer = httpx.post(f"{url}/admin/reload", headers=HEADERS, timeout=120)
    assert answer.status_code == 200, answer.text
    # The call's worker serves v1 when it answers (loaded by the call, or by its schedule just before).
    assert answer.json()["model_versions"] == {"win": "1", "slip": "1"} and answer.json()["error"] is None
    workers = set(range(1, server["workers"] + 1))
    wait_until(lambda: workers_logging(SWITCHED, "1", log, mark) == workers, "every worker back on v1", log)


def test_an_unreadable_new_champion_keeps_the_old_pair_serving(server, versions_uri):
    url, log = server["url"], server["log"]
    workers = set(range(1, server["workers"] + 1))
    promote(versions_uri, "1")
    with ScoringLoop(url) as loop:
        wait_until(lambda: loop.every_client_saw("1"), "every client scoring with v1", log)
        mark = len(log.read_text())
        promote(versions_uri, "3")
        try:
            wait_until(lambda: workers_logging(NOT_RELOADED, "1", log, mark) == workers,
                       "every worker logging why v3 was not loaded", log)
            answer = httpx.post(f"{url}/admin/reload", headers=HEADERS, timeout=120)
        finally:
            promote(versions_uri, "1")
    assert answer.status_code == 500
    assert answer.json()["model_versions"] == {"win": "1", "slip": "1"} and "win_model.txt" in answer.json()["error"]
    assert loop.failures == [] and all(set(seen) == {"1"} for seen in loop.seen)
    assert "Traceback" not in log.read_text()[mark:]
