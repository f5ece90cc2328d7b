"""Benchmark the scoring service: batch throughput against the in-process floor, and latency.

Usage (MLFLOW_TRACKING_URI pointing at a store with champion models, e.g. after ``make demo``)::

    python bench/serve.py --data data/demo/export --start          # starts dealrisk serve itself
    python bench/serve.py --data data/demo/export --url http://127.0.0.1:3000 --token ...

Prints three tables:

(a) explained deals per second for requests of 1, 10, 100 and 1000 deals through the BentoML
    service (as JSON to ``/score`` and as typed Parquet tables to ``/score/tables``) and through a
    minimal hand-written FastAPI app (uvicorn) wrapping the same scoring function, each as a
    ratio to the in-process floor: features + predict + SHAP on the same deals in one process
    (no HTTP, no JSON, no contract check, no sentences), with the same one OpenMP thread as
    ``dealrisk serve``; floor and servers are measured in turns (one floor run, then one request
    to each, per round; medians), so drift of a shared machine moves them alike;
(b) single-deal latency p50/p95/p99 at 1, 8 and 32 concurrent clients, both servers, with the
    server's CPU milliseconds per request (its process tree, when this script started it);
(c) where the time of one in-process request goes (parse, contract, features, ...).

Traffic goes only to 127.0.0.1, bounded in request count and time, from a lean keep-alive HTTP/1.1
client (``Connection``): on 2 cores the load generator shares the machine with the server, and
httpx's 3-4 ms of CPU per request would be counted as server latency. Servers this script starts
are stopped when it ends. ``--sizes``, ``--clients`` and ``--no-fastapi`` narrow a run.
"""

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BATCH_SIZES = (1, 10, 100, 1000)
CONCURRENCY = (1, 8, 32)


# --- request bodies -----------------------------------------------------------------------------


def build_bodies(data: Path, sizes: tuple[int, ...]) -> dict[int, dict]:
    """Request bodies of each size from the export's open deals (repeated with new ids if too few)."""
    from features.contract.load import load_export
    from serving.request import request_from_export

    export = load_export(data)
    open_ids = export.deals.loc[export.deals["outcome"] == "open", "deal_id"].tolist()
    if not open_ids:
        raise SystemExit(f"{data}: no open deals to score")
    base = request_from_export(export, open_ids)
    pool = base["deals"]
    bodies = {}
    for size in sizes:
        deals = []
        for i in range(size):
            deal = dict(pool[i % len(pool)])
            if i >= len(pool):  # a copy: new deal and activity ids keep the request valid
                deal["deal_id"] = f"{deal['deal_id']}-copy{i}"
                deal["activities"] = [
                    dict(a, activity_id=f"{a['activity_id']}-copy{i}") for a in (deal.get("activities") or [])
                ]
            deals.append(deal)
        bodies[size] = {"as_of": base["as_of"], "deals": deals}
    return bodies


# --- in-process floor and breakdown -------------------------------------------------------------


def load_scoring_model():
    from serving.config import ServingConfig
    from serving.loader import load_champion
    from serving.scoring import load_model

    config = ServingConfig.from_env()
    return load_model(load_champion(config)), config


def floor_runner(model, body: dict):
    """One in-process floor run on ``body``'s deals: features + predict + SHAP (inputs pre-validated)."""
    from features.model.contributions import model_contributions
    from features.model.predict import (
        encode_bundle_matrix,
        predict_matrix_probabilities,
    )
    from serving.schemas import ScoreRequest
    from serving.scoring import (
        build_request_features,
        check_contract,
        frames_from_request,
        resolve_as_of,
    )

    request = ScoreRequest.model_validate(body)
    as_of = resolve_as_of(request)
    raw, paths = frames_from_request(request)
    export = check_contract(raw, paths, model.mapping)

    def once() -> None:
        features = build_request_features(model, export, as_of)
        matrix = encode_bundle_matrix(model.bundle, features)
        predict_matrix_probabilities(model.bundle, matrix, features.index)
        model_contributions(model.bundle, matrix)

    return once


