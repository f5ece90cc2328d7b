"""features.contract.partitioned: the partitioned export the Dask engine reads (dealrisk partition)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dealrisk.cli import app
from features.contract.io import write_tables
from features.contract.load import load_export
from features.contract.partitioned import (
    LAYOUT_FILE,
    PartitionError,
    arrow_table,
    partition_file,
    partition_of,
    read_all,
    read_global,
    read_layout,
    read_partition,
    write_partitioned,
)
from features.contract.schema import TABLES, Export
from features.contract.violations import ContractError
from tests.factories import random_export

PARTS = 3


@pytest.fixture(scope="module")
def export() -> Export:
    return random_export(90, seed=11)


@pytest.fixture()
def root(export, tmp_path):
    write_partitioned(export, tmp_path / "parts", PARTS)
    return tmp_path / "parts"


def in_partition_order(table: pd.DataFrame, partitions: int) -> pd.DataFrame:
    """The table's rows as the partitions hold them: by partition, file order kept within each."""
    order = np.argsort(partition_of(table["deal_id"], partitions), kind="stable")
    return table.iloc[order].reset_index(drop=True)


def test_partitions_round_trip_to_the_same_checked_tables(export, root):
    whole = read_all(root)
    for name in TABLES:
        pd.testing.assert_frame_equal(whole.table(name), in_partition_order(export.table(name), PARTS), check_exact=True)


def test_every_deal_lands_in_one_partition_with_all_its_rows(export, root):
    homes: dict[str, int] = {}
    for k in range(PARTS):
        part = read_partition(root, k)
        for deal_id in part.deals["deal_id"]:
            assert deal_id not in homes
            homes[deal_id] = k
        for name in ("stage_history", "field_history", "contacts", "activities"):
            assert set(part.table(name)["deal_id"]) <= set(part.deals["deal_id"])
            # All the deal's rows: as many as the whole export has for the partition's deals.
            assert len(part.table(name)) == export.table(name)["deal_id"].isin(part.deals["deal_id"]).sum()
    assert set(homes) == set(export.deals["deal_id"])
    assert all(homes[d] == k for d, k in zip(export.deals["deal_id"], partition_of(export.deals["deal_id"], PARTS)))


def test_partition_of_is_a_stable_hash_not_pythons():
    # Fixed values: the same on every machine and run (Python's str hash is salted per process).
    assert partition_of(["D000001", "D000002", "acct-9"], 7).tolist() == partition_of(
        np.array(["D000001", "D000002", "acct-9"], dtype=object), 7).tolist()
    assert partition_of(["D0000001", "D0000002"], 4).tolist() == [3, 1]


def test_layout_file_and_global_tables(export, root):
    layout = read_layout(root)
    assert (layout.partitions, layout.tables) == (PARTS, tuple(TABLES))
    assert json.loads((root / LAYOUT_FILE).read_text())["rows"]["activities"] == len(export.activities)
    small = read_global(root)
    assert small.contacts is None and small.activities is None
    assert len(small.deals) == len(export.deals) and len(small.stage_history) == len(export.stage_history)


def test_missing_optional_tables_stay_missing(export, tmp_path):
    lean = Export(deals=export.deals, stage_history=export.stage_history)
    write_partitioned(lean, tmp_path / "lean", 2)
    assert not (tmp_path / "lean" / "activities").exists()
    back = read_partition(tmp_path / "lean", 1)
    assert back.activities is None and back.contacts is None and back.field_history is None
    assert back.stage_history is not None


def test_a_corrupted_partition_file_is_named(root):
    (root / "activities" / partition_file(1)).write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ContractError) as caught:
        read_partition(root, 1)
    assert "activities/part-00001.parquet" in str(caught.value)
    read_partition(root, 0)  # the others still read


def test_a_contract_violation_names_file_table_column_and_row(root):
    path = root / "stage_history" / partition_file(2)
    table = pq.read_table(path).to_pandas()
    table.loc[3, "stage"] = "bogus"
    pq.write_table(arrow_table(table), path)
    with pytest.raises(ContractError) as caught:
        load_export(root)  # the local engine reads a partitioned export whole, through the same check
    violation = caught.value.violations[0]
    assert (violation.table, violation.column) == ("stage_history", "stage")
    assert violation.row.startswith("stage_history/part-00002.parquet row 4 (deal_id=")
    assert "bogus" in violation.reason


