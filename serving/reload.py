"""Pick up a promoted champion without a restart: re-read the aliases, load the new pair whole, swap.

Each worker of the service holds its champion pair in one ``Champion`` (the loaded models and what
``GET /model`` says of them) behind one reference of a ``ChampionReloader``. A reload reads the
registry's champion aliases (a few milliseconds); when they name other versions than the pair
being served, it downloads and loads both bundles, checks that they fit together (the loader
refuses a win and a slip model trained on different features) and that the pair scores the
OpenAPI example request, and only then replaces the reference. A batch takes the reference once
(``serving.service.score_current``), so every answer comes from one whole pair, old or new, and its
``model_versions`` says which; a load that fails at any step leaves the old pair serving and is
logged with the reason.

Reloads happen on a schedule (``DEALRISK_RELOAD_SECONDS``, default 60; 0: off) in a thread of the
worker, and on ``POST /admin/reload``. BentoML runs several worker processes and a call reaches
one of them: that worker reloads at once and leaves a request in the service's folder
(``DEALRISK_SERVICE_DIR``, which ``dealrisk serve`` sets), which the other workers look for every
second. Until each worker has loaded the new pair (a second or two), workers may serve
different versions; each answer's ``model_versions`` says which. Without that folder (plain
``bentoml serve``), the other workers follow at their next scheduled check.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, Field

from serving.config import ServingConfig
from serving.loader import ChampionAliases, ChampionError, load_champion, read_champion_aliases
from serving.schemas import EXAMPLE_REQUEST, ModelVersions, ScoreRequest
from serving.scoring import LoadedModel, load_model, score_request

logger = logging.getLogger("dealrisk.serving")

# The file in the service's folder whose change asks every worker to reload.
RELOAD_REQUEST_FILE = "reload-requested"
# How often a worker looks for that file (seconds).
REQUEST_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Champion:
    """One loaded champion pair and the ``GET /model`` answer for it, replaced as one reference."""

    model: LoadedModel
    info: dict
    aliases: ChampionAliases | None = None  # the aliases as read just before this pair was loaded

    @property
    def versions(self) -> dict[str, str | None]:
        return self.model.versions


def check_pair(model: LoadedModel, config: ServingConfig) -> None:
    """Score the OpenAPI example request with ``model``; ``ChampionError`` if it cannot.

    Loading proves the files parse; this proves the pair answers, so a pair that loads but fails
    on the first request (a booster that does not match the feature list, ...) is never swapped in.
    """
    try:
        score_request(model, ScoreRequest.model_validate(EXAMPLE_REQUEST), config.explain)
    except Exception as exc:  # noqa: BLE001 - any failure keeps the old pair; the reason is logged
        raise ChampionError(f"the loaded pair cannot score the example request: {type(exc).__name__}: {exc}") from None


def load_pair(config: ServingConfig, describe: Callable[[LoadedModel, ServingConfig], dict]) -> Champion:
    """The champion the registry names now, loaded whole and checked; ``describe`` builds ``GET /model``.

    The aliases are read before loading: if they move while this loads, the next check sees them
    differ and loads again, never the other way round (a newer alias recorded with an older pair).
    """
    aliases = read_champion_aliases(config)
    model = load_model(load_champion(config), config.mapping)
    check_pair(model, config)
    return Champion(model=model, info=describe(model, config), aliases=aliases)


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did in one worker."""

    switched: bool
    versions: dict  # served after the reload
    previous: dict  # served before it
    message: str
    error: str | None = None
    worker: int | None = None

    def answer(self) -> dict:
        """The ``POST /admin/reload`` answer (``ReloadAnswer``)."""
        return {"switched": self.switched, "model_versions": self.versions, "previous_versions": self.previous,
                "worker": self.worker, "message": self.message, "error": self.error}


class ReloadAnswer(BaseModel):
    """What ``POST /admin/reload`` did in the worker that answered."""

    switched: bool = Field(description="true: this worker now serves the pair the champion aliases name; "
                                       "false: it already did, or loading failed (error says why).")
    model_versions: ModelVersions = Field(description="The pair this worker serves now.")
    previous_versions: ModelVersions = Field(description="The pair it served before the call.")
    worker: int | None = Field(default=None, description="The BentoML worker that answered (1, 2, ...).")
    message: str = Field(description="One sentence: what happened, and when the other workers follow.")
    error: str | None = Field(default=None, description="Why the new pair was not loaded (the old one still serves).")


def reload_refusal(config: ServingConfig, authorization: str | None) -> tuple[int, str] | None:
    """Why ``POST /admin/reload`` is refused (status, message), or None when it is allowed.

    A reload makes every worker download and load models: with ``DEALRISK_API_TOKEN`` set it needs
    the bearer token; without one it is refused (403) unless ``DEALRISK_RELOAD_WITHOUT_TOKEN=on``
    says the host is reached only by trusted users.

    >>> reload_refusal(ServingConfig(api_token="t"), "Bearer t") is None
    True
    >>> reload_refusal(ServingConfig(api_token="t"), None)[0], reload_refusal(ServingConfig(), None)[0]
    (401, 403)
    """
    if config.api_token is None:
        if config.reload_without_token:
            return None
        return 403, ("POST /admin/reload is refused while no DEALRISK_API_TOKEN is set: set one (the call then needs "
                     "'Authorization: Bearer <token>'), or DEALRISK_RELOAD_WITHOUT_TOKEN=on on a host only trusted "
                     "users reach")
    given = (authorization or "").encode("utf-8")
    if not hmac.compare_digest(given, f"Bearer {config.api_token}".encode()):
        return 401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')"
    return None


