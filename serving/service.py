"""The BentoML scoring service: ``POST /score`` and ``GET /model`` over the champion models.

Start it with ``dealrisk serve`` or ``bentoml serve serving.service:DealRiskService``. It listens
on 127.0.0.1:3000 by default, reads the MLflow store from ``MLFLOW_TRACKING_URI`` (default
``sqlite:///mlflow.db``) and refuses to start without readable ``champion`` models. BentoML's
``/healthz``, ``/readyz``, ``/livez``, ``/metrics`` and ``/docs.json`` stay on.

The service is thin: parsing is pydantic (``serving.schemas``), limits and auth are an ASGI
middleware (``serving.guard``), and scoring is ``serving.scoring.score_requests``, which runs the
deals of a request - and of the requests queued meanwhile (``serving.batcher``) - as one
vectorised batch through training's feature and prediction code. A plain (non-batchable) BentoML
endpoint: BentoML's adaptive batching sheds load with 503s and hangs on DataFrame inputs.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import os
import signal
import sys
from asyncio.base_events import Server
from asyncio.selector_events import BaseSelectorEventLoop

import bentoml
from bentoml._internal.context import server_context
from fastapi import FastAPI
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from features.contract.violations import shown_text
from features.pointintime.definitions import FEATURES_BY_NAME
from portfolio.store import ScoreStore, StoreError
from serving.batcher import ARRIVALS, Coalescer
from serving.config import ConfigError, ServingConfig
from serving.guard import PAGE_PATH, RequestGuard
from serving.loader import ChampionError
from serving.operations import ClientErrorLog, OpenAPIInfo, quiet_client_error_tracebacks
from serving.page import page_app
from serving.reload import ChampionReloader, ReloadAnswer, load_pair, reload_refusal
from serving.schemas import (
    TABLES_UPLOAD_OPENAPI,
    ModelInfo,
    ScoreRequest,
    ScoreResponse,
)
from serving.scoring import (
    TABLE_PARTS,
    Problem,
    RequestError,
    ScoreSink,
    TableRequest,
    check_deal_events,
    dump_response,
    score_request,
    score_requests,
    score_tables,
    table_request,
)
from serving.traffic import WorkerConnections, install_route_labels

logger = logging.getLogger("dealrisk.serving")

info_app = FastAPI(title="dealrisk model info", docs_url=None, redoc_url=None, openapi_url=None)
# The managers' page (serving.page): reads the score store, not the models; settings read at its first request.
manager_page = page_app()


@bentoml.service(
    name="dealrisk",
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": 120},
    workers=2,
)
@bentoml.asgi_app(info_app, path="/")
@bentoml.asgi_app(manager_page, path=PAGE_PATH)
class DealRiskService:
    """Explained win-probability and slip-risk scores for open deals."""

    def __init__(self) -> None:
        quiet_client_error_tracebacks()
        try:
            self.config = ServingConfig.from_env()
            # The champion pair behind one reference: swapped whole by a reload (serving.reload).
            self.reloader = ChampionReloader(
                load_pair(self.config, model_info), self.config, functools.partial(load_pair, self.config, model_info),
                worker=server_context.worker_index, on_switch=freeze_startup_objects,
            )
            self.sink = store_sink(self.config)
        except (ChampionError, ConfigError, StoreError, ValueError) as exc:
            logger.critical("dealrisk: cannot start: %s", exc)
            stop_server_on_startup_failure()
            raise
        self.batcher = Coalescer(
            functools.partial(score_current, self.reloader, self.config, sink=self.sink), self.config.max_batch_deals,
            on_batch=record_batch,
            arrivals=ARRIVALS, linger_seconds=self.config.batch_linger_ms / 1000,
        )
        freeze_startup_objects()
        versions = self.reloader.champion.versions
        logger.info(
            "dealrisk: serving %s from %s", self.config.names.describe(versions), self.config.tracking_uri,
        )
        if server_context.worker_index is not None:
            log_fair_accept(self.config.fair_accept, server_context.worker_index, running_loop())

    @bentoml.api(route="/score")
    async def score(self, request: ScoreRequest, /) -> ScoreResponse:
        """Score one or many open deals with their histories.

        For each deal: calibrated win probability (a probability, not a rank), score 1-99, grade
        A-D, slip probability, risk level, value at risk, top 5 factors raising and lowering the
        win probability in plain sentences, rule-based warnings and the model versions.
        """
        if len(request.deals) > self.config.max_deals:
            return too_many_deals(len(request.deals), self.config.max_deals)
        try:
            check_deal_events(request.deals, self.config.max_deal_events)
        except RequestError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        return http_response(await self.batcher.submit(request), self.config, len(request.deals))

    @info_app.post(
        "/score/tables",
        response_model=ScoreResponse,
        summary="Score open deals sent as the contract's tables (CSV or Parquet files)",
        openapi_extra=TABLES_UPLOAD_OPENAPI,
    )
    async def score_tables(self, request: Request) -> Response:
        """Score many deals sent as the data contract's tables instead of nested JSON (nightly batches).

        ``multipart/form-data`` with one part per table (``deals`` required; ``stage_history``,
        ``field_history``, ``contacts``, ``activities`` optional), each a CSV file with a header
        row or a Parquet file, plus an optional ``as_of``. The same contract check, features and
        explanations as ``POST /score``; problems name the table, column and row, counted from 1 with
        the header not counted (as ``dealrisk validate`` counts), e.g. ``activities[row 17].type``. The answer is the same as ``/score``'s, deals in table order.

        Each table's rows and columns are read from its CSV header and line ends or its Parquet
        footer before a row is parsed: a part over ``DEALRISK_MAX_TABLE_ROWS`` (the deals over
        ``DEALRISK_MAX_DEALS``), or Parquet data unpacking to more than the body limit, is a 413
        naming the part and the limit; a column outside the contract is a 422. A deal's events
        together are limited as on ``/score`` (``DEALRISK_MAX_DEAL_EVENTS``), and every text cell
        follows ``/score``'s rule for ids and text (``serving.limits``).
        """
        try:
            upload = table_request(*await read_upload(request, self.config.max_body_bytes), self.config.limits)
        except RequestError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        return http_response(await self.batcher.submit(upload), self.config, 0)

    @info_app.get("/model", response_model=ModelInfo, summary="Champion model versions, metrics and features")
    def model(self) -> ModelInfo:
        """Model versions, training date, headline metrics, feature list and thresholds in use."""
        return self.reloader.champion.info

    @info_app.post(
        "/admin/reload",
        response_model=ReloadAnswer,
        summary="Load the pair the champion aliases name now, without a restart",
        responses={401: {"description": "Missing or wrong bearer token"},
                   403: {"description": "No DEALRISK_API_TOKEN set (and DEALRISK_RELOAD_WITHOUT_TOKEN is off)"},
                   500: {"description": "The new pair could not be loaded; the old one still serves (error says why)"}},
    )
    async def reload(self, request: Request) -> Response:
        """Re-read the champion aliases and, when they moved, load the new pair and switch to it.

        The worker that gets the call loads the pair whole (both bundles, checked to fit together
        and to score the example request) and then switches; a failed load keeps the old pair.
        The other workers follow within about a second (``dealrisk serve``) or at their next
        scheduled check (``DEALRISK_RELOAD_SECONDS``); until then they may serve the old pair, and
        each answer's ``model_versions`` says which. Needs the bearer token when
        ``DEALRISK_API_TOKEN`` is set; refused without one unless ``DEALRISK_RELOAD_WITHOUT_TOKEN=on``.
        """
        refusal = reload_refusal(self.config, request.headers.get("authorization"))
        if refusal is not None:
            status, message = refusal
            return JSONResponse({"error": message}, status_code=status,
                                headers={"www-authenticate": "Bearer"} if status == 401 else None)
        others = self.reloader.request_all()
        outcome = await asyncio.to_thread(self.reloader.reload, "POST /admin/reload")
        answer = outcome.answer()
        if outcome.error is None:
            answer["message"] += ("; the other workers check within about a second" if others else
                                  f"; other workers look at their next scheduled check "
                                  f"(DEALRISK_RELOAD_SECONDS={self.config.reload_seconds:g}; 0: never)")
        return JSONResponse(answer, status_code=500 if outcome.error else 200)

    @bentoml.on_startup
    def start_reloading(self) -> None:
        """Re-read the champion aliases on a schedule, and follow other workers' reload calls."""
        self.reloader.start()

    @bentoml.on_shutdown
    def stop_reloading(self) -> None:
        self.reloader.stop()


