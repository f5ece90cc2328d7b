"""``dealrisk score --engine dask``: each partition of a partitioned export scored on a 2-worker
LocalCluster by the same functions gives the same stored rows as the local engine on the folder
(the serving fixtures' generated export and champion)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from dealrisk.cli import app
from features.contract.partitioned import partition_file, write_partitioned
from portfolio.store import ScoreStore, StoreError
from tests.dask.fixtures import dask_client  # noqa: F401 - fixture

PARTITIONS = 3


@pytest.fixture(scope="module")
def parts(export, tmp_path_factory):
    return write_partitioned(export, tmp_path_factory.mktemp("partitioned") / "parts", PARTITIONS).root


def _history(url: str) -> pd.DataFrame:
    store = ScoreStore.open(url, create=False)
    try:
        return store.history()
    finally:
        store.close()


def _rows(path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("deal_id").reset_index(drop=True)


def test_dask_scores_equal_local_scores(service_env, export_dir, parts, dask_client, tmp_path):
    runner = CliRunner()
    local = runner.invoke(app, ["score", "--data", str(export_dir), "--store", f"sqlite:///{tmp_path / 'local.db'}",
                                "--out", str(tmp_path / "local.parquet")])
    assert local.exit_code == 0, local.output
    on_dask = runner.invoke(app, ["score", "--data", str(parts), "--engine", "dask", "--scheduler",
                                  dask_client.scheduler.address, "--store", f"sqlite:///{tmp_path / 'dask.db'}",
                                  "--out", str(tmp_path / "dask.parquet")])
    assert on_dask.exit_code == 0, on_dask.output
    expected = _rows(tmp_path / "local.parquet")
    assert len(expected) > 100 and expected["actions"].notna().any()
    pd.testing.assert_frame_equal(_rows(tmp_path / "dask.parquet"), expected, check_exact=True)
    stored = _history(f"sqlite:///{tmp_path / 'dask.db'}").sort_values("deal_id").reset_index(drop=True)
    assert stored["deal_id"].tolist() == expected["deal_id"].tolist()
    assert (stored["source"] == "batch").all()
    assert f"scored {len(expected):,} open deals of {parts}" in on_dask.output
    whole = runner.invoke(app, ["score", "--data", str(parts), "--no-actions", "--store",
                                f"sqlite:///{tmp_path / 'whole.db'}", "--out", str(tmp_path / "whole.parquet")])
    assert whole.exit_code == 0, whole.output  # the local engine reads the partitions whole
    pd.testing.assert_frame_equal(_rows(tmp_path / "whole.parquet").drop(columns="actions"),
                                  expected.drop(columns="actions"), check_exact=True)


def test_dask_score_names_a_broken_partition_and_stores_nothing(service_env, parts, dask_client, tmp_path):
    root = shutil.copytree(parts, tmp_path / "parts")
    (root / "activities" / partition_file(1)).write_bytes(b"PAR1 cut short")
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    result = CliRunner().invoke(app, ["score", "--data", str(root), "--engine", "dask", "--scheduler",
                                      dask_client.scheduler.address, "--store", url, "--no-actions"])
    assert result.exit_code == 1
    assert "activities/part-00001.parquet" in result.output and "Traceback" not in result.output
    with pytest.raises(StoreError, match="holds no scores"):
        _history(url)
    folder = CliRunner().invoke(app, ["score", "--data", str(tmp_path), "--engine", "dask", "--no-actions",
                                      "--store", url])
    assert folder.exit_code == 1 and "not a partitioned export" in folder.output
