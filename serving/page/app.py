"""The managers' page: a Starlette app of server-rendered HTML, mounted by the service at ``/page``.

Views (paths below the mount):

| path | what |
|---|---|
| ``/`` | open deals ranked by value at risk, filters (owner, stage, close period, minimum amount, changed), and a header: pipeline, expected bookings this quarter against the stage table, deals per risk level |
| ``/deals/{deal_id}`` | one deal: win probability over time (SVG chart and table), factors up and down, warnings, next best actions, decision-chain roles |
| ``/team`` | per owner: pipeline, expected bookings, deals at risk, silent deals, decision-chain coverage |
| ``/forecast`` | expected bookings per month and quarter beside the stage table; stored forecasts against what was won (with ``DEALRISK_PAGE_EXPORT``) |
| ``/funnel`` | stage-to-stage conversion and days in stage by lead source and segment (needs ``DEALRISK_PAGE_EXPORT``) |
| ``/api/deals`` | the list's rows and header as JSON (same filters) |
| ``/login``, ``/logout`` | the login form when ``DEALRISK_API_TOKEN`` is set (``serving.guard`` checks every other path) |

Why server-rendered: no front-end build step and no script at all (the content security policy
forbids scripts), every view works by keyboard and in any browser, and a view's first load is one
request. The views run in Starlette's thread pool (reading the store blocks), not on the event
loop that answers ``/score``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from features.model.actions import GAIN_NOTE
from features.model.grades import RISK_LEVELS
from portfolio.forecast import (
    forecast_accuracy,
    forecast_bookings,
    stored_forecasts,
    summarise_accuracy,
    with_total,
)
from portfolio.funnel import FunnelError, quarter_start, summarise_funnel
from portfolio.rank import FilterError, money, rank_deals
from portfolio.store import StoreError
from portfolio.team import summarise_team
from serving.config import ServingConfig
from serving.guard import SESSION_COOKIE, session_value, token_matches
from serving.page.chart import history_chart
from serving.page.data import Board, ExportUnavailable, PageData
from serving.page.views import (
    DEFAULT_ROWS,
    ROW_CHOICES,
    ListQuery,
    deal_summary,
    decision_chain_from_export,
    decision_chain_from_score,
    filter_choices,
    history_points,
    pipeline_header,
)

# No script, no inline style, nothing from elsewhere, never framed.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
MAX_LOGIN_BODY = 4096
logger = logging.getLogger("dealrisk.serving")
WRONG_TOKEN_DELAY_SECONDS = 0.3  # each wrong guess at the login form waits this long
FUNNEL_QUARTERS = (1, 2, 4, 8)


# --- formatting for the templates ---------------------------------------------------------------


def _finite(value) -> bool:
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt_percent(value, digits: int = 0) -> str:
    """A probability or share as a percentage; "-" when unknown.

    >>> fmt_percent(0.4213), fmt_percent(None)
    ('42%', '-')
    """
    return f"{float(value) * 100:.{digits}f}%" if _finite(value) else "-"


def fmt_date(value) -> str:
    """A time as its UTC date; "-" when unknown."""
    return pd.Timestamp(value).strftime("%Y-%m-%d") if value is not None and not pd.isna(value) else "-"


def fmt_time(value) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M UTC") if value is not None and not pd.isna(value) else "-"


def fmt_points(value) -> str:
    """Points moved with their sign ("+4.5", "-12.0"); "" when unknown."""
    return f"{float(value):+.1f}" if _finite(value) else ""


def fmt_days(value) -> str:
    return f"{float(value):.0f}" if _finite(value) else "-"


def fmt_count(value) -> str:
    return f"{int(value):,}" if _finite(value) else "-"


def fmt_quarter(label: str) -> str:
    """``2026Q2`` -> ``2026-Q2`` (the form the close-period filter takes)."""
    return f"{label[:4]}-{label[4:]}" if isinstance(label, str) and len(label) == 6 and label[4] == "Q" else str(label)


def make_templates() -> Environment:
    env = Environment(loader=PackageLoader("serving.page", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(money=money, percent=fmt_percent, date=fmt_date, time=fmt_time, points=fmt_points,
                       days=fmt_days, num=fmt_count, quarter=fmt_quarter)
    env.globals.update(risk_levels=RISK_LEVELS, gain_note=GAIN_NOTE)
    return env


# --- the app -------------------------------------------------------------------------------------------


class PageViews:
    """The page's routes over one ``PageData``."""

    def __init__(self, data: PageData) -> None:
        self.data = data
        self.templates = make_templates()

    # helpers

    def warm_up(self) -> None:
        """Compile the templates and read the board, so the first view after start-up is quick.

        Run in a thread of its own when the service starts (``page_app``'s lifespan): a store that
        does not exist yet, or cannot be read, is left for the views to report.
        """
        for name in self.templates.list_templates(extensions=["html"]):
            self.templates.get_template(name)
        try:
            board = self.data.board()
            if len(board.trended):
                self.header(board)
        except StoreError:
            pass
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the first view its speed
            logger.warning("dealrisk: the managers' page could not warm up: %s", exc)

    def render(self, request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        config = self.data.config
        html = self.templates.get_template(template).render(
            request=request, root=root, active=template.removesuffix(".html"), auth=config.api_token is not None,
            link=lambda path, **params: link(root, path, **params), **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def unavailable(self, request: Request, exc: Exception) -> HTMLResponse:
        return self.render(request, "message.html", status=503, heading="The score store cannot be read",
                           message=str(exc))

    def board_or_message(self, request: Request) -> Board | HTMLResponse:
        """The board, or the page that says why there is none (no store yet, no scores yet)."""
        try:
            board = self.data.board()
        except StoreError as exc:
            return self.unavailable(request, exc)
        if board.trended.empty:
            return self.render(request, "message.html", heading="No scores yet",
                               message="The score store holds no scores yet. Fill it with "
                                       "'dealrisk score --data EXPORT_FOLDER'; this page shows them on the next load.")
        return board

    def header(self, board: Board) -> dict:
        key = ("board", board.last_run.get("run_id"), "header")
        return self.data.derived(key, lambda: pipeline_header(board.trended, board.as_of))

    # views

    def deals(self, request: Request) -> Response:
        board = self.board_or_message(request)
        if isinstance(board, Response):
            return board
        query = ListQuery.from_params(request.query_params)
        error = None
        try:
            ranked = rank_deals(board.trended, query.filters())
        except FilterError as exc:
            error, ranked = str(exc), rank_deals(board.trended.iloc[:0])
        shown = ranked if query.limit == 0 else ranked.head(query.limit)
        return self.render(
            request, "deals.html", status=400 if error else 200, board=board, header=self.header(board),
            query=query, error=error, ranked=ranked, rows=shown.to_dict("records"),
            has_actions=bool((ranked["next_action"] != "").any()),
            choices=self.data.derived(("board", board.last_run.get("run_id"), "choices"),
                                      lambda: filter_choices(board.trended, board.as_of)),
            row_choices=ROW_CHOICES, default_rows=DEFAULT_ROWS,
            value_at_risk=float(np.nan_to_num(ranked["value_at_risk"].to_numpy(dtype=float)).sum()),
        )

    def deals_json(self, request: Request) -> Response:
        try:
            board = self.data.board()
        except StoreError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        query = ListQuery.from_params(request.query_params)
        try:
            ranked = rank_deals(board.trended, query.filters())
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        shown = ranked if query.limit == 0 else ranked.head(query.limit)
        header = self.header(board) if len(board.trended) else {}
        body = {
            "as_of": None if board.as_of is None else board.as_of.isoformat(),
            "header": {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in header.items()},
            "total": len(ranked),
            "deals": json_records(shown),
        }
        return JSONResponse(body, headers={"cache-control": "no-store"})

    def deal(self, request: Request) -> Response:
        deal_id = request.path_params["deal_id"]
        try:
            points = history_points(self.data.deal_history(deal_id))
        except StoreError as exc:
            return self.unavailable(request, exc)
        if points.empty:
            return self.render(request, "message.html", status=404, heading=f"Deal {deal_id} not found",
                               message="The score store holds no score of this deal.")
        summary = deal_summary(points)
        latest = summary["latest"]
        chain_source, chain_note = "export", None
        try:
            export = self.data.export_data()
            contacts, activities = export.deal_tables(deal_id)
            chain = decision_chain_from_export(contacts, activities, latest["as_of"])
            chain_note = f"From the export {export.folder}: its contacts and activities up to the score's as-of."
        except ExportUnavailable as exc:
            chain_source = "score"
            chain = decision_chain_from_score(latest["factors_up"], latest["factors_down"], latest["warning_codes"])
            chain_note = (f"From the stored score only ({exc}): a role's engagement is known when it was among the top "
                          "factors, and the no_decision_maker warning says neither the decision maker nor the economic "
                          "buyer was engaged in 30 days. Set DEALRISK_PAGE_EXPORT to an export folder for every role.")
        actions = latest["actions"] if isinstance(latest["actions"], list) else []
        return self.render(
            request, "deal.html", deal_id=deal_id, summary=summary, latest=latest,
            history=points.to_dict("records"), actions=actions,
            chart=Markup(history_chart(points["as_of"].tolist(), points["win_probability"].tolist(),
                                       title=f"Win probability of deal {deal_id} over time")),
            chain=chain, chain_source=chain_source, chain_note=chain_note,
        )

    def team(self, request: Request) -> Response:
        board = self.board_or_message(request)
        if isinstance(board, Response):
            return board
        level = request.query_params.get("at_risk_level", "high")
        level = level if level in RISK_LEVELS else "high"
        team = self.data.derived(("board", board.last_run.get("run_id"), "team", level),
                                 lambda: summarise_team(board.trended, level))
        return self.render(request, "team.html", board=board, header=self.header(board), team=team.to_dict("records"),
                           level=level)

    def forecast(self, request: Request) -> Response:
        board = self.board_or_message(request)
        if isinstance(board, Response):
            return board
        as_of = board.as_of
        tables = {period: with_total(forecast_bookings(board.trended, as_of, period)).to_dict("records")
                  for period in ("quarter", "month")}
        accuracy, summary, accuracy_note = None, None, None
        try:
            export = self.data.export_data()
        except ExportUnavailable as exc:
            accuracy_note = f"Forecast accuracy needs an export newer than the scores ({exc})."
        else:
            def judge():
                history, runs = self.data.history()
                judged = forecast_accuracy(stored_forecasts(history, runs, "month"), export.export.deals, export.end,
                                           "month")
                return judged, (summarise_accuracy(judged) if len(judged) else None)

            accuracy, summary = self.data.derived(("board", board.last_run.get("run_id"), "accuracy", export.folder,
                                                   str(export.end)), judge)
            if accuracy is None or accuracy.empty:
                accuracy_note = (f"No stored forecast of a month that has ended by {fmt_time(export.end)} (the export's "
                                 "last event). Scoring earlier as-ofs ('dealrisk score --as-of ...') builds that history.")
        return self.render(
            request, "forecast.html", board=board, header=self.header(board), tables=tables,
            accuracy=None if accuracy is None or accuracy.empty else accuracy.to_dict("records"),
            summary=None if summary is None else summary.to_dict("records"), accuracy_note=accuracy_note,
        )

    def funnel(self, request: Request) -> Response:
        try:
            quarters = int(request.query_params.get("quarters", 2))
        except ValueError:
            quarters = 2
        quarters = quarters if quarters in FUNNEL_QUARTERS else 2
        try:
            export = self.data.export_data()
        except ExportUnavailable as exc:
            return self.render(request, "funnel.html", unavailable=str(exc), groups=[], quarters=quarters,
                               quarter_choices=FUNNEL_QUARTERS)

        def compute():
            return [(grouping, summarise_funnel(export.export, export.end, grouping, quarters).to_dict("records"))
                    for grouping in ((), ("lead_source",), ("segment",))]

        try:
            groups = self.data.derived(("export", export.folder, str(export.end), "funnel", quarters), compute)
        except FunnelError as exc:
            return self.render(request, "funnel.html", unavailable=str(exc), groups=[], quarters=quarters,
                               quarter_choices=FUNNEL_QUARTERS)
        return self.render(request, "funnel.html", unavailable=None, groups=groups, quarters=quarters,
                           quarter_choices=FUNNEL_QUARTERS, export=export,
                           window_start=quarter_start(export.end, quarters - 1))

    # access

    async def login(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        token = self.data.config.api_token
        if request.method == "GET":
            return self.render(request, "login.html", next=safe_next(request.query_params.get("next"), root),
                               error=None, open_page=token is None)
        body = await read_small_body(request, MAX_LOGIN_BODY)
        fields = parse_qs(body.decode("utf-8", "replace")) if body is not None else {}
        wanted = safe_next((fields.get("next") or [None])[0], root)
        given = (fields.get("token") or [""])[0]
        if token is None:
            return RedirectResponse(wanted, status_code=303)
        if body is None or not token_matches(given, token):
            await asyncio.sleep(WRONG_TOKEN_DELAY_SECONDS)
            return self.render(request, "login.html", status=401, next=wanted, open_page=False,
                               error="That token is not the service's access token.")
        response = RedirectResponse(wanted, status_code=303, headers={"cache-control": "no-store"})
        response.set_cookie(SESSION_COOKIE, session_value(token), path=root or "/", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=root or "/", httponly=True, samesite="strict")
        return response


def link(root: str, path: str, **params) -> str:
    """A path below the page's mount with query parameters (empty ones left out).

    >>> link("/page", "/", owner="O 1", stage="")
    '/page/?owner=O+1'
    >>> from urllib.parse import quote
    >>> link("/page", "/deals/" + quote("D/1", safe=""))
    '/page/deals/D%2F1'
    """
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{root}{path}" + (f"?{query}" if query else "")


def safe_next(value: str | None, root: str) -> str:
    """Where the login form goes back to: a path below the page's mount, else the list.

    >>> safe_next("/page/deals/D1?x=1", "/page"), safe_next("https://elsewhere.example/", "/page")
    ('/page/deals/D1?x=1', '/page/')
    >>> safe_next("/page//elsewhere.example", "/page"), safe_next("/pageant", "/page")
    ('/page/', '/page/')
    """
    home = f"{root}/"
    if not value or not value.startswith(home) or "//" in value or "\\" in value or any(ord(c) < 32 for c in value):
        return home
    return value


async def read_small_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (read no further)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def json_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: times in ISO 8601, NaN as null."""
    out = []
    for record in frame.to_dict("records"):
        clean = {}
        for key, value in record.items():
            if isinstance(value, pd.Timestamp):
                clean[key] = value.isoformat()
            elif value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NaT:
                clean[key] = None
            elif isinstance(value, np.generic):
                clean[key] = value.item()
            else:
                clean[key] = value
        out.append(clean)
    return out


def page_app(config: ServingConfig | Callable[[], ServingConfig] | None = None) -> Starlette:
    """The page as an ASGI app to mount (the service mounts it at ``serving.guard.PAGE_PATH``).

    ``config``: the settings, or a function returning them; default ``ServingConfig.from_env``,
    read at the first request, not here. Access control is not in here: ``serving.guard`` wraps
    the whole service (tests wrap this app the same way).
    """
    source = config if callable(config) else ((lambda: config) if config is not None else ServingConfig.from_env)
    views = PageViews(PageData(source))
    routes = [
        Route("/", views.deals, name="deals"),
        Route("/api/deals", views.deals_json, name="deals_json"),
        Route("/deals/{deal_id:path}", views.deal, name="deal"),
        Route("/team", views.team, name="team"),
        Route("/forecast", views.forecast, name="forecast"),
        Route("/funnel", views.funnel, name="funnel"),
        Route("/login", views.login, methods=["GET", "POST"], name="login"),
        Route("/logout", views.logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(packages=[("serving.page", "static")]), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # BentoML enters a mounted Starlette app's lifespan when the service starts; the warm-up
        # runs beside the model loading instead of in the first manager's page view.
        threading.Thread(target=views.warm_up, name="dealrisk-page-warm-up", daemon=True).start()
        yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.views = views
    return app
