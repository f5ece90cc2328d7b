"""Two real ``dealrisk serve`` processes side by side: each keeps its Prometheus counters in a folder
of its own (the second start no longer empties the first one's), the folder goes when the service
stops, a 4xx is one warning line in the server log without a traceback, and a port taken after
the pre-start check is still one line.

Slow tier: two server start-ups on two cores.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving.process import free_port, start_server, stop_server
from serving.schemas import EXAMPLE_REQUEST

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")
METRICS_LINE = re.compile(r"dealrisk serve: metrics files in (\S+) ")
SCORED = 5


def shipped_env(uri: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True")
    return env


def start(uri: str, folder: Path, name: str):
    port = free_port()
    log = folder / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    try:
        process = start_server([DEALRISK, "serve", "--port", str(port)], f"{url}/readyz", log, env=shipped_env(uri),
                               cwd=ROOT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return process, url, log


def scored_requests(url: str) -> float:
    """``/score`` answers with status 200 counted by the service's Prometheus metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("bentoml_service_request_total{") and 'endpoint="/score"' in line
               and 'http_response_code="200"' in line)


@pytest.fixture(scope="module")
def side_by_side(store, tmp_path_factory) -> dict:
    """Service A scores ``SCORED`` requests and answers a few 4xx; then B starts; both are read, then stopped."""
    folder = tmp_path_factory.mktemp("side-by-side")
    first, first_url, first_log = start(store["uri"], folder, "a")
    try:
        for _ in range(SCORED):
            assert httpx.post(f"{first_url}/score", json=EXAMPLE_REQUEST, timeout=60).status_code == 200
        bad = [httpx.post(f"{first_url}/score", content=b"{not json", headers={"content-type": "application/json"}),
               httpx.post(f"{first_url}/score", json={"deals": "many"}),
               httpx.post(f"{first_url}/score", json={**EXAMPLE_REQUEST, "as_of": "2999-01-01T00:00:00Z"})]
        second, second_url, second_log = start(store["uri"], folder, "b")
        try:
            seen = {"a": scored_requests(first_url), "b": scored_requests(second_url)}
        finally:
            stop_server(second)
    finally:
        stop_server(first)
    folders = {name: METRICS_LINE.search(log.read_text()) for name, log in (("a", first_log), ("b", second_log))}
    return {"seen": seen, "folders": folders, "bad": [r.status_code for r in bad], "log": first_log.read_text()}


def test_each_service_counts_its_own_requests(side_by_side):
    assert side_by_side["seen"] == {"a": SCORED, "b": 0}


def test_each_service_start_has_its_own_metrics_folder_removed_at_exit(side_by_side):
    folders = {name: match and Path(match.group(1)) for name, match in side_by_side["folders"].items()}
    assert all(folders.values()), side_by_side["log"][-3000:]
    assert folders["a"] != folders["b"]
    assert not folders["a"].exists() and not folders["b"].exists()
    assert not folders["a"].parent.exists()  # the whole service folder, reload requests included


def test_a_4xx_is_a_warning_line_in_the_server_log_without_a_traceback(side_by_side):
    log = side_by_side["log"]
    assert side_by_side["bad"] == [400, 400, 422]
    warnings = [line for line in log.splitlines() if "[WARNING]" in line and "answered 4" in line]
    assert len(warnings) == 3, log[-3000:]
    assert "dealrisk: POST /score answered 422: " in warnings[2] and "(first problem: as_of)" in warnings[2]
    assert "Traceback" not in log and "[ERROR]" not in log


def test_a_port_taken_after_the_check_is_still_one_line(store):
    """``serve_here`` (what ``dealrisk serve`` execs) on a port already held: BentoML's bind fails."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "serving.run", "127.0.0.1", str(port)], capture_output=True,
                              text=True, env=shipped_env(store["uri"]), cwd=ROOT, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"dealrisk serve: port {port} on 127.0.0.1 is in use (taken by another process while the service started); "
        "pass --port to use another"
    )
    folder = METRICS_LINE.search(done.stderr)
    assert folder and not Path(folder.group(1)).parent.exists()
