"""Nothing after the cutoff reaches training: not the rows, not the features, not the feature state."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from training.config import SplitConfig, TrainConfig


def rewrite_after(export, cutoff: pd.Timestamp):
    """Flip the outcome of every deal closed at or after the cutoff and drop later activity."""
    deals = export.deals
    late = (deals["closed_at"] >= cutoff).to_numpy()
    flipped = deals["outcome"].map({"won": "lost", "lost": "won"}).fillna(deals["outcome"])
    deals = deals.assign(outcome=deals["outcome"].where(~late, flipped).astype(deals["outcome"].dtype))
    activities = export.activities
    activities = activities.loc[(activities["occurred_at"] < cutoff).to_numpy()].reset_index(drop=True)
    return replace(export, deals=deals, activities=activities)


def test_training_rows_features_and_state_ignore_everything_after_the_cutoff(generated):
    from features.contract.load import load_export
    from training.pipeline import prepare_training_data

    export = load_export(generated / "export")
    first = prepare_training_data(export, TrainConfig())
    cutoff = first.plan.cutoff
    # pin the plan so the rewritten export is split at the same moments
    pinned = replace(TrainConfig(), split=replace(SplitConfig(), cutoff=cutoff.isoformat()))
    rewritten = rewrite_after(export, cutoff)
    # the rewrite really changes what happened after the cutoff, so the test can fail
    assert (rewritten.deals["outcome"] != export.deals["outcome"]).sum() > 100
    base = prepare_training_data(export, pinned)
    changed = prepare_training_data(rewritten, pinned)

    assert base.state.to_dict() == changed.state.to_dict()
    train_base, features_base = base.side("train")
    train_changed, features_changed = changed.side("train")
    assert len(train_base) > 0
    pd.testing.assert_frame_equal(train_base.drop(columns=["closed_at", "deal_amount"]), train_changed.drop(columns=["closed_at", "deal_amount"]))
    pd.testing.assert_frame_equal(features_base, features_changed)
    assert (train_base["as_of"] < cutoff).all() and (train_base["closed_at"] < cutoff).all()


def test_training_refuses_below_the_minimum_of_won_and_lost_deals(tmp_path):
    from typer.testing import CliRunner

    from dealrisk.cli import app
    from tests.training.conftest import write_generated

    folder = write_generated(tmp_path, n_deals=150, seed=2, truth_snapshots=0)
    result = CliRunner().invoke(
        app, ["train", "--data", str(folder / "export")],
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "at least 40 won and 40 lost" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_unreadable_truth_file_is_a_clear_error(tmp_path):
    from training.pipeline import TruthFileError, read_truth

    path = tmp_path / "truth.csv"
    path.write_text("deal_id,as_of\nD1,2026-01-01\n")
    with pytest.raises(TruthFileError, match="missing columns"):
        read_truth(path)
    with pytest.raises(TruthFileError, match="cannot be read"):
        read_truth(tmp_path / "absent.csv")
