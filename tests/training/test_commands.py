"""Tests for training.commands: ``--config`` on the command line, what the run records of it, and
output that a pipe does not cut (CliRunner's output is not a terminal, like ``| cat``)."""

from __future__ import annotations

import hashlib
import io

import pytest
import yaml
from mlflow import MlflowClient
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from dealrisk.cli import app
from training.commands import fitting_console
from training.config import TrainConfig
from training.report import print_report, render_report

CUT = "\N{HORIZONTAL ELLIPSIS}"  # what rich puts where it cuts a cell
MODEL_ROW = "model (LightGBM + LR blend, calibrated)"


def invoke(*args: str, env: dict | None = None):
    """The CLI as a pipe sees it: no terminal and no COLUMNS, so rich would assume 80 columns."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": None, **(env or {})})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "train.yaml: no such file"),
        ("booster: [\n", "train.yaml: not valid YAML: "),
        ("booster:\n  num_leaves: many\n", "train.yaml: booster.num_leaves: expected an integer, got 'many'"),
        ("booster:\n  num_leafs: 3\n", "train.yaml: booster.num_leafs: unknown key; expected one of num_leaves,"),
    ],
)
def test_train_with_an_unusable_config_file_fails_in_one_line(tmp_path, text, message):
    config = tmp_path / "train.yaml"
    if text is not None:
        config.write_text(text)
    result = invoke("train", "--data", str(tmp_path), "--config", str(config),
                    env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was trained or logged


def test_a_bad_flag_is_named_after_the_file_is_applied(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("split:\n  gap_days: 10\n")
    result = invoke("train", "--data", str(tmp_path), "--config", str(config), "--gap-days", "-1")
    assert result.exit_code == 1
    assert result.output.strip() == "error: command line: split.gap_days: expected at least 0, got -1"


def test_fitting_console_widens_a_pipe_to_the_table(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    table = Table("model", "aliases", "test_log_loss")
    table.add_row("a-registered-model-name-that-is-long", "champion,challenger", "0.6931" * 12)
    out = io.StringIO()
    console = fitting_console(table, file=out)
    console.print(table)
    assert console.width > 80
    assert CUT not in out.getvalue() and "0.6931" * 12 in out.getvalue()
    narrow = io.StringIO()
    Console(file=narrow).print(table)
    assert CUT in narrow.getvalue()  # what a pipe printed before


def test_models_piped_prints_whole_columns(trained):
    result = invoke("models", env={"MLFLOW_TRACKING_URI": trained.uri})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "test_log_loss" in line)
    for column in ("model", "version", "aliases", "run_id", "created", "test_auc", "test_log_loss", "test_brier", "test_ece"):
        assert f" {column} " in header, header
    assert CUT not in result.output
    assert max(len(line) for line in lines) > 80  # wider than what rich assumes for a pipe: the case that was cut


def test_train_report_is_printed_whole_on_a_pipe(trained, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    print_report(trained.report, fitting_console(render_report(trained.report), file=out))
    assert CUT not in out.getvalue()
    assert any(MODEL_ROW in line for line in out.getvalue().splitlines())
    narrow = io.StringIO()
    print_report(trained.report, Console(file=narrow))
    assert MODEL_ROW not in narrow.getvalue()  # at 80 columns the row label wraps


# A quick model: the file's settings are what is under test, not the model.
CONFIG = """\
split:
  gap_days: 20
booster:
  num_boost_round: 60
  early_stopping_rounds: 10
  num_threads: 1
experiment: from-config-file
names:
  win_model: cfg-win
  slip_model: cfg-slip
shap_sample: 50
"""


@pytest.fixture(scope="module")
def trained_from_file(generated, tmp_path_factory):
    folder = tmp_path_factory.mktemp("config-run")
    config = folder / "train.yaml"
    config.write_text(CONFIG)
    uri = f"sqlite:///{folder}/mlflow.db"
    result = invoke("train", "--data", str(generated / "export"), "--config", str(config), "--gap-days", "25",
                    env={"MLFLOW_TRACKING_URI": uri})
    assert result.exit_code == 0, result.output + repr(result.exception)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(client.get_model_version_by_alias("cfg-win", "challenger").run_id)
    return config, uri, client, run, result.output


@pytest.mark.slow  # trains a (small) model into its own store
def test_train_takes_its_settings_from_the_file_and_flags_override_it(trained_from_file):
    _, _, client, run, _ = trained_from_file
    params = run.data.params
    assert params["split.gap_days"] == "25"  # the flag over the file's 20
    assert params["booster.num_boost_round"] == "60" and params["shap_sample"] == "50"  # the file
    assert client.get_experiment(run.info.experiment_id).name == "from-config-file"  # no --experiment: the file's
    assert client.get_model_version_by_alias("cfg-slip", "challenger").run_id == run.info.run_id


@pytest.mark.slow
def test_the_run_records_the_file_and_the_resolved_settings(trained_from_file, tmp_path):
    config, _, client, run, _ = trained_from_file
    assert run.data.tags["config.sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert run.data.tags["config.file"] == "train.yaml"
    logged = client.download_artifacts(run.info.run_id, "config/train.yaml", str(tmp_path))
    assert open(logged, "rb").read() == config.read_bytes()
    resolved = client.download_artifacts(run.info.run_id, "config/resolved.yaml", str(tmp_path))
    settings = TrainConfig.from_dict(yaml.safe_load(open(resolved).read()))
    assert settings.split.gap_days == 25 and settings.booster.num_boost_round == 60
    assert settings.names.win_model == "cfg-win" and settings.experiment == "from-config-file"


@pytest.mark.slow
def test_piped_train_and_models_output_is_not_cut(trained_from_file):
    config, uri, _, _, output = trained_from_file
    assert CUT not in output and any(MODEL_ROW in line for line in output.splitlines()), output
    listed = invoke("models", "--config", str(config), env={"MLFLOW_TRACKING_URI": uri})
    assert listed.exit_code == 0 and "cfg-win" in listed.output and "cfg-slip" in listed.output, listed.output
    assert CUT not in listed.output
