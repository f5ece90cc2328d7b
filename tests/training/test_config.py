"""Tests for training.config: the settings tree read from YAML, its checks and its precedence."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from features.model.names import RegisteredNames
from training.config import (
    BoosterConfig,
    ConfigError,
    ConfigFile,
    LinearConfig,
    SplitConfig,
    TrainConfig,
    load_train_config,
    parse_config_file,
    read_config_file,
    resolve_train_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "train.example.yaml"


def config_file(text: str, name: str = "train.yaml") -> ConfigFile:
    return ConfigFile(name=name, content=text.encode())


def parse(text: str, base: TrainConfig | None = None) -> TrainConfig:
    file = config_file(text)
    return TrainConfig.from_dict(parse_config_file(file), base=base, source=file.name)


def dotted_keys(value: object, prefix: str = "") -> set[str]:
    if not isinstance(value, dict):
        return {prefix}
    return set().union(*(dotted_keys(item, f"{prefix}.{key}" if prefix else key) for key, item in value.items()))


def test_example_file_lists_every_key_at_its_default():
    example = yaml.safe_load(EXAMPLE.read_text())
    assert dotted_keys(example) == dotted_keys(TrainConfig().to_dict())
    assert load_train_config(EXAMPLE) == TrainConfig()


def test_config_round_trips_through_a_dict_and_yaml():
    config = replace(
        TrainConfig(),
        split=SplitConfig(cutoff="2026-01-31T00:00:00+00:00", gap_days=14, train_mature_at_cutoff=False),
        booster=replace(BoosterConfig(), num_leaves=15, learning_rate=0.1, monotone_win={"inbound_share": 1}),
        linear=LinearConfig(weight=0.3, weight_grid=(0.0, 0.5)),
        stage_probabilities={"qualify": 0.3, "contract": 0.95},
        names=RegisteredNames(win_model="acme-win", slip_model="acme-slip"),
        experiment="acme",
    )
    assert config != TrainConfig()
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert parse(config.to_yaml()) == config


def test_keys_left_out_keep_the_base_and_a_mapping_replaces_the_whole_default():
    config = parse("booster:\n  num_leaves: 15\n  monotone_win: {inbound_share: 1}\n")
    assert config.booster.num_leaves == 15
    assert config.booster.max_depth == BoosterConfig().max_depth
    assert config.booster.monotone_win == {"inbound_share": 1}
    assert config.split == SplitConfig()


def test_yaml_values_that_plain_pyyaml_gets_wrong_are_read_as_meant():
    config = parse("booster:\n  learning_rate: 5e-2\nsplit:\n  cutoff: 2026-03-31\n")
    assert config.booster.learning_rate == 0.05  # YAML 1.1 would read the string '5e-2'
    assert config.split.cutoff == "2026-03-31"  # YAML reads a date; the setting is its ISO text
    assert parse("split:\n  cutoff: 2026-03-31T00:00:00Z\n").split.cutoff == "2026-03-31T00:00:00+00:00"
    assert parse("") == TrainConfig()  # an empty file: every default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys, at any depth, with the nearest known one
        ("boster:\n  num_leaves: 3\n", "train.yaml: boster: unknown key; expected one of split, booster,"),
        ("booster:\n  num_leafs: 3\n", "train.yaml: booster.num_leafs: unknown key; expected one of num_leaves,"),
        ("booster:\n  num_leafs: 3\n", "(did you mean num_leaves?)"),
        # wrong types
        ("booster:\n  num_leaves: many\n", "train.yaml: booster.num_leaves: expected an integer, got 'many'"),
        ("booster:\n  num_leaves: 7.5\n", "train.yaml: booster.num_leaves: expected an integer, got 7.5"),
        ("booster:\n  num_leaves: true\n", "train.yaml: booster.num_leaves: expected an integer, got true"),
        ("booster:\n  num_leaves:\n", "train.yaml: booster.num_leaves: expected an integer, got null"),
        ("split:\n  train_mature_at_cutoff: 1\n", "split.train_mature_at_cutoff: expected true or false, got 1"),
        ("linear:\n  weight: high\n", "train.yaml: linear.weight: expected a number or null, got 'high'"),
        ("linear:\n  weight_grid: 0.5\n", "train.yaml: linear.weight_grid: expected a list of numbers, got 0.5"),
        ("linear:\n  weight_grid: [0, x]\n", "train.yaml: linear.weight_grid[1]: expected a number, got 'x'"),
        ("booster:\n  monotone_win: [1]\n", "booster.monotone_win: expected a mapping of names to integers, got a list"),
        ("booster: 3\n", "train.yaml: booster: expected a mapping of settings, got 3"),
        ("booster:\n  learning_rate: .nan\n", "booster.learning_rate: expected a finite number, got nan"),
        # bad values
        ("booster:\n  num_leaves: 1\n", "train.yaml: booster.num_leaves: expected at least 2, got 1"),
        ("split:\n  gap_days: -3\n", "train.yaml: split.gap_days: expected at least 0, got -3"),
        ("split:\n  train_share: 1.0\n", "split.train_share: expected a share above 0 and below 1, got 1.0"),
        ("split:\n  cutoff: soon\n", "train.yaml: split.cutoff: expected an ISO 8601 time such as 2026-03-31T00:00:00Z, got 'soon'"),
        ("linear:\n  weight_grid: [0, 2]\n", "train.yaml: linear.weight_grid[1]: expected a number from 0 to 1, got 2.0"),
        ("booster:\n  monotone_win: {inbound_shar: 1}\n", "booster.monotone_win.inbound_shar: not a feature of"),
        ("booster:\n  monotone_win: {inbound_share: 2}\n", "booster.monotone_win.inbound_share: expected -1, 0 or 1, got 2"),
        ("stage_probabilities: {qualfy: 0.2}\n", "stage_probabilities.qualfy: not an open canonical stage"),
        ("stage_probabilities: {qualify: 1.2}\n", "stage_probabilities.qualify: expected a number from 0 to 1, got 1.2"),
        ("minimum: {extreme_win_rate_low: 0.5, extreme_win_rate_high: 0.4}\n",
         "minimum.extreme_win_rate_high: expected at least extreme_win_rate_low (0.5), got 0.4"),
        ("experiment: ''\n", "train.yaml: experiment: expected an MLflow experiment name, got an empty string"),
        ("names: {win_model: deal-slip}\n", "train.yaml: names: the win and slip models need different names"),
        # not a config file
        ("- split\n", "train.yaml: expected a mapping of settings (split:, booster:, ...), got a list"),
        ("booster: [\n", "train.yaml: not valid YAML: "),
        ("booster:\n  num_leaves: 3\nbooster:\n  max_depth: 2\n", "train.yaml: not valid YAML: key 'booster' appears twice at line 3"),
    ],
)
def test_bad_settings_name_the_file_the_key_and_the_reason(text, message):
    with pytest.raises(ConfigError) as raised:
        parse(text)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_an_unreadable_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such file"):
        read_config_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        read_config_file(tmp_path)
    with pytest.raises(ConfigError, match=r"train\.yaml: not UTF-8 text"):
        parse_config_file(ConfigFile(name="train.yaml", content=b"experiment: \xff\n"))


def test_sections_check_their_values_when_built_in_code_too():
    with pytest.raises(ConfigError, match="^gap_days: expected at least 0, got -1$"):
        SplitConfig(gap_days=-1)
    with pytest.raises(ConfigError, match="weight_grid: expected at least one weight"):
        LinearConfig(weight_grid=())


def test_flags_override_the_file_and_flags_not_given_override_nothing():
    file = config_file("split:\n  gap_days: 20\n  cutoff: 2026-01-31\nexperiment: from-file\n")
    flags = {"split": {"gap_days": 7, "cutoff": None}, "experiment": None, "names": {"win_model": None}}
    config = resolve_train_config(file, flags, environ={})
    assert config.split.gap_days == 7  # the flag
    assert config.split.cutoff == "2026-01-31" and config.experiment == "from-file"  # the file, flags not given
    assert resolve_train_config(None, flags, environ={}).split == SplitConfig(gap_days=7)


def test_registered_names_come_from_the_environment_then_the_file_then_the_flags():
    environ = {"DEALRISK_WIN_MODEL": "env-win", "DEALRISK_SLIP_MODEL": "env-slip"}
    assert resolve_train_config(None, {}, environ).names.win_model == "env-win"
    file = config_file("names:\n  win_model: file-win\n")
    from_file = resolve_train_config(file, {}, environ).names
    assert (from_file.win_model, from_file.slip_model) == ("file-win", "env-slip")
    assert resolve_train_config(file, {"names": {"win_model": "flag-win"}}, environ).names.win_model == "flag-win"


def test_bad_flags_and_environment_are_named_as_such():
    with pytest.raises(ConfigError, match="^command line: split.gap_days: expected at least 0, got -1$"):
        resolve_train_config(None, {"split": {"gap_days": -1}}, environ={})
    with pytest.raises(ConfigError, match="^environment: DEALRISK_WIN_MODEL: 'a b' is not a usable name"):
        resolve_train_config(None, {}, environ={"DEALRISK_WIN_MODEL": "a b"})