def measure_breakdown(model, config, body: dict, runs: int = 5) -> dict[str, float]:
    """Milliseconds per stage of one in-process request (median of ``runs``)."""
    import numpy as np

    from features.model.contributions import model_contributions
    from features.model.explain import explain_frame
    from features.model.predict import (
        encode_bundle_matrix,
        predict_matrix_probabilities,
    )
    from serving.schemas import ScoreRequest
    from serving.scoring import (
        build_request_features,
        check_contract,
        check_times,
        dump_response,
        frames_from_request,
        resolve_as_of,
        response_from_explained,
    )

    raw_json = json.dumps(body)
    stages: dict[str, list[float]] = {}
    for _ in range(runs):
        marks = [("start", time.perf_counter())]

        def mark(name: str) -> None:
            marks.append((name, time.perf_counter()))

        request = ScoreRequest.model_validate_json(raw_json)
        mark("parse JSON (pydantic)")
        as_of = resolve_as_of(request)
        raw, paths = frames_from_request(request)
        mark("flatten to tables")
        export = check_contract(raw, paths, model.mapping)
        check_times(export, paths, as_of)
        mark("contract check")
        features = build_request_features(model, export, as_of)
        mark("features")
        matrix = encode_bundle_matrix(model.bundle, features)
        mark("encode matrix")
        probabilities = predict_matrix_probabilities(model.bundle, matrix, features.index)
        mark("predict")
        contributions = model_contributions(model.bundle, matrix)
        mark("SHAP")
        explained = explain_frame(
            features, contributions, list(model.bundle.features["names"]),
            probabilities["win_probability"].to_numpy(), probabilities["slip_probability"].to_numpy(), config.explain,
        ).assign(deal_id=features["deal_id"], amount=features["amount"])
        mark("factors, sentences, warnings")
        dump_response(response_from_explained(explained, request, as_of, model.versions))
        mark("response JSON")
        for (_, a), (name, b) in zip(marks, marks[1:]):
            stages.setdefault(name, []).append((b - a) * 1000)
    return {name: float(np.median(values)) for name, values in stages.items()}


# --- servers ------------------------------------------------------------------------------------


def start_process(command: list[str], url: str, log: Path) -> subprocess.Popen:
    """Start a server and wait (at most 180 s) until ``url`` answers; exit with its log if it does not."""
    from serving.process import start_server

    try:
        return start_server(command, url, log, cwd=ROOT)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo += children.get(current, [])
    return total


def make_fastapi_app():
    """The minimal hand-written comparison: FastAPI + the same scoring function, nothing else."""
    from fastapi import FastAPI
    from starlette.responses import JSONResponse, Response

    from serving.schemas import ScoreRequest
    from serving.scoring import RequestError, dump_response, score_request

    model, config = load_scoring_model()
    app = FastAPI()

    @app.post("/score")
    def score(request: ScoreRequest) -> Response:
        try:
            return Response(dump_response(score_request(model, request, config.explain)),
                            media_type="application/json")
        except RequestError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    return app


