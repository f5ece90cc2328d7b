"""Reading and writing export folders (CSV or Parquet). File I/O lives here, at the edge."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from features.contract.schema import TABLES
from features.contract.violations import shown_text

SUFFIXES = (".csv", ".parquet")


class ExportFolderError(ValueError):
    """The export folder itself is unusable (missing, ambiguous files)."""


def find_table_files(folder: Path) -> dict[str, Path]:
    """Map each contract table present in ``folder`` to its file; ignore other files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportFolderError(f"export folder {folder} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for name in TABLES:
        candidates = [folder / f"{name}{suffix}" for suffix in SUFFIXES if (folder / f"{name}{suffix}").exists()]
        if len(candidates) > 1:
            raise ExportFolderError(
                f"table {name}: both {candidates[0].name} and {candidates[1].name} exist in {folder}; keep one"
            )
        if candidates:
            found[name] = candidates[0]
    return found


def read_raw_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Read every contract table in ``folder`` as raw strings (no type coercion, nothing dropped).

    CSV cells are read as text so that the contract check, not the reader, decides what is
    valid; Parquet keeps its own types and is checked the same way.
    """
    return {name: read_table_file(path, parquet=path.suffix == ".parquet") for name, path in find_table_files(folder).items()}


PARQUET_MAGIC = b"PAR1"


def read_table_file(source, parquet: bool) -> pd.DataFrame:
    """Read one table from a path or binary file object: CSV cells as text, Parquet with its types.

    Raises ``ValueError`` (with the reader's reason) when the bytes are not a readable table. The
    readers parse untrusted bytes (uploads too), so any reader failure counts as unreadable.
    """
    try:
        if parquet:
            # One file's row groups read by pyarrow's file reader, then pandas' conversion: the
            # same frame as ``pd.read_parquet`` (its dataset layer costs ~1.5 ms a table, a third
            # of reading a 1000-deal upload).
            return pq.ParquetFile(source).read().to_pandas()
        # utf-8-sig: spreadsheet exports often start with a byte-order mark before "deal_id".
        return pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for malformed input
        kind = "Parquet" if parquet else "CSV"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"not a readable {kind} table: {shown_text(reason, 300)}") from None


def read_table_bytes(data: bytes, max_bytes: int | None = None) -> pd.DataFrame:
    """Read one uploaded table: Parquet when it starts with Parquet's magic bytes, CSV otherwise.

    ``max_bytes``: the most a Parquet table may decode to (``TableTooLarge`` beyond, found before
    its text is decoded): its string columns are read dictionary-encoded, each distinct value
    once, and their decoded size summed from the dictionaries, because a few hundred bytes of
    Parquet can hold a million copies of one long string. A CSV table is its own decoded text.
    """
    if data[:4] != PARQUET_MAGIC or max_bytes is None:
        return read_table_file(io.BytesIO(data), parquet=data[:4] == PARQUET_MAGIC)
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        text = [f.name for f in parquet.schema_arrow if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
        table = pq.ParquetFile(io.BytesIO(data), read_dictionary=text).read() if text else parquet.read()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for malformed input
        raise ValueError(f"not a readable Parquet table: {_first_line(exc)}") from None
    size = decoded_bytes(table)
    if size > max_bytes:
        raise TableTooLarge("bytes decoded", size, max_bytes)
    try:
        for position, column in enumerate(table.schema):
            if pa.types.is_dictionary(column.type) and column.name in text:
                table = table.set_column(position, column.name, table.column(position).cast(column.type.value_type))
        return table.to_pandas()
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"not a readable Parquet table: {_first_line(exc)}") from None


def decoded_bytes(table: pa.Table) -> int:
    """The bytes ``table``'s columns take decoded: a dictionary column's values counted once per row
    that points at them (without decoding them), other columns as held."""
    size = 0
    for column in table.columns:
        for chunk in column.chunks:
            if not pa.types.is_dictionary(chunk.type):
                size += chunk.nbytes
                continue
            lengths = pc.binary_length(chunk.dictionary.cast(pa.large_binary()))
            size += int(pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0) + chunk.indices.nbytes
    return size


class TableTooLarge(ValueError):
    """A table bigger than allowed, found before its rows or values were decoded."""

    def __init__(self, what: str, count: int, limit: int) -> None:
        super().__init__(f"{count:,} {what}; the limit is {limit:,}")
        self.what = what
        self.count = count
        self.limit = limit


# Most bytes of Parquet metadata (the footer: schema, row groups, statistics) read from an upload;
# a table of the contract with a few row groups needs a few KiB.
PARQUET_FOOTER_LIMIT = 1024 * 1024
# Most columns of an uploaded table (the widest, deals, has 14 and its context_* columns).
TABLE_COLUMN_LIMIT = 256


@dataclass(frozen=True)
class TableShape:
    """What a table file holds, from its header (CSV) or footer (Parquet), before any row is read."""

    kind: str  # "CSV" or "Parquet"
    rows: int  # data rows at most: the footer's count (Parquet), line ends after the header (CSV)
    columns: tuple[str, ...]  # the table's columns, as the reader will name them
    nested: tuple[str, ...] = ()  # Parquet columns of lists, structs or maps: not one value a cell
    data_bytes: int = 0  # Parquet: its column data uncompressed (footer); CSV: the file's size


def table_shape(data: bytes) -> TableShape:
    """Rows, columns and size of an uploaded table (as ``read_table_bytes`` tells them apart) from
    its first line or its footer, without parsing a row: the checks of an upload's size come first.

    CSV rows are counted as line ends after the header (LF, CRLF or CR): at
    least as many as the data rows (blank lines and line breaks inside quotes count too). Parquet
    rows are the largest of the file's count, its row groups' counts and its columns' value
    counts, so a footer that disagrees with itself is taken at its largest. ``ValueError`` when
    the first line or the footer cannot be read; ``TableTooLarge`` for a footer over
    ``PARQUET_FOOTER_LIMIT`` or more columns than ``TABLE_COLUMN_LIMIT``.
    """
    if data[:4] == PARQUET_MAGIC:
        return _parquet_shape(data)
    end = min([i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0], default=len(data))
    if data.count(b",", 0, end) >= TABLE_COLUMN_LIMIT:  # before the header becomes a list of names
        raise TableTooLarge("columns", data.count(b",", 0, end) + 1, TABLE_COLUMN_LIMIT)
    try:
        header = data[:end].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not a readable CSV table: {_first_line(exc)}") from None
    columns = tuple(next(csv.reader([header]), [])) if header else ()
    line_ends = data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
    lines = line_ends + (0 if data.endswith((b"\n", b"\r")) or not data else 1)
    return TableShape("CSV", max(lines - 1, 0), columns, data_bytes=len(data))


def _parquet_shape(data: bytes) -> TableShape:
    footer = int.from_bytes(data[-8:-4], "little") if len(data) >= 12 and data[-4:] == PARQUET_MAGIC else 0
    if footer > PARQUET_FOOTER_LIMIT:
        raise TableTooLarge("bytes of Parquet metadata", footer, PARQUET_FOOTER_LIMIT)
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
        meta = parquet.metadata
        if meta.num_columns > TABLE_COLUMN_LIMIT:
            raise TableTooLarge("columns", meta.num_columns, TABLE_COLUMN_LIMIT)
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        values = [sum(group.column(j).num_values for group in groups) for j in range(meta.num_columns)]
        rows = max([meta.num_rows, sum(group.num_rows for group in groups), *values])
        data_bytes = sum(max(group.total_byte_size, sum(group.column(j).total_uncompressed_size
                                                        for j in range(group.num_columns))) for group in groups)
        schema = parquet.schema_arrow
        index = {name for name in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(name, str)}
    except TableTooLarge:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for malformed input
        raise ValueError(f"not a readable Parquet table: {_first_line(exc)}") from None
    columns = tuple(field.name for field in schema if field.name not in index)
    nested = tuple(field.name for field in schema if pa.types.is_nested(field.type))
    return TableShape("Parquet", max(rows, 0), columns, nested, max(data_bytes, 0))


def _first_line(exc: Exception) -> str:
    """A reader's reason in one line of at most 300 characters, control characters escaped (it may
    quote the file's bytes)."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return shown_text(reason, 300)


def write_tables(tables: dict[str, pd.DataFrame], folder: Path, fmt: str = "csv") -> Path:
    """Write tables to ``folder`` atomically: into a temporary sibling, then renamed into place.

    An interrupted write leaves no half-written export behind.
    """
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format must be csv or parquet, got {fmt!r}")
    folder = Path(folder)
    with staged_folder(folder) as staging:
        for name, frame in tables.items():
            if fmt == "csv":
                _write_csv(frame, staging / f"{name}.csv")
            else:
                frame.to_parquet(staging / f"{name}.parquet", index=False)
    return folder


@contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """A temporary sibling of ``folder`` to write into; renamed to ``folder`` (replacing it) when the
    block ends, removed when it raises or is interrupted: nothing half-written is left behind."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield staging
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write one frame as CSV or Parquet by the file's suffix, atomically."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: output must end in .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.suffix == ".csv":
            _write_csv(frame, tmp)
        else:
            frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV through pyarrow: ~15x faster than ``DataFrame.to_csv`` on large exports."""
    pa_csv.write_csv(pa.Table.from_pandas(_timestamps_as_text(frame), preserve_index=False), path)


def _timestamps_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Write datetime columns as ISO-8601 UTC text ("2025-03-01T10:15:00Z"), as the contract reads them."""
    converted = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column.dtype):
            utc = column.dt.tz_localize("UTC") if column.dt.tz is None else column.dt.tz_convert("UTC")
            has_fraction = bool((utc.dt.microsecond.fillna(0) != 0).any())
            fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if has_fraction else "%Y-%m-%dT%H:%M:%SZ"
            converted[name] = utc.dt.strftime(fmt)
    return frame.assign(**converted) if converted else frame
