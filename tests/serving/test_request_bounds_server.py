"""Bounded work per request against a real ``dealrisk serve`` (issue 20 part 2): the Parquet and CSV
bombs get a 413 naming the part and leave the workers' memory where it was; unknown columns,
NUL bytes and control characters are refused on both routes; one deal's events are limited.

Slow tier: one server start-up on two cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from serving.process import free_port, start_server, stop_server
from serving.request import tables_from_body
from serving.schemas import EXAMPLE_REQUEST
from tests.serving.test_request_bounds import csv_bomb, many_events, parquet_bomb
from tests.serving.test_service import body

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")
TOKEN = "bounds-token"
# What three bombs may leave behind in all the server's processes together. Before the row limits
# one 2,000,000-row Parquet part grew a worker by about 760 MiB, and the memory stayed.
MEMORY_GROWTH_MIB = 100


def tree_rss_mib(root: int) -> float:
    """Resident memory of process ``root`` and all its descendants (the server and its workers)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # the fields after the name: state, ppid, ...
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # a process that ended meanwhile
    tree = {root}
    while more := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= more
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """``dealrisk serve`` on the test store, with a bearer token; stopped after the module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=store["uri"], MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True",
               DEALRISK_API_TOKEN=TOKEN)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("bounds") / "serve.log"
    try:
        process = start_server([DEALRISK, "serve", "--port", str(port)], f"{url}/readyz", log, env=env, cwd=ROOT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield {"url": url, "pid": process.pid, "headers": {"authorization": f"Bearer {TOKEN}"}}
    finally:
        stop_server(process)


def tables_upload(server: dict, files: dict, as_of: str | None = None) -> httpx.Response:
    data = {} if as_of is None else {"as_of": as_of}
    return httpx.post(f"{server['url']}/score/tables", files=files, data=data, headers=server["headers"], timeout=120)


def example_tables() -> dict[str, tuple[str, bytes]]:
    return {name: (f"{name}.csv", frame.to_csv(index=False).encode())
            for name, frame in tables_from_body(EXAMPLE_REQUEST).items()}


def test_bombs_get_413_naming_the_part_and_leave_memory_where_it_was(server):
    files = example_tables()
    for _ in range(2):  # warm both workers' table path
        assert tables_upload(server, files, EXAMPLE_REQUEST["as_of"]).status_code == 200
    before = tree_rss_mib(server["pid"])
    bombs = {"activities.parquet": parquet_bomb(), "activities.csv": csv_bomb(250_001)}
    for name, bomb in bombs.items():
        for _ in range(3):  # both workers get some
            response = tables_upload(server, {"deals": files["deals"], "activities": (name, bomb)})
            assert response.status_code == 413, response.text[:500]
            answer = response.json()
            assert answer["error"].startswith("the uploaded activities table is too large")
            assert answer["problems"][0]["field"] == "activities"
            assert "DEALRISK_MAX_TABLE_ROWS" in answer["problems"][0]["reason"]
    growth = tree_rss_mib(server["pid"]) - before
    assert growth < MEMORY_GROWTH_MIB, f"the bombs left {growth:.0f} MiB behind"
    assert tables_upload(server, files, EXAMPLE_REQUEST["as_of"]).status_code == 200  # still serving


def test_unknown_columns_and_bad_text_are_refused_on_both_routes(server):
    files = example_tables()
    contacts = tables_from_body(EXAMPLE_REQUEST)["contacts"].assign(ssn="078-05-1120")
    response = tables_upload(server, {**files, "contacts": ("contacts.csv", contacts.to_csv(index=False).encode())},
                             EXAMPLE_REQUEST["as_of"])
    assert response.status_code == 422, response.text[:500]
    assert (response.json()["problems"][0]["table"], response.json()["problems"][0]["column"]) == ("contacts", "ssn")
    for field, value in (("deal_id", "D-1001\x00"), ("account_id", "A-1\x1b[2J"), ("product", "x" * 1_000_000)):
        request = body(EXAMPLE_REQUEST)
        request["deals"][0][field] = value
        by_json = httpx.post(f"{server['url']}/score", json=request, headers=server["headers"], timeout=60)
        assert by_json.status_code == 400, (field, by_json.text[:300])
        tables = {name: (f"{name}.csv", frame.to_csv(index=False).encode())
                  for name, frame in tables_from_body(request).items()}
        by_tables = tables_upload(server, tables, request["as_of"])
        assert by_tables.status_code == 422, (field, by_tables.text[:300])
        assert f"deals[row 1].{field}" in [p["field"] for p in by_tables.json()["problems"]]


def test_a_deal_with_too_many_events_is_413_on_both_routes(server):
    request = many_events(20_000)
    by_json = httpx.post(f"{server['url']}/score", json=request, headers=server["headers"], timeout=60)
    assert by_json.status_code == 413, by_json.text[:300]
    assert by_json.json()["problems"][0]["field"] == "deals[0]"
    tables = {name: (f"{name}.csv", frame.to_csv(index=False).encode())
              for name, frame in tables_from_body(request).items()}
    by_tables = tables_upload(server, tables, request["as_of"])
    assert by_tables.status_code == 413, by_tables.text[:300]
    assert "DEALRISK_MAX_DEAL_EVENTS" in by_tables.json()["problems"][0]["reason"]
