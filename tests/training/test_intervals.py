"""Deal-bootstrap intervals on every headline figure (training.metrics / evaluate / report / gate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.config import GateConfig
from training.evaluate import evaluate_predictions
from training.gate import decide_promotion, describe_lead
from training.metrics import (
    INTERVAL_METRICS,
    DealResamples,
    bootstrap_intervals,
    compute_metrics,
    resampled_metrics,
)
from training.report import render_leads, render_metric_table


def sample(n_deals: int, snapshots: int = 4, seed: int = 0, noise: float = 0.15):
    """Deals with several snapshots each; ``model`` knows the outcome a little, ``flat`` not at all."""
    rng = np.random.default_rng(seed)
    won = (rng.random(n_deals) < 0.3).astype(float)
    ids = np.repeat(np.arange(n_deals), snapshots)
    y = np.repeat(won, snapshots)
    model = np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(0, noise, len(y)), 0.01, 0.99)
    w = np.full(len(y), 1.0 / snapshots)
    return ids, y, w, {"model": model, "flat": np.full(len(y), 0.3)}


def width(interval: tuple[float, float]) -> float:
    return interval[1] - interval[0]


def test_each_round_is_the_metric_on_the_drawn_deals():
    ids, y, w, predictions = sample(150)
    draws = DealResamples.draw(ids, rounds=3, seed=4)
    rounds = resampled_metrics(draws, y, predictions["model"], w)
    for b in range(3):
        direct = compute_metrics(y, predictions["model"], w * draws.counts[b][draws.codes])
        for metric in INTERVAL_METRICS:
            assert rounds[metric][b] == pytest.approx(direct[metric]), metric


def test_intervals_cover_the_point_estimate():
    ids, y, w, predictions = sample(400)
    intervals = bootstrap_intervals(ids, y, w, predictions)
    for name, p in predictions.items():
        point = compute_metrics(y, p, w)
        for metric in ("brier", "ece", "log_loss") + (("auc",) if name == "model" else ()):
            low, high = intervals[name][metric]
            assert low <= point[metric] <= high, (name, metric, low, point[metric], high)


def test_intervals_shrink_with_more_deals():
    small = bootstrap_intervals(*sample(100)[:3], sample(100)[3])
    large = bootstrap_intervals(*sample(1600, seed=1)[:3], sample(1600, seed=1)[3])
    for metric in INTERVAL_METRICS:
        # 16x the deals: about a quarter of the width
        assert width(large["model"][metric]) < 0.5 * width(small["model"][metric]), metric


def test_more_snapshots_of_the_same_deals_do_not_narrow_the_interval():
    # The deal is the unit: ten copies of each snapshot add no evidence (a snapshot bootstrap would
    # shrink the interval about three times).
    ids, y, w, predictions = sample(300, snapshots=2, seed=3)
    once = bootstrap_intervals(ids, y, w, {"model": predictions["model"]})
    tenfold = bootstrap_intervals(np.repeat(ids, 10), np.repeat(y, 10), np.repeat(w, 10) / 10,
                                  {"model": np.repeat(predictions["model"], 10)})
    for metric in INTERVAL_METRICS:
        assert width(tenfold["model"][metric]) == pytest.approx(width(once["model"][metric]), rel=1e-9), metric


def test_evaluation_gives_every_figure_an_interval_and_the_lead_over_each_baseline():
    ids, y, w, predictions = sample(500)
    twin = predictions["model"] + np.random.default_rng(9).normal(0, 0.002, len(y))  # as good as the model
    result = evaluate_predictions(y, w, {**predictions, "twin": np.clip(twin, 0.01, 0.99)}, deal_ids=pd.Series(ids))
    for name in ("model", "flat", "twin"):
        for metric in INTERVAL_METRICS:
            assert f"{metric}_ci90_low" in result[name] and f"{metric}_ci90_high" in result[name]
    clear, tie = result["lead_over_flat"], result["lead_over_twin"]
    assert clear["auc"] > 0 and clear["auc_ci90_low"] > 0 and clear["brier_ci90_low"] > 0
    assert tie["auc_ci90_low"] < 0 < tie["auc_ci90_high"]
    assert "lead_over_model" not in result
    assert "auc_ci90_low" not in evaluate_predictions(y, w, predictions)["model"]  # no deal ids: no intervals


def test_console_table_shows_the_intervals_and_says_which_lead_is_real():
    ids, y, w, predictions = sample(500)
    block = evaluate_predictions(y, w, {"model": predictions["model"], "stage_table": predictions["flat"],
                                        "logistic_regression": predictions["model"]}, deal_ids=ids)
    report = {"split": {"test_start": "2026-01-01", "end": "2026-03-01"}, "win": block}
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(render_metric_table(report, "win"))
    text = console.export_text()
    low, high = block["model"]["auc_ci90_low"], block["model"]["auc_ci90_high"]
    assert f"{block['model']['auc']:.3f} ({low:.3f}-{high:.3f})" in text
    assert "90% interval from resampling deals" in text
    leads = render_leads(report, "win")
    assert "ahead of the CRM stage table: AUC" in leads and "ahead beyond luck" in leads
    assert "ahead of the logistic regression: AUC +0.000" in leads and "within luck" in leads


def test_the_gate_says_whether_the_lead_is_outside_the_interval():
    champion = {"win": {"auc": 0.800, "log_loss": 0.500}}
    challenger = {"win": {"auc": 0.803, "log_loss": 0.498}}
    inside = decide_promotion(challenger, champion, GateConfig(), {"win": {"auc": (-0.002, 0.008), "log_loss": (-0.001, 0.005)}})
    assert inside.promote and "inside, luck" in inside.reasons[0]
    outside = decide_promotion(challenger, champion, GateConfig(), {"win": {"auc": (0.001, 0.005), "log_loss": (0.001, 0.003)}})
    assert outside.reasons[0].count("outside, a real lead") == 2
    assert describe_lead(-0.02, (-0.03, -0.01)).endswith("outside, really behind)")
    assert "lead" not in decide_promotion(challenger, champion, GateConfig()).reasons[0]
