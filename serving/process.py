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
