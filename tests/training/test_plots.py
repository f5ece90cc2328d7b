"""training.plots: each plot draws on a figure of its own."""

from __future__ import annotations

import numpy as np

from training.plots import plot_lift, plot_shap_summary


def test_shap_summary_does_not_draw_over_the_previous_figure():
    # shap.summary_plot draws on pyplot's current figure; the forecast plot before it in a training
    # run used to receive the beeswarm (and both SHAP summaries), and was logged three times over.
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    y, w = rng.integers(0, 2, 200).astype(float), np.ones(200)
    lift = plot_lift(y, w, {"model": rng.random(200)})
    axes_before = len(lift.axes)
    summary = plot_shap_summary(rng.normal(size=(200, 3)), rng.normal(size=(200, 3)), ["a", "b", "c"])
    try:
        assert summary is not lift
        assert len(lift.axes) == axes_before
        assert [t.get_text() for t in summary.axes[0].get_yticklabels()] != []
    finally:
        plt.close(lift)
        plt.close(summary)
