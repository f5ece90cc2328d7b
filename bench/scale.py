"""Scale: ``dealrisk train`` on the local engine and on a Dask LocalCluster as the export grows.

For each size a generated export is written once as a partitioned export (``dealrisk partition``'s
writer; reused on later runs) and trained twice, each run in a fresh process so that its peak
memory is its own: the local engine (``training.pipeline.run_train``: the export read whole, one
process) and the Dask engine (``training.distributed.run_train_dask`` on a LocalCluster of
``--workers`` single-threaded worker processes). Seconds: features (reading the export, split,
state, labelled snapshots and their features) and training (the boosters and the logistic half,
calibration), from the run's own laps; memory: each process's peak resident set (the local
process; the Dask driver, which also hosts the scheduler, and every worker, read on the worker
through ``client.run``). Ratios are Dask over local in the same run.

Memory-budget mode (``--budget-gib B``): every process of a run must stay below B GiB resident.
A watchdog samples each process of the run (driver and workers) every 50 ms and stops the run
when one goes over, and the Dask workers get ``memory_limit=B`` so that Dask spills and pauses
them before that. The table says, per size and engine, whether it completed or at what size
and in which process it ran out. The local engine is one process, so it runs out first.

    .venv/bin/python bench/scale.py                                        # 2k, 10k, 50k deals
    .venv/bin/python bench/scale.py --budget-gib 1 --deals 10000 50000 100000
    .venv/bin/python bench/scale.py --deals 100000 300000 1000000 --budget-gib 4   # full size: hours, ~40 GB disk
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MIB = 1024 * 1024


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB.

    Linux's VmHWM, which starts afresh at exec; ``ru_maxrss`` does not, so a process started by a
    large parent (this script after generating an export) would report the parent's size.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: ru_maxrss (KiB on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (MIB if sys.platform == "darwin" else 1024)
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def ensure_export(folder: Path, deals: int, seed: int, partitions: int) -> Path:
    """The partitioned export of ``deals`` generated deals (written once; generation is not measured)."""
    root = folder / f"{deals}-{seed}-p{partitions}"
    if not (root / "partitions.json").exists():
        from bench_common import make_export  # this folder is on sys.path when run as a script

        from features.contract.partitioned import write_partitioned

        write_partitioned(make_export(deals, seed), root, partitions)
    return root


def child(args: argparse.Namespace) -> None:
    """One training run in this process; prints one JSON line."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from training.config import TrainConfig

    config = TrainConfig() if args.max_rows_per_side is None else TrainConfig(max_rows_per_side=args.max_rows_per_side)
    result = {"engine": args.child}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        if args.child == "local":
            from training.pipeline import run_train

            trained = run_train(args.export, config, uri=uri)
        else:
            from features.pointintime.distributed import cluster
            from training.distributed import run_train_dask

            limit = None if args.budget_gib is None else f"{args.budget_gib}GiB"
            with cluster(None, args.workers, memory_limit=limit) as client:
                trained = run_train_dask(args.export, config, client, uri=uri)
                result["workers_mib"] = sorted(client.run(peak_rss_mib).values())
    seconds = trained.seconds
    result.update({
        "features_s": seconds["load"] + seconds["features"], "training_s": seconds["fit"],
        "total_s": sum(seconds.values()), "driver_mib": peak_rss_mib(),
        "snapshots": sum(side["snapshots"] for side in trained.report["counts"].values()),
        "win_auc": trained.report["win"]["model"]["auc"],
    })
    print(json.dumps(result), flush=True)


def watch(process: subprocess.Popen, budget_bytes: float | None, verdict: dict) -> None:
    """Stop ``process`` and its children when one of them goes over ``budget_bytes`` resident."""
    import psutil

    if budget_bytes is None:
        return
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for member in tree:
            try:
                rss = member.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            if rss > budget_bytes:
                verdict["over"] = f"{'driver' if member.pid == root.pid else 'a worker'} at {rss / MIB:,.0f} MiB"
                for victim in reversed(tree):
                    try:
                        victim.kill()
                    except psutil.NoSuchProcess:
                        pass
                return
        time.sleep(0.05)


