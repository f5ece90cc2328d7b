"""Soak the scoring service: N keep-alive clients for a bounded time, one worker killed with SIGKILL
on the way, and optionally a burst of random-path GETs against ``/metrics``.

Usage (nothing to prepare: it builds its own store and service)::

    python bench/soak.py                                        # 8 clients, 180 s, kill -9 at 90 s
    python bench/soak.py --seconds 60 --clients 4 --interval 10 --kill-at 20 --warm-up 20
    python bench/soak.py --seconds 60 --random-paths 10000      # the /metrics burst first

Set-up (not measured): ``dealrisk generate`` writes a ``--deals`` export into a temporary folder,
``dealrisk train --promote`` trains and promotes its models into a temporary MLflow store there,
and ``dealrisk serve`` (2 workers, a random bearer token) starts on a free port of 127.0.0.1 from
this checkout. Then, in order:

1. with ``--random-paths N``: ``/metrics`` is read, N GETs of random paths go out over the clients'
   keep-alive connections, and ``/metrics`` is read again: its size, its series and how long one
   scrape took, before and after, and the workers' memory;
2. the soak: each client posts single-deal ``/score`` requests (a rotation of the export's open
   deals) back to back for ``--seconds``; a scraper reads ``/metrics`` every ``--scrape`` seconds,
   as Prometheus would; at ``--kill-at`` seconds worker ``--kill-worker`` (default: the one holding
   most of the clients' connections) gets SIGKILL and BentoML restarts it. Every ``--interval`` seconds one line: requests, errors, requests/s, p50/p99
   latency, answers per worker (the ``X-Dealrisk-Worker`` header, when the service sends it), the
   clients' connections each worker holds (from /proc, whatever the service sends), each worker's
   resident memory, and the last scrape's size and time.

At the end: the lines as a table, the kill (when the worker's new process started, when it answered
a new connection, and when the clients' kept-alive requests reached it again), and whether each
worker process's memory, from ``--warm-up`` seconds after it began to serve to the end, stayed
within 5%. Traffic goes only to 127.0.0.1; the service and the temporary folder are removed at the
end. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.serve import Connection, build_bodies, print_table  # after the path: see above

MEMORY_TOLERANCE = 0.05
WORKER_HEADER = "x-dealrisk-worker"


# --- the service's processes ---------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def connections_per_worker(workers: dict[int, int], port: int) -> dict[int, int]:
    """Established TCP connections on ``port`` each worker holds (worker index -> count), from /proc.

    A worker's sockets are the ``socket:[inode]`` links among its file descriptors; /proc/net/tcp
    gives each inode's local port and state. Independent of anything the service answers, so it
    shows where the clients' connections sit on any version of the service.
    """
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                established.add(fields[9])
    counts = {}
    for index, pid in workers.items():
        count = 0
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in established:
                    count += 1
        except OSError:
            pass
        counts[index] = count
    return counts


def set_up_store(folder: Path, deals: int, seed: int, env: dict) -> Path:
    """Generate an export and train and promote its models into ``folder``'s MLflow store (the CLI's path)."""
    dealrisk = str(Path(sys.executable).parent / "dealrisk")
    export = folder / "export"
    for command in ([dealrisk, "generate", "--deals", str(deals), "--seed", str(seed), "--out", str(export),
                     "--truth", str(folder / "truth.csv")],
                    [dealrisk, "train", "--data", str(export), "--promote"]):
        done = subprocess.run(command, check=False, cwd=folder, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"set-up failed: {' '.join(command[1:3])}\n{(done.stdout + done.stderr)[-3000:]}")
    return export


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the clients saw since the last report line."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    by_worker: dict[str, int] = field(default_factory=dict)

    def reset(self) -> Tally:
        """The tally so far; this one starts again from nothing."""
        done = Tally(self.latencies, self.errors, self.by_worker)
        self.latencies, self.errors, self.by_worker = [], 0, {}
        return done


async def client_loop(connection: Connection, payloads: list[bytes], offset: int, deadline: float, tally: Tally,
                      kill: dict) -> None:
    """Post ``/score`` back to back until ``deadline``; a failed request is counted and the connection reopened.

    Once the killed worker's new process exists (``kill["restarted"]``), the first answer with its
    index is noted as ``kill["answered"]`` (earlier ones are the old process's last answers, sent
    before the kill).
    """
    k = offset
    while time.monotonic() < deadline:
        k += 1
        started = time.monotonic()
        try:
            status, headers, _ = await connection.request("POST", "/score", payloads[k % len(payloads)])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            await connection.close()
            tally.errors += 1
            await asyncio.sleep(0.05)
            continue
        now = time.monotonic()
        if status != 200:
            tally.errors += 1
            continue
        tally.latencies.append((now - started) * 1000)
        worker = headers.get(WORKER_HEADER, "?")
        tally.by_worker[worker] = tally.by_worker.get(worker, 0) + 1
        if "restarted" in kill and "answered" not in kill and worker == kill["worker"]:
            kill["answered"] = now


async def scrape(url: str, headers: dict) -> tuple[int, int, float]:
    """One read of ``/metrics``: (bytes, series, seconds)."""
    connection = Connection(url, headers)
    started = time.monotonic()
    try:
        status, _, body = await connection.request("GET", "/metrics")
    finally:
        await connection.close()
    if status != 200:
        raise SystemExit(f"GET /metrics answered {status}")
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return len(body), series, time.monotonic() - started


async def random_paths(url: str, headers: dict, clients: int, count: int) -> tuple[int, int, float]:
    """``count`` GETs of random paths over ``clients`` keep-alive connections: (answered, not 404, seconds)."""
    remaining, answered, other = count, 0, 0
    stem = secrets.token_hex(4)

    async def client(connection: Connection) -> None:
        nonlocal remaining, answered, other
        try:
            while remaining > 0:
                remaining -= 1
                status, _, _ = await connection.request("GET", f"/{stem}/{secrets.token_hex(8)}/{remaining}")
                answered += 1
                other += status != 404
        finally:
            await connection.close()

    started = time.monotonic()
    await asyncio.gather(*(client(Connection(url, headers)) for _ in range(clients)))
    return answered, other, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


async def soak(args, url: str, port: int, server_pid: int, headers: dict, payloads: list[bytes]) -> dict:
    from serving.process import worker_pids

    tally = Tally()
    connections = [Connection(url, headers) for _ in range(args.clients)]
    start = time.monotonic()
    deadline = start + args.seconds
    rows, memory, kill = [], {}, {}
    last_scrape: list = ["-"]

    async def scraper() -> None:
        while time.monotonic() < deadline - 0.5:
            try:
                last_scrape[0] = await scrape(url, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                last_scrape[0] = "failed"  # the worker answering it was killed
            await asyncio.sleep(args.scrape)

    async def killer() -> None:
        if not 0 < args.kill_at < args.seconds:
            return
        await asyncio.sleep(args.kill_at)
        workers = worker_pids(server_pid)
        if args.kill_worker is None:  # the one holding most of the clients' connections
            held = connections_per_worker(workers, port)
            args.kill_worker = max(sorted(held), key=held.get)
        if args.kill_worker not in workers:
            raise SystemExit(f"no worker {args.kill_worker} among {workers}")
        old = workers[args.kill_worker]
        os.kill(old, signal.SIGKILL)
        kill.update(at=time.monotonic(), pid=old, worker=str(args.kill_worker))
        while time.monotonic() < deadline and not {"restarted", "ready"} <= kill.keys():
            new = worker_pids(server_pid).get(args.kill_worker)
            if new is not None and new != old:
                kill.setdefault("restarted", time.monotonic())
                # Ready: a new connection (which the fair accept gives the worker holding none) is
                # answered by it. Needs the X-Dealrisk-Worker header.
                probe = Connection(url, headers)
                try:
                    _, answer, _ = await probe.request("GET", "/livez")
                    if answer.get(WORKER_HEADER) == kill["worker"]:
                        kill.setdefault("ready", time.monotonic())
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    pass
                finally:
                    await probe.close()
            await asyncio.sleep(0.25)

    async def reporter() -> None:
        tick = 0
        while True:
            await asyncio.sleep(min(args.interval, max(deadline - time.monotonic(), 0.01)))
            now = time.monotonic()
            tick += 1
            done = tally.reset()
            workers = worker_pids(server_pid)
            held = connections_per_worker(workers, port)
            rss = {index: rss_mb(pid) for index, pid in workers.items()}
            for index, pid in workers.items():
                memory.setdefault(pid, {"worker": index, "samples": []})["samples"].append((now, rss[index]))
            size = last_scrape[0]
            row = [f"{now - start:.0f}", len(done.latencies) + done.errors, done.errors,
                   f"{len(done.latencies) / args.interval:.0f}",
                   f"{percentile(done.latencies, 50):.1f}", f"{percentile(done.latencies, 99):.1f}",
                   " / ".join(f"{w}:{n}" for w, n in sorted(done.by_worker.items())) or "-",
                   " / ".join(f"{i}:{n}" for i, n in sorted(held.items())),
                   " / ".join(f"{i}:{m:.0f}" for i, m in sorted(rss.items()) if m is not None),
                   size if isinstance(size, str) else f"{size[0] / 1024:.1f} KB, {size[2]:.2f} s"]
            rows.append(row)
            print("  ".join(str(cell) for cell in row), flush=True)
            if now >= deadline - 0.01:
                return

    print("t s  requests  errors  req/s  p50 ms  p99 ms  answers per worker  connections per worker  "
          "RSS MB per worker  last /metrics scrape", flush=True)
    try:
        await asyncio.gather(reporter(), killer(), scraper(),
                             *(client_loop(c, payloads, k * 7, deadline, tally, kill)
                               for k, c in enumerate(connections)))
    finally:
        for connection in connections:
            await connection.close()
    # When each process began to serve: the first ones at the start, a restarted one at its first
    # answer to the clients (None: never seen answering them).
    first = min((t for record in memory.values() for t, _ in record["samples"]), default=start)
    for record in memory.values():
        record["serving"] = start if record["samples"][0][0] <= first else kill.get("answered")
    return {"rows": rows, "memory": memory, "kill": kill, "start": start}


def memory_verdict(memory: dict, warm_up: float) -> tuple[list[list], bool]:
    """Per worker process: memory once it has served for ``warm_up`` seconds, and at the end; all within 5%?"""
    rows, within = [], True
    for pid, record in memory.items():
        samples = [(t, mb) for t, mb in record["samples"] if mb is not None]
        serving = record["serving"]
        warm = [] if serving is None else [mb for t, mb in samples if t >= serving + warm_up - 0.5]
        if len(warm) < 2:
            why = ("killed" if pid == record.get("killed") else
                   "never seen answering the clients" if serving is None else "served too briefly")
            rows.append([record["worker"], pid, "-", f"{samples[-1][1]:.0f}" if samples else "-", why])
            continue
        growth = warm[-1] / warm[0] - 1
        within &= abs(growth) <= MEMORY_TOLERANCE
        rows.append([record["worker"], pid, f"{warm[0]:.0f}", f"{warm[-1]:.0f}", f"{growth:+.1%}"])
    return rows, within


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="length of the soak (0: only --random-paths)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per report line")
    parser.add_argument("--kill-at", type=float, default=None,
                        help="seconds into the soak when one worker gets SIGKILL (default: half-way; 0: never)")
    parser.add_argument("--kill-worker", type=int, default=None,
                        help="the worker index to kill (default: the one holding most of the clients' connections)")
    # 120 s: on the 2-core reference machine a worker's resident memory climbs for about two minutes
    # of 8 clients (450 -> 521 MB) and then holds (521 -> 528 MB over the next three); from 60 s the
    # check read that climb as growth (+14.6%) and said NO.
    parser.add_argument("--warm-up", type=float, default=120.0,
                        help="seconds a worker process serves before its memory is the baseline of the 5%% check")
    parser.add_argument("--scrape", type=float, default=15.0, help="seconds between reads of /metrics during the soak")
    parser.add_argument("--random-paths", type=int, default=0, help="GETs of random paths before the soak")
    parser.add_argument("--deals", type=int, default=1500, help="deals in the generated export")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.kill_at is None:
        args.kill_at = args.seconds / 2

    from serving.process import free_port, start_server, stop_server

    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    token = secrets.token_hex(16)
    headers = {"authorization": f"Bearer {token}"}
    with tempfile.TemporaryDirectory(prefix="dealrisk-bench-soak-") as tmp:
        folder = Path(tmp)
        env.update(MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}", MLFLOW_DISABLE_TELEMETRY="true",
                   BENTOML_DO_NOT_TRACK="True", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
                   PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        started = time.monotonic()
        export = set_up_store(folder, args.deals, args.seed, env)
        print(f"set-up: {args.deals:,}-deal export trained and promoted in {time.monotonic() - started:.0f} s",
              flush=True)
        deals = build_bodies(export, (20,))[20]
        payloads = [json.dumps({"as_of": deals["as_of"], "deals": [deal]}).encode() for deal in deals["deals"]]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        dealrisk = str(Path(sys.executable).parent / "dealrisk")
        try:
            process = start_server([dealrisk, "serve", "--port", str(port)], f"{url}/readyz", folder / "serve.log",
                                   env={**env, "DEALRISK_API_TOKEN": token}, cwd=ROOT)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        try:
            warm_up(url, headers, payloads, process.pid)
            if args.random_paths:
                burst(url, headers, args, process.pid)
            if args.seconds > 0:
                result = asyncio.run(soak(args, url, port, process.pid, headers, payloads))
                report(args, result)
        finally:
            stop_server(process)
    return 0


def warm_up(url: str, headers: dict, payloads: list[bytes], server_pid: int, timeout: float = 180.0) -> None:
    """Wait until both workers run (a worker may still be loading when ``/readyz`` first answers)."""
    from serving.process import worker_pids

    async def until_both() -> None:
        deadline = time.monotonic() + timeout
        connections = [Connection(url, headers) for _ in range(4)]
        try:
            while time.monotonic() < deadline:
                workers = worker_pids(server_pid)
                answered = await asyncio.gather(*(c.request("POST", "/score", payloads[0]) for c in connections))
                if len(workers) >= 2 and all(status == 200 for status, _, _ in answered) and \
                        min(connections_per_worker(workers, int(url.rsplit(":", 1)[1])).values()) > 0:
                    return
                for connection in connections:
                    await connection.close()
                await asyncio.sleep(1.0)
        finally:
            for connection in connections:
                await connection.close()
        raise SystemExit(f"the two workers did not both answer within {timeout:.0f} s")

    asyncio.run(until_both())


def burst(url: str, headers: dict, args, server_pid: int) -> None:
    from serving.process import worker_pids

    async def run() -> list:
        before = await scrape(url, headers)
        rss_before = {i: rss_mb(p) for i, p in worker_pids(server_pid).items()}
        answered, other, seconds = await random_paths(url, headers, args.clients, args.random_paths)
        after = await scrape(url, headers)
        rss_after = {i: rss_mb(p) for i, p in worker_pids(server_pid).items()}
        return [before, after, rss_before, rss_after, answered, other, seconds]

    before, after, rss_before, rss_after, answered, other, seconds = asyncio.run(run())
    print_table(f"{args.random_paths:,} GETs of random paths ({answered:,} answered, {other} not 404, in {seconds:.1f} s, "
                f"{args.clients} keep-alive clients)",
                ["", "/metrics size", "series", "one scrape", "RSS MB per worker"],
                [["before", f"{before[0] / 1024:,.1f} KB", f"{before[1]:,}", f"{before[2]:.2f} s",
                  " / ".join(f"{i}:{m:.0f}" for i, m in sorted(rss_before.items()) if m)],
                 ["after", f"{after[0] / 1024:,.1f} KB", f"{after[1]:,}", f"{after[2]:.2f} s",
                  " / ".join(f"{i}:{m:.0f}" for i, m in sorted(rss_after.items()) if m)]])
    print(flush=True)


def report(args, result: dict) -> None:
    print_table(f"soak: {args.clients} keep-alive clients on single-deal /score, {args.seconds:g} s, "
                f"a line per {args.interval:g} s",
                ["t s", "requests", "errors", "req/s", "p50 ms", "p99 ms", "answers per worker",
                 "connections per worker", "RSS MB per worker", "last /metrics scrape"], result["rows"])
    kill = result["kill"]
    if "at" in kill:
        since = {key: f"{kill[key] - kill['at']:.1f} s" if key in kill else "never within the soak"
                 for key in ("restarted", "ready", "answered")}
        print(f"\nkill -9 of worker {args.kill_worker} (pid {kill['pid']}) at {kill['at'] - result['start']:.0f} s: "
              f"a new process after {since['restarted']}, answering a new connection after {since['ready']}, "
              f"answering the clients' kept-alive requests after {since['answered']} "
              f"(the last two from the X-Dealrisk-Worker header)")
        result["memory"].get(kill["pid"], {})["killed"] = kill["pid"]
    rows, within = memory_verdict(result["memory"], args.warm_up)
    print_table(f"memory per worker process once it has served for {args.warm_up:g} s (warm-up), and at the end",
                ["worker", "pid", "warmed up MB", "end MB", "change"], rows)
    print(f"memory after warm-up within {MEMORY_TOLERANCE:.0%}: {'yes' if within else 'NO'}")


if __name__ == "__main__":
    raise SystemExit(main())
