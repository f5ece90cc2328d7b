"""The Dask engine's features equal the pandas engine's exactly (features.pointintime.distributed).

A generated export of 500 deals as 4 partitions, on a 2-worker LocalCluster: the same
``build_features`` per partition, with what crosses deals (feature state, maturity, the export's
end) computed once for the whole export. Row for row after sorting by (deal_id, as_of), with
``check_exact``.
"""

from __future__ import annotations

import functools
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from dealrisk.cli import app
from features.contract.partitioned import partition_file, read_global
from features.contract.violations import ContractError
from features.pointintime.distributed import (
    build_features_dask,
    describe_cluster,
    export_end_dask,
    features_as_of_dask,
    fit_feature_state_dask,
    map_partitions,
)
from features.pointintime.pipeline import build_features, select_open_deals
from features.pointintime.snapshots import export_end, label_snapshots, sample_snapshots, select_mature_deals
from features.pointintime.state import fit_feature_state

KEY = ["deal_id", "as_of"]


def by_key(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY, kind="stable").reset_index(drop=True)


def labelled_features(export, mature, state) -> pd.DataFrame:
    """Training rows of one export (or partition): labelled snapshots of its mature deals, with their features."""
    points = label_snapshots(export, sample_snapshots(export, deal_ids=mature), state.missing_inputs)
    features = build_features(export, points[KEY], state)
    return pd.concat([points[["won", "slipped"]], features], axis=1)


@pytest.fixture(scope="module")
def cutoff(partitioned_export) -> pd.Timestamp:
    return (export_end(partitioned_export.export) - pd.Timedelta(days=240)).floor("s")


def test_the_cluster_is_two_workers_on_this_machine(dask_client):
    described = describe_cluster(dask_client)
    assert described["workers"] == 2 and described["threads"] == 2
    assert described["scheduler"].startswith("tcp://127.0.0.1:")


def test_global_values_equal_the_whole_exports(dask_client, partitioned_export, cutoff):
    export, root = partitioned_export.export, partitioned_export.root
    assert export_end_dask(dask_client, root) == export_end(export)
    assert fit_feature_state_dask(dask_client, root, cutoff) == fit_feature_state(export, cutoff)


def test_training_snapshot_features_equal_the_local_ones(dask_client, partitioned_export, cutoff):
    export, root = partitioned_export.export, partitioned_export.root
    state = fit_feature_state(export, cutoff)
    local = labelled_features(export, select_mature_deals(export), state)
    # Maturity reads every deal and the export's end: computed once, as the whole export's.
    mature = select_mature_deals(read_global(root, ("deals",)), end=export_end_dask(dask_client, root))
    dask_state = fit_feature_state_dask(dask_client, root, cutoff)
    frame = map_partitions(dask_client, root, labelled_features, mature, dask_state)
    computed = dask_client.compute(frame).result()
    assert frame.npartitions == 4 and len(local) > 4000
    pd.testing.assert_frame_equal(by_key(computed), by_key(local), check_exact=True)
    only = dask_client.compute(build_features_dask(dask_client, root, sample_snapshots, state)).result()
    pd.testing.assert_frame_equal(by_key(only), by_key(build_features(export, sample_snapshots(export), state)),
                                  check_exact=True)


def test_features_as_of_a_date_equal_the_local_ones(dask_client, partitioned_export):
    export, root = partitioned_export.export, partitioned_export.root
    as_of = export_end(export) - pd.Timedelta(days=45)
    state = fit_feature_state_dask(dask_client, root, as_of)
    local = build_features(export, select_open_deals(export, as_of), fit_feature_state(export, as_of))
    computed = features_as_of_dask(dask_client, root, as_of, state)
    assert len(computed) > 50
    pd.testing.assert_frame_equal(computed, by_key(local), check_exact=True)


