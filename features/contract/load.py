"""Loading an export folder through the contract: files -> raw tables -> checked ``Export`` or ``ContractError``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.contract.check import check_tables
from features.contract.io import (
    ExportFolderError,
    find_table_files,
    read_raw_tables,
)
from features.contract.mapping import MappingError, NameMapping, load_mapping
from features.contract.partitioned import PartitionError, is_partitioned, read_all
from features.contract.schema import (
    TABLES,
    Export,
)
from features.contract.violations import ContractError, Violation


def _folder_violation(folder: Path, reason: str) -> Violation:
    return Violation("(export)", "-", str(folder), reason, "folder")


def read_export_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Read an export folder's raw tables, turning folder and file problems into ``ContractError``."""
    folder = Path(folder)
    try:
        files = find_table_files(folder)
    except ExportFolderError as exc:
        raise ContractError([_folder_violation(folder, str(exc))]) from None
    if not files:
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise ContractError(
            [
                _folder_violation(
                    folder,
                    "no contract tables found; expected deals.csv or deals.parquet and optionally "
                    f"{', '.join(n for n in TABLES if n != 'deals')} (.csv or .parquet); "
                    f"files found: {', '.join(present) or '(none)'}",
                )
            ]
        )
    try:
        return read_raw_tables(folder)
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # pandas/pyarrow parser errors are ValueErrors
        raise ContractError([_folder_violation(folder, f"a table file cannot be read: {exc}")]) from None


def load_export(folder: Path, mapping: NameMapping | Path | None = None) -> Export:
    """Read and check an export folder; return the typed export or raise ``ContractError``.

    A partitioned export (``features.contract.partitioned``) is read whole, each partition through
    the same check, so every command of the local engine reads it too.

    ``mapping`` is a loaded ``NameMapping``, a YAML file to load, or None for the default; an
    unusable mapping file is also a ``ContractError``.
    """
    if not isinstance(mapping, NameMapping):
        try:
            mapping = load_mapping(mapping)
        except MappingError as exc:  # one error type for callers: the inputs are not usable
            raise ContractError([Violation("(mapping)", "-", str(mapping), str(exc), "mapping")]) from None
    if is_partitioned(Path(folder)):  # a partitioned export (dealrisk partition), read whole
        try:
            return read_all(Path(folder), mapping)
        except PartitionError as exc:
            raise ContractError([_folder_violation(Path(folder), str(exc))]) from None
    result = check_tables(read_export_tables(folder), mapping)
    if result.export is None:
        raise ContractError(result.violations, result.counts)
    return result.export


