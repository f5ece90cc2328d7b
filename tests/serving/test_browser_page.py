"""The managers' page in a real browser: the system Chromium driven by Playwright against a real
``dealrisk serve`` (BentoML, the serving fixtures' champion) whose score store holds the generated
export scored by ``dealrisk score`` at two as-ofs, so deals have a history.

What a manager does: read the list ranked by value at risk, filter it (with the mouse, and by
keyboard alone), open a deal and read its reasons, actions and score-history chart, open the team,
forecast and funnel views, and use the page in a phone-sized window; then the same service with
``DEALRISK_API_TOKEN``: refused without it, usable after the login form. Each step saves a
screenshot under the artefacts folder (``DEALRISK_TEST_ARTEFACTS``, else a new folder under
``/tmp/dealrisk-artefacts/``; never the checkout), whose path the test prints.

Needs /usr/bin/chromium (``make chromium`` installs it; ``playwright install`` downloads nothing
here): a missing browser fails the test, it is never skipped. Slow tier: two server start-ups.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from features.model.actions import GAIN_NOTE
from features.pointintime.snapshots import export_end
from portfolio.rank import rank_deals
from portfolio.store import ScoreStore
from portfolio.trend import add_trend
from serving.process import free_port, start_server, stop_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DEALRISK = str(Path(sys.executable).parent / "dealrisk")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
TOKEN = "browser-test-token"
HISTORY_DAYS = 21  # the first scoring run, this many days before the export's end


@pytest.fixture(scope="module")
def artefacts() -> Path:
    """This run's screenshot folder: ``DEALRISK_TEST_ARTEFACTS``, else a new one under
    ``<tmp>/dealrisk-artefacts/`` (pytest's own temporary folders are pruned after three runs)."""
    stamp = f"page-{pd.Timestamp.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    folder = Path(os.environ.get("DEALRISK_TEST_ARTEFACTS") or Path(tempfile.gettempdir()) / "dealrisk-artefacts" / stamp)
    if folder.resolve().is_relative_to(ROOT):
        pytest.fail(f"DEALRISK_TEST_ARTEFACTS={folder} is inside the checkout; screenshots go outside it")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def scored(store, export_dir, export, tmp_path_factory) -> dict:
    """A score store filled by ``dealrisk score`` at two as-ofs (the later one with next best actions)."""
    from serving.commands import run_score

    url = f"sqlite:///{tmp_path_factory.mktemp('page-store') / 'scores.db'}"
    end = export_end(export)
    earlier = (end - pd.Timedelta(days=HISTORY_DAYS)).floor("D")
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith("DEALRISK_")]:
            env.delenv(key)
        env.setenv("MLFLOW_TRACKING_URI", store["uri"])
        run_score(export_dir, as_of=earlier.isoformat(), store_url=url, with_actions=False)
        run_score(export_dir, store_url=url)
    opened = ScoreStore.open(url, create=False)
    try:
        trended = add_trend(opened.snapshots())
        history = opened.history()
    finally:
        opened.close()
    return {"url": url, "trended": trended, "history": history, "end": end, "earlier": earlier}