def run_fastapi(port: int) -> None:
    import uvicorn

    uvicorn.run(make_fastapi_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- load -----------------------------------------------------------------------------------------


class Connection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the load generator.

    httpx costs 3-4 ms of CPU per request, and on a 2-core machine the client shares the cores
    with the server, so its cost would show up as server latency. Load generators (wrk, hey,
    k6) are lean for the same reason; this one writes one request and reads one response, with
    Content-Length or chunked bodies, and reconnects when the server closes.
    """

    def __init__(self, url: str, headers: dict) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.reader = self.writer = None

    async def post(self, path: str, payload: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        status, _, body = await self.request("POST", path, payload, content_type)
        return status, body

    async def request(self, method: str, path: str, payload: bytes = b"",
                      content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        """One request; the status, the response's header fields (lower-case names) and its body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body_fields = f"content-type: {content_type}\r\ncontent-length: {len(payload)}\r\n" if method == "POST" else ""
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n{body_fields}{self.extra}\r\n".encode()
        self.writer.write(head + payload)
        await self.writer.drain()
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        if "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        else:  # chunked
            chunks = []
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readexactly(2)
            body = b"".join(chunks)
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, fields, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def tables_upload(body: dict) -> tuple[bytes, str]:
    """The deals of a ``/score`` body as a ``/score/tables`` upload: typed Parquet parts (UTC
    timestamp columns, as a Parquet export holds them), multipart body."""
    import io

    from serving.request import tables_from_body

    boundary = "dealrisk-bench-boundary"
    parts = []
    for name, frame in tables_from_body(body, typed=True).items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        parts.append(f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"; filename="{name}.parquet"\r\n'
                     f"content-type: application/octet-stream\r\n\r\n".encode() + buffer.getvalue() + b"\r\n")
    parts.append(f'--{boundary}\r\ncontent-disposition: form-data; name="as_of"\r\n\r\n{body["as_of"]}\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def measure_batches(model, body: dict, targets: dict[str, tuple[str, dict, bool]], min_seconds: float = 3.0,
                    max_rounds: int = 40) -> tuple[dict[str, float], dict[str, int]]:
    """Explained deals per second of the in-process floor and of each target, and each target's errors.

    ``targets`` maps a name to (url, headers, tables): requests carrying ``body`` as JSON to
    ``/score``, or with ``tables`` as typed Parquet tables to ``/score/tables``. Measured in turns:
    each round runs the floor once and sends one request to every target, so a machine that
    speeds up or slows down during the run moves the floor and the servers alike; rates are the
    deals over the median time of a round's run or request.
    """
    return asyncio.run(_batches(model, body, targets, min_seconds, max_rounds))


async def _batches(model, body: dict, targets: dict[str, tuple[str, dict, bool]], min_seconds: float,
                   max_rounds: int) -> tuple[dict[str, float], dict[str, int]]:
    import numpy as np

    floor_once = floor_runner(model, body)
    prepared = {}
    for name, (url, headers, tables) in targets.items():
        if tables:
            path, (payload, content_type) = "/score/tables", tables_upload(body)
        else:
            path, payload, content_type = "/score", json.dumps(body).encode(), "application/json"
        prepared[name] = (Connection(url, headers), path, payload, content_type)
    seconds: dict[str, list[float]] = {name: [] for name in ("floor", *targets)}
    errors = dict.fromkeys(targets, 0)
    try:
        floor_once()  # warm-up
        for connection, path, payload, content_type in prepared.values():
            await connection.post(path, payload, content_type)
        rounds, started = 0, time.perf_counter()
        while rounds < max_rounds and (rounds < 3 or time.perf_counter() - started < min_seconds):
            start = time.perf_counter()
            floor_once()
            seconds["floor"].append(time.perf_counter() - start)
            for name, (connection, path, payload, content_type) in prepared.items():
                start = time.perf_counter()
                status, _ = await connection.post(path, payload, content_type)
                seconds[name].append(time.perf_counter() - start)
                errors[name] += status != 200
            rounds += 1
    finally:
        for connection, *_ in prepared.values():
            await connection.close()
    return {name: len(body["deals"]) / float(np.median(times)) for name, times in seconds.items()}, errors


async def _latencies(url: str, body: dict, headers: dict, clients: int, requests: int) -> tuple[list[float], int, float]:
    payload = json.dumps(body).encode()
    latencies: list[float] = []
    errors = 0
    remaining = requests
    connections = [Connection(url, headers) for _ in range(clients)]
    try:
        for connection in connections[:4]:  # warm-up
            await connection.post("/score", payload)

        async def worker(connection: Connection) -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    status, _ = await connection.post("/score", payload)
                    ok = status == 200
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    await connection.close()
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker(connection) for connection in connections))
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            await connection.close()
    return latencies, errors, elapsed


def measure_latency(url: str, body: dict, headers: dict, clients: int, requests: int, pid: int | None = None) -> dict:
    """Latency percentiles (ms), errors and throughput; with ``pid``, also server CPU ms per request."""
    import numpy as np

    cpu = None if pid is None else tree_cpu_seconds(pid)
    latencies, errors, elapsed = asyncio.run(_latencies(url, body, headers, clients, requests))
    cpu = None if pid is None else (tree_cpu_seconds(pid) - cpu) * 1000 / (len(latencies) + min(clients, 4))
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"requests": len(latencies), "errors": errors, "p50": p50, "p95": p95, "p99": p99,
            "rps": len(latencies) / elapsed, "server_cpu_ms": cpu}


# --- report ---------------------------------------------------------------------------------------


