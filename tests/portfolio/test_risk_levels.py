"""Risk levels on a generated export: the open deals spread over the levels, and the levels rank what is at stake.

A model trained by training's own code on a small generated export scores the deals open at the
export's end through the service's path (``build_features_as_of`` + ``explain_scores``). Before
issue 16 the slip rule put ~90% of open deals in ``high`` (bench/risk_levels.py measures both).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from features.model.explain import explain_frame, explain_scores
from features.model.grades import RISK_LEVELS, ExplainConfig, value_at_risk_ratio_from
from features.pointintime.pipeline import build_features, select_open_deals
from features.pointintime.snapshots import export_end
from features.pointintime.state import FeatureState


@pytest.fixture(scope="module")
def scored_open_deals(tmp_path_factory):
    from features.contract.io import write_tables
    from features.contract.load import load_export
    from generator.export import generate_export
    from training.config import BoosterConfig, MinimumData, TrainConfig
    from training.pipeline import fit_bundle, prepare_training_data

    generated = generate_export(n_deals=1200, seed=5, truth_snapshots=0)
    export = load_export(write_tables(generated.tables, tmp_path_factory.mktemp("risk_levels") / "export"))
    config = replace(
        TrainConfig(),
        booster=replace(BoosterConfig(), num_boost_round=80, early_stopping_rounds=20, num_threads=1),
        minimum=replace(MinimumData(), won=10, lost=10),
    )
    bundle = fit_bundle(prepare_training_data(export, config), config, {"trained_at": "2026-06-30T00:00:00+00:00"})
    state = FeatureState.from_dict(bundle.feature_state)
    features = build_features(export, select_open_deals(export, export_end(export)), state)
    return features, explain_scores(bundle, features)


def test_open_deals_spread_over_the_levels(scored_open_deals):
    _, explained = scored_open_deals
    shares = explained["risk_level"].value_counts(normalize=True).reindex(list(RISK_LEVELS), fill_value=0.0)
    assert len(explained) > 100
    assert shares.max() <= 0.6, shares.to_dict()  # a short list, not nearly everything in one level
    assert shares["high"] <= 0.35 and (shares >= 0.05).all(), shares.to_dict()


def test_levels_rank_the_value_at_risk_in_typical_deals(scored_open_deals):
    features, explained = scored_open_deals
    ratio = value_at_risk_ratio_from(features["amount_vs_segment_median"].to_numpy(dtype=float),
                                     explained["win_probability"].to_numpy(dtype=float))
    by_level = pd.Series(ratio).groupby(explained["risk_level"].to_numpy()).median()
    assert by_level["high"] > by_level["medium"] > by_level["low"], by_level.to_dict()
    win = explained["win_probability"].groupby(explained["risk_level"].to_numpy()).median()
    assert win["high"] < win["low"], win.to_dict()


def test_slip_takes_no_part_in_the_level(scored_open_deals):
    features, explained = scored_open_deals
    config = ExplainConfig()
    n = len(features)
    again = explain_frame(  # the same features and win probabilities, every slip set to 0.99
        features, np.zeros((n, 1)), ["amount"], explained["win_probability"].to_numpy(), np.full(n, 0.99), config
    )
    assert again["risk_level"].tolist() == explained["risk_level"].tolist()
