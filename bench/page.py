"""Benchmark the managers' page: its first load with 5,000 open deals in the score store.

Usage::

    python bench/page.py                       # a synthetic store of 5,000 open deals in /tmp (2 runs)
    python bench/page.py --deals 20000         # a bigger one
    python bench/page.py --store sqlite:///data/scores.db   # an existing store (e.g. after make demo)
    python bench/page.py --no-browser          # HTTP only

Prints three tables:

(a) the page's list over HTTP on a freshly started server (the page app behind the service's
    guard, under uvicorn, started as BentoML starts it: its warm-up reads the board at start-up,
    and the first request, sent as soon as the server listens, waits for that read): time to
    first byte and to the full HTML of that first request; the first load after a store write
    (a one-deal ``api`` run, as a CRM's ``/score`` call writes: the board is read again, the
    templates are compiled); and later (cached) loads; each against the same rows from the page's
    JSON route (``/page/api/deals``), for the first 100 rows (what the page shows) and all rows;
(b) the same first load in Chromium (navigation start to the load event: HTML, the style sheet,
    layout), when /usr/bin/chromium is there;
(c) where the first load's time goes, in process: reading the store, the trend, ranking,
    the header and rendering.

Each first load is on a new server process (``--rounds`` of them; medians), HTML and JSON in
turns so that drift of a shared machine moves both alike. The synthetic store holds what
``dealrisk score`` writes: 5 factors each way with sentences, warnings and 3 next best actions per
deal, scored at two as-ofs two weeks apart. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
AS_OF = "2026-06-29T00:00:00Z"
EARLIER = "2026-06-15T00:00:00Z"


# --- a synthetic store ------------------------------------------------------------------------------


def synthetic_rows(n: int, as_of: str, seed: int, drift: float = 0.0):
    """Store rows (``portfolio.store.WRITE_COLUMNS``) of ``n`` open deals scored as of ``as_of``."""
    import numpy as np
    import pandas as pd

    from features.contract.schema import OPEN_STAGES
    from features.model.grades import grade_from_probability, score_from_probability
    from portfolio.store import WRITE_COLUMNS

    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0)  # the deals themselves are the same at both as-ofs
    at = pd.Timestamp(as_of)
    amount = np.round(np.exp(base.normal(10.5, 1.0, n)), -2)
    win = np.clip(base.beta(2, 3, n) + drift * rng.normal(0, 1, n), 0.01, 0.99)
    slip = np.clip(1 - win + rng.uniform(0, 0.2, n), 0, 1)
    close = at + pd.to_timedelta(base.integers(-20, 270, n), unit="D")
    factor = [{"feature": "days_in_stage", "value": 41.0, "contribution": -0.4,
               "sentence": "In negotiate for 41 days, 2.3x what won deals take"}]
    ups = [{"feature": f"up_{k}", "value": 1.0, "contribution": 0.1 * (5 - k), "sentence": f"Reason up number {k}"}
           for k in range(5)]
    actions = [{"action": "engage_economic_buyer", "label": "Engage the economic buyer", "gain_points": 12.0,
                "win_probability_after": 0.5, "sentence": "Engage the economic buyer: +12 points"}] * 3
    warnings = [{"code": "no_activity", "message": "No activity for 20 days"}]
    frame = pd.DataFrame({
        "deal_id": [f"D{k:06d}" for k in range(n)],
        "as_of": pd.Series([at] * n, dtype="datetime64[us, UTC]"),
        "win_version": "7", "slip_version": "7",
        "owner_id": [f"U{k:03d}" for k in base.integers(0, 40, n)],
        "stage": np.array(OPEN_STAGES, dtype=object)[base.integers(0, len(OPEN_STAGES), n)],
        "amount": amount,
        "expected_close_date": pd.Series(close, dtype="datetime64[us, UTC]"),
        "segment": np.array(["smb", "mid_market", "enterprise"], dtype=object)[base.integers(0, 3, n)],
        "lead_source": np.array(["inbound", "outbound", "partner"], dtype=object)[base.integers(0, 3, n)],
        "win_probability": win, "slip_probability": slip,
        "score": score_from_probability(win), "grade": grade_from_probability(win),
        "risk_level": np.where(win < 0.3, "high", np.where(win < 0.5, "medium", "low")),
        "value_at_risk": amount * (1 - win),
        "top_reason": factor[0]["sentence"],
        "warning_codes": np.where(rng.uniform(size=n) < 0.3, "no_activity", ""),
        "factors_up": [ups] * n, "factors_down": [factor * 5] * n,
        "warnings": [warnings] * n, "actions": [actions] * n,
    })
    return frame[list(WRITE_COLUMNS)]


def build_store(url: str, deals: int) -> None:
    from portfolio.store import ScoreStore

    store = ScoreStore.open(url)
    try:
        store.write(synthetic_rows(deals, EARLIER, seed=1), source="batch", origin="bench")
        store.write(synthetic_rows(deals, AS_OF, seed=2, drift=0.05), source="batch", origin="bench")
    finally:
        store.close()


# --- the server -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(url: str, port: int) -> None:
    """Run the page (behind the service's guard) under uvicorn: the ``--serve`` mode of this script."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from serving.config import ServingConfig
    from serving.guard import PAGE_PATH, RequestGuard
    from serving.page import page_app

    config = ServingConfig(store_url=url)
    page = page_app(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        async with page.router.lifespan_context(page):  # as BentoML starts a mounted app: the warm-up
            yield

    app = RequestGuard(Starlette(routes=[Mount(PAGE_PATH, app=page)], lifespan=lifespan), config)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio", http="h11")


class Server:
    """A page server process of its own (fresh caches), stopped on exit."""

    def __init__(self, url: str) -> None:
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", url, "--port", str(self.port)], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"page server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("page server not listening after 120 s")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def fetch(port: int, path: str) -> tuple[float, float, int]:
    """(time to first byte, time to the full body, bytes) of one GET, in seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("GET", path, headers={"accept": "text/html,application/json"})
    answer = conn.getresponse()
    first = time.perf_counter() - start
    body = answer.read()
    total = time.perf_counter() - start
    conn.close()
    if answer.status != 200:
        raise RuntimeError(f"GET {path}: {answer.status} {body[:300]!r}")
    return first, total, len(body)


# --- the measurements ---------------------------------------------------------------------------------


ROUTES = {
    "page, first 100 rows": "/page/",
    "JSON, first 100 rows": "/page/api/deals",
    "page, all rows": "/page/?limit=0",
    "JSON, all rows": "/page/api/deals?limit=0",
}


def write_one_score(url: str, minute: int) -> None:
    """A one-deal ``api`` run (what a CRM's ``/score`` call writes): the page must re-read its board."""
    import pandas as pd

    from portfolio.store import ScoreStore

    rows = synthetic_rows(1, AS_OF, seed=3)
    rows = rows.assign(as_of=rows["as_of"] + pd.Timedelta(minutes=minute))
    store = ScoreStore.open(url)
    try:
        store.write(rows, source="api", origin="bench")
    finally:
        store.close()


def measure_http(url: str, rounds: int, warm: int, writes: bool) -> dict[str, dict]:
    """Per route: the first load on a fresh server (sent as soon as it listens: the start-up
    warm-up is still reading), later loads, and with ``writes`` the first load after a store write."""
    results = {name: {"first_ttfb": [], "first_total": [], "warm_total": [], "after_write": [], "bytes": 0}
               for name in ROUTES}
    minute = 0
    for _ in range(rounds):
        for name, path in ROUTES.items():  # in turns: each route's first load on a fresh server
            with Server(url) as server:
                first, total, size = fetch(server.port, path)
                results[name]["first_ttfb"].append(first)
                results[name]["first_total"].append(total)
                results[name]["bytes"] = size
                for _ in range(warm):
                    results[name]["warm_total"].append(fetch(server.port, path)[1])
                if writes:
                    minute += 1
                    write_one_score(url, minute)
                    results[name]["after_write"].append(fetch(server.port, path)[1])
    return results


def measure_browser(url: str, rounds: int) -> list[dict] | None:
    if not Path(CHROMIUM).exists():
        return None
    from playwright.sync_api import sync_playwright

    timings = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for _ in range(rounds):
                with Server(url) as server:
                    for label in ("first", "again"):
                        context = browser.new_context()
                        page = context.new_page()
                        page.goto(f"http://127.0.0.1:{server.port}/page/", wait_until="load")
                        timing = page.evaluate(
                            "() => { const n = performance.getEntriesByType('navigation')[0];"
                            " return {ttfb: n.responseStart - n.startTime, dom: n.domContentLoadedEventEnd - n.startTime,"
                            " load: n.loadEventEnd - n.startTime}; }")
                        timings.append({"label": label, **timing})
                        context.close()
        finally:
            browser.close()
    return timings


def measure_in_process(url: str) -> list[tuple[str, float]]:
    """Where a first load's time goes, in this process (fresh store engine)."""
    from starlette.testclient import TestClient

    from portfolio.rank import rank_deals
    from portfolio.store import ScoreStore
    from portfolio.trend import add_trend
    from serving.config import ServingConfig
    from serving.page import page_app
    from serving.page.data import BOARD_COLUMNS
    from serving.page.views import pipeline_header

    steps = []
    start = time.perf_counter()
    store = ScoreStore.open(url, create=False)
    steps.append(("open the store", time.perf_counter() - start))
    start = time.perf_counter()
    snapshots = store.snapshots(json_columns=False, columns=BOARD_COLUMNS)
    steps.append((f"read latest + previous snapshots ({len(snapshots):,} rows, the page's columns)",
                  time.perf_counter() - start))
    start = time.perf_counter()
    trended = add_trend(snapshots)
    steps.append(("trend", time.perf_counter() - start))
    start = time.perf_counter()
    rank_deals(trended)
    steps.append(("rank", time.perf_counter() - start))
    start = time.perf_counter()
    pipeline_header(trended, store.latest_batch_as_of())
    steps.append(("header (pipeline, quarters, levels)", time.perf_counter() - start))
    store.close()
    app = page_app(ServingConfig(store_url=url))
    client = TestClient(app)
    start = time.perf_counter()
    client.get("/")
    first = time.perf_counter() - start
    start = time.perf_counter()
    client.get("/")
    again = time.perf_counter() - start
    steps.append(("whole first load in process (all of the above + render)", first))
    steps.append(("a later load (board cached: render only)", again))
    return steps


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        print("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, default=5000, help="open deals of the synthetic store")
    parser.add_argument("--store", help="an existing score store URL instead of the synthetic one")
    parser.add_argument("--rounds", type=int, default=3, help="fresh servers per route (first loads)")
    parser.add_argument("--warm", type=int, default=5, help="later requests per server")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        url = args.store
        if url is None:
            url = f"sqlite:///{Path(tmp) / 'scores.db'}"
            start = time.perf_counter()
            build_store(url, args.deals)
            print(f"synthetic store: {args.deals:,} open deals x 2 as-ofs written in {time.perf_counter() - start:.1f} s")
        print(f"load average before measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} cores)")
        writes = args.store is None  # never write into a store this script did not create
        results = measure_http(url, args.rounds, args.warm, writes)

        def median(name: str, key: str) -> float:
            values = results[name][key]
            return statistics.median(values) if values else float("nan")

        table = []
        for name in results:
            base = f"JSON, {name.split(', ', 1)[1]}"
            row = [name, ms(median(name, "first_ttfb"))]
            for key in ("first_total", "after_write", "warm_total"):
                row += [ms(median(name, key)), f"{median(name, key) / median(base, key):.2f}x"]
            table.append(row + [f"{results[name]['bytes'] / 1024:,.0f} KiB"])
        print_table(f"(a) over HTTP: first load on a fresh server (median of {args.rounds}), first load after a "
                    f"store write{'' if writes else ' (not measured on a given store)'}, later loads (median of "
                    f"{args.rounds * args.warm}); ratio to the JSON route of the same rows",
                    ["route", "first: TTFB", "first: full", "x JSON", "after a write", "x JSON", "later", "x JSON",
                     "size"], table)
        if not args.no_browser:
            timings = measure_browser(url, args.rounds)
            if timings is None:
                print(f"\n(b) skipped: {CHROMIUM} is missing (make chromium)")
            else:
                rows = []
                for label in ("first", "again"):
                    picked = [t for t in timings if t["label"] == label]
                    rows.append([f"{label} load of /page/" + (" (fresh server)" if label == "first" else " (cached board)"),
                                 *(f"{statistics.median(t[k] for t in picked):,.0f} ms" for k in ("ttfb", "dom", "load"))])
                print_table(f"(b) Chromium, navigation to the load event (median of {args.rounds})",
                            ["", "TTFB", "DOM ready", "load"], rows)
        steps = measure_in_process(url)
        print_table("(c) where the first load goes, in process", ["step", "time"], [[n, ms(s)] for n, s in steps])


if __name__ == "__main__":
    main()
