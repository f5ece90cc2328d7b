"""Start and stop a local server process (``dealrisk serve``) for the benchmarks and end-to-end tests.

A server runs in a session (process group) of its own, so stopping it reaches BentoML's workers
too: SIGTERM to the group, SIGKILL if it has not exited after 30 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], ready_url: str, log: Path, env: dict | None = None, cwd: Path | None = None,
                 timeout: float = 180.0) -> subprocess.Popen:
    """Start ``command`` (output to ``log``) and wait until ``ready_url`` answers 200.

    Raises ``RuntimeError`` with the end of the log if the server exits or is not ready within
    ``timeout`` seconds (it is stopped first).
    """
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {' '.join(command)}\n{Path(log).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as answer:
                if answer.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"server not ready after {timeout:.0f} s: {' '.join(command)}\n{Path(log).read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    """Stop a server started by ``start_server`` and all its workers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def worker_pids(server_pid: int) -> dict[int, int]:
    """BentoML's worker processes under a server started by ``start_server``: worker index -> pid (Linux /proc).

    The workers are the server's children whose command line carries ``--worker-id N``; a worker
    killed and restarted by BentoML's process manager shows with its new pid.
    """
    workers: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == server_pid and b"--worker-id" in arguments:
            index = arguments.index(b"--worker-id") + 1
            if index < len(arguments) and arguments[index].isdigit():
                workers[int(arguments[index])] = int(entry.name)
    return workers
