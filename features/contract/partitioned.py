"""A partitioned export: the contract's tables as Parquet, split by deal so that every row of a deal
lands in one partition. What the Dask engine (``features.pointintime.distributed``) reads.

Layout, written by ``write_partitioned`` (``dealrisk partition``, ``dealrisk generate --partitions``)::

    ROOT/partitions.json                 {"partitions": N, "key": "deal_id", "hash": ..., "tables": [...], "format": 1}
    ROOT/<table>/part-00000.parquet ...  one file per partition for each table the export has

A deal's partition is ``partition_of``: a keyed SipHash of its id (``pandas.util.hash_array``, the
same on every machine and Python run, unlike ``hash()``) modulo N. A partition is read back through
the same contract check as an export folder (``check_tables``), so a broken file is reported with
its path, table, column, row and reason; a deal in the wrong partition is a violation too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract.check import check_tables
from features.contract.io import read_table_file, staged_folder
from features.contract.mapping import MappingError, NameMapping, load_mapping
from features.contract.schema import TABLES, Export
from features.contract.violations import DETAIL_LIMIT, ContractError, Violation

LAYOUT_FILE = "partitions.json"
LAYOUT_FORMAT = 1
PARTITION_KEY = "deal_id"
HASH_KEY = "0123456789123456"  # pandas.util.hash_array's default key, written down so it never drifts
HASH_RULE = f"pandas.util.hash_array(deal_id as UTF-8 text, hash_key={HASH_KEY!r}) % partitions"
GLOBAL_TABLES: tuple[str, ...] = ("deals", "stage_history", "field_history")
MAX_PARTITIONS = 100_000  # part-NNNNN: five digits


class PartitionError(ValueError):
    """A folder that is not a usable partitioned export, or a partition request that cannot be met."""


class ClusterError(PartitionError):
    """The Dask cluster a partitioned export should be read on cannot be reached (``--scheduler``)."""


@dataclass(frozen=True)
class PartitionLayout:
    """What ``partitions.json`` says: how many partitions, and which tables the export has."""

    root: Path
    partitions: int
    tables: tuple[str, ...]
    rows: dict[str, int]

    def path(self, table: str, index: int) -> Path:
        """The Parquet file of one table's partition."""
        return self.root / table / partition_file(index)


def partition_file(index: int) -> str:
    """File name of partition ``index``.

    >>> partition_file(3)
    'part-00003.parquet'
    """
    return f"part-{index:05d}.parquet"


def partition_of(deal_ids: Iterable, partitions: int) -> np.ndarray:
    """The partition (0..partitions-1) of each deal id: a stable hash of the id's text, modulo ``partitions``.

    >>> partition_of(["D0000001", "D0000002", "D0000001"], 4).tolist()
    [3, 1, 3]
    """
    ids = np.asarray(pd.Series(deal_ids, dtype=object).astype(str).to_numpy(dtype=object), dtype=object)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    hashed = pd.util.hash_array(ids, encoding="utf8", hash_key=HASH_KEY, categorize=True)
    return (hashed % np.uint64(partitions)).astype(np.int64)


def is_partitioned(root: Path) -> bool:
    """True when ``root`` is a folder holding a ``partitions.json``."""
    return (Path(root) / LAYOUT_FILE).is_file()


# --------------------------------------------------------------------------------------------
# Writing


