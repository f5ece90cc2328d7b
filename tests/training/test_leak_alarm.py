"""No future in the features, and the leak alarm: a planted leak is dropped or alarmed, never a silent AUC > 0.95.

The planted leak is the issue's: a CRM that overwrites ``amount`` with the final booked value
(0 for a lost deal) and keeps no history of it. Slow tests train real models (one thread).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from training.config import BoosterConfig, ConfigError, LeakAlarmConfig, TrainConfig
from training.evaluate import leak_alarms, single_feature_auc, weighted_auc

ONE_THREAD = replace(TrainConfig(), booster=replace(BoosterConfig(), num_threads=1))


# --- the measures (fast) -----------------------------------------------------------------------


def test_weighted_auc_is_scikit_learns():
    rng = np.random.default_rng(0)
    score, y, w = rng.integers(0, 20, 500).astype(float), rng.integers(0, 2, 500), rng.uniform(0.1, 1, 500)
    assert weighted_auc(score, y, w) == pytest.approx(roc_auc_score(y, score, sample_weight=w))
    assert np.isnan(weighted_auc(score, np.ones(500), w))  # one class: undefined


def test_single_feature_auc_reads_either_direction_missing_values_and_categories():
    y, w = np.array([0, 0, 0, 1, 1, 1]), np.ones(6)
    assert single_feature_auc(np.array([6.0, 5, 4, 3, 2, 1]), y, w) == 1.0  # falling with the outcome
    # missing mostly for lost deals separates too, placed either below or above the values
    assert single_feature_auc(np.array([np.nan, np.nan, np.nan, 1, 2, 3]), y, w) == 1.0
    assert single_feature_auc(np.array([1.0, 1, 1, 1, 1, 1]), y, w) == 0.5
    levels = pd.Series(["lost_bin", "lost_bin", "lost_bin", "booked", "booked", "booked"])
    assert single_feature_auc(levels, y, w, categorical=True, min_level_weight=1) == 1.0
    # levels too rare to judge are pooled: six one-deal levels say nothing
    assert single_feature_auc(pd.Series(list("abcdef")), y, w, categorical=True, min_level_weight=2) == 0.5


def test_alarms_name_the_feature_and_the_model_above_their_thresholds():
    alarms = leak_alarms({"amount": 0.97, "current_stage": 0.74}, 0.99, 0.90, 0.95)
    assert len(alarms) == 2
    assert alarms[0].startswith("feature amount alone separates won from lost on the training snapshots (AUC 0.970")
    assert alarms[1].startswith("win model test AUC 0.990 is above 0.95")
    assert leak_alarms({"current_stage": 0.74}, 0.86, 0.90, 0.95) == []
    with pytest.raises(ConfigError, match="max_win_auc: expected a number above 0.5, at most 1, got 1.5"):
        LeakAlarmConfig(max_win_auc=1.5)


# --- planted leaks (slow) -------------------------------------------------------------------------


def leaky_amount(deals: pd.DataFrame) -> pd.DataFrame:
    """The final booked value: the amount for a won deal, 0 for a lost one (open deals as they are)."""
    return deals.assign(amount=np.where(deals["outcome"] == "lost", "0", deals["amount"]))


def write_export(source: Path, target: Path, deals: pd.DataFrame, keep: tuple[str, ...], field_history=None) -> Path:
    target.mkdir(parents=True)
    deals.to_csv(target / "deals.csv", index=False)
    for table in keep:
        (target / f"{table}.csv").write_bytes((source / f"{table}.csv").read_bytes())
    if field_history is not None:
        field_history.to_csv(target / "field_history.csv", index=False)
    return target


def read(folder: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{table}.csv", dtype=str, keep_default_na=False)


def fit_and_check(export, data):
    from features.model.predict import predict_probabilities
    from training.pipeline import check_leaks, fit_bundle

    bundle = fit_bundle(data, ONE_THREAD, {})
    rows, features = data.side("test")
    p = predict_probabilities(bundle, features)["win_probability"].to_numpy()
    auc = weighted_auc(p, rows["won"].to_numpy(float), 1.0 / rows["deal_id"].map(rows["deal_id"].value_counts()).to_numpy())
    return bundle, auc, check_leaks(data, auc, ONE_THREAD)


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["deals_only", "field_history_without_amount"])
def test_a_booked_amount_without_history_is_left_out_and_would_have_been_alarmed(generated, tmp_path, shape):
    from features.contract.load import load_export
    from features.pointintime.pipeline import build_features
    from training.pipeline import prepare_training_data

    source = generated / "export"
    deals = leaky_amount(read(source, "deals"))
    if shape == "deals_only":
        deals = deals.assign(expected_close_date="", segment="", region="", lead_source="")
        folder = write_export(source, tmp_path / "export", deals, keep=())
    else:
        fields = read(source, "field_history")
        folder = write_export(source, tmp_path / "export", deals, keep=("stage_history", "contacts", "activities"),
                              field_history=fields[fields["field"] != "amount"])
    export = load_export(folder)
    data = prepare_training_data(export, ONE_THREAD)
    assert "amount" in data.skips.fields and "amount" not in data.feature_names
    assert data.features["amount"].isna().all()
    bundle, auc, check = fit_and_check(export, data)
    assert "amount" not in bundle.features["names"]
    assert auc < 0.95 and check["alarms"] == []  # an honest model, and nothing to alarm about

    # The control: the amount let in at its export-time value, as the workaround did (and
    # as build_features reads it for a deal without an amount change in a field_history), is the
    # issue's AUC ~1.000, and alarms loudly.
    export_time = data.rows["deal_id"].map(export.deals.set_index("deal_id")["amount"]).to_numpy(float)
    if shape == "field_history_without_amount":
        rebuilt = build_features(export, data.rows[["deal_id", "as_of"]], data.state)["amount"].to_numpy()
        assert np.array_equal(rebuilt, export_time)
    leaked = replace(data, feature_names=data.feature_names + ["amount"], features=data.features.assign(amount=export_time))
    _, leaked_auc, leaked_check = fit_and_check(export, leaked)
    assert leaked_auc > 0.95
    assert leaked_check["single_feature_auc"]["amount"] > 0.95
    assert any(alarm.startswith("feature amount alone separates won from lost") for alarm in leaked_check["alarms"])
    assert any(alarm.startswith("win model test AUC") for alarm in leaked_check["alarms"])


@pytest.mark.slow
def test_a_leak_the_rules_cannot_see_is_alarmed_and_promote_refuses_without_the_override(generated, tmp_path):
    """``product`` is static context, taken as constant: a CRM that rewrites it on closing leaks."""
    from typer.testing import CliRunner

    from dealrisk.cli import app
    from tests.training.conftest import read_aliases

    source = generated / "export"
    deals = read(source, "deals")
    closed = deals["outcome"] != "open"
    deals = deals.assign(product=np.where(closed, np.where(deals["outcome"] == "won", "booked", "none"), deals["product"]))
    folder = write_export(source, tmp_path / "export", deals, keep=("stage_history", "field_history"))  # small: quick
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = tmp_path / "train.yaml"
    config.write_text("booster:\n  num_threads: 1\n")
    env = {"MLFLOW_TRACKING_URI": uri, "COLUMNS": "200"}
    report_path = tmp_path / "report.json"
    trained = CliRunner().invoke(app, ["train", "--data", str(folder), "--config", str(config), "--report",
                                       str(report_path), "--promote"], env=env)
    output = " ".join(trained.output.split())
    assert trained.exit_code == 1, output  # trained and registered as challenger, not promoted
    assert "LEAK ALARM: feature product alone separates won from lost on the training snapshots (AUC 1.000" in output
    assert "refused: run" in output and "--override-leak-alarm" in output
    report = json.loads(report_path.read_text())
    assert report["leak_check"]["strongest_feature"] == "product" and len(report["leak_alarms"]) >= 1
    assert read_aliases(uri)["deal-win@champion"] is None and read_aliases(uri)["deal-slip@champion"] is None

    again = CliRunner().invoke(app, ["promote"], env=env)
    assert again.exit_code == 1 and "LEAK ALARM" in again.output  # the standalone gate refuses too
    forced = CliRunner().invoke(app, ["promote", "--version", "1", "--force"], env=env)
    assert forced.exit_code == 1 and read_aliases(uri)["deal-win@champion"] is None  # force is no override
    overridden = CliRunner().invoke(app, ["promote", "--override-leak-alarm"], env=env)
    assert overridden.exit_code == 0, overridden.output
    assert "leak alarm overridden" in overridden.output
    assert read_aliases(uri)["deal-win@champion"] == report["run_id"] == read_aliases(uri)["deal-slip@champion"]


def test_generated_exports_raise_no_alarm(trained):
    """The session's 1,200-deal export (seed 5) through ``dealrisk train``: far under both thresholds."""
    check = trained.report["leak_check"]
    assert trained.report["leak_alarms"] == []
    assert check["max_single_feature_auc"] < check["thresholds"]["max_single_feature_auc"] - 0.1
    assert check["win_test_auc"] < check["thresholds"]["max_win_auc"]
    assert "leak check: strongest single feature" in " ".join(trained.output.split())
