"""The edge of the importers: read the source files, build, check, print, write (``dealrisk import ...``).

Exit codes, as ``dealrisk validate``'s: 0 the export was written; 1 the source has problems
(every one listed by file, column and row; nothing written); 2 the options or the mapping file
are unusable (nothing read or written).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from features.contract.formulas import neutralise_text_columns
from features.contract.importers.salesforce import REPORT_FORMATS, SalesforceOptions, import_salesforce
from features.contract.importers.sources import (
    Imported,
    SourceError,
    TimeFormats,
    check_import,
    export_frames,
    format_issues,
    read_source_csv,
)
from features.contract.importers.table import SpecError, import_table, read_spec, source_files
from features.contract.io import SUFFIXES, write_frame, write_tables
from features.contract.mapping import MappingError, load_mapping
from features.contract.schema import TABLES
from features.contract.violations import DEFAULT_MAX_PER_RULE

Echo = Callable[[str], None]
# Rows left out are listed up to this many per (file, column, reason); the count is exact.
SKIPPED_SHOWN = 3
COMPARISON_FILE = "crm_probability.csv"


class OptionError(ValueError):
    """A command-line option is unusable."""


def check_out(src: Path, out: Path) -> None:
    """Refuse an output folder that would overwrite the source or anything that is not an export.

    The export is written by replacing ``out`` as a whole (``write_tables``), so ``out`` must not
    be, hold or lie inside the source, and an existing ``out`` may hold only contract tables.
    """
    src, out = Path(src).resolve(), Path(out).resolve()
    if src.is_relative_to(out) or (src.is_dir() and out.is_relative_to(src)):
        raise OptionError(f"--out {out} overlaps the source {src}; write the export to a folder of its own "
                          "(a raw export is never changed in place)")
    if out.exists():
        if not out.is_dir():
            raise OptionError(f"--out {out} is a file")
        allowed = {f"{name}{suffix}" for name in TABLES for suffix in SUFFIXES}
        other = sorted(p.name for p in out.iterdir() if p.name not in allowed)
        if other:
            raise OptionError(f"--out {out} holds other files ({', '.join(other[:5])}); it is replaced as a whole, "
                              "so choose a new folder or an earlier export")


def comparison_path(out: Path, given: Path | None) -> Path:
    """Where the comparison file goes: ``given``, else beside the export folder (never inside it)."""
    path = Path(given) if given is not None else Path(out).parent / COMPARISON_FILE
    if path.resolve().is_relative_to(Path(out).resolve()):
        raise OptionError(f"--comparison {path} is inside the export folder; it must lie beside it (it holds "
                          "Salesforce's own probability, which must never reach the features)")
    return path


def finish(imported: Imported, out: Path, fmt: str, max_errors: int, echo: Echo,
           comparison: Path | None = None) -> int:
    """Print what was left out and the warnings; check; write atomically, or list every problem."""
    for note in imported.notes:
        echo(f"note: {note}")
    if imported.skipped.counts:
        echo(format_issues(imported.skipped.violations, SKIPPED_SHOWN, "skipped row", imported.skipped.counts))
    if imported.warnings.counts:
        echo(format_issues(imported.warnings.violations, max_errors, "warning", imported.warnings.counts))
    export, problems = check_import(imported)
    if export is None:
        echo(format_issues(problems.violations, max_errors, "problem", problems.counts))
        echo(f"nothing written to {out}")
        return 1
    frames = export_frames(export)
    staged = None
    if comparison is not None and imported.comparison is not None:
        # Written first under a temporary name, moved into place only once the export is: either
        # both are there, or neither is new.
        # A file for people to open beside the CRM's numbers: picklist text neutralised as a spreadsheet formula.
        staged = write_frame(neutralise_text_columns(imported.comparison),
                             comparison.with_name(f".{comparison.name}.{os.getpid()}.tmp.csv"))
    try:
        write_tables(frames, out, fmt)
    except BaseException:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise
    sizes = ", ".join(f"{name} {len(frame)} rows" for name, frame in frames.items())
    echo(f"OK: wrote {out} ({sizes}); it passes the data contract")
    context = [c for c in export.deals.columns if c.startswith("context_")]
    if context:
        echo(f"static context kept in deals: {', '.join(context)} (known when each deal was created; no feature "
             "reads them yet)")
    if staged is not None:
        staged.replace(comparison)
        echo(f"comparison: Salesforce's Probability and ForecastCategoryName per deal in {comparison} (beside the "
             "export, never a feature)")
    return 0


def check_timezone(name: str | None) -> str | None:
    """An IANA timezone name, checked; ``OptionError`` for an unknown one."""
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise OptionError(f"--timezone {name!r}: not a timezone; use an IANA name such as Europe/Berlin") from None
    return name


def utc_moment(text: str | None) -> pd.Timestamp | None:
    """``--as-of`` as a UTC moment (no offset: UTC); ``OptionError`` when it is not a time."""
    if text is None:
        return None
    try:
        moment = pd.Timestamp(text)
    except ValueError:
        raise OptionError(f"--as-of {text!r}: not a time such as 2026-03-31T18:00:00Z") from None
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def _read_folder(src: Path, encoding: str) -> dict[str, pd.DataFrame]:
    if not src.is_dir():
        raise SourceError(f"{src}: not a folder; pass the folder holding Opportunity.csv and the other object files")
    return {path.name: read_source_csv(path, encoding) for path in sorted(src.iterdir())
            if path.is_file() and path.suffix.lower() == ".csv"}


def run_import_salesforce(src: Path, out: Path, mapping: Path | None = None, timezone: str | None = None,
                          date_formats: Sequence[str] = (), deal_type: str | None = None, as_of: str | None = None,
                          comparison: Path | None = None, fmt: str = "csv", encoding: str = "utf-8",
                          max_errors: int = DEFAULT_MAX_PER_RULE, echo: Echo = print) -> int:
    """``dealrisk import salesforce``: a folder of Salesforce object CSVs -> a contract export folder."""
    src, out = Path(src), Path(out)
    try:
        names = load_mapping(mapping)
        check_out(src, out)
        target = comparison_path(out, comparison)
        options = SalesforceOptions(
            times=TimeFormats(formats=tuple(date_formats), local_formats=REPORT_FORMATS, timezone=check_timezone(timezone)),
            deal_type=deal_type, as_of=utc_moment(as_of),
        )
    except (MappingError, OptionError, ValueError) as exc:
        echo(f"error: {exc}")
        return 2
    try:
        files = _read_folder(src, encoding)
        echo("read: " + ", ".join(f"{name} {len(frame)} rows" for name, frame in files.items()))
        imported = import_salesforce(files, names, options)
    except SourceError as exc:
        echo(f"error: {exc}")
        echo(f"nothing written to {out}")
        return 1
    return finish(imported, out, fmt, max_errors, echo, target)


def run_import_table(src: Path, spec_path: Path, out: Path, fmt: str = "csv", max_errors: int = DEFAULT_MAX_PER_RULE,
                     echo: Echo = print) -> int:
    """``dealrisk import table``: a CRM's own table files and a YAML mapping -> a contract export folder."""
    src, out = Path(src), Path(out)
    try:
        spec = read_spec(spec_path)
        check_out(src, out)
    except (SpecError, OptionError) as exc:
        echo(f"error: {exc}")
        return 2
    try:
        paths = source_files(spec, src)
        files = {name: read_source_csv(path, spec.tables[name].encoding, spec.tables[name].delimiter)
                 for name, path in paths.items()}
        echo("read: " + ", ".join(f"{paths[name].name} {len(frame)} rows ({name})" for name, frame in files.items()))
        imported = import_table(spec, files, {name: path.name for name, path in paths.items()})
    except SourceError as exc:
        echo(f"error: {exc}")
        echo(f"nothing written to {out}")
        return 1
    return finish(imported, out, fmt, max_errors, echo)
