"""The managers' page in process: its routes over an inline score store (SQLite in tmp_path, rows
written through ``portfolio.store``), behind the service's own guard (``serving.guard``).

What each view shows is checked against numbers worked out by hand from the inline deals, and
against the ``portfolio`` functions the CLI prints, so the page and ``dealrisk rank`` / ``team`` /
``forecast`` / ``funnel`` cannot drift apart. The real service and a real browser: test_browser_page.py.
"""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import quote

import pandas as pd
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from features.model.actions import GAIN_NOTE
from portfolio.store import ScoreStore
from serving.config import ServingConfig
from serving.guard import PAGE_PATH, SESSION_COOKIE, RequestGuard, session_value
from serving.page import page_app
from serving.page.views import decision_chain_from_export
from tests.portfolio.conftest import deal, rows_of

TOKEN = "page-test-token"
FIRST, SECOND = "2026-06-01T00:00:00Z", "2026-06-15T00:00:00Z"
ACTIONS = [{"action": "engage_economic_buyer", "label": "Engage the economic buyer", "gain_points": 12.4,
            "win_probability_after": 0.324, "sentence": "Engage the economic buyer: +12 points"},
           {"action": "meeting_this_week", "label": "Hold a meeting this week", "gain_points": 3.0,
            "win_probability_after": 0.23, "sentence": "Hold a meeting this week: +3 points"}]

# As of SECOND (a Monday list): amount, win -> value at risk = amount x (1 - win).
#   D1 O1 negotiate 100,000 x 0.2 -> 80,000 (high), closes in 10 days (2026-Q2), was 0.35: declining -15
#   D2 O2 propose    50,000 x 0.6 -> 20,000 (low),  closes in 40 days (2026-Q3)
#   D3 O1 qualify    30,000 x 0.1 -> 27,000 (high), closes in 100 days (2026-Q3), new
#   D4 O2 negotiate  10,000 x 0.5 ->  5,000 (low),  closes in 5 days (2026-Q2)
#   D5 O3 identify    8,000 x 0.25 -> 6,000 (high), no close date
# D9 was scored at FIRST only (closed since): not a current deal.
LATEST = [
    deal("D1", 0.2, owner="O1", stage="negotiate", amount=100_000.0, close_in_days=10,
         warnings=("no_activity", "no_decision_maker"), reason="In negotiate for 41 days", actions=ACTIONS),
    deal("D2", 0.6, owner="O2", stage="propose", amount=50_000.0, close_in_days=40, reason="Close date pushed twice"),
    deal("D3", 0.1, owner="O1", stage="qualify", amount=30_000.0, close_in_days=100, warnings=("single_threaded",)),
    deal("D4", 0.5, owner="O2", stage="negotiate", amount=10_000.0, close_in_days=5, reason=""),
    deal("D5", 0.25, owner="O3", stage="identify", amount=8_000.0, close_in_days=None),
]
EARLIER = [
    deal("D1", 0.35, owner="O1", stage="negotiate", amount=100_000.0, close_in_days=24, warnings=("no_activity",)),
    deal("D2", 0.58, owner="O2", stage="propose", amount=50_000.0, close_in_days=54),
    deal("D4", 0.5, owner="O2", stage="negotiate", amount=10_000.0, close_in_days=19),
    deal("D5", 0.2, owner="O3", stage="identify", amount=8_000.0, close_in_days=None),
    deal("D9", 0.9, owner="O3", stage="contract", amount=5_000.0, close_in_days=3),
]
RANKED = ["D1", "D3", "D2", "D5", "D4"]


def write_store(url: str) -> None:
    store = ScoreStore.open(url)
    try:
        store.write(rows_of(EARLIER, FIRST), source="batch", origin="export")
        store.write(rows_of(LATEST, SECOND), source="batch", origin="export")
    finally:
        store.close()


def page_client(config: ServingConfig) -> TestClient:
    """The page mounted at /page behind the service's guard, as the service serves it."""
    app = Starlette(routes=[Mount(PAGE_PATH, app=page_app(config))])
    return TestClient(RequestGuard(app, config), base_url="http://testserver")


@pytest.fixture
def store_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    write_store(url)
    return url


@pytest.fixture
def pages(store_url) -> TestClient:
    return page_client(ServingConfig(store_url=store_url))


