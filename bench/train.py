"""Training time as the export grows: seconds per phase of ``run_train`` for several sizes.

Generates each export once (reused on later runs), trains into a throw-away MLflow SQLite store
and prints seconds per phase with the ratio to the smallest size (and deals ratio for reference).

    .venv/bin/python bench/train.py --deals 20000 100000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deals", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("data/bench/train"))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from generator.export import run_generate
    from training.config import TrainConfig
    from training.pipeline import run_train

    results = []
    for deals in args.deals:
        folder = args.folder / f"{deals}-{args.seed}"
        start = time.perf_counter()
        if not (folder / "export").exists():
            run_generate(n_deals=deals, seed=args.seed, out=folder / "export", truth=folder / "truth.csv")
        generate_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = run_train(folder / "export", TrainConfig(), truth_path=folder / "truth.csv",
                               uri=f"sqlite:///{tmp}/mlflow.db")
            total = time.perf_counter() - start
        snapshots = sum(v["snapshots"] for v in result.report["counts"].values())
        results.append({"deals": deals, "snapshots": snapshots, "generate (cached=0)": generate_s,
                        **result.seconds, "train total": total,
                        "win AUC": result.report["win"]["model"]["auc"]})
    phases = [k for k in results[0] if k not in ("deals", "win AUC")]
    print("seconds per phase of `dealrisk train` (ratio to the smallest size in brackets)")
    print(f"{'phase':22s}" + "".join(f"{r['deals']:>22d}" for r in results))
    for phase in phases:
        base = results[0][phase] or 1e-9
        print(f"{phase:22s}" + "".join(f"{r[phase]:>12.1f} ({r[phase] / base:5.1f}x)" for r in results))
    print(f"{'win AUC (test)':22s}" + "".join(f"{r['win AUC']:>22.4f}" for r in results))


if __name__ == "__main__":
    main()
