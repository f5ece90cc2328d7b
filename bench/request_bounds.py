"""Decompression bombs against a real ``dealrisk serve``: time to answer and the workers' memory.

Usage (MLFLOW_TRACKING_URI pointing at a store with champion models, e.g. after ``make demo``)::

    python bench/request_bounds.py
    python bench/request_bounds.py --code /path/to/an/older/checkout   # the same against other code

``dealrisk serve`` is started on a free 127.0.0.1 port with the code of ``--code`` (default: this
checkout; ``PYTHONPATH`` points there), warmed with ``/score/tables`` uploads of the README's example
deal, then sent ``--uploads`` bombs of each kind on fresh connections (so both workers get some):
an ``activities`` Parquet part of ``--rows`` identical rows (a few dozen KiB) and a CSV part of
250,001 rows of empty cells. Prints, per bomb, the statuses and answer times against the example
upload's in the same run (the ratio), then each process's resident memory before the bombs and a
few seconds after the last. The server is stopped at the end; the store is only read.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.serve import print_table
from serving.process import free_port, start_server, stop_server
from serving.request import tables_from_body
from serving.schemas import EXAMPLE_REQUEST


def parquet_bomb(rows: int) -> bytes:
    """An activities table of ``rows`` identical rows, every contract column present."""
    def same(value: str) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([value]))

    table = pa.table({"activity_id": same("X-1"), "deal_id": same("D-1001"), "contact_id": same("C-1"),
                      "type": same("call"), "direction": same("outbound"), "occurred_at": same("2026-03-05T15:00:00Z"),
                      "duration_min": pa.array(np.full(rows, 30.0))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def csv_bomb(rows: int) -> bytes:
    return b"activity_id,deal_id,contact_id,type,direction,occurred_at,duration_min\n" + b",,,,,,\n" * rows


def tree_rss_mib(root: int) -> dict[int, tuple[str, float]]:
    """Resident memory (MiB) and command of ``root`` and each of its descendants (Linux /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree = {root}
    while more := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= more
    out = {}
    for pid in sorted(tree):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            role = "worker" if any(b"_bentoml_impl" in part for part in command) else "server"
            out[pid] = (role, int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
        except (OSError, IndexError, ValueError):
            continue
    return out


def timed_upload(url: str, files: dict, data: dict | None = None) -> tuple[int, float, str]:
    """Status, seconds and the start of the answer of one upload on a fresh connection."""
    start = time.perf_counter()
    answer = httpx.post(f"{url}/score/tables", files=files, data=data or {}, timeout=600)
    return answer.status_code, time.perf_counter() - start, answer.text[:90]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose serving code runs (default: this one)")
    parser.add_argument("--uploads", type=int, default=4, help="bombs of each kind")
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the Parquet bomb")
    args = parser.parse_args(argv)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise SystemExit("set MLFLOW_TRACKING_URI to a store with champion models (e.g. after make demo)")
    code = args.code.resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")} | {"PYTHONPATH": str(code)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="dealrisk-bench-bounds-")) / "serve.log"
    command = [str(Path(sys.executable).parent / "dealrisk"), "serve", "--port", str(port)]
    try:
        server = start_server(command, f"{url}/readyz", log, env=env, cwd=code)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    try:
        example = {name: (f"{name}.csv", frame.to_csv(index=False).encode())
                   for name, frame in tables_from_body(EXAMPLE_REQUEST).items()}
        as_of = {"as_of": EXAMPLE_REQUEST["as_of"]}
        baseline = []
        for _ in range(2 * args.uploads):
            status, seconds, text = timed_upload(url, example, as_of)
            if status != 200:
                raise SystemExit(f"the example upload answered {status}: {text}")
            baseline.append(seconds)
        time.sleep(2)
        before = tree_rss_mib(server.pid)
        bombs = {f"Parquet, {args.rows:,} rows": ("activities.parquet", parquet_bomb(args.rows)),
                 "CSV, 250,001 rows": ("activities.csv", csv_bomb(250_001))}
        rows = [["example upload", f"{len(example['deals'][1]) + len(example['activities'][1]):,} B", "200",
                 f"{statistics.median(baseline) * 1000:.0f}", f"{max(baseline) * 1000:.0f}", "1.0", ""]]
        for name, part in bombs.items():
            answers = [timed_upload(url, {"deals": example["deals"], "activities": part}) for _ in range(args.uploads)]
            times = [seconds for _, seconds, _ in answers]
            rows.append([name, f"{len(part[1]):,} B", ",".join(sorted({str(s) for s, _, _ in answers})),
                         f"{statistics.median(times) * 1000:.0f}", f"{max(times) * 1000:.0f}",
                         f"{statistics.median(times) / statistics.median(baseline):.1f}", answers[0][2]])
        time.sleep(3)
        after = tree_rss_mib(server.pid)
    finally:
        stop_server(server)
    print(f"code: {code}")
    print_table("Answers (ms; ratio: median against the example upload's)",
                ["upload", "size", "status", "median", "max", "ratio", "answer"], rows)
    memory = [[pid, role, f"{mib:.0f}", f"{after[pid][1]:.0f}", f"{after[pid][1] - mib:+.0f}"]
              for pid, (role, mib) in before.items() if pid in after]
    print_table("Resident memory (MiB), before the bombs and 3 s after the last",
                ["pid", "process", "before", "after", "growth"], memory)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
