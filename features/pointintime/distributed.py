"""The Dask engine: the feature core's own functions applied to each partition of a partitioned export.

A partitioned export (``features.contract.partitioned``) holds every row of a deal in one
partition, and a deal's features depend only on its own rows and on the fitted feature state
(``EventIndex`` sums restart at each deal). So the Dask path is the local path run once per
partition, on the workers: ``build_features`` (and any ``fn(partition_export, ...)``) unchanged,
no second implementation of any feature. What crosses deals is computed once for the whole
export and sent to every partition:

- the feature state (won-deal stage days, the closed-deal history behind owner/account win rates
  and segment amounts): ``fit_feature_state`` on ``read_global`` (deals, stage_history,
  field_history whole), with the inputs the contacts and activities tables give combined over the
  partitions (``fit_feature_state_dask``);
- the export's end (the latest time in any table: maturity, default as_of): ``export_end_dask``.

The partitions are read by the workers themselves, so the export's folder must be reachable at the
same path on every worker (a shared or network file system on a real cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import dask
import dask.dataframe as dd
import pandas as pd
from distributed import Client, Future, LocalCluster
from distributed.comm import get_address_host_port

from features.contract.check import check_tables
from features.contract.partitioned import (
    GLOBAL_TABLES,
    ClusterError,
    PartitionLayout,
    partition_of,
    read_global,
    read_layout,
    read_partition,
)
from features.contract.schema import TABLES, TIMESTAMP_DTYPE, Export
from features.contract.violations import shown_text
from features.pointintime.definitions import DEFAULT_FISCAL_YEAR_START_MONTH, INPUTS
from features.pointintime.events import parse_as_of
from features.pointintime.inputs import find_inputs, missing_inputs
from features.pointintime.pipeline import build_features, select_open_deals
from features.pointintime.snapshots import export_end
from features.pointintime.state import FeatureState, fit_feature_state

# How long to try reaching a running scheduler (--scheduler) before saying it cannot be reached.
CONNECT_SECONDS = 20
# Inputs only the contacts and activities tables decide (``find_inputs``): the tables
# ``read_global`` leaves out, so they are found partition by partition and combined.
PARTITION_INPUTS: tuple[str, ...] = ("contacts", "activities", "activities.customer_talk_ratio", "activities.next_step_set")


@contextlib.contextmanager
def cluster(scheduler: str | None = None, workers: int = 2, memory_limit: str | None = None) -> Iterator[Client]:
    """A Dask client, closed (with its ``LocalCluster``) however the block ends.

    ``scheduler``: the address of a running scheduler (``tcp://host:8786``); None starts a
    ``LocalCluster`` of ``workers`` single-threaded processes on 127.0.0.1 (no dashboard port
    taken, ``memory_limit`` per worker, e.g. "2GiB"; default Dask's share of this machine).
    """
    if scheduler is not None:
        try:
            # A malformed address is refused before a Client exists: a Client that failed to parse
            # it still tries to close at exit, for 40 s, with a traceback.
            get_address_host_port(scheduler)
            client = Client(scheduler, set_as_default=False, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError, ValueError) as exc:  # not an address, refused, timed out
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ClusterError(f"--scheduler {shown_text(scheduler, 100)}: cannot reach a Dask scheduler there "
                               f"({shown_text(reason, 200)})") from None
        with client:
            yield client
        return
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    options = {} if memory_limit is None else {"memory_limit": memory_limit}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0", silence_logs=logging.ERROR, **options) as local:
        with Client(local, set_as_default=False) as client:
            client.wait_for_workers(workers)  # a LocalCluster's workers register after it returns
            yield client


def describe_cluster(client: Client) -> dict:
    """The cluster a run used: scheduler address, workers, threads and memory per worker (for run records).

    Asked of the scheduler now: ``Client.scheduler_info`` is the client's cached copy, refreshed every
    few seconds, and just after connecting it may list no worker (a run then recorded 0 workers).
    """
    workers = client.run_on_scheduler(_worker_resources)
    return {
        "scheduler": client.scheduler.address,
        "workers": len(workers),
        "threads": sum(threads for threads, _ in workers.values()),
        "memory_limit_per_worker": max((memory or 0 for _, memory in workers.values()), default=0),
    }


def _worker_resources(dask_scheduler) -> dict[str, tuple[int, int]]:
    """On the scheduler: each worker's address -> (threads, memory limit in bytes)."""
    return {address: (state.nthreads, state.memory_limit) for address, state in dask_scheduler.workers.items()}


def empty_export(tables: Iterable[str]) -> Export:
    """A checked export with no rows, holding the given tables (the others None): what ``fn`` makes of it is the meta."""
    raw = {name: pd.DataFrame({c: pd.Series([], dtype=object) for c in TABLES[name].column_names}) for name in tables}
    return check_tables(raw).export


def _wanted_tables(layout: PartitionLayout, tables: Iterable[str] | None) -> tuple[str, ...]:
    wanted = set(layout.tables if tables is None else tables) | {"deals"}
    return tuple(name for name in layout.tables if name in wanted)


def _on_partition(layout: PartitionLayout, index: int, tables: tuple[str, ...], fn: Callable, *args):
    """Worker side: read one partition through the contract check, apply ``fn``."""
    return fn(read_partition(layout.root, index, tables, layout=layout), *args)


def _share(client: Client, value):
    """A value every task needs, sent to the workers once (plain scalars travel in the graph)."""
    if value is None or isinstance(value, (str, int, float, bool, pd.Timestamp, Path)):
        return value
    return client.scatter([value], broadcast=True, hash=False)[0]


def _tasks(client: Client, root: Path, fn: Callable, args: tuple, tables, per_partition: list | None = None):
    layout = read_layout(Path(root).absolute())  # the workers read it: not relative to this process's folder
    wanted = _wanted_tables(layout, tables)
    shared = [_share(client, arg) for arg in args]
    run = dask.delayed(_on_partition, pure=False)
    tasks = [run(layout, k, wanted, fn, *([] if per_partition is None else [per_partition[k]]), *shared)
             for k in range(layout.partitions)]
    return layout, wanted, tasks


def map_partitions(client: Client, root: Path, fn: Callable, *args, meta: pd.DataFrame | None = None,
                   tables: Iterable[str] | None = None) -> dd.DataFrame:
    """``fn(partition_export, *args)`` on every partition, one task each on the workers, as one Dask frame.

    ``fn`` returns a pandas frame (a module-level function or a ``functools.partial``: it is
    pickled to the workers). ``args`` are sent to the workers once (``client.scatter``).
    ``tables``: the tables to read (default all; deals always). ``meta``: the frame's empty
    shape; by default what ``fn`` makes of an empty export, here. Compute with ``client.compute``.
    """
    layout, wanted, tasks = _tasks(client, Path(root), fn, args, tables)
    if meta is None:
        meta = fn(empty_export(wanted), *args).iloc[:0]
    return dd.from_delayed(tasks, meta=meta, verify_meta=True)


def submit_partitions(client: Client, root: Path, fn: Callable, *args, tables: Iterable[str] | None = None) -> list[Future]:
    """``fn(partition_export, *args)`` of every partition, started on the workers: one future each, in partition order.

    For a caller that shows progress as partitions finish (``distributed.as_completed``).
    """
    _, _, tasks = _tasks(client, Path(root), fn, args, tables)
    return client.compute(tasks)


def gather_partitions(client: Client, root: Path, fn: Callable, *args, tables: Iterable[str] | None = None) -> list:
    """``fn(partition_export, *args)`` of every partition, computed on the workers, gathered here in partition order.

    For small per-partition results that are not frames (a time, a dict of found inputs).
    """
    return client.gather(submit_partitions(client, root, fn, *args, tables=tables))


def split_points(points: pd.DataFrame, partitions: int) -> list[pd.DataFrame]:
    """Points (deal_id, as_of, ...) by the partition their deal is in, each keeping its rows' index and order."""
    home = partition_of(points["deal_id"], partitions)
    return [points.loc[home == k] for k in range(partitions)]


def _features_at(export: Export, points: Callable | pd.DataFrame, state: FeatureState) -> pd.DataFrame:
    return build_features(export, points(export) if callable(points) else points, state)


def build_features_dask(client: Client, root: Path, points: Callable | pd.DataFrame, state: FeatureState) -> dd.DataFrame:
    """``build_features`` of every partition on the workers: the same function, the same state everywhere.

    ``points``: a function of a partition's export giving its points (``select_open_deals`` at an
    as_of, training snapshots...), run on the workers; or a points frame of the whole export
    (deal_id, as_of), split here by partition, each row keeping its index so that the computed
    frame lines up with it (``.sort_index()``). With a function the index is each partition's own:
    sort by deal_id and as_of to compare.
    """
    root = Path(root)
    layout = read_layout(root)
    meta = build_features(empty_export(layout.tables), pd.DataFrame({
        "deal_id": pd.Series([], dtype="str"), "as_of": pd.Series([], dtype=TIMESTAMP_DTYPE)}), state).iloc[:0]
    if callable(points):
        return map_partitions(client, root, _features_at, points, state, meta=meta)
    _, _, tasks = _tasks(client, root, _features_at, (state,), None, per_partition=split_points(points, layout.partitions))
    return dd.from_delayed(tasks, meta=meta, verify_meta=True)


def features_as_of_dask(client: Client, root: Path, as_of, state: FeatureState) -> pd.DataFrame:
    """``dealrisk features``' frame on Dask: every deal open at ``as_of``, sorted by deal_id (as ``select_open_deals`` picks them)."""
    points = functools.partial(select_open_deals, as_of=parse_as_of(as_of))
    frame = client.compute(build_features_dask(client, root, points, state)).result()
    return frame.sort_values(["deal_id", "as_of"], kind="stable").reset_index(drop=True)


def _partition_end(export: Export) -> pd.Timestamp | None:
    return export_end(export) if len(export.deals) else None


def export_end_dask(client: Client, root: Path) -> pd.Timestamp:
    """``export_end`` of the whole partitioned export: the latest of the partitions' ends."""
    ends = [end for end in gather_partitions(client, root, _partition_end) if end is not None]
    if not ends:
        raise ValueError(f"{root}: the partitioned export has no deals")
    return max(ends)


def _partition_inputs(export: Export, cutoff) -> dict[str, str | None]:
    found = find_inputs(export, before=cutoff)
    return {key: found[key] for key in PARTITION_INPUTS}


def combine_inputs(found: list[dict[str, str | None]]) -> dict[str, str | None]:
    """Inputs found partition by partition: present when any partition has it, else the first one's reason.

    >>> combine_inputs([{"contacts": "the contacts table has no rows"}, {"contacts": None}])
    {'contacts': None}
    """
    keys = list(found[0]) if found else []
    return {key: None if any(part[key] is None for part in found) else found[0][key] for key in keys}


def fit_feature_state_dask(client: Client, root: Path, cutoff,
                           fiscal_year_start_month: int = DEFAULT_FISCAL_YEAR_START_MONTH,
                           global_export: Export | None = None) -> FeatureState:
    """``fit_feature_state`` of the whole partitioned export, equal to the local one.

    Fitted here on ``read_global`` (deals, stage_history, field_history: what the closed-deal
    history, won-stage days and first amounts read); which inputs the contacts and activities
    tables give before the cutoff is found on the workers, partition by partition, and combined.
    ``global_export``: those tables when the caller has read them already (training has), so they are
    not read a second time.
    """
    root = Path(root)
    cutoff = parse_as_of(cutoff)
    if global_export is None:
        global_export = read_global(root, GLOBAL_TABLES)
    state = fit_feature_state(global_export, cutoff, fiscal_year_start_month)
    found = combine_inputs(gather_partitions(client, root, _partition_inputs, cutoff,
                                             tables=("deals", "contacts", "activities")))
    missing = {**(state.missing_inputs or {}), **missing_inputs(found)}
    for key in PARTITION_INPUTS:
        if found[key] is None:
            missing.pop(key, None)
    return dataclasses.replace(state, missing_inputs={key: missing[key] for key in INPUTS if key in missing})
