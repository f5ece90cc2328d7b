"""Start the scoring service: check the port and the champion models, then hand over to ``bentoml serve``.

``dealrisk serve`` checks that it can listen on the port and that the champion loads, each failure
one line and exit status 1, then replaces itself (exec) with ``python -m serving.run HOST PORT``:
BentoML's ``serve`` command run in that process with a folder of this service start's own
(``DEALRISK_SERVICE_DIR``, in the temp folder) holding the workers' Prometheus files and their
reload requests (``serving.reload``). Left to itself, BentoML keeps the Prometheus files of every
service on the host in one folder under its home (``~/bentoml/prometheus_multiproc_dir``) and
empties it whenever any service starts, so a test run beside the demo wiped and mixed the demo's
counters. The folder is removed when the service stops (SIGTERM or Ctrl-C; after a SIGKILL it stays
in the temp folder).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from serving.config import ConfigError, ServingConfig

SERVICE = "serving.service:DealRiskService"


class ServeError(SystemExit):
    """The service cannot start; the message says why (exit status 1)."""


def port_problem(host: str, port: int) -> str | None:
    """Why ``bentoml serve`` could not listen on ``host:port`` now, or None when it could.

    The port is bound the way BentoML's process manager (circus) binds it, ``SO_REUSEADDR`` on
    and then closed again, so the answer is BentoML's own. It holds for this moment only: a
    process that takes the port before BentoML binds it still stops the start (``serve_here``
    then says so in one line too).
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return f"dealrisk serve: --host {host!r} is not an IP address; BentoML listens on one, e.g. 127.0.0.1 or 0.0.0.0"
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return in_use_line(host, port, "another process listens there; 'ss -ltnp' names it")
            return f"dealrisk serve: cannot listen on {host}:{port} ({exc.strerror or exc})"
    return None


def in_use_line(host: str, port: int, why: str) -> str:
    """The one line a port in use gets.

    >>> in_use_line("127.0.0.1", 3000, "another process listens there")
    'dealrisk serve: port 3000 on 127.0.0.1 is in use (another process listens there); pass --port to use another'
    """
    return f"dealrisk serve: port {port} on {host} is in use ({why}); pass --port to use another"


def check_champion() -> str:
    """Load the champion models once, so a missing or unreadable model fails here, clearly.

    Returns a one-line description of what will be served.
    """
    # Imported here, not at module level: the ``dealrisk`` CLI imports this module for every
    # command, and these pull in LightGBM and the feature code (~1.5 s); only ``serve`` needs them.
    from serving.loader import ChampionError, load_champion
    from serving.scoring import load_model

    try:
        config = ServingConfig.from_env()
        model = load_model(load_champion(config), config.mapping)
    except (ChampionError, ConfigError, ValueError) as exc:
        raise ServeError(f"dealrisk serve: cannot start: {exc}") from None
    v = model.versions
    return (
        f"{config.names.champion_alias} models: {config.names.describe(v)} "
        f"from {config.tracking_uri}"
    )


def serve_command(host: str, port: int) -> list[str]:
    """The command ``dealrisk serve`` replaces itself with: ``serve_here`` in a fresh interpreter."""
    return [sys.executable, "-m", "serving.run", host, str(port)]


def bentoml_arguments(host: str, port: int) -> list[str]:
    """The arguments of ``bentoml serve`` for this service."""
    root = str(Path(__file__).resolve().parent.parent)
    return ["serve", SERVICE, "--host", host, "--port", str(port), "--working-dir", root]


def run_serve(host: str = "127.0.0.1", port: int = 3000) -> None:
    """Check the port and the champion, then replace this process with the service on ``host:port``."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's download bars would fill the server log at every load and reload.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # One OpenMP thread per worker: LightGBM's thread pool on a one-row request costs more than
    # the prediction itself, and the service gets its parallelism from concurrent requests.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    problem = port_problem(host, port)  # before the champion: a busy port fails in a second, not after a load
    if problem is not None:
        raise ServeError(problem)
    print(check_champion(), file=sys.stderr)
    print(f"dealrisk serve: starting on http://{host}:{port} (POST /score, GET /model, /docs.json)", file=sys.stderr)
    command = serve_command(host, port)
    os.execv(command[0], command)


def use_metrics_folder(folder: Path) -> None:
    """Make BentoML keep its workers' Prometheus files in ``folder`` (before its ``serve`` starts).

    BentoML takes the folder from its configuration container (``prometheus_multiproc_dir``,
    ``$BENTOML_HOME/prometheus_multiproc_dir`` unless set), not from ``PROMETHEUS_MULTIPROC_DIR``,
    which it sets for the workers from it; its own pytest plugin sets it the same way.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.prometheus_multiproc_dir.set(str(folder))


def serve_here(host: str, port: int) -> int:
    """Run ``bentoml serve`` in this process with a service folder of its own; the exit status.

    The folder (``DEALRISK_SERVICE_DIR`` for the workers) holds the Prometheus files and the
    reload requests, and is removed when BentoML returns. A port taken after ``run_serve``
    checked it is the same one line as before the start.
    """
    folder = Path(tempfile.mkdtemp(prefix=f"dealrisk-serve-{port}-"))
    os.environ["DEALRISK_SERVICE_DIR"] = str(folder)
    try:
        use_metrics_folder(folder / "prometheus")
        print(f"dealrisk serve: metrics files in {folder / 'prometheus'} (this service's own; removed when it stops)",
              file=sys.stderr)
        from bentoml_cli.cli import cli

        try:
            cli.main(args=bentoml_arguments(host, port), prog_name="bentoml")
        except SystemExit as exit:
            return exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            print(in_use_line(host, port, "taken by another process while the service started"), file=sys.stderr)
            return 1
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(serve_here(sys.argv[1], int(sys.argv[2])))
