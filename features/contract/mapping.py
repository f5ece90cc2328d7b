"""User-editable mapping of a CRM's own stage, role and other names onto the canonical ones.

The mapping is data: a YAML file with one section per kind of name. The shipped default
(``features/contract/mappings/default.yaml``) covers the canonical names and Salesforce's standard
picklist values; a user's file passed with ``--mapping`` (or, to the scoring service, named by
``DEALRISK_MAPPING``) extends or overrides it. Matching is
case- and whitespace-insensitive (``"  closed   WON "`` matches ``Closed Won``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from features.contract.schema import (
    ACTIVITY_TYPES,
    DEAL_TYPES,
    DIRECTIONS,
    ROLES,
    SENIORITIES,
    STAGES,
)

# Section name in the YAML file -> the canonical names it may map to.
SECTIONS: dict[str, tuple[str, ...]] = {
    "stage": STAGES,
    "role": ROLES,
    "seniority": SENIORITIES,
    "activity_type": ACTIVITY_TYPES,
    "direction": DIRECTIONS,
    "deal_type": DEAL_TYPES,
}

# Section -> the (table, column) pairs whose values it renames.
MAPPED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "stage": (("deals", "stage"), ("stage_history", "stage")),
    "role": (("contacts", "role"),),
    "seniority": (("contacts", "seniority"),),
    "activity_type": (("activities", "type"),),
    "direction": (("activities", "direction"),),
    "deal_type": (("deals", "deal_type"),),
}

# Where a user's mapping file is given, named in every hint to add a line to one: the same file
# serves the command line (``--mapping``) and the scoring service (``DEALRISK_MAPPING``).
MAPPING_FILE_WHERE = "--mapping on the command line, DEALRISK_MAPPING for the service"

DEFAULT_MAPPING_RESOURCE = "default.yaml"
_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas 3's "str"


class MappingError(ValueError):
    """A mapping file is unreadable, malformed, or maps to a name that is not canonical."""


def normalize_name(name: str) -> str:
    """Return the matching form of a name: case-folded, whitespace trimmed and collapsed.

    >>> normalize_name("  Closed   WON ")
    'closed won'
    """
    return " ".join(str(name).split()).casefold()


@dataclass(frozen=True)
class NameMapping:
    """Per section, normalised CRM name -> canonical name (canonical names always map to themselves)."""

    sections: Mapping[str, Mapping[str, str]]

    def section(self, name: str) -> Mapping[str, str]:
        return self.sections.get(name, MappingProxyType({}))

    def canonical(self, section: str, value: str) -> str | None:
        """Return the canonical name for ``value`` in ``section``, or None if it is not mapped."""
        return self.section(section).get(normalize_name(value))

    def for_column(self, table: str, column: str) -> str | None:
        """Return the section that renames ``table.column``, or None if the column is not mapped."""
        for section, columns in MAPPED_COLUMNS.items():
            if (table, column) in columns:
                return section
        return None


def parse_mapping(document: object, source: str) -> dict[str, dict[str, str]]:
    """Check a parsed YAML document and return its sections as normalised name -> canonical name.

    Raises MappingError naming the file, section and entry for anything malformed.
    """
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise MappingError(
            f"{source}: a mapping file must be a YAML mapping of sections "
            f"({', '.join(SECTIONS)}), got {type(document).__name__}"
        )
    parsed: dict[str, dict[str, str]] = {}
    for section, entries in document.items():
        if section not in SECTIONS:
            raise MappingError(
                f"{source}: unknown section {section!r}; sections are: {', '.join(SECTIONS)}"
            )
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise MappingError(
                f"{source}: section {section!r} must map CRM names to canonical names "
                f"('CRM name: canonical_name' lines), got {type(entries).__name__}"
            )
        allowed = SECTIONS[section]
        names: dict[str, str] = {}
        originals: dict[str, str] = {}
        for crm_name, target in entries.items():
            if not isinstance(crm_name, str | int | float) or isinstance(crm_name, bool) or not str(crm_name).strip():
                raise MappingError(f"{source}: section {section!r}: entry {crm_name!r} is not a name")
            if not isinstance(target, str) or target not in allowed:
                raise MappingError(
                    f"{source}: section {section!r}: {crm_name!r} maps to {target!r}, which is not a "
                    f"canonical {section}; use one of: {', '.join(allowed)}"
                )
            key = normalize_name(str(crm_name))
            if key in names and names[key] != target:
                raise MappingError(
                    f"{source}: section {section!r}: {originals[key]!r} and {crm_name!r} are the same name "
                    f"(matching ignores case and spaces) but map to {names[key]!r} and {target!r}"
                )
            names[key] = target
            originals[key] = str(crm_name)
        parsed[section] = names
    return parsed


def read_yaml_file(path: Path, error: type[Exception] = ValueError):
    """The YAML document of a mapping file; ``error`` naming the file when it is missing or unreadable.

    Shared by the name mapping and the table importer's mapping, so both say the same things.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"mapping file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"mapping file {path} cannot be read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"mapping file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None


