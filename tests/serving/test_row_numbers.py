"""One planted problem, one row number: ``dealrisk validate``, ``POST /score/tables`` and the
generator's planted.csv count rows the same way (data rows from 1, the header not counted)."""

from __future__ import annotations

import contextlib
import io
import re

import pandas as pd

from features.contract.report import run_validate
from generator.export import run_generate


def test_validate_score_tables_and_planted_csv_name_the_same_row(client, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        run_generate(n_deals=120, seed=7, out=tmp_path / "export", span_days=200, truth_snapshots=10, messy=True)
    planted = pd.read_csv(tmp_path / "planted.csv")
    checked = 0
    for kind, table, column in (("missing_value", "activities", "type"), ("unknown_stage", "deals", "stage"),
                                ("non_utc_timestamp", "activities", "occurred_at")):
        plant = planted.loc[(planted["kind"] == kind) & (planted["table"] == table)
                            & (planted["column"] == column)].iloc[0]
        row = int(plant["row"])
        # planted.csv's row is the row's place under the header in the written file.
        written = pd.read_csv(tmp_path / "export" / f"{table}.csv", dtype=str, keep_default_na=False)
        key = "deal_id" if table == "deals" else "activity_id"
        assert written.iloc[row - 1][key] == plant["row_key"]

        report = io.StringIO()
        with contextlib.redirect_stdout(report):
            assert run_validate(tmp_path / "export", max_errors=1000) == 1
        pattern = re.compile(rf"^{table}\s+\| {column}\s+\| row (\d+) \({key}={re.escape(plant['row_key'])}\)", re.MULTILINE)
        assert [int(n) for n in pattern.findall(report.getvalue())] == [row], report.getvalue()

        files = {name: (f"{name}.csv", (tmp_path / "export" / f"{name}.csv").read_bytes(), "text/csv")
                 for name in ("deals", "activities")}
        response = client.post("/score/tables", files=files)
        assert response.status_code == 422, response.text
        found = [p for p in response.json()["problems"] if (p.get("table"), p.get("column")) == (table, column)
                 and p["field"] == f"{table}[row {row}].{column}"]
        assert [p["row"] for p in found] == [row], response.json()["problems"]
        checked += 1
    assert checked == 3
