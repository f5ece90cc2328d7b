"""Training configuration as data: one frozen dataclass tree with documented defaults, and the
YAML file ``dealrisk train --config`` reads into it (``docs/train.example.yaml`` lists every key).

Every section checks its values when it is built, so a config that exists is usable;
``TrainConfig.from_dict`` adds the type checks a YAML file needs and names the file and the
dotted key of a problem (``train.yaml: booster.num_leaves: expected an integer, got 'many'``).
Nothing here reads a file or touches MLflow at import time; ``tracking_uri()`` only reads the
environment when called.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Hashable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from datetime import date
from pathlib import Path

import pandas as pd
import yaml

from features.contract.schema import DEFAULT_STAGE_PROBABILITIES, OPEN_STAGES
from features.model.names import RegisteredNameError, RegisteredNames
from features.pointintime.definitions import FEATURE_NAMES

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# Salesforce's default stage probabilities (the stage table): the data contract holds it, so portfolio's forecast shares it.
SALESFORCE_STAGE_PROBABILITIES: dict[str, float] = DEFAULT_STAGE_PROBABILITIES


class ConfigError(ValueError):
    """A training setting is unusable.

    ``key`` is its dotted path (``booster.num_leaves``), ``source`` where it came from (a file
    name, ``command line``, ``environment``); the message reads ``source: key: reason``.
    """

    def __init__(self, key: str, reason: str, source: str = "") -> None:
        self.key, self.reason, self.source = key, reason, source
        super().__init__(": ".join(part for part in (source, key, reason) if part))

    def under(self, section: str, source: str | None = None) -> ConfigError:
        """The same problem, its key seen from the section above (and its source, if given)."""
        return ConfigError(_join(section, self.key), self.reason, self.source if source is None else source)


# A rule is (test, what is expected); sections check their fields with them when built.
Rule = tuple[Callable[[typing.Any], bool], str]


def _at_least(low: float) -> Rule:
    return (lambda value: value >= low, f"at least {low}")


_POSITIVE: Rule = (lambda value: value > 0, "a number above 0")
_SHARE: Rule = (lambda value: 0 < value < 1, "a share above 0 and below 1")
_FRACTION: Rule = (lambda value: 0 < value <= 1, "a share above 0, at most 1")
_PROBABILITY: Rule = (lambda value: 0 <= value <= 1, "a number from 0 to 1")


def _check(section: object, **rules: Rule) -> None:
    """Raise ``ConfigError`` naming the first field of ``section`` that breaks its rule."""
    for key, (test, wanted) in rules.items():
        value = getattr(section, key)
        if not test(value):
            raise ConfigError(key, f"expected {wanted}, got {_show(value)}")


def _check_directions(key: str, directions: Mapping[str, int]) -> None:
    """Monotone directions name registered features (a typo would silently drop a constraint)."""
    for name, direction in directions.items():
        if name not in FEATURE_NAMES:
            raise ConfigError(
                f"{key}.{name}",
                f"not a feature of features/pointintime/definitions.py{_did_you_mean(name, FEATURE_NAMES)}",
            )
        if direction not in (-1, 0, 1) or isinstance(direction, bool):
            raise ConfigError(f"{key}.{name}", f"expected -1, 0 or 1, got {_show(direction)}")


@dataclass(frozen=True)
class SplitConfig:
    """Time split (see ``training.split``): train on deals closed before ``cutoff``; validate and
    test on deals created on or after ``cutoff + gap_days`` whose outcome is knowable.

    ``cutoff`` is an ISO UTC timestamp; ``None`` chooses it so that the training cohort holds
    ``train_share`` of the deals either side uses (``training.pipeline.balance_cutoff``; without
    ``train_mature_at_cutoff``: the ``train_share`` quantile of creation dates of mature closed
    deals). The earlier ``validation_share`` of the post-cutoff deals (by creation date) validate
    (early stopping, calibration); the later ones test. ``train_mature_at_cutoff`` drops training
    deals created less than the maturity horizon before the cutoff (their quick closes skew the
    training win rate).
    """

    cutoff: str | None = None
    train_share: float = 0.5
    gap_days: int = 30
    validation_share: float = 0.5
    train_mature_at_cutoff: bool = True

    def __post_init__(self) -> None:
        _check(self, train_share=_SHARE, gap_days=_at_least(0), validation_share=_SHARE)
        if self.cutoff is not None:
            try:
                parsed = pd.Timestamp(self.cutoff)
            except (ValueError, TypeError):
                parsed = pd.NaT
            if pd.isna(parsed):
                raise ConfigError(
                    "cutoff", f"expected an ISO 8601 time such as 2026-03-31T00:00:00Z, got {_show(self.cutoff)}"
                )


@dataclass(frozen=True)
class BoosterConfig:
    """LightGBM settings. Small trees keep TreeSHAP explanations cheap (see bench/model_tradeoff.py).

    TreeSHAP costs about trees x leaves x depth^2 per row. On a 20k-deal generated export,
    7 leaves at depth 3 with early stopping (~340 trees) matched or beat 15/31/63-leaf trees on
    test AUC and log-loss (deeper trees over-fit the near-duplicate snapshots of a deal) and
    explain a row several times faster than LightGBM's 200 x 31-leaf default.
    """

    num_leaves: int = 7
    max_depth: int = 3
    learning_rate: float = 0.05
    num_boost_round: int = 1500
    early_stopping_rounds: int = 50
    min_data_in_leaf: int = 50
    # Snapshots of one deal are near-duplicates, so a leaf of 50 rows may be 4 deals: the leaf
    # minimum also scales with the training rows (2% of 51k rows -> ~1000 on 20k deals), which
    # cut over-fitting (early stop at ~40 trees) and gained ~0.004 test AUC on generated data.
    min_leaf_share: float = 0.02
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 10.0
    num_threads: int = 0  # 0: LightGBM's default (all cores)
    seed: int = 0
    # Directions known for certain: +1 = a higher value never lowers the win probability, -1 = never
    # raises it, 0 = no constraint. Only registered features (a typo would silently drop the
    # constraint). The slip model gets the opposite sign.
    # close_date_pushes: without it the logistic half read a small positive slope (pushes go with
    # long-lived deals) and told a manager "Close date pushed 15 times" raised a deal's chances;
    # constrained, the truth gap on seeds 0/2/8 was 0.0304 vs 0.0309.
    # The rest are the features next best actions (features.model.actions) move, in the direction
    # a sales manager would defend: more roles, contacts and meetings, a less single-threaded deal
    # and more recent contact never lower the win probability. Not activity counts or trend (a
    # rep chasing a silent customer raises them too). On a 5k-deal export (seed 7) test AUC / log-loss
    # went win 0.8338 / 0.4793 -> 0.8348 / 0.4792, slip 0.8814 / 0.2543 -> 0.8805 / 0.2558.
    monotone_win: dict[str, int] = field(
        default_factory=lambda: {
            "decision_maker_engaged_30d": 1,
            "economic_buyer_engaged_30d": 1,
            "champion_engaged_30d": 1,
            "decision_maker_activity_share_30d": 1,
            "economic_buyer_activity_share_30d": 1,
            "decision_maker_meetings_30d": 1,
            "inbound_share": 1,
            "close_date_pushes": -1,
            "roles_engaged_30d": 1,
            "max_seniority_engaged_30d": 1,
            "contacts_count": 1,
            "roles_present": 1,
            "contacts_engaged": 1,
            "top_contact_share": -1,
            "meetings_7d": 1,
            "meetings_30d": 1,
            "meetings_held": 1,
            "days_since_last_activity": -1,
            "days_since_decision_maker_engaged": -1,
            "days_since_economic_buyer_engaged": -1,
            "days_since_champion_engaged": -1,
        }
    )

    def __post_init__(self) -> None:
        _check(
            self, num_leaves=_at_least(2), learning_rate=_POSITIVE, num_boost_round=_at_least(1),
            early_stopping_rounds=_at_least(1), min_data_in_leaf=_at_least(0),
            min_leaf_share=(lambda value: 0 <= value < 1, "a share from 0, below 1"),
            feature_fraction=_FRACTION, bagging_fraction=_FRACTION, bagging_freq=_at_least(0),
            lambda_l2=_at_least(0), num_threads=_at_least(0),
        )
        _check_directions("monotone_win", self.monotone_win)


@dataclass(frozen=True)
class LinearConfig:
    """The logistic half of each model (``features.model.linear``) and its share of the blended log-odds.

    Each target's raw score is ``(1 - weight) * booster + weight * logistic regression`` in
    log-odds; explanations blend TreeSHAP and the linear terms the same way, so they stay exact.
    ``weight=None`` picks it from ``weight_grid`` by validation log-loss (0 keeps the booster
    alone). On 11 generated 20k-deal exports the blend (weights 0.3-0.6) cut the mean gap to the
    generator's true AUC from 0.026 to 0.024 and never widened it; neither model alone did as well.
    The same fitted model is the ``logistic_regression`` baseline of the evaluation.
    ``c`` is scikit-learn's ``C`` (inverse L2 strength on standardised inputs).
    """

    weight: float | None = None
    weight_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    # Directions for the linear half on top of BoosterConfig.monotone_win (same sign convention).
    # A linear model attributes by coefficient x (value - mean), so between correlated features it
    # can settle on a compensating sign the trees never use: on the demo, with close_date_pushes
    # constrained, the regression moved its positive slope to close_date_days_pushed and explained
    # "Close date pushed by 479 days in total" as raising a deal's chances.
    monotone: dict[str, int] = field(default_factory=lambda: {"close_date_days_pushed": -1})
    c: float = 1.0
    min_frequency: int = 5
    max_iter: int = 500

    def __post_init__(self) -> None:
        if self.weight is not None:
            _check(self, weight=_PROBABILITY)
        if not self.weight_grid:
            raise ConfigError("weight_grid", "expected at least one weight")
        for i, weight in enumerate(self.weight_grid):
            if not 0 <= weight <= 1:
                raise ConfigError(f"weight_grid[{i}]", f"expected a number from 0 to 1, got {_show(weight)}")
        _check_directions("monotone", self.monotone)
        _check(self, c=_POSITIVE, min_frequency=_at_least(1), max_iter=_at_least(1))


@dataclass(frozen=True)
class MinimumData:
    """Refuse to train below this many won and lost deals in the training period.

    Microsoft Dynamics 365 predictive opportunity scoring needs 40 won + 40 lost closed
    opportunities; Salesforce Einstein Opportunity Scoring asks for 200 + 200. We default to the
    smaller bar and warn when the win rate is extreme.
    """

    won: int = 40
    lost: int = 40
    # Below this many closed (won + lost) training deals, a model that looks better than the stage
    # table may be luck: on generated exports of that size the model's lead over the stage table
    # was beyond its 90% deal-bootstrap interval in only some exports (bench/minimum_data.py; the
    # README's "Small data" gives the table). Such a run is trained, reported with its intervals and
    # registered, but promoted only if its lead over the stage table on the test period is beyond luck.
    reliable_closed: int = 300
    extreme_win_rate_low: float = 0.05
    extreme_win_rate_high: float = 0.95

    def __post_init__(self) -> None:
        _check(self, won=_at_least(1), lost=_at_least(1), reliable_closed=_at_least(0), extreme_win_rate_low=_PROBABILITY,
               extreme_win_rate_high=_PROBABILITY)
        if self.extreme_win_rate_high < self.extreme_win_rate_low:
            raise ConfigError(
                "extreme_win_rate_high",
                f"expected at least extreme_win_rate_low ({self.extreme_win_rate_low}), got {self.extreme_win_rate_high}",
            )


CALIBRATION_METHODS: tuple[str, ...] = ("auto", "isotonic", "platt", "none")


@dataclass(frozen=True)
class CalibrationConfig:
    """How each model's blended probability is calibrated on the validation period (``training.calibration``).

    ``auto`` keeps whichever of ``none`` / ``platt`` / ``isotonic`` predicts held-out validation
    deals best. Isotonic, the old default, fitted on a few hundred validation deals made test
    Brier and log-loss worse on every export we tried (its end plateaus cost log-loss); the
    README's "Calibration" gives the numbers.
    """

    method: str = "auto"

    def __post_init__(self) -> None:
        _check(self, method=(lambda value: value in CALIBRATION_METHODS, f"one of {', '.join(CALIBRATION_METHODS)}"))


@dataclass(frozen=True)
class GateConfig:
    """Promotion tolerance: the challenger's test AUC may not be more than ``auc_drop`` below the
    champion's, and its log-loss not more than ``log_loss_rise`` (relative) above, for both the
    win and the slip model, both scored on the challenger run's test period."""

    auc_drop: float = 0.005
    log_loss_rise: float = 0.01

    def __post_init__(self) -> None:
        _check(self, auc_drop=_at_least(0), log_loss_rise=_at_least(0))


