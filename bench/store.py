"""Benchmark the score store: scoring open deals into it against in-process scoring without it,
and ``dealrisk rank`` on the stored deals; SQLite file and (when installed) PostgreSQL, same run.

The open deals: a generated export's deals open at its last event, copied under new ids (deal,
contact and activity ids suffixed) until there are ``--deals`` of them (a deal's features depend
only on its own rows and the fitted state, so copies cost what the originals cost). Generating,
copying and fitting are not measured.

(a) Scoring ``--deals`` open deals, as ``dealrisk score`` does after reading the export
(``serving.scoring.score_export``: batches of 2,000 through ``explain_export``):

- ``score in process``: features, probabilities, explanations, nothing kept: the baseline;
- ``+ store rows``: the same pass building the store rows (``portfolio.store.score_rows``);
- ``+ write to <store>``: that pass plus the store write (one transaction), per backend;
- ``re-score write``: writing the same rows again, every key already stored (the upsert path).

(b) ``rank`` on the stored deals: two runs stored (the deals scored now and a week earlier, so
every deal has a trend), then each step of ``dealrisk rank`` (read each deal's two latest
snapshots, trend, filter and rank, table of the top 50) and the whole command in a fresh process.

The model is a bundle folder (``--bundle``) or one fitted here by training's own code with the
default booster capped at 300 rounds (``bench/actions.py`` does the same).

    .venv/bin/python bench/store.py                       # 100k open deals, ~4 min on 2 idle cores
    .venv/bin/python bench/store.py --deals 20000 --no-postgres
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_common import fit_quick_bundle, make_export  # this folder is on sys.path when run as a script

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.portfolio.postgres: the test suite's throwaway server







def copy_open_deals(export, as_of, n_deals: int):
    """An export of exactly ``n_deals`` deals open at ``as_of``: the open deals, copied under new ids."""
    from features.contract.schema import Export
    from features.pointintime.pipeline import select_open_deals, subset_export

    open_ids = select_open_deals(export, as_of)["deal_id"].tolist()
    base = subset_export(export, open_ids)
    copies = -(-n_deals // len(open_ids))
    tables = {}
    for name, table in base.tables().items():
        if table is None:
            tables[name] = None
            continue
        parts = []
        for k in range(copies):
            part = table.assign(deal_id=table["deal_id"].astype(str) + f"~{k}")
            for column in ("contact_id", "activity_id"):
                if column in part:
                    ids = part[column].astype(object)
                    part[column] = ids.where(ids.isna(), ids.astype(str) + f"~{k}")
            parts.append(part)
        tables[name] = pd.concat(parts, ignore_index=True)
    keep = set(tables["deals"]["deal_id"].head(n_deals))
    return Export(**{name: None if t is None else t[t["deal_id"].isin(keep)].reset_index(drop=True)
                     for name, t in tables.items()})


def score_pass(model, export, as_of, rows: bool):
    """One ``score_export`` pass; the store rows when ``rows``. Returns (seconds, rows or None)."""
    from portfolio.store import score_rows
    from serving.scoring import score_export

    start = time.perf_counter()
    kept = []
    for batch in score_export(model, export, as_of):
        if rows:
            kept.append(score_rows(batch.explained, batch.features, batch.export.deals, model.versions))
    frame = pd.concat(kept, ignore_index=True) if rows else None
    return time.perf_counter() - start, frame


def timed(run, *args):
    start = time.perf_counter()
    out = run(*args)
    return time.perf_counter() - start, out


def earlier_run(rows: pd.DataFrame, days: int = 7, seed: int = 0) -> pd.DataFrame:
    """The same deals as if scored ``days`` earlier with other numbers (for a trend to compute)."""
    rng = np.random.default_rng(seed)
    win = np.clip(rows["win_probability"].to_numpy() + rng.normal(0, 0.08, len(rows)), 0.01, 0.99)
    return rows.assign(as_of=pd.to_datetime(rows["as_of"]) - pd.Timedelta(days=days), win_probability=win,
                       value_at_risk=rows["amount"].fillna(0).to_numpy() * (1 - win))


def rank_steps(url: str) -> dict[str, float]:
    """Seconds of each step of ``dealrisk rank`` in process, and of the command in a fresh process."""
    from rich.console import Console

    from portfolio.rank import STORE_COLUMNS, rank_deals, rank_table
    from portfolio.store import ScoreStore
    from portfolio.trend import add_trend

    store = ScoreStore.open(url, create=False)
    seconds = {}
    seconds["read snapshots"], snapshots = timed(lambda: store.snapshots(columns=STORE_COLUMNS))
    seconds["trend"], trended = timed(add_trend, snapshots)
    seconds["filter + rank"], ranked = timed(rank_deals, trended)
    console = Console(file=open(os.devnull, "w"), width=200)
    seconds["table of 50"], _ = timed(lambda: console.print(rank_table(ranked.head(50))))
    store.close()
    start = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "dealrisk"), "rank", "--store", url, "--limit", "50"],
                          capture_output=True, text=True, check=False)
    seconds["dealrisk rank (process)"] = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"dealrisk rank failed: {done.stderr}")
    seconds["deals ranked"] = float(len(ranked))
    return seconds


def print_table(title: str, header: tuple[str, ...], rows: list[tuple]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deals", type=int, default=100_000, help="open deals to score and store")
    parser.add_argument("--base-deals", type=int, default=5_000, help="deals of the generated export copied from")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=300, help="booster rounds of the model fitted here")
    parser.add_argument("--bundle", type=Path, help="a bundle folder to score with instead of fitting one")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()

    from features.model.bundle import load_bundle_dir
    from features.pointintime.snapshots import export_end
    from portfolio.store import ScoreStore
    from serving.scoring import load_model

    t0 = time.perf_counter()
    export = make_export(args.base_deals, args.seed)
    bundle = load_bundle_dir(args.bundle) if args.bundle else fit_quick_bundle(export, args.rounds)
    bundle.versions = {"win": "1", "slip": "1"}
    model = load_model(bundle)
    as_of = export_end(export)
    big = copy_open_deals(export, as_of, args.deals)
    n = len(big.deals)
    print(f"{n:,} open deals (copies of the {export.deals['deal_id'].size:,}-deal export's open deals), "
          f"as of {as_of.isoformat()}; set-up {time.perf_counter() - t0:.0f} s")

    stores: dict[str, str] = {}
    stop = None
    folder = Path(tempfile.mkdtemp(prefix="dealrisk-bench-store-"))
    stores["SQLite"] = f"sqlite:///{folder / 'scores.db'}"
    if not args.no_postgres:
        from tests.portfolio.postgres import PostgresError, start_postgres

        try:
            url, stop = start_postgres()
            stores["PostgreSQL"] = url
        except PostgresError as exc:
            print(f"PostgreSQL left out: {exc}")
    try:
        base_seconds, _ = score_pass(model, big, as_of, rows=False)
        rows_seconds, rows = score_pass(model, big, as_of, rows=True)
        table = [("score in process", f"{base_seconds:.1f}", f"{n / base_seconds:,.0f}", "1.00"),
                 ("+ store rows", f"{rows_seconds:.1f}", f"{n / rows_seconds:,.0f}", f"{base_seconds / rows_seconds:.2f}")]
        writes = {}
        for name, url in stores.items():
            store = ScoreStore.open(url)
            write_seconds, _ = timed(store.write, rows, "batch", "bench")
            again_seconds, _ = timed(store.write, rows, "batch", "bench")
            store.write(earlier_run(rows), "batch", "bench")  # the previous week, for rank's trend
            store.close()
            total = rows_seconds + write_seconds
            table.append((f"+ write to {name}", f"{total:.1f}", f"{n / total:,.0f}", f"{base_seconds / total:.2f}"))
            writes[name] = (write_seconds, again_seconds)
        print_table(f"(a) scoring {n:,} open deals into the store (deals/s; ratio: throughput vs scoring in process)",
                    ("", "seconds", "deals/s", "ratio"), table)
        print_table("    the store write alone", ("store", "write s", "rows/s", "re-score write s"),
                    [(name, f"{w:.1f}", f"{n / w:,.0f}", f"{a:.1f}") for name, (w, a) in writes.items()])
        ranks = {name: rank_steps(url) for name, url in stores.items()}
        steps = [k for k in next(iter(ranks.values())) if k != "deals ranked"]
        print_table(f"(b) dealrisk rank on {n:,} stored deals x 2 runs (seconds)", ("step", *ranks),
                    [(step, *(f"{ranks[name][step]:.2f}" for name in ranks)) for step in steps])
    finally:
        if stop is not None:
            stop()
        for path in sorted(folder.glob("*")):
            path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
