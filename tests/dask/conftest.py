"""The Dask engine's fixtures (tests/dask/fixtures.py) for every test in this folder."""

from tests.dask.fixtures import dask_client, partitioned_export  # noqa: F401 - fixtures
