"""CSV files for people to open never hold a cell a spreadsheet runs as a formula (OWASP CSV injection).

``features.contract.formulas`` is the one function; ``dealrisk score --out`` and ``rank --csv``
are covered in tests/serving/test_store_writes_batch.py and tests/portfolio/test_rank.py, the
Salesforce importer's comparison file here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from features.contract.formulas import FORMULA_STARTS, neutralise_text_columns
from features.contract.importers.run import run_import_salesforce

FIXTURES = Path(__file__).parent / "importers" / "salesforce"
FORMULAS = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("dtype", [object, "str", "string", "category"])
def test_every_text_dtype_is_neutralised_and_numbers_are_not(dtype):
    frame = pd.DataFrame({"text": pd.Series([*FORMULAS, "ok", None], dtype=dtype), "number": [-1.5] * 8})
    out = neutralise_text_columns(frame)
    assert [str(value) for value in out["text"][: len(FORMULAS)]] == ["'" + text for text in FORMULAS]
    assert out["text"][len(FORMULAS)] == "ok" and pd.isna(out["text"].iloc[-1])
    assert out["number"].tolist() == [-1.5] * 8
    assert frame["text"].iloc[0] == FORMULAS[0]  # the input frame is not changed
    assert set(FORMULA_STARTS) == {"=", "+", "-", "@", "\t", "\r"}


def test_salesforce_comparison_file_has_no_formula_cells(tmp_path):
    source = tmp_path / "salesforce"
    shutil.copytree(FIXTURES, source)
    opportunities = pd.read_csv(source / "Opportunity.csv", dtype=str, keep_default_na=False)
    opportunities.loc[0, "ForecastCategoryName"] = FORMULAS[0]
    opportunities.loc[1, "ForecastCategoryName"] = "@SUM(A1)"
    opportunities.to_csv(source / "Opportunity.csv", index=False)
    lines: list[str] = []
    code = run_import_salesforce(source, tmp_path / "out" / "export", echo=lines.append)
    assert code == 0, "\n".join(lines)
    comparison = pd.read_csv(tmp_path / "out" / "crm_probability.csv", dtype=str, keep_default_na=False)
    categories = comparison.set_index("deal_id")["crm_forecast_category"]
    assert categories[opportunities.loc[0, "Id"]] == "'" + FORMULAS[0]
    assert categories[opportunities.loc[1, "Id"]] == "'@SUM(A1)"
    assert pd.to_numeric(comparison["crm_probability"]).between(0, 1).all()  # numbers untouched