def read_mapping_file(path: Path) -> dict[str, dict[str, str]]:
    """Read and check one mapping file."""
    return parse_mapping(read_yaml_file(path, MappingError), str(path))


@functools.lru_cache(maxsize=1)
def load_default_sections() -> dict[str, dict[str, str]]:
    """Read the shipped default mapping once (it is package data and never changes at run time)."""
    text = resources.files("features.contract").joinpath("mappings", DEFAULT_MAPPING_RESOURCE).read_text(encoding="utf-8")
    return parse_mapping(yaml.safe_load(text), f"features/contract/mappings/{DEFAULT_MAPPING_RESOURCE}")


def merge_sections(*layers: dict[str, dict[str, str]]) -> NameMapping:
    """Merge mapping layers, later ones overriding earlier ones; canonical names map to themselves."""
    merged: dict[str, dict[str, str]] = {
        section: {normalize_name(name): name for name in allowed} for section, allowed in SECTIONS.items()
    }
    for layer in layers:
        for section, names in layer.items():
            merged[section].update(names)
    return NameMapping(
        sections=MappingProxyType({s: MappingProxyType(names) for s, names in merged.items()})
    )


@functools.lru_cache(maxsize=1)
def _default_mapping() -> NameMapping:
    """The shipped mapping, merged once: ``check_tables`` without a mapping runs on every request."""
    return merge_sections(load_default_sections())


def load_mapping(path: Path | None = None) -> NameMapping:
    """Return the default mapping, extended and overridden by the user's file at ``path`` if given."""
    if path is None:
        return _default_mapping()
    layers = [load_default_sections()]
    if path is not None:
        layers.append(read_mapping_file(Path(path)))
    return merge_sections(*layers)


def map_series(values: pd.Series, names: Mapping[str, str]) -> pd.Series:
    """Rename the values of one column by ``names`` (normalised name -> canonical).

    Values the mapping does not know are kept as they are, so the contract check reports them;
    missing values stay missing. Works on the distinct values only, so it is fast on long columns.

    >>> map_series(pd.Series(["Closed Won", "odd", None]), {"closed won": "won"}).tolist()
    ['won', 'odd', nan]
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if len(uniques) == 0:
        return values
    renamed = pa.array(
        [names.get(normalize_name(u), u if isinstance(u, str) else str(u)) for u in uniques], type=pa.large_string()
    )
    # pyarrow take: the renamed distinct values straight into a str array (no per-cell Python objects).
    out = renamed.take(pa.array(codes, mask=codes < 0))
    return pd.Series(pd.arrays.ArrowStringArray(out, dtype=_STR_DTYPE), index=values.index, name=values.name, copy=False)


def apply_mapping(raw_tables: dict[str, pd.DataFrame], mapping: NameMapping) -> dict[str, pd.DataFrame]:
    """Return new tables whose mapped columns (stages, roles, ...) hold canonical names where known."""
    out = dict(raw_tables)
    for section, columns in MAPPED_COLUMNS.items():
        names = mapping.section(section)
        for table, column in columns:
            frame = out.get(table)
            if frame is None or column not in frame.columns:
                continue
            out[table] = frame.assign(**{column: map_series(frame[column], names)})
    return out
