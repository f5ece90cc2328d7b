"""``dealrisk score`` end to end on a generated export with the champion of the test MLflow store
(trained by the serving fixtures, shared with the serving tests), then ``dealrisk rank`` on what
it stored: the stored scores are exactly what the service answers for the same deals, every open
deal is scored once, re-scoring replaces, the trend between two runs is what the stored numbers
say, and each failure a user can meet is one line with exit status 1.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from dealrisk.cli import app
from features.pointintime.pipeline import select_open_deals
from features.pointintime.snapshots import export_end
from portfolio.store import ScoreStore
from portfolio.trend import new_codes
from serving.request import request_from_export
from serving.schemas import ScoreRequest
from serving.scoring import score_request
from tests.portfolio.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures


@pytest.fixture
def cli(service_env):
    """Run ``dealrisk`` in process with the test MLflow store's champion; returns the result."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture(scope="module")
def end(export) -> pd.Timestamp:
    return export_end(export)


def _stored(url: str) -> pd.DataFrame:
    store = ScoreStore.open(url, create=False)
    try:
        return store.history()
    finally:
        store.close()


def test_score_stores_every_open_deal_as_the_service_answers_it(cli, export_dir, export, end, loaded_model, tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    result = cli("score", "--data", export_dir, "--store", url, "--no-actions")
    assert result.exit_code == 0, result.output
    open_ids = select_open_deals(export, end)["deal_id"].tolist()
    assert f"scored {len(open_ids):,} open deals" in result.output
    stored = _stored(url).set_index("deal_id")
    assert sorted(stored.index) == sorted(open_ids)
    assert (stored["as_of"] == end).all() and (stored["source"] == "batch").all()
    assert stored["actions"].isna().all()  # --no-actions
    # The service's answer for some of the same deals, as of the same moment, is what was stored.
    some = open_ids[:: max(1, len(open_ids) // 12)]
    answer = score_request(loaded_model, ScoreRequest.model_validate(request_from_export(export, some, end)))
    for scored in answer["deals"]:
        row = stored.loc[scored["deal_id"]]
        assert row["win_probability"] == pytest.approx(scored["win_probability"], abs=1e-12)
        assert row["slip_probability"] == pytest.approx(scored["slip_probability"], abs=1e-12)
        assert (row["grade"], row["risk_level"]) == (scored["grade"], scored["risk_level"])
        assert [f["feature"] for f in row["factors_down"]] == [f["feature"] for f in scored["factors_down"]]
        assert row["warnings"] == scored["warnings"]
        deal = export.deals.set_index("deal_id").loc[scored["deal_id"]]
        assert (row["owner_id"], row["stage"]) == (deal["owner_id"], deal["stage"])


def test_rescoring_replaces_and_records_a_second_run(cli, export_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    assert cli("score", "--data", export_dir, "--store", url, "--no-actions").exit_code == 0
    first = _stored(url)
    assert cli("score", "--data", export_dir, "--store", url, "--no-actions").exit_code == 0
    second = _stored(url)
    assert len(second) == len(first)
    pd.testing.assert_series_equal(second["win_probability"], first["win_probability"])
    store = ScoreStore.open(url)
    assert store.runs()["source"].tolist() == ["batch", "batch"]
    store.close()


def test_next_best_actions_are_stored_and_ranked(cli, export_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    assert cli("score", "--data", export_dir, "--store", url).exit_code == 0
    actions = _stored(url)["actions"]
    assert actions.map(lambda a: isinstance(a, list)).all()
    best = [a[0] for a in actions if a]
    assert best, "no deal got a recommended action"
    assert all(a["gain_points"] >= 0.5 and a["sentence"].startswith(a["label"]) for a in best)
    shown = cli("rank", "--store", url, "--limit", "0")
    assert "next best action" in shown.output and "not a promise" in shown.output


def test_out_files_and_formula_cells(cli, export_dir, tmp_path):
    data = tmp_path / "export"
    shutil.copytree(export_dir, data)
    deals = pd.read_csv(data / "deals.csv", dtype=str, keep_default_na=False)
    deals.loc[deals["outcome"] == "open", "owner_id"] = "=HYPERLINK(1)"
    deals.to_csv(data / "deals.csv", index=False)
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    assert cli("score", "--data", data, "--store", url, "--no-actions", "--out", tmp_path / "s.csv").exit_code == 0
    written = pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False)
    assert (written["owner_id"] == "'=HYPERLINK(1)").all()
    assert pd.to_numeric(written["win_probability"]).between(0, 1).all()  # numbers untouched
    assert cli("score", "--data", data, "--store", url, "--no-actions", "--out", tmp_path / "s.parquet").exit_code == 0
    parquet = pd.read_parquet(tmp_path / "s.parquet")
    assert len(parquet) == len(written) and (parquet["owner_id"] == "=HYPERLINK(1)").all()


def test_trend_between_two_runs_and_rank_changed(cli, export_dir, export, end, tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    earlier = end - pd.Timedelta(days=21)
    assert cli("score", "--data", export_dir, "--store", url, "--no-actions", "--as-of", earlier.isoformat()).exit_code == 0
    assert cli("score", "--data", export_dir, "--store", url, "--no-actions").exit_code == 0
    history = _stored(url)
    then = history[history["as_of"] == earlier].set_index("deal_id")
    now = history[history["as_of"] == end].set_index("deal_id")
    both = now.index.intersection(then.index)
    assert len(both) > 20
    moved = (now.loc[both, "win_probability"] - then.loc[both, "win_probability"]) * 100
    new = pd.Series([new_codes(now.loc[d, "warning_codes"], then.loc[d, "warning_codes"]) for d in both], index=both)
    expected = sorted(both[(moved.round(1) <= -10).to_numpy() | (new != "").to_numpy()])
    assert expected, "the fixture should have some alerts"
    out = tmp_path / "changed.csv"
    result = cli("rank", "--store", url, "--changed", "--csv", out, "--limit", "3")
    assert result.exit_code == 0, result.output
    changed = pd.read_csv(out, dtype={"deal_id": str})
    assert sorted(changed["deal_id"]) == expected
    assert changed["value_at_risk"].is_monotonic_decreasing
    declining = changed[changed["trend"] == "declining"]
    assert (declining["points_moved"] <= -5).all()
    # The deals closed between the runs are not on the current list.
    closed_since = set(then.index) - set(now.index)
    full = tmp_path / "all.csv"
    cli("rank", "--store", url, "--csv", full, "--limit", "1")
    assert not closed_since & set(pd.read_csv(full, dtype={"deal_id": str})["deal_id"])


def test_rank_filters_and_a_table_that_fits_when_piped(cli, export_dir, export, tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    assert cli("score", "--data", export_dir, "--store", url, "--no-actions").exit_code == 0
    owner = export.deals.loc[export.deals["outcome"] == "open", "owner_id"].value_counts().index[0]
    out = tmp_path / "rank.csv"
    result = cli("rank", "--store", url, "--owner", owner, "--stage", "negotiate", "--stage", "propose",
                 "--min-amount", "5000", "--csv", out)
    assert result.exit_code == 0, result.output
    ranked = pd.read_csv(out, dtype={"deal_id": str, "owner_id": str})
    assert len(ranked) > 0
    assert (ranked["owner_id"] == owner).all() and ranked["stage"].isin(["negotiate", "propose"]).all()
    assert (ranked["amount"] >= 5000).all()
    # Piped (CliRunner is no terminal): full cells, no ellipsis, lines as long as they need.
    lines = result.output.splitlines()
    assert not any("…" in line for line in lines)
    for deal_id, reason in zip(ranked["deal_id"].head(10), ranked["top_reason"].head(10).fillna("")):
        assert any(deal_id in line and reason in line for line in lines)


def test_failures_are_one_line_and_exit_1(cli, service_env, export_dir, end, tmp_path):
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    cases = {
        "after the export's last event": ["--data", export_dir, "--as-of", (end + pd.Timedelta(days=3)).isoformat()],
        "cannot be read": ["--data", tmp_path / "missing"],
        "must end in .csv or .parquet": ["--data", export_dir, "--out", tmp_path / "s.txt"],
        "is open as of": ["--data", export_dir, "--as-of", "2001-01-01"],
    }
    for expected, args in cases.items():
        result = cli("score", *args, "--store", url, "--no-actions")
        assert result.exit_code == 1 and expected in result.stderr, (expected, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    deals = pd.read_csv(bad / "deals.csv", dtype=str, keep_default_na=False)
    deals.loc[3, "stage"] = "Haggling"
    deals.to_csv(bad / "deals.csv", index=False)
    result = cli("score", "--data", bad, "--store", url)
    assert result.exit_code == 1 and "breaks the data contract" in result.stderr and "stage" in result.stderr
    service_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty-mlflow.db'}")
    result = cli("score", "--data", export_dir, "--store", url)
    assert result.exit_code == 1 and "no champion model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    rank = cli("rank", "--store", f"sqlite:///{tmp_path / 'none.db'}")
    assert rank.exit_code == 1 and "holds no scores yet" in rank.stderr
    assert cli("rank", "--store", url, "--close-in", "2027-Q5").exit_code == 1


@pytest.mark.slow
def test_score_into_postgresql_then_rank(cli, export_dir, export, end, postgres_url, tmp_path):
    result = cli("score", "--data", export_dir, "--store", postgres_url, "--no-actions")
    assert result.exit_code == 0, result.output
    assert cli("score", "--data", export_dir, "--store", postgres_url, "--no-actions").exit_code == 0
    stored = _stored(postgres_url)
    assert sorted(stored["deal_id"]) == sorted(select_open_deals(export, end)["deal_id"])
    out = tmp_path / "rank.csv"
    assert cli("rank", "--store", postgres_url, "--csv", out).exit_code == 0
    ranked = pd.read_csv(out, dtype={"deal_id": str})
    assert len(ranked) == len(stored) and ranked["value_at_risk"].is_monotonic_decreasing