def added_ms(rate: float, floor: float) -> float:
    """Milliseconds per deal a route adds to the floor, from the two rates in deals/s.

    >>> round(added_ms(2000.0, 5000.0), 3)
    0.3
    """
    return 1000.0 / rate - 1000.0 / floor


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo/export"), help="export folder for the deals")
    parser.add_argument("--url", default=None, help="a running service on 127.0.0.1 (default: start one)")
    parser.add_argument("--start", action="store_true", help="start dealrisk serve on a free port")
    parser.add_argument("--token", default=os.environ.get("DEALRISK_API_TOKEN"), help="bearer token, if required")
    parser.add_argument("--requests", type=int, default=600,
                        help="single-deal requests per concurrency level (600: p99 is the 6th slowest, not the 2nd)")
    parser.add_argument("--sizes", default=",".join(map(str, BATCH_SIZES)), help="batch sizes, comma separated")
    parser.add_argument("--clients", default=",".join(map(str, CONCURRENCY)), help="concurrent clients, comma separated")
    parser.add_argument("--no-fastapi", action="store_true", help="skip the hand-written FastAPI peer")
    parser.add_argument("--fastapi-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fastapi_worker is not None:
        run_fastapi(args.fastapi_worker)
        return 0
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("benchmark traffic goes to 127.0.0.1 only")

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as dealrisk serve does; same for the floor
    sizes = tuple(int(s) for s in args.sizes.split(","))
    concurrency = tuple(int(c) for c in args.clients.split(","))
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    bodies = build_bodies(args.data, tuple(sorted(set(sizes) | {1})))
    model, config = load_scoring_model()
    # The request bodies are millions of Python objects; as in the service's workers, keep them out
    # of the collector's full passes, which would otherwise land in random floor runs.
    gc.collect()
    gc.freeze()

    from serving.process import free_port, stop_server

    processes: list[subprocess.Popen] = []
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    try:
        if args.url is None:
            port = free_port()
            bento_url = f"http://127.0.0.1:{port}"
            dealrisk = str(Path(sys.executable).parent / "dealrisk")
            processes.append(start_process([dealrisk, "serve", "--port", str(port)], f"{bento_url}/readyz",
                                           logs / "dealrisk-bench-serve.log"))
        else:
            bento_url = args.url.rstrip("/")
        servers = {"bentoml": (bento_url, headers, processes[0].pid if processes else None)}
        if not args.no_fastapi:
            fast_port = free_port()
            fast_url = f"http://127.0.0.1:{fast_port}"
            processes.append(start_process([sys.executable, __file__, "--fastapi-worker", str(fast_port)],
                                           f"{fast_url}/healthz", logs / "dealrisk-bench-fastapi.log"))
            servers["fastapi"] = (fast_url, {}, processes[-1].pid)

        targets = {
            f"{name} {kind}": (url, server_headers, kind == "tables")
            for name, (url, server_headers, _) in servers.items()
            for kind in (("json", "tables") if name == "bentoml" else ("json",))
        }
        rows = []
        for size in sizes:
            rates, errors = measure_batches(model, bodies[size], targets)
            floor = rates["floor"]
            rows.append([size, f"{floor:,.0f}"] + [
                cell for name in targets
                for cell in (f"{rates[name]:,.0f}", f"{rates[name] / floor:.2f}x", f"{added_ms(rates[name], floor):+.3f}",
                             errors[name])
            ])
        columns = list(targets)
        print_table(
            "(a) batch throughput, explained deals/s (floor: features + predict + SHAP in one process), measured\n"
            "    in turns (each round: one floor run, one request per column; medians); json: POST /score,\n"
            "    tables: the same deals as typed Parquet tables to POST /score/tables; +ms/deal: what the\n"
            "    service adds to the floor per deal (HTTP, parsing, contract check, sentences, response JSON),\n"
            "    which unlike the ratio does not depend on how costly the model is to explain",
            ["deals/request", "floor"] + [c for column in columns for c in (column, "vs floor", "+ms/deal", "errors")],
            rows,
        )

        rows = []
        for clients in concurrency:
            for name, (url, server_headers, pid) in servers.items():
                requests = max(args.requests, clients * 4)
                result = measure_latency(url, bodies[1], server_headers, clients, requests, pid)
                cpu = "-" if result["server_cpu_ms"] is None else f"{result['server_cpu_ms']:.1f}"
                rows.append([clients, name, result["requests"], result["errors"], f"{result['p50']:.1f}",
                             f"{result['p95']:.1f}", f"{result['p99']:.1f}", f"{result['rps']:.0f}", cpu])
        print_table("(b) single-deal latency (ms) under concurrent clients; server CPU ms per request",
                    ["clients", "server", "requests", "errors", "p50", "p95", "p99", "req/s", "server cpu"], rows)

        rows = []
        for size in (1, max(sizes)):
            stages = measure_breakdown(model, config, bodies[size])
            total = sum(stages.values())
            rows += [[size, name, f"{ms:.1f}", f"{ms / total:.0%}"] for name, ms in stages.items()]
            rows.append([size, "total", f"{total:.1f}", "100%"])
        print_table("(c) in-process cost of one request by stage (median ms)", ["deals", "stage", "ms", "share"], rows)
    finally:
        for process in processes:
            stop_server(process)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