@dataclass(frozen=True)
class LeakAlarmConfig:
    """When a trained model looks too good to be true (``training.evaluate.leak_alarms``).

    A feature whose per-deal weighted AUC alone, on the training snapshots, is above
    ``max_single_feature_auc`` (either direction; categories by their win rate), or a win model
    whose test AUC is above ``max_win_auc``, is named in the console and the report, and the run
    cannot become the champion unless the promotion is told to override the alarm. Win
    probabilities from CRM data of this kind sit far below that: on 19 generated exports
    (1.2k-20k deals, three of them cut to deals only) the strongest single feature reached 0.757
    at most and the win model 0.869 (the README's "Leak alarm" gives the runs).
    """

    max_single_feature_auc: float = 0.90
    max_win_auc: float = 0.95

    def __post_init__(self) -> None:
        _check(self, max_single_feature_auc=(lambda value: 0.5 < value <= 1, "a number above 0.5, at most 1"),
               max_win_auc=(lambda value: 0.5 < value <= 1, "a number above 0.5, at most 1"))


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the point-in-time features that the fitted feature state keeps for serving."""

    fiscal_year_start_month: int = 1  # 1-12: first month of the fiscal year (sales-calendar features)

    def __post_init__(self) -> None:
        _check(self, fiscal_year_start_month=(lambda value: 1 <= value <= 12, "a month number from 1 to 12"))


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``dealrisk train`` needs besides the data."""

    split: SplitConfig = field(default_factory=SplitConfig)
    booster: BoosterConfig = field(default_factory=BoosterConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    minimum: MinimumData = field(default_factory=MinimumData)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    leak_alarm: LeakAlarmConfig = field(default_factory=LeakAlarmConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    stage_probabilities: dict[str, float] = field(default_factory=lambda: dict(SALESFORCE_STAGE_PROBABILITIES))
    experiment: str = "dealrisk"
    names: RegisteredNames = field(default_factory=RegisteredNames)  # registered model names and aliases
    ece_bins: int = 10
    shap_sample: int = 500
    seed: int = 0
    # The snapshots the training process reads of each side come from a stable sample of deals
    # holding about this many rows when the side has more (None: all; training.pipeline.deal_sample):
    # training's for the logistic half and the leak check, validation's for early stopping, the
    # blend and calibration, test's for the evaluation (and the gate's points). The boosters always
    # fit every training row. A million rows is ~400k deals a side: every figure's interval is long
    # settled, and the Dask engine's training process holds at most that many rows a side.
    max_rows_per_side: int | None = 1_000_000

    def __post_init__(self) -> None:
        if self.max_rows_per_side is not None:
            _check(self, max_rows_per_side=_at_least(1))
        if not self.stage_probabilities:
            raise ConfigError("stage_probabilities", f"expected a probability for each of {', '.join(OPEN_STAGES)}")
        for stage, probability in self.stage_probabilities.items():
            if stage not in OPEN_STAGES:
                raise ConfigError(
                    f"stage_probabilities.{stage}",
                    f"not an open canonical stage; expected one of {', '.join(OPEN_STAGES)}{_did_you_mean(stage, OPEN_STAGES)}",
                )
            if not 0 <= probability <= 1:
                raise ConfigError(f"stage_probabilities.{stage}", f"expected a number from 0 to 1, got {_show(probability)}")
        if not self.experiment.strip():
            raise ConfigError("experiment", "expected an MLflow experiment name, got an empty string")
        _check(self, ece_bins=_at_least(1), shap_sample=_at_least(1), seed=_at_least(0))

    @classmethod
    def from_dict(cls, data: Mapping, base: TrainConfig | None = None, source: str = "") -> TrainConfig:
        """``base`` (default: the defaults) with the settings of a nested mapping (a parsed YAML file).

        Keys left out keep ``base``'s value; a mapping value (``booster.monotone_win``,
        ``stage_probabilities``) replaces the whole of it. Unknown keys, wrong types and bad values
        raise ``ConfigError`` naming ``source`` and the dotted key.

        >>> TrainConfig.from_dict({"booster": {"num_leaves": 15}}).booster.num_leaves
        15
        >>> TrainConfig.from_dict({"booster": {"num_leaves": "many"}}, source="train.yaml")
        Traceback (most recent call last):
        ...
        training.config.ConfigError: train.yaml: booster.num_leaves: expected an integer, got 'many'
        """
        try:
            return _build(cls, data, cls() if base is None else base, "")
        except ConfigError as exc:
            raise exc.under("", source) from None

    def to_dict(self) -> dict:
        """Nested plain values (lists for tuples): what a YAML file holds and ``from_dict`` reads back."""
        return _plain(asdict(self))

    def to_yaml(self) -> str:
        """The whole config as YAML; ``dealrisk train --config`` reproduces it exactly."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def linear_monotone(self) -> dict[str, int]:
        """Monotone directions of the win model's linear half (the slip model's are the opposite)."""
        return {**self.booster.monotone_win, **self.linear.monotone}

    def to_params(self) -> dict[str, object]:
        """Flat ``section.key -> value`` dict for MLflow params."""
        flat: dict[str, object] = {}

        def walk(prefix: str, value) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                flat[prefix] = value

        walk("", asdict(self))
        return flat


def tracking_uri() -> str:
    """MLflow tracking URI: ``$MLFLOW_TRACKING_URI`` or a SQLite file in the current folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


# ---- the YAML file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigFile:
    """A training config file as read: the name it was given as (messages use it) and its exact
    bytes (the MLflow run keeps a copy and their SHA-256, so the run shows what it was given)."""

    name: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def read_config_file(path: Path | str) -> ConfigFile:
    """The file's bytes; a missing or unreadable file is a ``ConfigError`` naming it."""
    try:
        return ConfigFile(name=str(path), content=Path(path).read_bytes())
    except FileNotFoundError:
        raise ConfigError("", "no such file", str(path)) from None
    except IsADirectoryError:
        raise ConfigError("", "is a folder; expected a YAML file such as docs/train.example.yaml", str(path)) from None
    except OSError as exc:
        raise ConfigError("", f"cannot be read ({exc.strerror or exc})", str(path)) from None


class _ConfigLoader(yaml.SafeLoader):
    """YAML with two traps closed: ``1e-3`` is a number (PyYAML's YAML 1.1 reads it as a string),
    and a key given twice is an error (PyYAML keeps the last: a second ``booster:`` section would
    silently drop the first)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader refuses it with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_config_file(file: ConfigFile) -> dict:
    """The nested settings a config file holds (an empty file: none); bad YAML is a ``ConfigError``."""
    try:
        text = file.content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"not UTF-8 text (byte {exc.start})", file.name) from None
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"not valid YAML: {exc.problem or exc.context}{where}", file.name) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {exc}", file.name) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError("", f"expected a mapping of settings (split:, booster:, ...), got {_show(data)}", file.name)
    return dict(data)


def load_train_config(path: Path | str, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: the defaults) with the settings of a YAML file (``docs/train.example.yaml``)."""
    file = read_config_file(path)
    return TrainConfig.from_dict(parse_config_file(file), base=base, source=file.name)


def resolve_train_config(
    file: ConfigFile | None = None, flags: Mapping | None = None, environ: Mapping[str, str] | None = None
) -> TrainConfig:
    """The settings of one command: the defaults, then the registered names from the environment
    (``features.model.names``), then the file, then the flags the user gave.

    ``flags`` is nested like the file; ``None`` values are flags not given, so they override nothing.

    >>> resolve_train_config(flags={"split": {"gap_days": 7, "cutoff": None}}, environ={}).split
    SplitConfig(cutoff=None, train_share=0.5, gap_days=7, validation_share=0.5, train_mature_at_cutoff=True)
    """
    try:
        config = TrainConfig(names=RegisteredNames.from_env(environ))
    except RegisteredNameError as exc:
        raise ConfigError("", str(exc), "environment") from None
    if file is not None:
        config = TrainConfig.from_dict(parse_config_file(file), base=config, source=file.name)
    return TrainConfig.from_dict(_given(flags or {}), base=config, source="command line")


def _given(flags: Mapping) -> dict:
    """``flags`` without the ones not given (``None``) and the sections left empty."""
    given = {}
    for key, value in flags.items():
        if isinstance(value, Mapping):
            value = _given(value)
            if value:
                given[key] = value
        elif value is not None:
            given[key] = value
    return given


def _build(cls: type, data: object, base: object, path: str) -> object:
    """``base`` (an instance of the dataclass ``cls``) with the settings of ``data``, checked."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping of settings, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.init]
    values = {}
    for key, value in data.items():
        key_path = _join(path, str(key))
        if key not in known:
            raise ConfigError(key_path, f"unknown key; expected one of {', '.join(known)}{_did_you_mean(str(key), known)}")
        kind = hints[key]
        if is_dataclass(kind):
            values[key] = _build(kind, value, getattr(base, key), key_path)
        else:
            values[key] = _coerce(kind, value, key_path)
    try:
        return replace(base, **values)
    except ConfigError as exc:
        raise exc.under(path) from None
    except ValueError as exc:  # a section's own check that knows no keys (features.model.names)
        raise ConfigError(path, str(exc)) from None


_WANTED = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "true/false values"),
           str: ("a string", "strings")}


class _Mismatch(Exception):
    """A value is not of the expected type (``_coerce`` turns it into a ``ConfigError``)."""


def _coerce(kind: object, value: object, path: str) -> object:
    """``value`` as the annotated type ``kind``, or a ``ConfigError`` saying what was expected."""
    try:
        return _convert(kind, value, path)
    except _Mismatch:
        raise ConfigError(path, f"expected {_wanted(kind)}, got {_show(value)}") from None


def _convert(kind: object, value: object, path: str) -> object:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(inner, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch
        return tuple(_coerce(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return {str(name): _coerce(args[1], item, _join(path, str(name))) for name, item in value.items()}
    if kind not in _WANTED:
        raise TypeError(f"{path}: no YAML reading for the type {kind!r}")
    if kind is bool and isinstance(value, bool):
        return value
    if isinstance(value, bool):  # YAML's true/false are Python ints too
        raise _Mismatch
    if kind is int and isinstance(value, int):
        return value
    if kind is float and isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigError(path, f"expected a finite number, got {_show(value)}")
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is str and isinstance(value, date):  # YAML reads an unquoted 2026-03-31 as a date
        return value.isoformat()
    raise _Mismatch


def _wanted(kind: object) -> str:
    """What a message says a value of the annotated type ``kind`` should be."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_wanted(arg) for arg in args if arg is not type(None)) + " or null"
    if origin is tuple:
        return f"a list of {_WANTED[args[0]][1]}"
    if origin is dict:
        return f"a mapping of names to {_WANTED[args[1]][1]}"
    return _WANTED[kind][0]


def _join(section: str, key: str) -> str:
    return f"{section}.{key}" if section and key else section or key


def _show(value: object) -> str:
    """A value as a message shows it: strings quoted, YAML's spellings for the rest."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)


def _did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