def _describe(versions: dict, names) -> str:
    slip = versions.get("slip")
    return f"{names.win_model} v{versions.get('win')} / {names.slip_model} " + (f"v{slip}" if slip else "absent")


class ChampionReloader:
    """The champion pair one worker serves, and the reloads that replace it.

    ``load`` returns a whole, checked ``Champion`` (``load_pair``) or raises; ``read_aliases``
    returns the aliases now. Reloads are serialised; the swap is one assignment, which readers
    (``champion``) see whole. ``on_switch`` runs after a swap (the service re-freezes the garbage
    collector's view of its long-lived objects there).
    """

    def __init__(self, champion: Champion, config: ServingConfig, load: Callable[[], Champion],
                 read_aliases: Callable[[], ChampionAliases] | None = None, worker: int | None = None,
                 on_switch: Callable[[], None] | None = None) -> None:
        self._champion = champion
        self._config = config
        self._load = load
        self._read_aliases = read_aliases or (lambda: read_champion_aliases(config))
        self._worker = worker
        self._on_switch = on_switch
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._request_file = None if config.service_dir is None else Path(config.service_dir) / RELOAD_REQUEST_FILE
        self._seen_request = self._request_stamp()

    @property
    def champion(self) -> Champion:
        return self._champion

    def _label(self) -> str:
        return "dealrisk: " + ("" if self._worker is None else f"worker {self._worker}: ")

    def reload(self, why: str = "reload") -> ReloadOutcome:
        """Load the pair the aliases name now if it is not the one served, and switch to it."""
        with self._lock:
            current = self._champion
            names = self._config.names
            try:
                aliases = self._read_aliases()
                if aliases == current.aliases:
                    return self._outcome(False, current, current, f"unchanged: already serving "
                                         f"{_describe(current.versions, names)}")
                loaded = self._load()
            except Exception as exc:  # noqa: BLE001 - a failed reload must never stop the service
                error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ChampionError) else str(exc)
                logger.error("%schampion not reloaded (%s), still serving %s: %s", self._label(), why,
                             _describe(current.versions, names), error)
                return self._outcome(False, current, current, "not reloaded: the old pair still serves", error)
            if loaded.model.bundle.versions == current.model.bundle.versions:
                self._champion = replace(current, aliases=loaded.aliases)  # the aliases moved and came back
                return self._outcome(False, current, current, f"unchanged: already serving "
                                     f"{_describe(current.versions, names)}")
            self._champion = loaded  # the switch: one reference
            if self._on_switch is not None:
                self._on_switch()
            logger.info("%schampion switched (%s): %s -> %s", self._label(), why,
                        _describe(current.versions, names), _describe(loaded.versions, names))
            return self._outcome(True, current, loaded, f"switched from {_describe(current.versions, names)} "
                                 f"to {_describe(loaded.versions, names)}")

    def _outcome(self, switched: bool, before: Champion, after: Champion, message: str,
                 error: str | None = None) -> ReloadOutcome:
        return ReloadOutcome(switched=switched, versions=after.versions, previous=before.versions,
                             message=message, error=error, worker=self._worker)

    # --- other workers: a request file in the service's folder ------------------------------------

    def _request_stamp(self) -> tuple[int, int] | None:
        if self._request_file is None:
            return None
        try:
            stat = self._request_file.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def request_all(self) -> bool:
        """Ask the other workers of this service to reload now; False when there is no service folder.

        The request is a file replaced atomically (new inode, new time), so a worker sees a change
        even within the file system's time resolution; the caller reloads this worker itself.
        """
        if self._request_file is None:
            return False
        partial = self._request_file.with_name(f"{RELOAD_REQUEST_FILE}.{os.getpid()}")
        partial.write_text(f"{os.getpid()} {time.time_ns()}\n")
        os.replace(partial, self._request_file)
        self._seen_request = self._request_stamp()
        return True

    # --- the schedule ----------------------------------------------------------------------------

    def start(self, interval: float | None = None) -> bool:
        """Reload every ``interval`` seconds (default ``DEALRISK_RELOAD_SECONDS``) and on other
        workers' requests, in a daemon thread; False when neither applies (nothing started)."""
        interval = self._config.reload_seconds if interval is None else interval
        if self._thread is not None or (interval <= 0 and self._request_file is None):
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(interval,), name="dealrisk-reload", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """End the schedule (a reload under way finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def _run(self, interval: float) -> None:
        tick = min(REQUEST_POLL_SECONDS, interval) if interval > 0 else REQUEST_POLL_SECONDS
        next_check = time.monotonic() + interval
        while not self._stop.wait(tick):
            stamp = self._request_stamp()
            if stamp != self._seen_request:
                self._seen_request = stamp
                self.reload("POST /admin/reload to another worker")
            elif interval > 0 and time.monotonic() >= next_check:
                self.reload("scheduled check")
                next_check = time.monotonic() + interval
