"""Benchmark a champion switch under load: ``/score`` latency at 8 clients while every worker loads
and swaps in a newly promoted pair, against the same load without a switch, in one run.

Usage (MLFLOW_TRACKING_URI pointing at a store with champion models, e.g. after ``make demo``)::

    python bench/reload.py --data data/demo/export

The champion of that store is copied, as two registered versions (v1 and v2, the same models), into
a temporary MLflow store; the store you point at is only read. ``dealrisk serve`` is started on
it (``DEALRISK_RELOAD_SECONDS=0``, a random bearer token) and loaded with single-deal ``/score``
requests from ``--clients`` keep-alive connections (``bench/serve.py``'s lean client) for a window
of ``--seconds``. Windows alternate: a steady one, then one where, one second in, the champion
aliases move to the other version and ``POST /admin/reload`` makes the called worker load it at
once and the other follow within a second (``serving.reload``). Each switch is checked: every
client ends on the new version, and no request fails. Prints per window p50/p95/p99/max, errors
and how long the old version kept answering after the call, then medians over the rounds as a
ratio table (switch / steady). Traffic goes only to 127.0.0.1; the server and the temporary store
are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.serve import Connection, build_bodies, print_table, start_process  # after the path: see above

WIN_VERSION = re.compile(rb'"model_versions":\{"win":"([^"]*)"')
EXPERIMENT = "dealrisk-bench-reload"


def copy_champion(source_uri: str, folder: Path) -> str:
    """A new MLflow store in ``folder`` whose deal-win/deal-slip v1 and v2 both hold the champion of
    ``source_uri``; the aliases name v1. Returns its URI."""
    import mlflow
    from mlflow import MlflowClient

    from features.model.bundle import save_bundle_dir
    from features.model.integrity import BUNDLE_DIGEST_TAG, bundle_digest
    from serving.config import ServingConfig
    from serving.loader import load_champion

    config = replace(ServingConfig.from_env(), tracking_uri=source_uri)
    bundle = load_champion(config)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(EXPERIMENT, artifact_location=(folder / "artifacts").as_uri())
    names = (config.names.win_model, config.names.slip_model)
    for name in names:
        client.create_registered_model(name)
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment) as run, tempfile.TemporaryDirectory() as tmp:
            save_bundle_dir(bundle, Path(tmp) / "bundle")
            mlflow.log_artifacts(str(Path(tmp) / "bundle"), "bundle")
            tags = {BUNDLE_DIGEST_TAG: bundle_digest(Path(tmp) / "bundle")}  # serving loads only recorded bundles
            mlflow.set_tags(tags)
        for name in names:
            client.create_model_version(name, source=f"runs:/{run.info.run_id}/bundle", run_id=run.info.run_id,
                                        tags=tags)
    promote(uri, "1")
    return uri


def promote(uri: str, version: str) -> None:
    from mlflow import MlflowClient

    from serving.config import ServingConfig

    names = ServingConfig.from_env().names
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in (names.win_model, names.slip_model):
        client.set_registered_model_alias(name, names.champion_alias, version)


async def _window(url: str, payload: bytes, headers: dict, clients: int, seconds: float,
                  switch_to: str | None, uri: str) -> dict:
    """One load window; with ``switch_to``, move the aliases and call the reload one second in."""
    connections = [Connection(url, headers) for _ in range(clients)]
    answers: list[tuple[int, float, float, bytes]] = []  # (client, sent at, ms, win version)
    errors: list[str] = []
    call: dict = {}
    started = time.perf_counter()
    deadline = started + seconds

    async def client(k: int, connection: Connection) -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                status, body = await connection.post("/score", payload)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                await connection.close()
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if status != 200:
                errors.append(f"{status} {body[:200]!r}")
                continue
            match = WIN_VERSION.search(body)
            answers.append((k, sent - started, (time.perf_counter() - sent) * 1000, match.group(1) if match else b"?"))

    async def switch() -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(promote, uri, switch_to)
        call["at"] = time.perf_counter() - started
        reloader = Connection(url, headers)
        try:
            status, body = await reloader.post("/admin/reload", b"")
        finally:
            await reloader.close()
        call["status"], call["answer"] = status, json.loads(body)
        call["answered"] = time.perf_counter() - started

    try:
        for connection in connections[:4]:  # warm-up, outside the window's numbers
            await connection.post("/score", payload)
        tasks = [client(k, c) for k, c in enumerate(connections)]
        if switch_to is not None:
            tasks.append(switch())
        await asyncio.gather(*tasks)
    finally:
        for connection in connections:
            await connection.close()
    return summarise(answers, errors, call, switch_to, clients)


def summarise(answers: list, errors: list, call: dict, switch_to: str | None, clients: int) -> dict:
    import numpy as np

    latencies = [ms for _, _, ms, _ in answers]
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    result = {"requests": len(answers), "errors": len(errors), "p50": p50, "p95": p95, "p99": p99,
              "max": max(latencies), "old_after_call_s": None, "switched": None, "error_samples": errors[:3]}
    if switch_to is not None:
        new = switch_to.encode()
        old_after = [sent for _, sent, _, version in answers if version != new and sent >= call["at"]]
        result["old_after_call_s"] = (max(old_after) - call["at"]) if old_after else 0.0
        last = {}
        for k, sent, _, version in sorted(answers, key=lambda a: a[1]):
            last[k] = version
        result["switched"] = len(last) == clients and set(last.values()) == {new} and call.get("status") == 200
        result["reload_call_s"] = call["answered"] - call["at"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo/export"), help="export folder for the deals")
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one load window")
    parser.add_argument("--rounds", type=int, default=3, help="steady + switch window pairs")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines about the temporary store
    source = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    payload = json.dumps(build_bodies(args.data, (1,))[1]).encode()
    token = secrets.token_hex(16)
    headers = {"authorization": f"Bearer {token}"}

    from serving.process import free_port, stop_server

    with tempfile.TemporaryDirectory(prefix="dealrisk-bench-reload-") as tmp:
        folder = Path(tmp)
        uri = copy_champion(source, folder)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        os.environ.update(MLFLOW_TRACKING_URI=uri, DEALRISK_API_TOKEN=token, DEALRISK_RELOAD_SECONDS="0")
        dealrisk = str(Path(sys.executable).parent / "dealrisk")
        process = start_process([dealrisk, "serve", "--port", str(port)], f"{url}/readyz", folder / "serve.log")
        rows, steady, switching = [], [], []
        try:
            current = "1"
            for round_ in range(1, args.rounds + 1):
                for kind in ("steady", "switch"):
                    target = None if kind == "steady" else ("2" if current == "1" else "1")
                    result = asyncio.run(_window(url, payload, headers, args.clients, args.seconds, target, uri))
                    if target is not None:
                        current = target
                        if not result["switched"]:
                            raise SystemExit(f"round {round_}: the switch to v{target} did not reach every client: "
                                             f"{result}\n{(folder / 'serve.log').read_text()[-3000:]}")
                    (steady if target is None else switching).append(result)
                    rows.append([round_, kind if target is None else f"switch to v{target}", result["requests"],
                                 result["errors"], f"{result['p50']:.1f}", f"{result['p95']:.1f}",
                                 f"{result['p99']:.1f}", f"{result['max']:.0f}",
                                 "-" if target is None else f"{result['reload_call_s']:.1f}",
                                 "-" if target is None else f"{result['old_after_call_s']:.1f}"])
        finally:
            stop_server(process)
    print_table(f"/score latency (ms), {args.clients} clients, {args.seconds:g} s windows; switch: aliases moved and "
                "POST /admin/reload 1 s into the window",
                ["round", "window", "requests", "errors", "p50", "p95", "p99", "max", "reload call s",
                 "old version answered until s"], rows)

    import numpy as np

    ratio_rows = []
    for key in ("p50", "p95", "p99", "max"):
        a = float(np.median([r[key] for r in steady]))
        b = float(np.median([r[key] for r in switching]))
        ratio_rows.append([key, f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}"])
    ratio_rows.append(["errors", sum(r["errors"] for r in steady), sum(r["errors"] for r in switching), "-"])
    print_table(f"medians over {args.rounds} rounds", ["", "steady", "switch", "switch / steady"], ratio_rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
