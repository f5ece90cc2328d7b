"""What several benchmarks share: a validated generated export and a quickly fitted model bundle.

Imported by the scripts beside it (``python bench/<script>.py`` puts this folder on sys.path).
Generation and fitting are set-up, never what a benchmark measures.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd


def make_export(n_deals: int, seed: int):
    """A validated generated export of ``n_deals`` deals (generation time is not measured)."""
    from features.contract.check import check_tables
    from generator.export import generate_export

    generated = generate_export(n_deals, seed, truth_snapshots=0)
    result = check_tables({k: v for k, v in generated.tables.items() if v is not None})
    if result.export is None:
        raise SystemExit(f"generated export failed the contract: {result.violations[:3]}")
    return result.export


def fit_quick_bundle(export, rounds: int):
    """Training's own fit (``training.pipeline``) with the default booster capped at ``rounds``."""
    from training.config import BoosterConfig, TrainConfig
    from training.pipeline import fit_bundle, prepare_training_data

    config = replace(TrainConfig(), booster=replace(BoosterConfig(), num_boost_round=rounds))
    data = prepare_training_data(export, config)
    return fit_bundle(data, config, {"trained_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")})