def run_child(engine: str, export: Path, args: argparse.Namespace) -> dict:
    """Train once in a fresh process (under the budget's watchdog); its JSON line, or why it stopped."""
    command = [sys.executable, __file__, "--child", engine, "--export", str(export), "--workers", str(args.workers)]
    if args.budget_gib is not None:
        command += ["--budget-gib", str(args.budget_gib)]
    if args.max_rows_per_side is not None:
        command += ["--max-rows-per-side", str(args.max_rows_per_side)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    verdict: dict = {}
    budget = None if args.budget_gib is None else args.budget_gib * 1024 * MIB
    watcher = threading.Thread(target=watch, args=(process, budget, verdict), daemon=True)
    watcher.start()
    out, err = process.communicate()
    watcher.join()
    elapsed = time.perf_counter() - started
    if "over" in verdict:
        return {"engine": engine, "failed": f"out of budget after {elapsed:.0f} s ({verdict['over']})"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        last = (err.strip().splitlines() or ["no output"])[-1]
        return {"engine": engine, "failed": f"exit {process.returncode} after {elapsed:.0f} s: {last[:160]}"}
    return json.loads(lines[-1])


def cell(run: dict, key: str, pattern: str) -> str:
    return "-" if "failed" in run or run.get(key) is None else format(run[key], pattern)


def ratio(dask: dict, local: dict, key: str) -> str:
    if "failed" in dask or "failed" in local or not local.get(key):
        return "-"
    return f"{dask[key] / local[key]:.2f}x"


def print_table(rows: list[tuple[int, dict, dict]], args: argparse.Namespace) -> None:
    budget = "" if args.budget_gib is None else f", every process under {args.budget_gib} GiB resident"
    if args.max_rows_per_side is not None:
        budget += f", max_rows_per_side {args.max_rows_per_side:,}"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\ndealrisk train: local engine vs Dask LocalCluster ({args.workers} workers x 1 thread{budget}); "
          f"{os.cpu_count()} cores, load average now {load}; ratios Dask / local")
    header = (f"{'deals':>9} {'snapshots':>10} | {'features s':>10} {'dask':>7} {'ratio':>6} | {'training s':>10} "
              f"{'dask':>7} {'ratio':>6} | {'local MiB':>9} {'driver':>7} {'workers (each)':>15} {'max/local':>9} | "
              f"{'win AUC':>7} {'dask':>7}")
    print(header)
    print("-" * len(header))
    for deals, local, dask in rows:
        workers = "-" if "failed" in dask else "/".join(f"{w:,.0f}" for w in dask["workers_mib"])
        biggest = "-"
        if "failed" not in dask and "failed" not in local:
            biggest = f"{max(dask['driver_mib'], *dask['workers_mib']) / local['driver_mib']:.2f}x"
        snapshots = local.get("snapshots", dask.get("snapshots"))
        print(f"{deals:>9,} {snapshots if snapshots is not None else '-':>10} | "
              f"{cell(local, 'features_s', '.1f'):>10} {cell(dask, 'features_s', '.1f'):>7} "
              f"{ratio(dask, local, 'features_s'):>6} | {cell(local, 'training_s', '.1f'):>10} "
              f"{cell(dask, 'training_s', '.1f'):>7} {ratio(dask, local, 'training_s'):>6} | "
              f"{cell(local, 'driver_mib', ',.0f'):>9} {cell(dask, 'driver_mib', ',.0f'):>7} {workers:>15} "
              f"{biggest:>9} | {cell(local, 'win_auc', '.4f'):>7} {cell(dask, 'win_auc', '.4f'):>7}")
    for deals, local, dask in rows:
        for run in (local, dask):
            if "failed" in run:
                print(f"{deals:,} deals, {run['engine']}: {run['failed']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, nargs="+", default=[2000, 10000, 50000])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=8, help="partitions of each export")
    parser.add_argument("--budget-gib", type=float, default=None, help="resident memory budget of every process")
    parser.add_argument("--max-rows-per-side", type=int, default=None,
                        help="TrainConfig.max_rows_per_side for both engines (default: the config's, 1,000,000)")
    parser.add_argument("--folder", type=Path, default=Path("data/bench/scale"))
    parser.add_argument("--child", choices=("local", "dask"), help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rows = []
    for deals in args.deals:
        export = ensure_export(args.folder, deals, args.seed, args.partitions)
        local, dask = run_child("local", export, args), run_child("dask", export, args)
        rows.append((deals, local, dask))
        print(json.dumps({"deals": deals, "local": local, "dask": dask}), flush=True)
    print_table(rows, args)


if __name__ == "__main__":
    main()
