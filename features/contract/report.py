"""``dealrisk validate``: check an export folder (or a partitioned export) and print the grouped report."""

from __future__ import annotations

from pathlib import Path

from features.contract.check import check_tables
from features.contract.load import read_export_tables
from features.contract.mapping import MappingError, load_mapping
from features.contract.partitioned import PartitionError, is_partitioned, read_layout, read_partition
from features.contract.violations import (
    DEFAULT_MAX_PER_RULE,
    ContractError,
    format_report,
)


def run_validate(data: Path, mapping: Path | None = None, max_errors: int = DEFAULT_MAX_PER_RULE) -> int:
    """Check an export folder and print the report; return the exit code.

    0: the export passes (one summary line); 1: it breaks the contract (full report);
    2: the mapping file itself is unusable.
    """
    try:
        name_mapping = load_mapping(mapping)
    except MappingError as exc:
        print(f"error: {exc}")
        return 2
    if is_partitioned(data):
        return _validate_partitions(data, name_mapping, max_errors)
    try:
        raw = read_export_tables(data)
    except ContractError as exc:
        print(format_report(exc.violations, max_errors))
        return 1
    result = check_tables(raw, name_mapping)
    for note in result.notes:
        print(f"note: {note}")
    if result.export is None:
        print(format_report(result.violations, max_errors, counts=result.counts))
        return 1
    sizes = ", ".join(
        f"{name} {len(frame)} rows" if frame is not None else f"{name} absent"
        for name, frame in result.export.tables().items()
    )
    print(f"OK: {data} passes the data contract ({sizes})")
    return 0


def _validate_partitions(root: Path, mapping, max_errors: int) -> int:
    """A partitioned export (``dealrisk partition``): every partition through the same contract
    check, all partitions' violations in one report (each names its partition file and row).

    Rules across partitions (an ``activity_id`` repeated in two partitions) are not checked: each
    partition is checked on its own, as the Dask engine reads it.
    """
    try:
        layout = read_layout(root)
    except PartitionError as exc:
        print(f"error: {exc}")
        return 1
    violations, rows = [], {}
    for index in range(layout.partitions):
        try:
            part = read_partition(root, index, mapping=mapping, layout=layout)
        except ContractError as exc:
            violations.extend(exc.violations)
            continue
        for name, frame in part.tables().items():
            rows[name] = None if frame is None else (rows.get(name) or 0) + len(frame)
    if violations:
        print(format_report(violations, max_errors))
        return 1
    sizes = ", ".join(f"{name} {count} rows" if count is not None else f"{name} absent" for name, count in rows.items())
    print(f"OK: {root} passes the data contract in each of its {layout.partitions} partitions ({sizes})")
    return 0
