"""The score store on SQLite (fast tier) and on a real PostgreSQL server (slow tier): writes read
back exactly, re-scoring replaces instead of duplicating, a failed write leaves nothing, each
deal's latest and previous snapshots, the current list, and the errors a user can meet."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from portfolio import store as store_module
from portfolio.store import SCORE_COLUMNS, ScoreStore, StoreError, score_rows, store_url
from tests.portfolio.conftest import deal, rows_of


@pytest.fixture
def opened(store_url):
    store = ScoreStore.open(store_url)
    yield store
    store.close()


def test_written_rows_read_back_with_documented_columns_and_types(opened):
    actions = [{"action": "engage_economic_buyer", "label": "Engage the economic buyer", "gain_points": 12.4,
                "sentence": "Engage the economic buyer: +12 points"}]
    rows = rows_of([deal("D1", 0.25, owner="O7", stage="negotiate", amount=40000.0, close_in_days=10,
                         warnings=("no_activity", "ghosted"), actions=actions),
                    deal("D2", 0.8, amount=None, close_in_days=None, reason="")],
                   "2026-03-02T09:30:00+02:00")
    run_id = opened.write(rows, source="batch", origin="data/x/export")

    got = opened.history().set_index("deal_id")
    assert list(opened.history().columns) == list(SCORE_COLUMNS)
    d1, d2 = got.loc["D1"], got.loc["D2"]
    assert d1["as_of"] == pd.Timestamp("2026-03-02T07:30:00Z")  # the same instant, in UTC
    assert str(opened.history()["as_of"].dtype) == "datetime64[us, UTC]"
    assert (d1["owner_id"], d1["stage"], d1["amount"], d1["score"], d1["grade"]) == ("O7", "negotiate", 40000.0, 25, "C")
    assert d1["expected_close_date"] == pd.Timestamp("2026-03-12T07:30:00Z")
    assert d1["value_at_risk"] == pytest.approx(30000.0)
    assert d1["top_reason"] == "In propose for 41 days"
    assert d1["warning_codes"] == "ghosted,no_activity"
    assert [w["code"] for w in d1["warnings"]] == ["no_activity", "ghosted"]
    assert d1["factors_down"][0]["contribution"] == -0.4
    assert d1["actions"] == actions
    assert (d1["run_id"], d1["source"], d1["win_version"]) == (run_id, "batch", "1")
    assert pd.isna(d2["amount"]) and pd.isna(d2["expected_close_date"])
    assert d2["top_reason"] == "" and d2["warning_codes"] == "" and d2["actions"] is None
    runs = opened.runs()
    assert runs[["run_id", "source", "origin", "deals"]].values.tolist() == [[run_id, "batch", "data/x/export", 2]]
    assert runs.loc[0, "as_of"] == pd.Timestamp("2026-03-02T07:30:00Z")


def test_rescoring_the_same_deal_as_of_and_models_replaces_the_row(opened):
    opened.write(rows_of([deal("D1", 0.30), deal("D2", 0.50)], "2026-03-02"), "batch", "x")
    second = opened.write(rows_of([deal("D1", 0.35), deal("D2", 0.50)], "2026-03-02"), "batch", "x")
    history = opened.history()
    assert len(history) == 2
    assert history.set_index("deal_id").loc["D1", "win_probability"] == 0.35
    assert set(history["run_id"]) == {second}
    assert len(opened.runs()) == 2  # every run is recorded, its rows replaced


def test_a_win_only_champion_stores_its_scores_with_slip_missing(opened):
    # A deals-only export trains no slip model: its scores carry no slip probability and no slip version.
    rows = rows_of([deal("D1", 0.30, slip=float("nan")), deal("D2", 0.60, slip=float("nan"))], "2026-03-02",
                   versions=("4", None))
    opened.write(rows, "batch", "x")
    opened.write(rows, "batch", "x")  # idempotent with the empty slip version in the key
    history = opened.history()
    assert len(history) == 2
    assert history["slip_probability"].isna().all() and set(history["slip_version"]) == {""}
    assert set(history["win_version"]) == {"4"}


def test_another_model_pair_or_as_of_adds_a_row(opened):
    opened.write(rows_of([deal("D1", 0.30)], "2026-03-02"), "batch", "x")
    opened.write(rows_of([deal("D1", 0.40)], "2026-03-02", versions=("2", "2")), "batch", "x")
    opened.write(rows_of([deal("D1", 0.45)], "2026-03-09", versions=("2", "2")), "batch", "x")
    assert len(opened.history()) == 3
    snapshots = opened.snapshots().set_index("snapshot")
    assert snapshots.loc[0, "win_probability"] == 0.45
    # Of the two model pairs at the previous as-of, the one written last is the snapshot.
    assert (snapshots.loc[1, "win_probability"], snapshots.loc[1, "win_version"]) == (0.40, "2")


def test_a_key_twice_in_one_write_keeps_the_last(opened):
    rows = rows_of([deal("D1", 0.30), deal("D1", 0.60)], "2026-03-02")
    opened.write(rows, "api", "service")
    assert opened.history()["win_probability"].tolist() == [0.60]


def test_a_failed_write_leaves_nothing(opened, monkeypatch):
    opened.write(rows_of([deal("D0", 0.5)], "2026-03-01"), "batch", "x")
    monkeypatch.setattr(store_module, "WRITE_CHUNK", 2)  # the bad row sits in the second statement
    rows = rows_of([deal("D1", 0.3), deal("D2", 0.4), deal("D3", 0.5)], "2026-03-02")
    rows.loc[2, "win_probability"] = None  # NOT NULL
    with pytest.raises(StoreError, match="nothing written"):
        opened.write(rows, "batch", "x")
    assert opened.history()["deal_id"].tolist() == ["D0"]
    assert len(opened.runs()) == 1


def test_snapshots_are_each_deals_latest_and_previous_as_of(opened):
    opened.write(rows_of([deal("D1", 0.50), deal("D2", 0.50)], "2026-03-02"), "batch", "x")
    opened.write(rows_of([deal("D1", 0.40), deal("D2", 0.55)], "2026-03-09"), "batch", "x")
    opened.write(rows_of([deal("D1", 0.20)], "2026-03-16"), "api", "service")  # D1 scored again by the CRM
    snapshots = opened.snapshots()
    got = {(r.deal_id, r.snapshot): (r.as_of.day, r.win_probability) for r in snapshots.itertuples()}
    assert got == {("D1", 0): (16, 0.20), ("D1", 1): (9, 0.40), ("D2", 0): (9, 0.55), ("D2", 1): (2, 0.50)}
    assert opened.latest()["deal_id"].tolist() == ["D1", "D2"]


def test_current_list_drops_deals_a_later_batch_run_no_longer_scored(opened):
    opened.write(rows_of([deal("D1", 0.5), deal("D2", 0.5)], "2026-03-02"), "batch", "x")
    opened.write(rows_of([deal("D1", 0.5)], "2026-03-09"), "batch", "x")  # D2 closed meanwhile
    assert opened.latest()["deal_id"].tolist() == ["D1"]
    assert opened.latest(current_only=False)["deal_id"].tolist() == ["D1", "D2"]
    assert opened.latest_batch_as_of() == pd.Timestamp("2026-03-09", tz="UTC")


def test_snapshots_without_json_columns(opened):
    opened.write(rows_of([deal("D1", 0.5, warnings=("ghosted",))], "2026-03-02"), "batch", "x")
    row = opened.snapshots(json_columns=False).iloc[0]
    assert row["factors_up"] is None and row["warnings"] is None
    assert row["warning_codes"] == "ghosted"


def test_history_filters_by_deal_and_as_of(opened):
    for day in ("2026-03-02", "2026-03-09", "2026-03-16"):
        opened.write(rows_of([deal("D1", 0.5), deal("D2", 0.5)], day), "batch", "x")
    got = opened.history(deal_ids=["D2"], as_of_from="2026-03-09", as_of_to="2026-03-16")
    assert [(r.deal_id, r.as_of.day) for r in got.itertuples()] == [("D2", 9), ("D2", 16)]


def test_empty_store_reads_empty_frames_with_the_columns(opened):
    assert opened.history().empty and list(opened.history().columns) == list(SCORE_COLUMNS)
    assert opened.snapshots().empty and opened.runs().empty
    assert opened.latest_batch_as_of() is None


def test_reader_never_creates_a_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'none' / 'scores.db'}"
    with pytest.raises(StoreError, match="holds no scores yet; fill it with 'dealrisk score"):
        ScoreStore.open(url, create=False)
    assert not (tmp_path / "none").exists()


def test_sqlite_folder_is_created(tmp_path):
    store = ScoreStore.open(f"sqlite:///{tmp_path / 'a' / 'b' / 'scores.db'}")
    store.close()
    assert (tmp_path / "a" / "b" / "scores.db").exists()


def test_a_store_of_an_older_layout_is_named(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE deal_scores (deal_id TEXT, as_of TEXT)"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"table deal_scores of the score store lacks columns \['win_version'"):
        ScoreStore.open(url)


def test_bad_urls_are_named():
    with pytest.raises(StoreError, match="is not a database URL"):
        ScoreStore.open("not a url")
    with pytest.raises(StoreError, match="no driver"):
        ScoreStore.open("nosuchdb://me@host/scores")


def test_unreachable_server_is_named_without_the_password():
    with pytest.raises(StoreError) as caught:
        ScoreStore.open("postgresql+psycopg://me:secret@127.0.0.1:1/scores?connect_timeout=2")
    assert "cannot be opened" in str(caught.value) and "secret" not in str(caught.value)


def test_store_url_default_and_plain_postgresql_scheme():
    assert store_url({}) == "sqlite:///data/scores.db"
    assert store_url({"DEALRISK_STORE_URL": "postgresql://u@h/db"}) == "postgresql+psycopg://u@h/db"
    assert store_url({"DEALRISK_STORE_URL": "sqlite:////tmp/x.db"}) == "sqlite:////tmp/x.db"


def test_write_refuses_rows_without_the_columns_and_unknown_sources(opened):
    rows = rows_of([deal("D1", 0.5)], "2026-03-02")
    with pytest.raises(ValueError, match=r"lack columns \['owner_id'\]"):
        opened.write(rows.drop(columns="owner_id"), "batch", "x")
    with pytest.raises(ValueError, match="source must be one of"):
        opened.write(rows, "nightly", "x")


def test_score_rows_refuses_frames_of_different_deals():
    rows = rows_of([deal("D1", 0.5)], "2026-03-02")
    explained = pd.DataFrame({"deal_id": ["D1", "D2"]})
    with pytest.raises(ValueError, match="same deals in the same order"):
        score_rows(explained, rows.head(1), rows.head(1), {"win": "1", "slip": "1"})


def test_snapshots_read_only_the_columns_asked_for(opened):
    opened.write(rows_of([deal("D1", 0.5, owner="O3")], "2026-03-02"), "batch", "x")
    opened.write(rows_of([deal("D1", 0.4, owner="O3")], "2026-03-09"), "batch", "x")
    got = opened.snapshots(columns=("win_probability",))
    assert got["win_probability"].tolist() == [0.4, 0.5] and got["snapshot"].tolist() == [0, 1]
    assert got["owner_id"].isna().all() and got["score"].isna().all()
    assert list(got.columns) == [*opened.history().columns, "snapshot"]


@pytest.mark.slow
def test_workers_opening_a_new_postgresql_store_at_once_all_succeed(postgres_url):
    """Every service worker opens the store at start-up: on a new PostgreSQL database they race to
    create the tables, and the loser's duplicate ``pg_type`` key used to stop the whole service
    (seen in CI: ``StoreError ... duplicate key value violates unique constraint``)."""
    import threading

    openers = 8
    start = threading.Barrier(openers)
    failures: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            ScoreStore.open(postgres_url).close()
        except BaseException as exc:  # noqa: BLE001 - collected and shown below
            failures.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(openers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, [str(exc) for exc in failures]
    store = ScoreStore.open(postgres_url, create=False)
    assert store.runs().empty
    store.close()
