"""``dealrisk validate``: check an export folder and print the grouped report."""

from __future__ import annotations

from pathlib import Path

from features.contract.check import check_tables
from features.contract.load import read_export_tables
from features.contract.mapping import MappingError, load_mapping
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
