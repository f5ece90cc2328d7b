"""Start the scoring service: check the champion models first, then hand over to ``bentoml serve``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from serving.config import ConfigError, ServingConfig

SERVICE = "serving.service:DealRiskService"


class ServeError(SystemExit):
    """The service cannot start; the message says why (exit status 1)."""


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
        f"{config.names.champion_alias} models: {config.names.win_model} v{v['win']}, {config.names.slip_model} v{v['slip']} "
        f"from {config.tracking_uri}"
    )


def bentoml_command(host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line for this service."""
    bentoml = shutil.which("bentoml", path=str(Path(sys.executable).parent)) or shutil.which("bentoml")
    head = [bentoml] if bentoml else [sys.executable, "-m", "bentoml"]
    root = str(Path(__file__).resolve().parent.parent)
    return [*head, "serve", SERVICE, "--host", host, "--port", str(port), "--working-dir", root]


def run_serve(host: str = "127.0.0.1", port: int = 3000) -> None:
    """Check the champion, then replace this process with ``bentoml serve`` on ``host:port``."""
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # One OpenMP thread per worker: LightGBM's thread pool on a one-row request costs more than
    # the prediction itself, and the service gets its parallelism from concurrent requests.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(check_champion(), file=sys.stderr)
    print(f"dealrisk serve: listening on http://{host}:{port} (POST /score, GET /model, /docs.json)", file=sys.stderr)
    command = bentoml_command(host, port)
    os.execv(command[0], command)
