"""The shipped server configuration keeps ``fair_accept`` active in every worker.

``serving.service.fair_accept`` patches asyncio's private selector-loop accept handler; another
event loop (uvicorn runs uvloop whenever uvloop is installed), a changed asyncio or
``DEALRISK_FAIR_ACCEPT=off`` leaves it inactive without any error, and the workers then accept
connections unbalanced. Each worker logs one line at start-up saying whether it is active and,
if not, why; this test starts the real ``dealrisk serve`` (BentoML, the service's own
``workers``, every ``DEALRISK_*`` setting at its default) on the champion of the serving test
store and reads those lines.

Slow tier: server start-up takes tens of seconds on two cores.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from serving.process import free_port, start_server, stop_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")
STATUS_LINE = re.compile(r"dealrisk: worker (\d+): (fair_accept .*)")
# How long the workers may take to log their start-up line once the first one answers /readyz.
WORKERS_UP_SECONDS = 120


def shipped_env(uri: str) -> dict:
    """This process's environment without any ``DEALRISK_*`` setting, serving the store at ``uri``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True")
    return env


def wait_for_status_lines(process, log: Path, workers: int) -> dict[int, str]:
    """Worker index -> its ``fair_accept`` start-up line, once every worker has logged one (or the wait ends)."""
    deadline = time.monotonic() + WORKERS_UP_SECONDS
    while True:
        found = {int(m.group(1)): m.group(2) for m in STATUS_LINE.finditer(log.read_text())}
        if len(found) >= workers or process.poll() is not None or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.fixture(scope="module")
def worker_status(store, tmp_path_factory) -> tuple[dict[int, str], int, str]:
    """The start-up lines of a ``dealrisk serve`` with the shipped settings, the worker count and the log."""
    from serving.service import DealRiskService

    workers = DealRiskService.config["workers"]
    port = free_port()
    log = tmp_path_factory.mktemp("startup") / "serve.log"
    try:
        process = start_server([DEALRISK, "serve", "--port", str(port)], f"http://127.0.0.1:{port}/readyz", log,
                               env=shipped_env(store["uri"]), cwd=ROOT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        status = wait_for_status_lines(process, log, workers)
    finally:
        stop_server(process)
    return status, workers, log.read_text()


def test_every_worker_of_the_shipped_server_runs_fair_accept(worker_status):
    status, workers, log = worker_status
    assert sorted(status) == list(range(1, workers + 1)), f"start-up lines of workers {sorted(status)}:\n{log[-3000:]}"
    inactive = {worker: line for worker, line in status.items() if not line.startswith("fair_accept active")}
    assert inactive == {}, "the shipped server leaves fair_accept inactive (worker: start-up line)"
