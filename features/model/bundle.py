"""The model bundle: what training hands to serving through the MLflow registry.

Pure Python/NumPy, no MLflow: training writes a bundle folder and logs it with the model;
serving downloads the folder of the champion's run and reads it back with ``load_bundle_dir``.

Bundle folder layout (artifact path ``bundle/`` of the training run)::

    bundle/
      features.json          ordered feature names, categorical features and their levels
      feature_state.json     fitted feature state (features.pointintime.state.FeatureState.to_dict())
      calibration_win.json   Calibration.to_dict() for the win model
      calibration_slip.json  Calibration.to_dict() for the slip model
      linear_win.json        LinearModel.to_dict(): the logistic half of the win model and its blend
                             weight (absent in bundles from before the blend: booster alone)
      linear_slip.json       the same for the slip model
      metrics.json           headline test-period metrics, training date, data fingerprint
      win_model.txt          LightGBM booster (Booster.save_model) for the win model
      slip_model.txt         LightGBM booster for the slip model
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from features.model.linear import LinearModel


@dataclass(frozen=True)
class Calibration:
    """Monotone map from raw model probability to calibrated probability.

    Stored as a piecewise-linear table (isotonic regression thresholds), applied with
    ``np.interp`` so serving needs no scikit-learn object.

    >>> Calibration(x=(0.0, 1.0), y=(0.1, 0.9)).apply(np.array([0.5]))
    array([0.5])
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    method: str = "isotonic"

    def apply(self, raw: np.ndarray) -> np.ndarray:
        calibrated = np.interp(np.asarray(raw, dtype=float), self.x, self.y)
        # Keep strictly inside (0, 1) so log-loss and scores stay finite.
        return np.clip(calibrated, 1e-4, 1 - 1e-4)

    def to_dict(self) -> dict:
        return {"method": self.method, "x": list(map(float, self.x)), "y": list(map(float, self.y))}

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        x, y = tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"])
        if len(x) != len(y) or len(x) < 2:
            raise ValueError("calibration table needs at least two (x, y) points of equal length")
        if any(b < a for a, b in zip(x, x[1:])):
            raise ValueError("calibration x values must be non-decreasing")
        return cls(x=x, y=y, method=data.get("method", "isotonic"))


@dataclass
class ModelBundle:
    """Everything needed to score a deal: two boosters, their linear halves, calibrations, feature state and list.

    Each target's raw score is the blend ``features.model.linear.blend_logits`` of its booster and its
    linear model (``None``: the booster alone), then the target's calibration.
    """

    win_model: object  # lightgbm.Booster
    slip_model: object  # lightgbm.Booster
    win_calibration: Calibration
    slip_calibration: Calibration
    feature_state: dict  # FeatureState.to_dict(); rebuilt by features.pointintime.state.FeatureState.from_dict
    features: dict  # {"names": [...], "categorical": {name: [levels...]}}
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)  # filled by the loader: {"win": "3", "slip": "3"}
    win_linear: LinearModel | None = None
    slip_linear: LinearModel | None = None

    def halves(self, target: str) -> tuple[object, LinearModel | None]:
        """The booster and the linear half of ``target`` ("win" or "slip")."""
        if target == "win":
            return self.win_model, self.win_linear
        if target == "slip":
            return self.slip_model, self.slip_linear
        raise ValueError(f"unknown target {target!r}: expected 'win' or 'slip'")


def save_bundle_dir(bundle: ModelBundle, folder: Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "features.json", bundle.features)
    _write_json(folder / "feature_state.json", bundle.feature_state)
    _write_json(folder / "calibration_win.json", bundle.win_calibration.to_dict())
    _write_json(folder / "calibration_slip.json", bundle.slip_calibration.to_dict())
    _write_json(folder / "metrics.json", bundle.metrics)
    bundle.win_model.save_model(str(folder / "win_model.txt"))
    bundle.slip_model.save_model(str(folder / "slip_model.txt"))
    for target, linear in (("win", bundle.win_linear), ("slip", bundle.slip_linear)):
        if linear is not None:
            _write_json(folder / f"linear_{target}.json", linear.to_dict())
    return folder


def load_bundle_dir(folder: Path) -> ModelBundle:
    """Read a bundle folder; raises ``BundleError`` naming the file that is missing or unreadable."""
    folder = Path(folder)

    def read(name: str, parse=None):
        path = folder / name
        try:
            if name.endswith(".json"):
                data = json.loads(path.read_text())
                return parse(data) if parse else data
            return lgb.Booster(model_file=str(path))
        except Exception as exc:  # noqa: BLE001 - any failure is reported with the file name
            raise BundleError(f"model bundle file {name} in {folder} is missing or unreadable: {exc}") from exc

    def linear(target: str) -> LinearModel | None:
        name = f"linear_{target}.json"
        if not (folder / name).exists():
            return None
        model = read(name, LinearModel.from_dict)
        if list(model.names) != list(features.get("names", [])):
            raise BundleError(f"model bundle file {name} in {folder} lists other features than features.json")
        return model

    features = read("features.json")

    return ModelBundle(
        win_model=read("win_model.txt"),
        slip_model=read("slip_model.txt"),
        win_calibration=Calibration.from_dict(read("calibration_win.json")),
        slip_calibration=Calibration.from_dict(read("calibration_slip.json")),
        feature_state=read("feature_state.json"),
        features=features,
        metrics=read("metrics.json"),
        win_linear=linear("win"),
        slip_linear=linear("slip"),
    )


class BundleError(RuntimeError):
    """A model bundle could not be read."""


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