def write_partitioned(
    export: Export,
    out: Path,
    partitions: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> PartitionLayout:
    """Write a checked export as ``partitions`` Parquet partitions by deal id, atomically.

    Everything goes into a temporary sibling of ``out`` that is renamed into place at the end: an
    error or an interrupt leaves nothing half-written. An existing ``out`` is replaced only when it
    is a partitioned export or an empty folder. Row order within a table is kept in each partition
    (events of one time keep their file order). ``progress(table, done, total)`` is called after
    each file.
    """
    if not 1 <= int(partitions) <= MAX_PARTITIONS:
        raise PartitionError(f"partitions must be between 1 and {MAX_PARTITIONS}, got {partitions}")
    partitions = int(partitions)
    out = Path(out)
    if out.exists() and not (out.is_dir() and (is_partitioned(out) or not any(out.iterdir()))):
        raise PartitionError(f"{out} exists and is not a partitioned export or an empty folder; "
                             "choose another output folder (it is replaced as a whole)")
    present = [name for name, table in export.tables().items() if table is not None]
    deal_part = pd.Series(partition_of(export.deals[PARTITION_KEY], partitions),
                          index=pd.Index(export.deals[PARTITION_KEY].astype(str).to_numpy(dtype=object)))
    rows: dict[str, int] = {}
    with staged_folder(out) as staging:
        for name in present:
            table = export.table(name)
            rows[name] = len(table)
            _write_table_partitions(name, table, deal_part, partitions, staging / name, progress)
        layout = {"partitions": partitions, "key": PARTITION_KEY, "hash": HASH_RULE, "tables": present,
                  "rows": rows, "format": LAYOUT_FORMAT}
        (staging / LAYOUT_FILE).write_text(json.dumps(layout, indent=2) + "\n")
    return PartitionLayout(root=out, partitions=partitions, tables=tuple(present), rows=rows)


def _write_table_partitions(name: str, table: pd.DataFrame, deal_part: pd.Series, partitions: int, folder: Path,
                            progress: Callable[[str, int, int], None] | None) -> None:
    """One table's partitions: rows sorted by partition once (stable), each slice one Parquet file."""
    folder.mkdir()
    ids = pd.Index(table[PARTITION_KEY].astype(str).to_numpy(dtype=object))
    part = deal_part.to_numpy()[deal_part.index.get_indexer(ids)] if len(table) else np.zeros(0, dtype=np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    arrow = arrow_table(table.iloc[order].reset_index(drop=True))
    for k in range(partitions):
        pq.write_table(arrow.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k])), folder / partition_file(k))
        if progress is not None:
            progress(name, k + 1, partitions)


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A typed contract table as an Arrow table; UTC timestamps handed over as their UTC values.

    pyarrow's own conversion of a tz-aware column goes through ``Series.values``, which pandas 3.1
    deprecates (a warning per column per file).
    """
    zoned = [name for name in frame.columns if isinstance(frame[name].dtype, pd.DatetimeTZDtype)]
    table = pa.Table.from_pandas(frame.drop(columns=zoned), preserve_index=False)
    for name in zoned:  # in column order, so each lands at its own position
        unit = frame[name].dtype.unit
        values = pa.array(frame[name].dt.tz_convert(None).to_numpy(), type=pa.timestamp(unit), from_pandas=True)
        table = table.add_column(frame.columns.get_loc(name), name, values.cast(pa.timestamp(unit, tz="UTC")))
    return table


# --------------------------------------------------------------------------------------------
# Reading


def read_layout(root: Path) -> PartitionLayout:
    """Read ``partitions.json``; ``PartitionError`` naming the folder and what is wrong."""
    root = Path(root)
    path = root / LAYOUT_FILE
    if not root.is_dir():
        raise PartitionError(f"partitioned export {root} does not exist or is not a folder")
    if not path.is_file():
        raise PartitionError(f"{root} is not a partitioned export: it has no {LAYOUT_FILE} "
                             "(write one with 'dealrisk partition EXPORT OUT --partitions N')")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PartitionError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PartitionError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != LAYOUT_FORMAT:
        raise PartitionError(f"{path}: format must be {LAYOUT_FORMAT}, got {data.get('format')!r}")
    if data.get("key") != PARTITION_KEY or data.get("hash") != HASH_RULE:
        raise PartitionError(f"{path}: partitioned by {data.get('key')!r} with {data.get('hash')!r}; "
                             f"this version reads {PARTITION_KEY!r} with {HASH_RULE!r}")
    partitions, tables = data.get("partitions"), data.get("tables")
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise PartitionError(f"{path}: partitions must be a whole number 1-{MAX_PARTITIONS}, got {partitions!r}")
    if not isinstance(tables, list) or "deals" not in tables or any(t not in TABLES for t in tables):
        raise PartitionError(f"{path}: tables must list contract tables including deals "
                             f"({', '.join(TABLES)}), got {tables!r}")
    rows = data.get("rows") if isinstance(data.get("rows"), dict) else {}
    return PartitionLayout(root=root, partitions=partitions, tables=tuple(t for t in TABLES if t in tables),
                           rows={str(k): int(v) for k, v in rows.items() if isinstance(v, int)})


def _mapping(mapping: NameMapping | Path | None) -> NameMapping:
    if isinstance(mapping, NameMapping):
        return mapping
    try:
        return load_mapping(mapping)
    except MappingError as exc:
        raise ContractError([Violation("(mapping)", "-", str(mapping), str(exc), "mapping")]) from None


def read_partition(root: Path, index: int, tables: Iterable[str] | None = None,
                   mapping: NameMapping | Path | None = None, layout: PartitionLayout | None = None) -> Export:
    """One partition as a checked ``Export``: the same contract check as an export folder.

    ``tables``: the tables to read (default: all the export has; ``deals`` is always read). A
    table the export lacks is None, as for a folder. ``ContractError`` names the partition file
    with each violation's row (``deals/part-00003.parquet row 17 (deal_id=D1)``).
    """
    layout = layout or read_layout(root)
    if not 0 <= int(index) < layout.partitions:
        raise PartitionError(f"{layout.root}: partition {index} does not exist (it has {layout.partitions})")
    wanted = set(layout.tables if tables is None else tables) | {"deals"}
    unknown = wanted - set(TABLES)
    if unknown:
        raise PartitionError(f"unknown tables {sorted(unknown)}; the contract's tables are {', '.join(TABLES)}")
    raw: dict[str, pd.DataFrame] = {}
    for name in (t for t in layout.tables if t in wanted):
        path = layout.path(name, index)
        relative = f"{name}/{path.name}"
        if not path.is_file():
            raise ContractError([Violation(name, "-", relative, f"partition file {path} is missing", "file")])
        try:
            raw[name] = read_table_file(path, parquet=True)
        except ValueError as exc:
            raise ContractError([Violation(name, "-", relative, f"{path}: {exc}", "file")]) from None
    result = check_tables(raw, _mapping(mapping))
    violations = list(result.violations)
    counts = dict(result.counts)
    if result.export is not None:
        misplaced, count = _misplaced_deals(result.export.deals, index, layout.partitions)
        violations += misplaced
        if count:
            counts[("deals", PARTITION_KEY, "wrong_partition")] = count
    if violations:
        named = [Violation(v.table, v.column, _in_file(v, index), v.reason, v.rule) for v in violations]
        raise ContractError(named, counts)
    return result.export


def _in_file(violation: Violation, index: int) -> str:
    """The violation's row prefixed with its partition file, relative to the root."""
    if violation.table in TABLES:
        return f"{violation.table}/{partition_file(index)} {violation.row}"
    return f"partition {partition_file(index)} {violation.row}"