@functools.cache
def _batch_metrics() -> tuple:
    """Prometheus histograms of the scoring batches (on ``/metrics``), created once per process."""
    # Imported here, not at module level: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when it
    # is imported, and BentoML must set that up first (see bentoml's PrometheusClient).
    from prometheus_client import Histogram

    sizes = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000)
    return (
        Histogram("dealrisk_batch_requests", "Requests scored together in one batch", buckets=sizes),
        Histogram("dealrisk_batch_deals", "Deals scored together in one batch", buckets=sizes),
        Histogram("dealrisk_batch_seconds", "Time to score one batch (features, models, explanations)",
                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
    )


def record_batch(requests: int, deals: int, seconds: float) -> None:
    """Observe one scored batch in the Prometheus histograms."""
    batch_requests, batch_deals, batch_seconds = _batch_metrics()
    batch_requests.observe(requests)
    batch_deals.observe(deals)
    batch_seconds.observe(seconds)


def freeze_startup_objects() -> None:
    """Move everything loaded at startup out of the garbage collector's sight (``gc.freeze``).

    A worker holds ~360k objects after importing BentoML, MLflow and pandas and loading the
    models; a full collection walks all of them (~200 ms, measured) and struck every ~20 s of
    scoring, which showed as 200 ms outliers in the latency benchmark. Frozen, they are never
    collected (they live as long as the worker anyway) and a full collection takes ~1 ms.
    """
    gc.collect()
    gc.freeze()


# How long a worker waits per open connection before it accepts a new one (at most the cap).
ACCEPT_DELAY_PER_CONNECTION = 0.0005
ACCEPT_DELAY_CAP = 0.004
# The GIL switch interval in the workers (Python's default is 5 ms).
GIL_SWITCH_SECONDS = 0.001


def configure_worker_process() -> None:
    """Settings for a BentoML worker process, at import; nothing happens elsewhere (tests, scripts).

    - New connections go to the worker holding fewer (``fair_accept``, unless
      ``DEALRISK_FAIR_ACCEPT=off``). The workers share one listening socket and the kernel wakes
      them all for a new connection; the one that runs first takes it, and asyncio's accept
      handler takes every connection waiting in one go. Clients keep their connections open, so
      a pool opened at once, or one connection after another (the last worker to answer is awake
      and wins), stayed on one worker: with 8 connections on 2 workers, 8-0 in 7 of 8 trials
      opened together and 6-2 or 7-1 in 6 of 8 opened one by one, one core idle. With
      ``fair_accept``: 4-4 or 5-3 in 15 of 16 trials. Installed here, at import, because the
      worker's server must not have started listening yet; ``DealRiskService.__init__`` logs
      whether it is active in the running loop (``log_fair_accept``).
    - The GIL is handed over every 1 ms instead of 5 ms. While the scoring thread runs a batch,
      the event loop waits for the GIL to read the next requests and write answers; with 5 ms
      those waits made the tail. Single-deal p99 at 8 clients, 7 interleaved rounds: 36-45 ms
      (all under 50) against 37-56 ms (3 of 7 over 50) with the default; throughput within the
      noise (mean 283 vs 286 req/s at 8 clients, 480 vs 502 at 32).
    - The service's own INFO lines reach the server log: BentoML sets the root logger to WARNING,
      which would drop the start-up lines and ``DEALRISK_LOG_REQUESTS``' counts.
    - BentoML's request metrics are labelled by route template, not by the raw path
      (``serving.traffic.install_route_labels``: before the worker builds its app), one line says so.
    """
    if server_context.worker_index is None:
        return
    logging.getLogger("dealrisk").setLevel(logging.INFO)
    labelled, status = install_route_labels()
    logger.log(logging.INFO if labelled else logging.WARNING, "dealrisk: worker %s: %s", server_context.worker_index, status)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    try:
        enabled = ServingConfig.from_env().fair_accept
    except ConfigError:
        return  # DealRiskService.__init__ reads the settings again and stops the server naming the bad one
    install_fair_accept(enabled)


def install_fair_accept(enabled: bool) -> None:
    """Put ``fair_accept`` on asyncio's selector event loops when ``enabled``; a no-op when already there.

    A handler ``fair_accept`` refuses (asyncio's private API changed) is left as it is;
    ``fair_accept_status`` names the reason in the start-up log.
    """
    if not enabled:
        return
    try:
        BaseSelectorEventLoop._accept_connection = fair_accept(BaseSelectorEventLoop._accept_connection)
    except TypeError:
        pass  # reported by log_fair_accept at start-up


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def fair_accept_status(enabled: bool, loop: asyncio.AbstractEventLoop | None) -> tuple[bool, str]:
    """Whether ``fair_accept`` handles the connections of ``loop``, and a sentence saying so or why not.

    The patch lives on asyncio's private selector-loop API, so it is silently bypassed by another
    event loop (uvicorn picks uvloop whenever uvloop is installed) or a changed asyncio; this
    names which.
    """
    if not enabled:
        return False, "fair_accept inactive (DEALRISK_FAIR_ACCEPT=off): asyncio's own accept, connections unbalanced"
    if loop is None:
        return False, "fair_accept inactive (no event loop running at start-up)"
    loop_class = type(loop)
    name = f"{loop_class.__module__}.{loop_class.__qualname__}"
    if not isinstance(loop, BaseSelectorEventLoop):
        return False, (f"fair_accept inactive (the event loop is {name}, not asyncio's selector loop; "
                       "uvicorn runs uvloop when it is installed): connections unbalanced")
    handler = loop_class._accept_connection
    if getattr(handler, "fair", False):
        return True, f"fair_accept active on {name}: the workers take turns accepting connections"
    try:
        fair_accept(handler)
    except TypeError as exc:
        return False, f"fair_accept inactive (asyncio's private accept API changed: {exc}): connections unbalanced"
    return False, f"fair_accept inactive ({name} has its own accept handler): connections unbalanced"


def log_fair_accept(enabled: bool, worker_index: int, loop: asyncio.AbstractEventLoop | None) -> bool:
    """Log once per worker, at start-up, whether ``fair_accept`` is active and why not; return whether it is.

    A warning when the setting is on but the patch does not apply, an info line otherwise.
    """
    active, status = fair_accept_status(enabled, loop)
    level = logging.WARNING if enabled and not active else logging.INFO
    logger.log(level, "dealrisk: worker %s: %s", worker_index, status)
    return active


def fair_accept(accept):
    """Wrap asyncio's ``_accept_connection`` so that a worker holding connections defers to others.

    The wrapper takes one connection at a time, and before taking one waits
    ``ACCEPT_DELAY_PER_CONNECTION`` for each connection it already holds (``asyncio.Server``'s
    count; at most ``ACCEPT_DELAY_CAP``), so of the workers woken together the one with fewer
    connections gets there first. A worker holding none accepts at once; the kernel's listen
    queue is not touched. ``TypeError`` if ``accept`` does not have the expected parameters or
    ``asyncio.Server`` no longer counts its connections (both private to asyncio).
    """
    if getattr(accept, "fair", False):
        return accept
    if list(inspect.signature(accept).parameters)[:6] != [
        "self", "protocol_factory", "sock", "sslcontext", "server", "backlog",
    ]:
        raise TypeError(f"unexpected accept handler {accept!r}")
    if "_active_count" not in Server.__init__.__code__.co_names:
        raise TypeError("asyncio.Server no longer counts its connections in _active_count")

    @functools.wraps(accept)
    def accept_fairly(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args, **kwargs):
        held = getattr(server, "_active_count", 0)  # this worker's open connections
        delay = min(held * ACCEPT_DELAY_PER_CONNECTION, ACCEPT_DELAY_CAP)
        if delay <= 0:
            accept(self, protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)
            return
        fd = sock.fileno()
        self.remove_reader(fd)

        def resume() -> None:
            if sock.fileno() != fd or (server is not None and not server.is_serving()):
                return  # closed meanwhile
            accept(self, protocol_factory, sock, sslcontext, server, 1, *args, **kwargs)  # if one still waits
            self.add_reader(fd, accept_fairly, self, protocol_factory, sock, sslcontext, server, backlog, *args, **kwargs)

        self.call_later(delay, resume)

    accept_fairly.fair = True
    return accept_fairly


def stop_server_on_startup_failure() -> None:
    """Under ``bentoml serve``, stop the whole server instead of respawning a worker that cannot load.

    BentoML's process manager restarts a failed worker forever; a missing champion will not
    appear by itself, so the worker asks its parent (the ``bentoml serve`` process) to stop.
    In-process use (tests, ``to_asgi``) has no worker index and only gets the exception.
    """
    if server_context.worker_index is not None:
        os.kill(os.getppid(), signal.SIGTERM)


def too_many_deals(count: int, limit: int) -> Response:
    error = RequestError(413, f"too many deals: {count} > limit {limit}; split them over several requests")
    return JSONResponse(error.to_dict(), status_code=413)


async def read_upload(request: Request, max_part_bytes: int) -> tuple[dict[str, bytes], str | None]:
    """The parts of a ``/score/tables`` upload: table name -> bytes, and the ``as_of`` text.

    ``RequestError(400)`` for a body that is not multipart/form-data or repeats a part.
    """
    limit = len(TABLE_PARTS) + 1
    try:
        form = await request.form(max_files=limit, max_fields=limit, max_part_size=max_part_bytes)
    except Exception as exc:  # noqa: BLE001 - starlette's multipart parser: MultiPartException, ValueError, ...
        raise RequestError(400, "the body is not valid multipart/form-data",
                           [Problem("body", shown_text(str(exc), 200) or type(exc).__name__)]) from None
    files: dict[str, bytes] = {}
    as_of = None
    try:
        for name, value in form.multi_items():
            if name in files or (name == "as_of" and as_of is not None):
                raise RequestError(400, "a part is sent twice", [Problem(shown_text(name), "sent more than once")])
            if name == "as_of" and isinstance(value, str):
                as_of = value
            else:
                files[name] = await value.read() if isinstance(value, UploadFile) else value.encode("utf-8")
    finally:
        await form.close()  # spooled upload files
    return files, as_of


def store_sink(config) -> ScoreSink | None:
    """With ``DEALRISK_STORE_WRITE=on``, the sink that writes every scored batch to the score store.

    The store is opened here, at start-up, so a wrong URL or an unreachable database stops the
    service with the reason (``StoreError``) instead of losing every write. Each batch is one
    ``api`` run, written in one transaction in the scoring thread (a SQLite commit takes a few
    milliseconds). A write that fails later is logged, without deal contents, and the answers
    still go out: the scores are right even when the history misses them.
    """
    if not config.store_write:
        return None
    store = ScoreStore.open(config.store_url)
    logger.info("dealrisk: writing scores to the score store %s", store.describe())

    def write(rows) -> None:
        try:
            store.write(rows, source="api", origin="service")
        except Exception as exc:  # noqa: BLE001 - never fail an answer for the history
            logger.error("dealrisk: %d scores not stored: %s", len(rows), exc)

    return write


def score_current(reloader: ChampionReloader, config, requests: list, sink: ScoreSink | None = None) -> list:
    """``score_batch`` with the pair being served when the batch starts: the reference is read once,
    so a reload that switches meanwhile never mixes two pairs in one batch."""
    return score_batch(reloader.champion.model, config, requests, sink=sink)


def score_batch(model, config, requests: list, sink: ScoreSink | None = None) -> list:
    """Score requests as one batch, answers serialised to JSON bytes (in the scoring thread).

    JSON requests are merged into one vectorised batch; table uploads are scored on their own.
    A failure of the merged batch is retried request by request, so only the request that
    causes it gets an error (never a crash). ``sink`` (``store_sink``) gets each scored
    batch's store rows.
    """
    outcomes: list = [None] * len(requests)
    merged = [k for k, request in enumerate(requests) if not isinstance(request, TableRequest)]
    if merged:
        try:
            answers = score_requests(model, [requests[k] for k in merged], config.explain, sink)
        except Exception:  # noqa: BLE001 - isolate the failing request below
            answers = [_score_alone(model, config, requests[k], sink) for k in merged]
        for k, answer in zip(merged, answers):
            outcomes[k] = answer
    for k, request in enumerate(requests):
        if isinstance(request, TableRequest):
            outcomes[k] = _score_alone(model, config, request, sink)
    out = []
    for outcome in outcomes:
        if isinstance(outcome, dict):
            try:
                outcome = dump_response(outcome)
            except (TypeError, ValueError) as exc:
                outcome = exc
        out.append(outcome)
    return out


def _score_alone(model, config, request, sink: ScoreSink | None = None):
    try:
        if isinstance(request, TableRequest):
            return score_tables(model, request, config.explain, config.max_deals, sink)
        return score_request(model, request, config.explain, sink)
    except RequestError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - reported as a 500 by http_response, logged without contents
        return exc


def http_response(outcome, config, n_deals: int) -> Response:
    """Answer bytes -> 200; a RequestError -> its 4xx; any other exception -> a logged 500."""
    if isinstance(outcome, RequestError):
        return JSONResponse(outcome.to_dict(), status_code=outcome.status)
    if isinstance(outcome, BaseException):
        logger.error("dealrisk: scoring failed with %s at %s", type(outcome).__name__, _where(outcome))
        return JSONResponse({"error": "internal error while scoring; see the server log"}, status_code=500)
    if config.log_requests:
        logger.info("dealrisk: scored %d deals", n_deals)
    return Response(outcome, media_type="application/json")


def _where(exc: BaseException) -> str:
    """File and line where an exception was raised (no values, so no deal contents)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "unknown"


def model_info(model, config) -> dict:
    """The ``GET /model`` answer for a loaded model."""
    bundle = model.bundle
    categorical = bundle.features.get("categorical", {}) or {}
    metrics = dict(bundle.metrics or {})
    trained_at = metrics.get("trained_at") or metrics.get("training_date")
    features = [
        {
            "name": name,
            "description": getattr(FEATURES_BY_NAME.get(name), "description", ""),
            "unit": getattr(FEATURES_BY_NAME.get(name), "unit", ""),
            "categorical": name in categorical,
        }
        for name in bundle.features["names"]
    ]
    versions = bundle.versions
    return ModelInfo(
        model_versions=model.versions,
        model_names={"win": versions.get("win_name", ""), "slip": versions.get("slip_name", "")},
        run_ids={"win": versions.get("win_run_id", ""), "slip": versions.get("slip_run_id", "")},
        trained_at=None if trained_at is None else str(trained_at),
        metrics=metrics,
        features=features,
        thresholds=config.explain.to_dict(),
        skipped=bundle.skipped_lines(),
    ).model_dump()


# The first added is the outermost: 4xx lines cover the guard's refusals too, and every answer,
# refusals included, names its worker and may end an old kept-alive connection (serving.traffic).
DealRiskService.add_asgi_middleware(WorkerConnections)
DealRiskService.add_asgi_middleware(ClientErrorLog)
DealRiskService.add_asgi_middleware(OpenAPIInfo)
DealRiskService.add_asgi_middleware(RequestGuard)
configure_worker_process()