def test_a_points_frame_comes_back_in_its_own_order(dask_client, partitioned_export, cutoff):
    export, root = partitioned_export.export, partitioned_export.root
    state = fit_feature_state(export, cutoff)
    points = sample_snapshots(export).sample(frac=1.0, random_state=3)  # any order, any index
    computed = dask_client.compute(build_features_dask(dask_client, root, points, state)).result()
    pd.testing.assert_frame_equal(computed.loc[points.index], build_features(export, points, state), check_exact=True)


def test_features_command_gives_the_same_file_on_both_engines(dask_client, partitioned_export, tmp_path):
    as_of = (export_end(partitioned_export.export) - pd.Timedelta(days=10)).isoformat()
    runner = CliRunner()
    local = runner.invoke(app, ["features", "--data", str(partitioned_export.folder), "--as-of", as_of,
                                "--out", str(tmp_path / "local.parquet")])
    assert local.exit_code == 0, local.output
    on_dask = runner.invoke(app, ["features", "--data", str(partitioned_export.root), "--as-of", as_of,
                                  "--out", str(tmp_path / "dask.parquet"), "--engine", "dask",
                                  "--scheduler", dask_client.scheduler.address])
    assert on_dask.exit_code == 0, on_dask.output
    whole = runner.invoke(app, ["features", "--data", str(partitioned_export.root), "--as-of", as_of,
                                "--out", str(tmp_path / "whole.parquet")])  # the local engine reads partitions whole
    assert whole.exit_code == 0, whole.output
    expected = by_key(pd.read_parquet(tmp_path / "local.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask.parquet"), expected, check_exact=True)
    pd.testing.assert_frame_equal(by_key(pd.read_parquet(tmp_path / "whole.parquet")), expected, check_exact=True)
    folder = runner.invoke(app, ["features", "--data", str(partitioned_export.folder), "--as-of", as_of,
                                 "--out", str(tmp_path / "x.parquet"), "--engine", "dask"])
    assert folder.exit_code == 1 and "not a partitioned export" in folder.output


def test_a_corrupted_partition_names_its_file(dask_client, partitioned_export, tmp_path):
    root = shutil.copytree(partitioned_export.root, tmp_path / "parts")
    (root / "contacts" / partition_file(2)).write_bytes(b"not parquet at all")
    state = fit_feature_state(partitioned_export.export, "2026-01-01")
    with pytest.raises(ContractError, match="contacts/part-00002.parquet"):
        dask_client.compute(build_features_dask(dask_client, root, functools.partial(select_open_deals, as_of="2026-01-01"),
                                                state)).result()
    result = CliRunner().invoke(app, ["features", "--data", str(root), "--as-of", "2026-01-01T00:00:00Z",
                                      "--out", str(tmp_path / "f.parquet"), "--engine", "dask",
                                      "--scheduler", dask_client.scheduler.address])
    assert result.exit_code == 1 and "contacts/part-00002.parquet" in result.output
    assert not (tmp_path / "f.parquet").exists()


@pytest.mark.parametrize("address", ["not an address", "localhost:notaport", "tcp://[::1"])
def test_a_malformed_scheduler_address_is_one_line_naming_it(partitioned_export, address):
    """Refused before a Client exists (one that failed to parse it tried to close for 40 s at exit,
    with a traceback after the message), on every command that takes --scheduler."""
    for command in (["features", "--data", str(partitioned_export.root), "--as-of", "2026-01-01T00:00:00Z",
                     "--out", "unused.parquet"], ["train", "--data", str(partitioned_export.root)]):
        result = CliRunner().invoke(app, [*command, "--engine", "dask", "--scheduler", address])
        assert result.exit_code != 0
        assert isinstance(result.exception, SystemExit), result.exception
        assert f"--scheduler {address}: cannot reach a Dask scheduler there" in result.output


def test_an_empty_scheduler_address_is_refused_before_anything_starts(partitioned_export):
    result = CliRunner().invoke(app, ["features", "--data", str(partitioned_export.root), "--as-of",
                                      "2026-01-01T00:00:00Z", "--out", "unused.parquet", "--engine", "dask",
                                      "--scheduler", " "])
    assert result.exit_code != 0
    assert "--scheduler is empty" in result.output