def serve(store: dict, scored: dict, export_dir: Path, log: Path, **env_extra):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=store["uri"], MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True",
               DEALRISK_STORE_URL=scored["url"], DEALRISK_PAGE_EXPORT=str(export_dir), **env_extra)
    url = f"http://127.0.0.1:{port}"
    try:
        process = start_server([DEALRISK, "serve", "--port", str(port)], f"{url}/readyz", log, env=env, cwd=ROOT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return process, url


@pytest.fixture(scope="module")
def open_server(store, scored, export_dir, tmp_path_factory):
    process, url = serve(store, scored, export_dir, tmp_path_factory.mktemp("serve-open") / "serve.log")
    try:
        yield url
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: 'make chromium' installs it (apt-get, as root or with sudo)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def numbers(texts: list[str]) -> list[float]:
    return [float(t.replace(",", "")) for t in texts]


def shoot(page, artefacts: Path, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(artefacts / f"{name}.png"), full_page=full_page)


def print_artefacts(capsys, artefacts: Path) -> None:
    with capsys.disabled():
        print(f"\nscreenshots of the managers' page: {artefacts}")


def test_a_manager_reads_filters_and_opens_a_deal(browser, open_server, scored, artefacts, capsys):
    print_artefacts(capsys, artefacts)
    base = f"{open_server}/page"
    expected = rank_deals(scored["trended"])
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    answer = page.goto(f"{base}/")
    assert answer.status == 200
    assert page.title() == "Deals by value at risk · dealrisk"

    # The list: ranked by value at risk, as dealrisk rank ranks the stored scores.
    rows = page.locator("table.deals tbody tr")
    assert rows.count() == min(100, len(expected))
    shown_ids = page.locator("table.deals tbody th[data-label='Deal'] a").all_inner_texts()
    assert shown_ids == expected["deal_id"].head(100).tolist()
    at_risk = numbers(page.locator("table.deals tbody td[data-label='Value at risk']").all_inner_texts())
    assert at_risk == sorted(at_risk, reverse=True) and at_risk[0] > at_risk[-1]
    assert page.get_by_text(f"{len(expected):,} of {len(expected):,} open deals match").is_visible()
    assert page.get_by_text("Expected bookings", exact=False).first.is_visible()
    shoot(page, artefacts, "01-list", full_page=False)

    # A filter with the mouse: one owner's deals.
    owner = str(expected["owner_id"].iloc[0])
    page.select_option("#owner", owner)
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url(re.compile(r"owner="))
    owners = page.locator("table.deals tbody td[data-label='Owner']").all_inner_texts()
    mine = expected[expected["owner_id"] == owner]
    assert owners and set(owners) == {owner} and len(owners) == min(100, len(mine))
    assert page.get_by_text(f"{len(mine):,} of {len(expected):,} open deals match").is_visible()
    shoot(page, artefacts, "02-list-owner", full_page=False)

    # A filter by keyboard alone: clear, then a minimum amount typed and Enter.
    page.get_by_role("link", name="Clear").click()
    page.locator("#min_amount").focus()
    page.keyboard.type("50000")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"min_amount=50000"))
    amounts = numbers(page.locator("table.deals tbody td[data-label='Amount']").all_inner_texts())
    assert amounts and min(amounts) >= 50_000
    assert len(amounts) == min(100, int((expected["amount"] >= 50_000).sum()))

    # A deal scored at both as-ofs, opened from the list.
    page.get_by_role("link", name="Clear").click()
    both = scored["history"].groupby("deal_id")["as_of"].nunique()
    deal_id = next(d for d in expected["deal_id"].head(100) if both.get(d, 0) == 2)
    page.get_by_role("link", name=deal_id, exact=True).click()
    page.wait_for_url(f"**/page/deals/{deal_id}")
    assert page.get_by_role("heading", level=1).inner_text() == f"Deal {deal_id}"
    chart = page.locator("svg.chart")
    assert chart.is_visible() and chart.locator("circle").count() == 2
    assert chart.locator("polyline").count() == 1
    latest = scored["history"][scored["history"]["deal_id"] == deal_id].sort_values("as_of").iloc[-1]
    reasons = page.locator("ol.factors.down li").all_inner_texts()
    assert reasons == [f["sentence"] for f in latest["factors_down"]] and reasons
    assert page.locator("ol.factors.up li").all_inner_texts() == [f["sentence"] for f in latest["factors_up"]]
    warnings = page.locator("ul.warnings li").all_inner_texts()
    assert len(warnings) == len(latest["warnings"])
    actions = page.locator("ol.actions li").all_inner_texts()
    if latest["actions"]:
        assert [a.split(" (")[0] for a in actions] == [a["sentence"] for a in latest["actions"]]
        assert page.get_by_text(GAIN_NOTE).is_visible()
    else:
        assert page.get_by_text("No step of the catalog raises").is_visible()
    chain = page.locator("table.chain tbody th").all_inner_texts()
    assert chain[:3] == ["economic buyer", "decision maker", "champion"]
    assert page.get_by_text("From the export").is_visible()
    page.locator("details summary", has_text="Score history as a table").click()
    assert page.locator("table.history tbody tr").count() == 2
    shoot(page, artefacts, "03-deal")

    # The team, forecast and funnel views from the navigation.
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Team").click()
    page.wait_for_url("**/page/team")
    owner_rows = page.locator("table.team tbody tr")
    assert owner_rows.count() == expected["owner_id"].nunique() + 1  # and the whole team
    assert owner_rows.last.locator("th").inner_text() == "whole team"
    shoot(page, artefacts, "04-team")
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Forecast").click()
    page.wait_for_url("**/page/forecast")
    assert page.get_by_role("heading", name="Expected bookings by quarter of expected close").is_visible()
    total = page.locator("table.forecast").first.locator("tr.total td[data-label='Deals']").inner_text()
    assert int(total.replace(",", "")) == len(expected)
    shoot(page, artefacts, "05-forecast")
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Funnel").click()
    page.wait_for_url("**/page/funnel")
    assert page.locator("table.funnel").count() == 3
    shoot(page, artefacts, "06-funnel")

    # A phone-sized window: rows become cards labelled by their column.
    narrow = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    narrow.goto(f"{base}/")
    first_row = narrow.locator("table.deals tbody tr").first
    assert first_row.evaluate("row => getComputedStyle(row).display") == "block"
    assert narrow.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    first_row.scroll_into_view_if_needed()
    shoot(narrow, artefacts, "07-list-narrow", full_page=False)
    narrow.context.close()
    context.close()