def test_a_deal_in_the_wrong_partition_is_reported(root):
    source, target = root / "deals" / partition_file(0), root / "deals" / partition_file(1)
    moved = pq.read_table(source).to_pandas().iloc[:1]
    both = pd.concat([pq.read_table(target).to_pandas(), moved], ignore_index=True)
    pq.write_table(arrow_table(both), target)
    with pytest.raises(ContractError) as caught:
        read_partition(root, 1, tables=["deals"])
    assert caught.value.violations[0].rule == "wrong_partition"
    assert "part-00000.parquet" in caught.value.violations[0].reason


def test_not_a_partitioned_export(tmp_path, export):
    write_tables({"deals": export.deals}, tmp_path / "folder")
    with pytest.raises(PartitionError, match="no partitions.json"):
        read_layout(tmp_path / "folder")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / LAYOUT_FILE).write_text('{"partitions": 0, "format": 1}')
    with pytest.raises(PartitionError, match="partitioned by"):
        read_layout(tmp_path / "bad")


def test_write_is_atomic_and_keeps_other_folders(export, root, tmp_path):
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    def fail(table: str, done: int, total: int) -> None:
        if table == "contacts":
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_partitioned(export, root, 5, progress=fail)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # the old partitions, untouched
    assert read_layout(root).partitions == PARTS
    assert [p.name for p in tmp_path.iterdir()] == ["parts"]  # no staging folder left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(PartitionError, match="not a partitioned export"):
        write_partitioned(export, tmp_path / "other", 2)


def test_partition_command(export, tmp_path):
    write_tables(export.tables(), tmp_path / "export", fmt="csv")
    runner = CliRunner()
    result = runner.invoke(app, ["partition", str(tmp_path / "export"), str(tmp_path / "parts"), "--partitions", "4"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 partitions" in result.output
    assert len(read_all(tmp_path / "parts").activities) == len(export.activities)
    inside = runner.invoke(app, ["partition", str(tmp_path / "export"), str(tmp_path / "export" / "p"), "--partitions", "2"])
    assert inside.exit_code == 1 and "overlaps" in inside.output
    broken = export.deals.assign(deal_type=["gift"] + export.deals["deal_type"].tolist()[1:])
    write_tables({**export.tables(), "deals": broken}, tmp_path / "broken", fmt="csv")
    refused = runner.invoke(app, ["partition", str(tmp_path / "broken"), str(tmp_path / "p2"), "--partitions", "2"])
    assert refused.exit_code == 1 and "deal_type" in refused.output and not (tmp_path / "p2").exists()


def test_generate_writes_straight_to_partitions(tmp_path):
    args = ["generate", "--deals", "60", "--seed", "4", "--truth-snapshots", "0", "--truth-grid-deals", "0"]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "folder" / "export")]).exit_code == 0
    result = runner.invoke(app, [*args, "--partitions", "3", "--out", str(tmp_path / "parts" / "export")])
    assert result.exit_code == 0, result.output
    folder = load_export(tmp_path / "folder" / "export")
    parts = read_all(tmp_path / "parts" / "export")
    for name in TABLES:
        if folder.table(name) is not None:
            pd.testing.assert_frame_equal(parts.table(name), in_partition_order(folder.table(name), 3), check_exact=True)
    messy = runner.invoke(app, ["generate", "--deals", "20", "--messy", "--partitions", "2", "--out", str(tmp_path / "m")])
    assert messy.exit_code == 1 and "--messy and --partitions" in messy.output


def test_validate_checks_every_partition_and_reports_them_together(export, root):
    runner = CliRunner()
    passed = runner.invoke(app, ["validate", str(root)])
    assert passed.exit_code == 0, passed.output
    assert f"passes the data contract in each of its {PARTS} partitions" in passed.output
    assert f"deals {len(export.deals)} rows" in passed.output
    for index in (1, 2):  # a broken row in two partitions: both named in one report
        path = root / "stage_history" / partition_file(index)
        table = pq.read_table(path).to_pandas()
        table.loc[0, "stage"] = "bogus"
        pq.write_table(arrow_table(table), path)
    failed = runner.invoke(app, ["validate", str(root)])
    assert failed.exit_code == 1, failed.output
    assert "stage_history/part-00001.parquet row 1" in failed.output
    assert "stage_history/part-00002.parquet row 1" in failed.output
