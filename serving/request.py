"""Print a ``POST /score`` request body for deals of an export folder, or write its tables.

``python -m serving.request --data data/demo/export --deal-id D000123 > req.json`` writes the
deal as it stands in the export (its full history), ready for ``curl --data @req.json``.
Closed deals are sent as of just before they closed, with the events up to that moment.
``--tables DIR`` writes the same deals as the contract's CSV tables for ``POST /score/tables``
(``curl -F deals=@DIR/deals.csv -F activities=@DIR/activities.csv ...``), as_of in DIR/as_of.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from features.contract.check import check_tables
from features.contract.io import read_raw_tables, write_tables
from features.contract.schema import TABLES
from serving.scoring import DEAL_COLUMNS, TABLE_COLUMNS


def _iso(value):
    """A cell as a JSON value: missing -> None, timestamps -> ISO 8601, numpy -> Python."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def request_from_export(export, deal_ids: list[str], as_of: pd.Timestamp | None = None) -> dict:
    """A request body for ``deal_ids`` of a validated export, with events up to ``as_of``.

    ``as_of`` defaults to the latest event of the chosen deals (for a closed deal: one second
    before it closed), so the body is valid as it is.
    """
    deals = export.deals.set_index("deal_id", drop=False)
    missing = [d for d in deal_ids if d not in deals.index]
    if missing:
        raise KeyError(f"deal ids not in the export: {missing}")
    chosen = deals.loc[deal_ids]
    if as_of is None:
        closed = chosen["closed_at"].dropna()
        moments = [chosen["created_at"].max()]
        for table in TABLE_COLUMNS:
            frame = export.table(table)
            if frame is not None:
                column = TABLES[table].time_column
                moments.append(frame.loc[frame["deal_id"].isin(deal_ids), column].max())
        as_of = max(m for m in moments if not pd.isna(m))
        if len(closed):
            as_of = min(as_of, closed.min() - pd.Timedelta(seconds=1))
    body_deals = []
    for deal_id in deal_ids:
        row = chosen.loc[deal_id]
        deal = {c: _iso(row[c]) for c in DEAL_COLUMNS}
        if row["stage"] in ("won", "lost") or row["outcome"] != "open":
            deal["stage"] = _stage_at(export, deal_id, as_of) or "identify"
        for table, columns in TABLE_COLUMNS.items():
            frame = export.table(table)
            if frame is None:
                deal[table] = None
                continue
            column = TABLES[table].time_column
            rows = frame[(frame["deal_id"] == deal_id) & (frame[column] <= as_of)]
            present = [c for c in columns if c in rows.columns]
            deal[table] = [{c: _iso(v) for c, v in zip(present, values)} for values in rows[present].itertuples(index=False)]
            deal[table] = [{k: v for k, v in item.items() if v is not None} for item in deal[table]]
        body_deals.append(deal)
    return {"as_of": as_of.isoformat(), "deals": body_deals}


def tables_from_body(body: dict, typed: bool = False) -> dict[str, pd.DataFrame]:
    """The deals of a ``POST /score`` body as the contract's tables (for ``POST /score/tables``).

    Only tables that the body sends are returned. Values stay as the body has them (text times),
    or with ``typed`` the contract's timestamp columns become UTC timestamps - what a typed
    Parquet export holds.
    """
    deals = body["deals"]
    tables = {"deals": pd.DataFrame([{c: deal.get(c) for c in DEAL_COLUMNS} for deal in deals], columns=list(DEAL_COLUMNS))}
    for table, columns in TABLE_COLUMNS.items():
        if all(deal.get(table) is None for deal in deals):
            continue
        rows = [{"deal_id": deal["deal_id"], **item} for deal in deals for item in (deal.get(table) or [])]
        tables[table] = pd.DataFrame(rows, columns=["deal_id", *columns])
    if typed:
        for name, frame in tables.items():
            times = [c.name for c in TABLES[name].columns if c.kind == "timestamp" and c.name in frame.columns]
            tables[name] = frame.assign(**{c: pd.to_datetime(frame[c], utc=True) for c in times})
    return tables


def _stage_at(export, deal_id: str, as_of: pd.Timestamp) -> str | None:
    history = export.stage_history
    if history is None:
        return None
    rows = history[(history["deal_id"] == deal_id) & (history["entered_at"] <= as_of)].sort_values("entered_at")
    return None if rows.empty else str(rows["stage"].iloc[-1])


def main(argv: list[str] | None = None) -> int:
    """Command line: print the request body for one or more deal ids (or the first N open deals)."""
    parser = argparse.ArgumentParser(prog="python -m serving.request", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="export folder (CSV or Parquet)")
    parser.add_argument("--deal-id", action="append", default=[], help="deal id; repeat for several")
    parser.add_argument("--open", type=int, default=0, help="also add the first N open deals")
    parser.add_argument("--as-of", default=None, help="UTC moment to score at (default: latest event)")
    parser.add_argument("--tables", type=Path, default=None, help="write CSV tables to this folder instead of JSON")
    args = parser.parse_args(argv)
    result = check_tables(read_raw_tables(args.data))
    if result.violations:
        print(f"{args.data}: {len(result.violations)} contract violations; run dealrisk validate", file=sys.stderr)
        return 1
    export = result.export
    deal_ids = list(args.deal_id)
    if args.open:
        open_ids = export.deals.loc[export.deals["outcome"] == "open", "deal_id"].head(args.open)
        deal_ids += [d for d in open_ids if d not in deal_ids]
    if not deal_ids:
        parser.error("give --deal-id or --open N")
    as_of = None if args.as_of is None else pd.Timestamp(args.as_of).tz_convert("UTC")
    try:
        body = request_from_export(export, deal_ids, as_of)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 1
    if args.tables is not None:
        folder = write_tables(tables_from_body(body), args.tables)
        (folder / "as_of.txt").write_text(body["as_of"] + "\n")
        print(f"wrote {len(body['deals'])} deals as tables to {folder}", file=sys.stderr)
        return 0
    json.dump(body, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
