"""Training on whatever the export has: each optional table removed in turn from a generated export,
a deals-only export through the CLI, and the service answering with its win-only champion.

Slow tier: each case trains real LightGBM models (one thread, ~5-15 s on the 1,200-deal export).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from features.pointintime.definitions import FEATURES
from training.config import BoosterConfig, TrainConfig

pytestmark = pytest.mark.slow

ONE_THREAD = replace(TrainConfig(), booster=replace(BoosterConfig(), num_threads=1))
OWNER = {"owner_win_rate", "owner_closed_deals"}  # never used: the contract keeps no owner history


def needing(*inputs: str) -> set[str]:
    return {f.name for f in FEATURES if set(f.needs) & set(inputs)}


def copy_export(source: Path, target: Path, drop: tuple[str, ...] = (), deals=None) -> Path:
    """A copy of an export folder without the ``drop`` tables, its deals.csv replaced by ``deals`` if given."""
    target.mkdir(parents=True)
    for path in source.iterdir():
        if path.stem not in drop:
            shutil.copy(path, target / path.name)
    if deals is not None:
        deals.to_csv(target / "deals.csv", index=False)
    return target


def read_deals(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "deals.csv", dtype=str, keep_default_na=False)


def deals_only(source: Path, target: Path) -> Path:
    """The issue's measured export: deals alone, without expected close date, segment, region or lead source."""
    deals = read_deals(source).assign(expected_close_date="", segment="", region="", lead_source="")
    target.mkdir(parents=True)
    deals.to_csv(target / "deals.csv", index=False)
    return target


def train_without_mlflow(folder: Path):
    """prepare -> fit -> evaluate, as ``dealrisk train`` does before logging (no MLflow: faster)."""
    from features.contract.load import load_export
    from training.pipeline import evaluate_run, fit_bundle, prepare_training_data

    export = load_export(folder)
    data = prepare_training_data(export, ONE_THREAD)
    bundle = fit_bundle(data, ONE_THREAD, {})
    report, _ = evaluate_run(data, bundle, ONE_THREAD, export, None)
    return data, bundle, report


@pytest.mark.parametrize(("table", "inputs", "skipped_model", "line"), [
    ("stage_history", ("stage_history",), None,
     "stage not used for training snapshots: there is no stage_history table; left out: current_stage, days_in_stage"),
    ("field_history", ("history:expected_close_date", "history:amount"), "slip",
     "slip model not trained: there is no field_history, so the deals' expected_close_date is its value at export time"),
    ("contacts", ("contacts",), None,
     "features missing (NaN), not used by the models: contacts_count, roles_present, roles_engaged_30d"),
    ("activities", ("activities", "activities.customer_talk_ratio", "activities.next_step_set"), None,
     "features missing (NaN), not used by the models: the engagement family (20 features), roles_engaged_30d, "
     "decision_maker_engaged_30d"),
])
def test_each_optional_table_removed_in_turn_still_trains(generated, tmp_path, table, inputs, skipped_model, line):
    data, bundle, report = train_without_mlflow(copy_export(generated / "export", tmp_path / "export", drop=(table,)))
    left_out = needing(*inputs) | OWNER
    assert set(data.skips.features) == left_out
    assert not left_out & set(bundle.features["names"])  # the models never see them
    assert data.features[sorted(left_out)].isna().all().all()  # missing, not zero, in every row
    assert any(text.startswith(line) for text in report["skipped"]["lines"]), report["skipped"]["lines"]
    expected_models = ("win",) if skipped_model == "slip" else ("win", "slip")
    assert bundle.targets == expected_models and all(target in report for target in expected_models)
    if skipped_model:
        assert "slip" not in report and list(report["skipped"]["models"]) == ["slip"]
    assert 0.6 < report["win"]["model"]["auc"] < 0.95 and report["leak_alarms"] == []


def test_field_history_without_amount_changes_trains_both_models_without_the_amount(generated, tmp_path):
    source = generated / "export"
    folder = copy_export(source, tmp_path / "export", drop=("field_history",))
    fields = pd.read_csv(source / "field_history.csv", dtype=str, keep_default_na=False)
    fields[fields["field"] != "amount"].to_csv(folder / "field_history.csv", index=False)
    data, bundle, report = train_without_mlflow(folder)
    assert bundle.targets == ("win", "slip")
    assert set(data.skips.features) == needing("history:amount") | OWNER
    assert report["skipped"]["fields"]["amount"].startswith("field_history has no amount changes")


def test_a_deals_only_export_trains_a_win_model_and_serving_answers_without_slip(generated, tmp_path):
    from typer.testing import CliRunner

    from dealrisk.cli import app
    from features.contract.load import load_export
    from serving.config import ServingConfig
    from serving.loader import load_champion
    from serving.request import request_from_export
    from serving.schemas import ModelInfo, ScoreRequest, ScoreResponse
    from serving.scoring import load_model, score_request
    from serving.service import model_info
    from tests.training.conftest import read_aliases

    folder = deals_only(generated / "export", tmp_path / "export")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = tmp_path / "train.yaml"
    config.write_text("booster:\n  num_threads: 1\n")
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["train", "--data", str(folder), "--config", str(config), "--report", str(report_path), "--promote"],
        env={"MLFLOW_TRACKING_URI": uri, "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    output = " ".join(result.output.split())  # rich may wrap a long line in a narrow terminal
    assert "skipped: slip model not trained: deals have no expected_close_date and there is no field_history" in output
    assert "skipped: amount not used for training snapshots: there is no field_history" in output
    assert "LightGBMError" not in output and "Traceback" not in output
    report = json.loads(report_path.read_text())
    assert "slip" not in report and report["leak_alarms"] == []
    run_id = report["run_id"]
    assert read_aliases(uri) == {"deal-win@challenger": run_id, "deal-win@champion": run_id,
                                 "deal-slip@challenger": None, "deal-slip@champion": None}

    # serving: the win-only champion answers, slip probabilities null and said to be absent
    serving = replace(ServingConfig(), tracking_uri=uri)
    model = load_model(load_champion(serving))
    assert model.bundle.targets == ("win",) and model.versions["slip"] is None
    info = ModelInfo.model_validate(model_info(model, serving))
    assert info.skipped[0] == "slip model not trained: deals have no expected_close_date and there is no field_history"
    assert info.model_versions.slip is None and info.run_ids["slip"] is None
    assert "amount" not in [f["name"] for f in info.features]
    export = load_export(folder)
    open_ids = export.deals.loc[export.deals["outcome"] == "open", "deal_id"].head(3).tolist()
    request = ScoreRequest.model_validate(json.loads(json.dumps(request_from_export(export, open_ids))))
    answer = ScoreResponse.model_validate(score_request(model, request))
    assert answer.model_versions.slip is None
    assert [deal.slip_probability for deal in answer.deals] == [None, None, None]  # never a made-up number
    assert all(0 < deal.win_probability < 1 and deal.amount > 0 for deal in answer.deals)