def test_with_a_token_the_page_wants_it_and_the_login_form_lets_people_in(
        browser, store, scored, export_dir, artefacts, tmp_path_factory, capsys):
    print_artefacts(capsys, artefacts)
    process, url = serve(store, scored, export_dir, tmp_path_factory.mktemp("serve-token") / "serve.log",
                         DEALRISK_API_TOKEN=TOKEN)
    try:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        # Refused without it: a program gets 401, a person the login form.
        assert context.request.get(f"{url}/page/api/deals").status == 401
        assert context.request.get(f"{url}/page/team", headers={"accept": "text/html"}, max_redirects=0).status == 303
        assert context.request.get(f"{url}/readyz").status == 200  # health stays open
        page = context.new_page()
        page.goto(f"{url}/page/team")
        assert "/page/login" in page.url
        assert page.locator("table.deals").count() == 0 and page.locator("table.team").count() == 0
        page.get_by_label("Access token").fill("not-the-token")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text() == "That token is not the service's access token."
        shoot(page, artefacts, "08-login-refused")

        # In after the login form, back where the person was going.
        page.get_by_label("Access token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{url}/page/team")
        assert page.locator("table.team tbody tr").count() == scored["trended"]["owner_id"].nunique() + 1
        cookie = next(c for c in context.cookies() if c["name"] == "dealrisk_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/page"
        assert TOKEN not in cookie["value"]
        page.get_by_role("navigation", name="Views").get_by_role("link", name="Deals").click()
        assert page.locator("table.deals tbody tr").count() == min(100, len(scored["trended"]))
        shoot(page, artefacts, "09-after-login", full_page=False)
        # The cookie opens the page, not the scoring routes; the bearer header opens both.
        assert context.request.get(f"{url}/model").status == 401
        bearer = {"authorization": f"Bearer {TOKEN}"}
        assert context.request.get(f"{url}/model", headers=bearer).status == 200
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/page/login")
        assert context.request.get(f"{url}/page/api/deals").status == 401
        context.close()
        robot = browser.new_context(extra_http_headers=bearer)
        answer = robot.request.get(f"{url}/page/api/deals")
        assert answer.status == 200 and answer.json()["total"] == len(scored["trended"])
        robot.close()
    finally:
        stop_server(process)
