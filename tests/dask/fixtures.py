"""Fixtures for tests of the Dask engine, importable by any test module (``from tests.dask.fixtures import dask_client``).

``dask_client``: a 2-worker ``LocalCluster`` on 127.0.0.1 (single-threaded worker processes, no
dashboard port), started once per test module and always closed. ``partitioned_export``: a
small generated export as a folder and as 4 partitions, once per session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

PARTITIONS = 4
DEALS = 500
SEED = 23


@dataclass(frozen=True)
class PartitionedExport:
    folder: Path  # the export as dealrisk generate writes it (CSV tables)
    root: Path  # the same export as PARTITIONS partitions (dealrisk partition)
    export: object  # features.contract.schema.Export of the folder, checked


@pytest.fixture(scope="module")
def dask_client():
    from features.pointintime.distributed import cluster

    with cluster(None, workers=2) as client:
        yield client


@pytest.fixture(scope="session")
def partitioned_export(tmp_path_factory) -> PartitionedExport:
    from features.contract.io import write_tables
    from features.contract.load import load_export
    from features.contract.partitioned import write_partitioned
    from generator.export import generate_export

    base = tmp_path_factory.mktemp("partitioned")
    folder = write_tables(generate_export(DEALS, SEED, truth_snapshots=0, truth_grid_deals=0).tables, base / "export")
    export = load_export(folder)
    write_partitioned(export, base / "parts", PARTITIONS)
    return PartitionedExport(folder=folder, root=base / "parts", export=export)
