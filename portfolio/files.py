"""Score tables as files (``dealrisk score --out``, ``dealrisk rank --csv``): CSV or Parquet by suffix.

Managers open these files in a spreadsheet, and a text cell that starts with ``=``, ``+``, ``-``
or ``@`` is taken there as a formula (CSV injection: a deal name or a CRM note such as
``=HYPERLINK(...)`` would run). Text cells of a CSV are therefore neutralised with a leading
apostrophe (``features.contract.formulas``, the one function every CSV for people goes through),
which spreadsheets show as text; numbers are left alone. Parquet keeps its types and is not touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract.formulas import neutralise_text_columns
from features.contract.io import write_frame

OUTPUT_SUFFIXES = (".csv", ".parquet")


def json_cells(values) -> list:
    """Lists and dicts as JSON text (a file cell holds text); None stays missing.

    >>> json_cells([[{"code": "ghosted"}], None])
    ['[{"code": "ghosted"}]', None]
    """
    return [None if value is None or (isinstance(value, float) and np.isnan(value))
            else json.dumps(value, ensure_ascii=False, default=str) for value in values]


def write_table(frame: pd.DataFrame, path: Path, json_columns: tuple[str, ...] = ()) -> Path:
    """Write ``frame`` as CSV (text cells neutralised) or Parquet by ``path``'s suffix, atomically.

    ``json_columns`` (lists of dicts) are written as JSON text. ``ValueError`` for another suffix.
    """
    path = Path(path)
    if path.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"{path}: the output file must end in .csv or .parquet")
    frame = frame.assign(**{name: json_cells(frame[name].tolist()) for name in json_columns if name in frame})
    if path.suffix == ".csv":
        frame = neutralise_text_columns(frame)
    return write_frame(frame, path)
