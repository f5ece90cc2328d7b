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

import functools
import logging

import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from serving.batcher import ARRIVALS, Coalescer
from serving.guard import RequestGuard
from serving.schemas import ModelInfo, ScoreRequest, ScoreResponse

logger = logging.getLogger("dealrisk.serving")

info_app = FastAPI(title="dealrisk model info", docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.service(
    name="dealrisk",
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": 120},
    workers=1,
)
@bentoml.asgi_app(info_app, path="/")
class DealRiskService:
    """Explained win-probability and slip-risk scores for open deals."""

    def __init__(self) -> None:
        from serving.config import ConfigError, ServingConfig
        from serving.loader import ChampionError, load_champion
        from serving.scoring import load_model

        try:
            self.config = ServingConfig.from_env()
            self.model = load_model(load_champion(self.config))
        except (ChampionError, ConfigError, ValueError) as exc:
            logger.critical("dealrisk: cannot start: %s", exc)
            stop_server_on_startup_failure()
            raise
        self.info = model_info(self.model, self.config)
        self.batcher = Coalescer(
            functools.partial(score_batch, self.model, self.config), self.config.max_batch_deals, on_batch=record_batch, arrivals=ARRIVALS,
        )
        logger.info(
            "dealrisk: serving %s v%s and %s v%s from %s",
            self.config.win_model_name, self.model.versions["win"],
            self.config.slip_model_name, self.model.versions["slip"], self.config.tracking_uri,
        )

    @bentoml.api(route="/score")
    async def score(self, request: ScoreRequest, /) -> ScoreResponse:
        """Score one or many open deals with their histories.

        For each deal: calibrated win probability (a probability, not a rank), score 1-99, grade
        A-D, slip probability, risk level, value at risk, top 5 factors raising and lowering the
        win probability in plain sentences, rule-based warnings and the model versions.
        """
        if len(request.deals) > self.config.max_deals:
            return too_many_deals(len(request.deals), self.config.max_deals)
        return http_response(await self.batcher.submit(request), self.config, len(request.deals))

    @info_app.get("/model", response_model=ModelInfo, summary="Champion model versions, metrics and features")
    def model(self) -> ModelInfo:
        """Model versions, training date, headline metrics, feature list and thresholds in use."""
        return self.info


@functools.cache
def _batch_metrics() -> tuple:
    """Prometheus histograms of the scoring batches (on ``/metrics``), created once per process."""
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


def stop_server_on_startup_failure() -> None:
    """Under ``bentoml serve``, stop the whole server instead of respawning a worker that cannot load.

    BentoML's process manager restarts a failed worker forever; a missing champion will not
    appear by itself, so the worker asks its parent (the ``bentoml serve`` process) to stop.
    In-process use (tests, ``to_asgi``) has no worker index and only gets the exception.
    """
    import os
    import signal

    from bentoml._internal.context import server_context

    if server_context.worker_index is not None:
        os.kill(os.getppid(), signal.SIGTERM)


def too_many_deals(count: int, limit: int) -> Response:
    from serving.scoring import RequestError

    error = RequestError(413, f"too many deals: {count} > limit {limit}; split them over several requests")
    return JSONResponse(error.to_dict(), status_code=413)


def score_batch(model, config, requests: list) -> list:
    """Score requests as one batch, answers serialised to JSON bytes (in the scoring thread).

    A failure of the batch is retried request by request, so only the request that causes it
    gets an error (never a crash).
    """
    from serving.scoring import dump_response, score_requests

    try:
        outcomes = score_requests(model, requests, config.explain)
    except Exception:  # noqa: BLE001 - isolate the failing request below
        outcomes = [_score_alone(model, config, request) for request in requests]
    out = []
    for outcome in outcomes:
        if isinstance(outcome, dict):
            try:
                outcome = dump_response(outcome)
            except (TypeError, ValueError) as exc:
                outcome = exc
        out.append(outcome)
    return out


def _score_alone(model, config, request):
    from serving.scoring import RequestError, score_request

    try:
        return score_request(model, request, config.explain)
    except RequestError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - reported as a 500 by http_response, logged without contents
        return exc


def http_response(outcome, config, n_deals: int) -> Response:
    """Answer bytes -> 200; a RequestError -> its 4xx; any other exception -> a logged 500."""
    from serving.scoring import RequestError

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
    from features.registry import FEATURES_BY_NAME

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
    ).model_dump()


DealRiskService.add_asgi_middleware(RequestGuard)
