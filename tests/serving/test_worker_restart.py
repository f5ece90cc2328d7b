"""After a worker is killed, the clients' kept-alive connections come back to its restarted process.

When a worker dies its clients reconnect at once, and only the surviving worker is there to
accept; kept-alive connections then stayed on it for good (after a ``kill -9`` under 8 clients the
new worker served 0 requests for the next 40 s and throughput halved). With
``DEALRISK_CONNECTION_SECONDS`` (default 3) a connection that old is closed after its next answer,
the client reconnects, and the fair accept hands the connection to the worker holding fewer. A
real ``dealrisk serve`` (2 workers, default settings) under 4 keep-alive clients; worker 1 gets
SIGKILL; once its new process answers a new connection, the clients' own requests must reach it
within 10 s. Requests are attributed to workers by the ``X-Dealrisk-Worker`` answer header.

Slow tier: a server start-up, and a worker's restart (it loads the models) on two cores.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from serving.process import free_port, start_server, stop_server, worker_pids
from serving.schemas import EXAMPLE_REQUEST

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")
CLIENTS = 4
PAUSE_SECONDS = 0.05  # between a client's requests: load, without starving the restarting worker
BACK_WITHIN_SECONDS = 10.0
RESTART_SECONDS = 120.0
KILLED = 1


class KeptAliveClients:
    """Client threads, each posting ``/score`` on one keep-alive connection (reopened only when the
    server closes it or a request fails); every answer is logged as (time, worker, status)."""

    def __init__(self, port: int, clients: int = CLIENTS) -> None:
        self.port, self.clients = port, clients
        self.answers: list[tuple[float, str, int]] = []
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self._body = json.dumps(EXAMPLE_REQUEST)

    def __enter__(self) -> KeptAliveClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self._stop.is_set():
            try:
                connection.request("POST", "/score", self._body, {"content-type": "application/json"})
                answer = connection.getresponse()
                answer.read()
                self.answers.append((time.monotonic(), answer.getheader("x-dealrisk-worker", "?"), answer.status))
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append((time.monotonic(), type(exc).__name__))
                connection.close()  # the next request opens a new connection
            time.sleep(PAUSE_SECONDS)
        connection.close()

    def workers_since(self, moment: float) -> set[str]:
        return {worker for at, worker, status in list(self.answers) if at >= moment and status == 200}


def answered_by(port: int) -> str | None:
    """The worker answering a request on a new connection (the fair accept gives it to the one holding fewer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/livez")
        answer = connection.getresponse()
        answer.read()
        return answer.getheader("x-dealrisk-worker")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def wait_until(condition, seconds: float, what: str, log: Path) -> float:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {seconds:g} s\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return time.monotonic()


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=store["uri"], MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True")
    port = free_port()
    log = tmp_path_factory.mktemp("worker-restart") / "serve.log"
    try:
        process = start_server([DEALRISK, "serve", "--port", str(port)], f"http://127.0.0.1:{port}/readyz", log,
                               env=env, cwd=ROOT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield {"process": process, "port": port, "log": log}
    finally:
        stop_server(process)


def test_a_restarted_worker_takes_the_kept_alive_clients_requests_again(server):
    process, port, log = server["process"], server["port"], server["log"]
    wait_until(lambda: len(worker_pids(process.pid)) == 2, RESTART_SECONDS, "two workers", log)
    with KeptAliveClients(port) as clients:
        started = time.monotonic()
        wait_until(lambda: clients.workers_since(started) == {"1", "2"}, RESTART_SECONDS,
                   "both workers answering the clients", log)
        old = worker_pids(process.pid)[KILLED]
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        ready = wait_until(lambda: worker_pids(process.pid).get(KILLED, old) != old and answered_by(port) == str(KILLED),
                           RESTART_SECONDS, f"worker {KILLED} restarted and answering", log)
        back = wait_until(lambda: str(KILLED) in clients.workers_since(ready), BACK_WITHIN_SECONDS,
                          f"the clients' kept-alive requests reaching the restarted worker {KILLED}", log)
        answers_after = len([a for a in clients.answers if a[0] >= killed])
    assert back - ready <= BACK_WITHIN_SECONDS
    assert answers_after > 0
    # The requests in flight on the killed worker fail; nothing else does.
    assert len(clients.failures) <= CLIENTS, clients.failures