def deal_ids(html: str) -> list[str]:
    """Deal ids of the list's rows, in order."""
    return re.findall(r'<th scope="row" data-label="Deal"><a href="[^"]*">([^<]+)</a>', html)


def text(html: str) -> str:
    """The page's text, tags removed and spaces collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


# --- the list -----------------------------------------------------------------------------------


def test_the_list_ranks_current_deals_by_value_at_risk(pages):
    page = pages.get("/page/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert deal_ids(page.text) == RANKED
    shown = text(page.text)
    assert "5 of 5 open deals match" in shown
    assert "Engage the economic buyer: +12 points" in shown and GAIN_NOTE in shown
    assert "down 15.0" in shown  # D1 fell from 35% to 20%


def test_the_header_sums_the_pipeline_this_quarter_and_the_risk_levels(pages):
    shown = text(pages.get("/page/").text)
    # Pipeline: 100k + 50k + 30k + 10k + 8k. This quarter (2026-Q2, as of June 15): D1 (close June 25) and
    # D4 (June 20): expected 0.2 x 100k + 0.5 x 10k = 25,000; stage table 0.8 x 100k + 0.8 x 10k = 88,000.
    # Next quarter: D2 (July 25) and D3 (September 23): 0.6 x 50k + 0.1 x 30k; stage table 0.6 x 50k + 0.2 x 30k.
    assert "Open pipeline 198,000 5 open deals" in shown
    assert ("Expected bookings 2026-Q2 (this quarter, to 2026-06-30) 25,000 stage table: 88,000 · "
            "2 deals expected to close") in shown
    assert "Expected bookings 2026-Q3 (next quarter) 33,000 stage table: 36,000 · 2 deals expected to close" in shown
    # Value at risk 80,000 + 20,000 + 27,000 + 5,000 + 6,000; levels as stored (win < 0.3: high).
    assert "Value at risk 138,000" in shown
    assert "high 3 medium 0 low 2" in shown


@pytest.mark.parametrize(("query", "expected"), [
    ({"owner": "O1"}, ["D1", "D3"]),
    ({"stage": "negotiate"}, ["D1", "D4"]),
    ({"close_in": "2026-Q3"}, ["D3", "D2"]),
    ({"min_amount": "30000"}, ["D1", "D3", "D2"]),
    ({"changed": "1"}, ["D1"]),  # dropped 15 points and got no_decision_maker
    ({"owner": "O2", "close_in": "2026-06"}, ["D4"]),
])
def test_filters_narrow_the_list(pages, query, expected):
    page = pages.get("/page/", params=query)
    assert page.status_code == 200
    assert deal_ids(page.text) == expected


def test_a_bad_filter_is_named_and_the_form_kept(pages):
    page = pages.get("/page/", params={"close_in": "2026-Q5", "owner": "O1"})
    assert page.status_code == 400
    assert "Close period '2026-Q5': expected a year" in unescape(page.text)
    assert '<option value="O1" selected>' in page.text
    page = pages.get("/page/", params={"min_amount": "lots"})
    assert page.status_code == 400 and "Minimum amount 'lots': expected a number" in unescape(page.text)


def test_rows_beyond_the_limit_are_counted(store_url, tmp_path):
    many = [deal(f"M{k:03d}", 0.5, amount=1000.0 + k) for k in range(120)]
    url = f"sqlite:///{tmp_path / 'many.db'}"
    store = ScoreStore.open(url)
    store.write(rows_of(many, SECOND), source="batch", origin="x")
    store.close()
    pages = page_client(ServingConfig(store_url=url))
    page = pages.get("/page/")
    assert len(deal_ids(page.text)) == 100 and "the first 100 are shown" in text(page.text)
    assert len(deal_ids(pages.get("/page/", params={"limit": "0"}).text)) == 120


def test_the_json_route_gives_the_same_rows(pages):
    answer = pages.get("/page/api/deals", params={"owner": "O1"})
    assert answer.status_code == 200
    body = answer.json()
    assert [d["deal_id"] for d in body["deals"]] == ["D1", "D3"]
    assert body["total"] == 2 and body["header"]["pipeline"] == 198_000.0
    assert body["deals"][0]["value_at_risk"] == pytest.approx(80_000.0)
    assert pages.get("/page/api/deals", params={"stage": "won"}).status_code == 400


# --- one deal -----------------------------------------------------------------------------------------


def test_a_deal_shows_its_history_reasons_warnings_actions_and_chain(pages):
    page = pages.get("/page/deals/D1")
    assert page.status_code == 200
    html = page.text
    shown = text(html)
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert svg.count("<circle") == 2 and "<polyline" in svg  # scored at FIRST and SECOND
    assert "Win probability from 35% on 2026-06-01 to 20% on 2026-06-15 over 2 scores." in svg
    assert "In negotiate for 41 days" in shown and "3 meetings held" in shown
    assert "No activity for 20 days" in shown  # the stored warning's message
    assert "Engage the economic buyer: +12 points" in shown and GAIN_NOTE in shown
    assert "-15.0 points since 2026-06-01" in shown
    # No export configured: the chain comes from the stored warning, and the page says so.
    assert "From the stored score only" in shown
    assert re.search(r"economic buyer</th>\s*<td>unknown</td>\s*<td><span class=\"no\">no</span>", html)


def test_a_deal_without_actions_or_history_says_so(pages):
    shown = text(pages.get("/page/deals/D3").text)
    assert "1 stored score;" in shown and "Not computed for this score" in shown
    assert pages.get("/page/deals/NOPE").status_code == 404


def test_an_odd_deal_id_is_linked_escaped_and_found(tmp_path):
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    store = ScoreStore.open(url)
    store.write(rows_of([deal("A/B <x>&y", 0.3)], SECOND), source="batch", origin="x")
    store.close()
    pages = page_client(ServingConfig(store_url=url))
    html = pages.get("/page/").text
    assert "A/B &lt;x&gt;&amp;y" in html and "<x>" not in html
    href = re.search(r'data-label="Deal"><a href="([^"]+)"', html).group(1)
    assert pages.get(unescape(href)).status_code == 200
    assert pages.get("/page/deals/" + quote("A/B <x>&y", safe="")).status_code == 200


def test_decision_chain_from_the_export_tables():
    at = pd.Timestamp("2026-06-30", tz="UTC")
    contacts = pd.DataFrame({
        "deal_id": "D1", "contact_id": ["C1", "C2", "C3", "C4"],
        "role": ["economic_buyer", "decision_maker", "champion", "procurement"],
        "added_at": pd.to_datetime(["2026-03-01", "2026-06-25", "2026-04-01", "2026-07-02"], utc=True),
    })
    activities = pd.DataFrame({
        "deal_id": "D1", "contact_id": ["C1", "C2", "C3", "C3", None],
        "occurred_at": pd.to_datetime(["2026-05-01", "2026-06-01", "2026-06-29", "2026-07-01", "2026-06-30"], utc=True),
    })
    rows = {r["role"]: r for r in decision_chain_from_export(contacts, activities, at)}
    # C1's last activity 60 days ago: present, not engaged. C2 was emailed before joining: engaged from its
    # added_at (5 days ago). C3's activity after as_of is not seen. C4 joined after as_of: not present.
    assert (rows["economic_buyer"]["engaged"], rows["economic_buyer"]["days_since_engaged"]) == (False, 60.0)
    assert (rows["decision_maker"]["engaged"], rows["decision_maker"]["days_since_engaged"]) == (True, 5.0)
    assert (rows["champion"]["engaged"], rows["champion"]["days_since_engaged"]) == (True, 1.0)
    assert "procurement" not in rows
    unknown = decision_chain_from_export(contacts, None, at)
    assert [r["engaged"] for r in unknown] == [None, None, None] and unknown[0]["present"] is True
    assert all(r["present"] is None for r in decision_chain_from_export(None, None, at))


def test_a_deal_of_an_export_shows_its_decision_chain_from_it(export_dir, export, tmp_path):
    as_of = "2026-06-01T00:00:00Z"
    contacts = export.contacts
    engaged = contacts.loc[contacts["role"] == "economic_buyer", "deal_id"].iloc[0]
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    store = ScoreStore.open(url)
    store.write(rows_of([deal(engaged, 0.4)], as_of), source="batch", origin=str(export_dir))
    store.close()
    pages = page_client(ServingConfig(store_url=url, page_export=str(export_dir)))
    page = pages.get(f"/page/deals/{engaged}")
    assert page.status_code == 200
    expected = decision_chain_from_export(contacts[contacts["deal_id"] == engaged],
                                          export.activities[export.activities["deal_id"] == engaged],
                                          pd.Timestamp(as_of))
    shown = text(page.text)
    assert f"From the export {export_dir}" in shown
    for row in expected:
        cells = "yes" if row["engaged"] else "no"
        assert re.search(rf"{row['label']}</th>\s*<td>[^<]*</td>\s*<td><span class=\"{cells}\">{cells}</span>",
                         page.text), row


# --- team, forecast, funnel -----------------------------------------------------------------------------


def test_the_team_view_per_owner(pages):
    page = pages.get("/page/team")
    assert page.status_code == 200
    rows = re.findall(r'<tr(?: class="total")?>\s*<th scope="row" data-label="Owner">(?:<a [^>]+>)?([^<]+)(?:</a>)?</th>'
                      r'\s*<td class="num" data-label="Open deals">(\d+)</td>', page.text)
    # Largest value at risk first: O1 (80k + 27k), O2 (20k + 5k), O3 (6k); then the team.
    assert rows == [("O1", "2"), ("O2", "2"), ("O3", "1"), ("whole team", "5")]
    assert "50%" in text(page.text)  # O1: D1 has no_decision_maker, D3 not


def test_the_forecast_view_by_quarter_and_month(pages):
    shown = text(pages.get("/page/forecast").text)
    # 2026-Q2: D1 + D4 (25,000 expected); 2026-Q3: D2 (40 days) and D3 (100 days): 0.6 x 50k + 0.1 x 30k.
    assert "2026-Q2 2 110,000 25,000" in shown
    assert "2026-Q3 2 80,000 33,000" in shown
    assert "no date 1 8,000 2,000" in shown
    assert "total 5 198,000 60,000" in shown
    assert "Forecast accuracy needs an export" in shown


def test_the_funnel_needs_an_export_and_says_how(pages):
    page = pages.get("/page/funnel")
    assert page.status_code == 200
    assert "DEALRISK_PAGE_EXPORT" in text(page.text)


def test_the_funnel_from_an_export_matches_dealrisk_funnel(export_dir, export, store_url):
    from features.pointintime.snapshots import export_end
    from portfolio.funnel import summarise_funnel

    pages = page_client(ServingConfig(store_url=store_url, page_export=str(export_dir)))
    page = pages.get("/page/funnel", params={"quarters": "4"})
    assert page.status_code == 200
    expected = summarise_funnel(export, export_end(export), (), 4)
    shown = text(page.text)
    for row in expected.itertuples():
        conversion = "-" if pd.isna(row.conversion) else f"{row.conversion:.0%}"
        assert f"{row.stage} → {row.next_stage} {row.advanced:,} {row.lost:,} {conversion}" in shown
    assert "By lead source" in shown and "By segment" in shown


def test_an_unreadable_export_is_named(store_url, tmp_path):
    pages = page_client(ServingConfig(store_url=store_url, page_export=str(tmp_path / "missing")))
    assert f"DEALRISK_PAGE_EXPORT={tmp_path / 'missing'}: not a folder" in text(pages.get("/page/funnel").text)


# --- the store ----------------------------------------------------------------------------------------


def test_no_store_and_an_empty_store(tmp_path):
    missing = page_client(ServingConfig(store_url=f"sqlite:///{tmp_path / 'none.db'}"))
    page = missing.get("/page/")
    assert page.status_code == 503 and "fill it with 'dealrisk score" in unescape(page.text)
    assert not (tmp_path / "none.db").exists()  # reading never creates a store
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    ScoreStore.open(url).close()
    page = page_client(ServingConfig(store_url=url)).get("/page/")
    assert page.status_code == 200 and "No scores yet" in page.text


def test_a_new_store_write_shows_on_the_next_load(pages, store_url):
    assert "D7" not in deal_ids(pages.get("/page/").text)
    store = ScoreStore.open(store_url)
    store.write(rows_of([deal("D7", 0.05, amount=500_000.0)], "2026-06-16T00:00:00Z"), source="api", origin="/score")
    store.close()
    assert deal_ids(pages.get("/page/").text)[0] == "D7"


def test_pages_forbid_scripts_and_framing(pages):
    page = pages.get("/page/")
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text
    css = pages.get("/page/static/page.css")
    assert css.status_code == 200 and "@media (max-width: 760px)" in css.text


# --- access -------------------------------------------------------------------------------------------


@pytest.fixture
def locked(store_url) -> TestClient:
    return page_client(ServingConfig(store_url=store_url, api_token=TOKEN))


@pytest.mark.parametrize("path", ["/page/", "/page/deals/D1", "/page/team", "/page/forecast", "/page/funnel",
                                  "/page/api/deals", "/page"])
def test_with_a_token_every_view_is_refused_without_it(locked, path):
    answer = locked.get(path, follow_redirects=False)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert "D1" not in answer.text
    person = locked.get(path, headers={"accept": "text/html"}, follow_redirects=False)
    assert person.status_code == 303
    assert person.headers["location"] == f"/page/login?next={quote(path, safe='')}"
    wrong = locked.get(path, headers={"authorization": "Bearer nope"}, follow_redirects=False)
    assert wrong.status_code == 401


def test_with_a_token_the_bearer_header_opens_every_view(locked):
    headers = {"authorization": f"Bearer {TOKEN}"}
    for path in ("/page/", "/page/deals/D1", "/page/team", "/page/forecast", "/page/funnel", "/page/api/deals"):
        assert locked.get(path, headers=headers).status_code == 200, path


def test_the_login_form_sets_a_strict_http_only_cookie(locked):
    form = locked.get("/page/login", params={"next": "/page/deals/D1"})
    assert form.status_code == 200 and '<label for="token">Access token</label>' in form.text
    wrong = locked.post("/page/login", data={"token": "guess", "next": "/page/deals/D1"}, follow_redirects=False)
    assert wrong.status_code == 401 and "not the service's access token" in unescape(wrong.text)
    assert "set-cookie" not in wrong.headers
    right = locked.post("/page/login", data={"token": TOKEN, "next": "/page/deals/D1"}, follow_redirects=False)
    assert right.status_code == 303 and right.headers["location"] == "/page/deals/D1"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={session_value(TOKEN)};")
    assert TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/page" in cookie
    assert locked.get("/page/deals/D1").status_code == 200  # the client keeps the cookie
    # The cookie opens the page only: the scoring routes still want the bearer header.
    assert locked.post("/score", json={}).status_code == 401
    out = locked.post("/page/logout", follow_redirects=False)
    assert out.status_code == 303 and 'dealrisk_session=""' in out.headers["set-cookie"]
    locked.cookies.clear()
    assert locked.get("/page/", follow_redirects=False).status_code == 401


def test_the_login_form_goes_back_only_below_the_page(locked):
    for target in ("https://elsewhere.example/", "//elsewhere.example/", "/page//elsewhere.example", "/score"):
        answer = locked.post("/page/login", data={"token": TOKEN, "next": target}, follow_redirects=False)
        assert answer.headers["location"] == "/page/", target


def test_a_cookie_of_another_token_is_refused(store_url):
    locked = page_client(ServingConfig(store_url=store_url, api_token=TOKEN))
    locked.cookies.set(SESSION_COOKIE, session_value("an-older-token"))
    assert locked.get("/page/", follow_redirects=False).status_code == 401
    locked.cookies.set(SESSION_COOKIE, session_value(TOKEN))
    assert locked.get("/page/").status_code == 200


def test_without_a_token_the_page_is_open_and_says_so(pages):
    assert pages.get("/page/").status_code == 200
    assert "No access token is set" in pages.get("/page/login").text


def test_the_service_mounts_the_page(client):
    """The service's own ASGI app (the session's, models loaded) serves the page beside the scoring routes.

    Its access rules and its data are the wrapper's above (the same guard class); the real server with a
    token and a filled store is the browser test's.
    """
    css = client.get("/page/static/page.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "No access token is set" in client.get("/page/login").text
    assert client.get("/page", follow_redirects=False).status_code in (307, 308)  # to /page/
    assert client.get("/model").status_code == 200  # the info app at "/" still answers beside it
