"""Serving settings as data: defaults here, overrides from the environment (secrets included).

Nothing is read at import time; ``ServingConfig.from_env()`` is called when the service starts.

| variable | default | meaning |
|---|---|---|
| ``MLFLOW_TRACKING_URI`` | ``sqlite:///mlflow.db`` | MLflow store holding the registered models |
| ``DEALRISK_WIN_MODEL``, ``DEALRISK_SLIP_MODEL`` | ``deal-win``, ``deal-slip`` | registered model names served (``features.model.names``) |
| ``DEALRISK_CHAMPION_ALIAS`` | ``champion`` | the alias served |
| ``DEALRISK_API_TOKEN`` | unset | when set, scoring routes require ``Authorization: Bearer <token>`` |
| ``DEALRISK_MAX_DEALS`` | ``2000`` | most deals in one request (413 beyond) |
| ``DEALRISK_MAX_BODY_BYTES`` | ``33554432`` | largest request body in bytes (413 beyond); also the most an uploaded Parquet part may decode to |
| ``DEALRISK_MAX_TABLE_ROWS`` | ``250000`` | most rows in one uploaded event table of ``/score/tables`` (the deals table: ``DEALRISK_MAX_DEALS``), counted from the Parquet footer or the CSV's line ends before the table is read (413 beyond); a table at the limit takes 11-22 MiB as CSV (44-87 bytes a row in generated exports), so it fits the body limit |
| ``DEALRISK_MAX_DEAL_EVENTS`` | ``20000`` | most stage_history, field_history, contacts and activities rows of one deal together, on ``/score`` and ``/score/tables`` (413 beyond; /score's schema allows 20000 activities a deal) |
| ``DEALRISK_WARNING_THRESHOLDS`` | unset | JSON object overriding ``features.model.grades.WarningThresholds`` |
| ``DEALRISK_LOG_REQUESTS`` | ``false`` | log deal ids of scored requests (contents are never logged) |
| ``DEALRISK_BATCH_LINGER_MS`` | ``3`` | under concurrent load, how long a batch may wait for more requests (0: never) |
| ``DEALRISK_STORE_WRITE`` | ``off`` | ``on``: every scored batch of ``/score`` and ``/score/tables`` is also written to the score store (``portfolio.store``), so CRM calls build the history ``dealrisk rank`` reads; the service refuses to start when the store cannot be opened |
| ``DEALRISK_STORE_URL`` | ``sqlite:///data/scores.db`` | the score store (SQLAlchemy URL; ``postgresql://...`` for a server) |
| ``DEALRISK_PAGE_EXPORT`` | unset | an export folder the managers' page (``serving.page``) reads for the funnel view and the deals' decision chains; without it the funnel is not shown and the decision chain comes from the stored warnings and factors |
| ``DEALRISK_FAIR_ACCEPT`` | ``on`` | ``on``: the workers take turns accepting connections (``serving.service.fair_accept``); ``off``: asyncio's own accept. Each worker logs at start-up whether it is active and, if not, why |
| ``DEALRISK_CONNECTION_SECONDS`` | ``3`` | a kept-alive connection this many seconds old is closed after its next answer (``Connection: close``; the client reconnects through the fair accept), so a worker restarted after a crash gets its share of the clients again within seconds (``serving.traffic.WorkerConnections``); ``0``: connections stay open until the client or the 5 s idle timeout closes them |
| ``DEALRISK_METRICS_TOKEN`` | ``off`` | ``on``: ``GET /metrics`` needs ``Authorization: Bearer <DEALRISK_API_TOKEN>`` too (401 otherwise; for Prometheus's ``authorization`` scrape setting); refused at start-up without a token set |
| ``DEALRISK_MAPPING`` | unset | a YAML name-mapping file (the one ``--mapping`` takes: a CRM's own stage, role, ... names), added to the shipped default for every request; read and checked at start-up |
| ``DEALRISK_RELOAD_SECONDS`` | ``60`` | how often each worker re-reads the champion aliases and, when they moved, loads the new pair and switches to it without a restart (``serving.reload``); ``0``: never on a schedule (``POST /admin/reload`` still works) |
| ``DEALRISK_RELOAD_WITHOUT_TOKEN`` | ``off`` | ``on``: ``POST /admin/reload`` answers without a token when ``DEALRISK_API_TOKEN`` is unset (only on a host that only trusted users reach); ``off``: refused (403) until a token is set |
| ``DEALRISK_SERVICE_DIR`` | unset | set by ``dealrisk serve`` for its workers: the folder of this one service start (its Prometheus files, the workers' reload requests); removed when the service stops |
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from features.contract.mapping import MappingError, NameMapping, load_mapping
from features.model.grades import ExplainConfig, WarningThresholds
from features.model.names import RegisteredNameError, RegisteredNames
from serving.limits import RequestLimits

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# Spellings accepted for an on/off setting.
SWITCHES = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


class ConfigError(ValueError):
    """A serving setting from the environment is invalid."""


@dataclass(frozen=True)
class ServingConfig:
    """Everything the service reads from its environment."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    names: RegisteredNames = field(default_factory=RegisteredNames)
    api_token: str | None = field(default=None, repr=False)
    max_deals: int = RequestLimits.max_deals  # the request size defaults: serving.limits.RequestLimits
    max_body_bytes: int = RequestLimits.max_body_bytes
    max_table_rows: int = RequestLimits.max_table_rows
    max_deal_events: int = RequestLimits.max_deal_events
    max_batch_deals: int = 1000  # concurrent requests are scored together up to this many deals
    batch_linger_ms: float = 3.0  # see serving.batcher.Coalescer
    log_requests: bool = False
    fair_accept: bool = True  # see serving.service.fair_accept
    connection_seconds: float = 3.0  # DEALRISK_CONNECTION_SECONDS: see serving.traffic.WorkerConnections; 0: never
    metrics_token: bool = False  # DEALRISK_METRICS_TOKEN: /metrics behind the bearer token (serving.guard)
    store_write: bool = False  # see serving.service.store_sink
    store_url: str | None = field(default=None, repr=False)  # None: portfolio.store's default; may hold a password
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    page_export: str | None = None  # DEALRISK_PAGE_EXPORT: see serving.page
    mapping_file: str | None = None  # DEALRISK_MAPPING as given
    # The name mapping every request is checked with: the shipped default plus ``mapping_file``;
    # None is the shipped default alone (``features.contract.check.check_tables``'s own default).
    mapping: NameMapping | None = field(default=None, repr=False, compare=False)
    reload_seconds: float = 60.0  # see serving.reload; 0: no scheduled re-read
    reload_without_token: bool = False  # POST /admin/reload without DEALRISK_API_TOKEN: refused unless on
    service_dir: str | None = None  # DEALRISK_SERVICE_DIR: set by dealrisk serve (serving.run)

    @property
    def limits(self) -> RequestLimits:
        """The size limits of one request (``serving.limits``)."""
        return RequestLimits(max_deals=self.max_deals, max_table_rows=self.max_table_rows,
                             max_deal_events=self.max_deal_events, max_body_bytes=self.max_body_bytes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "ServingConfig":
        """Read settings from ``environ`` (default ``os.environ``); raise ``ConfigError`` naming a bad one."""
        env = os.environ if environ is None else environ

        def positive_int(name: str, default: int) -> int:
            raw = env.get(name)
            if raw in (None, ""):
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
            if value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
            return value

        raw_linger = env.get("DEALRISK_BATCH_LINGER_MS")
        try:
            linger = cls.batch_linger_ms if raw_linger in (None, "") else float(raw_linger)
        except ValueError:
            linger = -1.0
        if not 0 <= linger <= 1000:
            raise ConfigError(f"DEALRISK_BATCH_LINGER_MS must be a number of milliseconds from 0 to 1000, got {raw_linger!r}")
        raw_fair = env.get("DEALRISK_FAIR_ACCEPT")
        fair = cls.fair_accept if raw_fair in (None, "") else SWITCHES.get(raw_fair.strip().lower())
        if fair is None:
            raise ConfigError(f"DEALRISK_FAIR_ACCEPT must be on or off, got {raw_fair!r}")
        raw_connection = env.get("DEALRISK_CONNECTION_SECONDS")
        try:
            connection_seconds = cls.connection_seconds if raw_connection in (None, "") else float(raw_connection)
        except ValueError:
            connection_seconds = -1.0
        if not 0 <= connection_seconds <= 86400:
            raise ConfigError("DEALRISK_CONNECTION_SECONDS must be a number of seconds from 0 (never close) to 86400, "
                              f"got {raw_connection!r}")
        raw_metrics = env.get("DEALRISK_METRICS_TOKEN")
        metrics_token = cls.metrics_token if raw_metrics in (None, "") else SWITCHES.get(raw_metrics.strip().lower())
        if metrics_token is None:
            raise ConfigError(f"DEALRISK_METRICS_TOKEN must be on or off, got {raw_metrics!r}")
        if metrics_token and not env.get("DEALRISK_API_TOKEN"):
            raise ConfigError("DEALRISK_METRICS_TOKEN=on needs DEALRISK_API_TOKEN: /metrics takes the same bearer token")
        raw_store = env.get("DEALRISK_STORE_WRITE")
        store_write = cls.store_write if raw_store in (None, "") else SWITCHES.get(raw_store.strip().lower())
        if store_write is None:
            raise ConfigError(f"DEALRISK_STORE_WRITE must be on or off, got {raw_store!r}")
        try:
            names = RegisteredNames.from_env(env)
        except RegisteredNameError as exc:
            raise ConfigError(str(exc)) from None
        mapping_file = env.get("DEALRISK_MAPPING") or None
        try:
            mapping = None if mapping_file is None else load_mapping(mapping_file)
        except MappingError as exc:
            raise ConfigError(f"DEALRISK_MAPPING: {exc}") from None
        raw_reload = env.get("DEALRISK_RELOAD_SECONDS")
        try:
            reload_seconds = cls.reload_seconds if raw_reload in (None, "") else float(raw_reload)
        except ValueError:
            reload_seconds = -1.0
        if not 0 <= reload_seconds <= 86400:
            raise ConfigError(f"DEALRISK_RELOAD_SECONDS must be a number of seconds from 0 (off) to 86400, got {raw_reload!r}")
        raw_open = env.get("DEALRISK_RELOAD_WITHOUT_TOKEN")
        reload_without_token = (cls.reload_without_token if raw_open in (None, "")
                                else SWITCHES.get(raw_open.strip().lower()))
        if reload_without_token is None:
            raise ConfigError(f"DEALRISK_RELOAD_WITHOUT_TOKEN must be on or off, got {raw_open!r}")
        raw_thresholds = env.get("DEALRISK_WARNING_THRESHOLDS")
        try:
            thresholds = WarningThresholds.from_dict(json.loads(raw_thresholds) if raw_thresholds else None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"DEALRISK_WARNING_THRESHOLDS: {exc}") from None
        return cls(
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI,
            names=names,
            api_token=env.get("DEALRISK_API_TOKEN") or None,
            max_deals=positive_int("DEALRISK_MAX_DEALS", cls.max_deals),
            max_body_bytes=positive_int("DEALRISK_MAX_BODY_BYTES", cls.max_body_bytes),
            max_table_rows=positive_int("DEALRISK_MAX_TABLE_ROWS", cls.max_table_rows),
            max_deal_events=positive_int("DEALRISK_MAX_DEAL_EVENTS", cls.max_deal_events),
            log_requests=(env.get("DEALRISK_LOG_REQUESTS", "").lower() in ("1", "true", "yes")),
            batch_linger_ms=linger,
            fair_accept=fair,
            connection_seconds=connection_seconds,
            metrics_token=metrics_token,
            store_write=store_write,
            store_url=(env.get("DEALRISK_STORE_URL") or "").strip() or None,
            explain=ExplainConfig(warnings=thresholds),
            page_export=(env.get("DEALRISK_PAGE_EXPORT") or "").strip() or None,
            mapping_file=mapping_file,
            mapping=mapping,
            reload_seconds=reload_seconds,
            reload_without_token=reload_without_token,
            service_dir=env.get("DEALRISK_SERVICE_DIR") or None,
        )