def _misplaced_deals(deals: pd.DataFrame, index: int, partitions: int) -> tuple[list[Violation], int]:
    """Deals whose id hashes to another partition (their rows would be split from the rest of the
    export), in detail up to ``DETAIL_LIMIT``, and how many there are."""
    home = partition_of(deals[PARTITION_KEY], partitions)
    wrong = np.flatnonzero(home != index)
    return [
        Violation("deals", PARTITION_KEY, f"row {i + 1} (deal_id={deals[PARTITION_KEY].iloc[i]})",
                  f"this deal belongs in {partition_file(int(home[i]))} (partition {home[i]}), not in partition {index}",
                  "wrong_partition")
        for i in wrong[:DETAIL_LIMIT]
    ], len(wrong)


def concat_exports(parts: list[Export]) -> Export:
    """Partitions (checked exports with the same tables) as one export, in partition order."""
    tables = {}
    for name in TABLES:
        pieces = [part.table(name) for part in parts]
        present = [piece for piece in pieces if piece is not None]
        tables[name] = pd.concat(present, ignore_index=True) if present else None
    return Export(**tables)


def read_global(root: Path, tables: Iterable[str] = GLOBAL_TABLES, mapping: NameMapping | Path | None = None) -> Export:
    """The given tables of every partition as one checked export (default: the small tables every
    partition needs whole: deals, stage_history, field_history). Tables the export lacks are None."""
    layout = read_layout(root)
    wanted = tuple(tables)
    return concat_exports([read_partition(root, k, wanted, mapping, layout) for k in range(layout.partitions)])


def read_all(root: Path, mapping: NameMapping | Path | None = None) -> Export:
    """The whole partitioned export as one checked export (the local engine's way to read it)."""
    layout = read_layout(root)
    return concat_exports([read_partition(root, k, None, mapping, layout) for k in range(layout.partitions)])
