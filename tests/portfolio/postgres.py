"""A real, throwaway PostgreSQL server for the score store's tests (slow tier).

``initdb`` into a fresh folder under /tmp, ``pg_ctl start`` on a free 127.0.0.1 port with the
socket in that folder, trust authentication for one superuser; always stopped and removed at the
end of the session. ``initdb`` refuses to run as root, so as root the server runs as the
``postgres`` user (``runuser``), which owns the folder. PostgreSQL's programs are looked up on
PATH, then in Debian's ``/usr/lib/postgresql/<version>/bin``. When they are missing the tests
FAIL, naming the fix: ``make test`` installs PostgreSQL with apt-get (``make postgres``), so a
clean CI machine runs these tests instead of skipping them. ``bench/store.py`` starts one the
same way (``start_postgres``, which raises ``PostgresError``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

SUPERUSER = "dealrisk"


class PostgresError(RuntimeError):
    """A throwaway server cannot be set up; the message says why and how to fix it."""


def postgres_bin(program: str) -> str | None:
    """Path of a PostgreSQL program (newest version first in Debian's folders), or None."""
    found = shutil.which(program)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """Run as ``postgres`` when we are root (initdb and postgres refuse root), as ourselves otherwise."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresError("running as root needs runuser to start PostgreSQL as the postgres user")
    return [runuser, "-u", "postgres", "--", *command]


def start_postgres():
    """Start a server; return (url of its ``postgres`` database, stop function); ``PostgresError``."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PostgresError("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin): "
                    "'make postgres' (part of 'make test') installs it with apt-get")
    folder = Path(tempfile.mkdtemp(prefix="dealrisk-pg-", dir="/tmp"))
    data = folder / "data"
    if os.geteuid() == 0:
        try:
            shutil.chown(folder, user="postgres", group="postgres")
        except (LookupError, PermissionError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise PostgresError(f"as root, PostgreSQL runs as the 'postgres' user, which is missing or unusable: {exc}")
    port = free_port()
    log = folder / "server.log"

    def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=timeout, check=False)

    def stop() -> None:
        try:
            run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], timeout=60)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    done = run([initdb, "-D", str(data), "-A", "trust", "-U", SUPERUSER, "--no-sync", "-E", "UTF8"])
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise PostgresError(f"initdb failed: {done.stderr[-2000:]}")
    options = f"-p {port} -k {folder} -h 127.0.0.1 -c fsync=off"
    done = run([pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"])
    if done.returncode != 0:
        text = log.read_text() if log.exists() else ""
        stop()
        raise PostgresError(f"pg_ctl start failed: {done.stderr[-1000:]} {text[-2000:]}")
    return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def postgres_server():
    """URL of the ``postgres`` database of a server started for this session (a failure, never a skip)."""
    try:
        url, stop = start_postgres()
    except PostgresError as exc:
        pytest.fail(str(exc))
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def postgres_url(postgres_server):
    """URL of a new, empty database on the session's server; dropped after the test."""
    import sqlalchemy as sa

    name = f"scores_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
