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
      skipped.json           what training left out for lack of data, each with its reason
                             (features.pointintime.inputs.Skips.to_dict(): models, fields,
                             features, the lines shown by the CLI and GET /model); absent in
                             bundles from before it was written: nothing skipped
      win_model.txt          LightGBM booster (Booster.save_model) for the win model
      slip_model.txt         LightGBM booster for the slip model
      manifest.json          size and SHA-256 of every other file (features.model.integrity); its
                             own SHA-256 is the bundle's digest, which training tags the run and
                             the registered versions with, so a loader checks every file before
                             parsing it (absent in bundles from before it was written: refused)

A bundle without a slip model (its export had no expected close date history: ``skipped.json``
says so) has no ``calibration_slip.json``, ``linear_slip.json`` or ``slip_model.txt``; it scores
win probabilities and leaves slip probabilities missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np

from features.model.integrity import BundleError, write_manifest
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
    linear model (``None``: the booster alone), then the target's calibration. ``slip_model`` and
    ``slip_calibration`` are None when training skipped the slip model (``skipped["models"]``
    says why); the win model is always there.
    """

    win_model: object  # lightgbm.Booster
    slip_model: object | None  # lightgbm.Booster; None: not trained (see skipped)
    win_calibration: Calibration
    slip_calibration: Calibration | None
    feature_state: dict  # FeatureState.to_dict(); rebuilt by features.pointintime.state.FeatureState.from_dict
    features: dict  # {"names": [...], "categorical": {name: [levels...]}}
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)  # filled by the loader: {"win": "3", "slip": "3"}
    win_linear: LinearModel | None = None
    slip_linear: LinearModel | None = None
    skipped: dict = field(default_factory=dict)  # features.pointintime.inputs.Skips.to_dict(); {}: nothing skipped

    def halves(self, target: str) -> tuple[object, LinearModel | None]:
        """The booster and the linear half of ``target`` ("win" or "slip"); (None, None) for a model not trained."""
        if target == "win":
            return self.win_model, self.win_linear
        if target == "slip":
            return self.slip_model, self.slip_linear
        raise ValueError(f"unknown target {target!r}: expected 'win' or 'slip'")

    def has(self, target: str) -> bool:
        """Whether the bundle holds a trained ``target`` model."""
        return self.halves(target)[0] is not None

    @property
    def targets(self) -> tuple[str, ...]:
        """The models the bundle holds, win first."""
        return tuple(target for target in ("win", "slip") if self.has(target))

    def skipped_lines(self) -> list[str]:
        """What training left out for lack of data, one sentence each (empty: nothing)."""
        return [str(line) for line in (self.skipped or {}).get("lines", [])]


def save_bundle_dir(bundle: ModelBundle, folder: Path) -> Path:
    """Write ``bundle`` into ``folder``, its manifest last (``features.model.integrity.bundle_digest`` reads its digest)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "features.json", bundle.features)
    _write_json(folder / "feature_state.json", bundle.feature_state)
    _write_json(folder / "metrics.json", bundle.metrics)
    _write_json(folder / "skipped.json", bundle.skipped or {})
    for target in bundle.targets:
        booster, linear = bundle.halves(target)
        _write_json(folder / f"calibration_{target}.json", getattr(bundle, f"{target}_calibration").to_dict())
        booster.save_model(str(folder / f"{target}_model.txt"))
        if linear is not None:
            _write_json(folder / f"linear_{target}.json", linear.to_dict())
    write_manifest(folder)
    return folder


def load_bundle_dir(folder: Path) -> ModelBundle:
    """Read a bundle folder; raises ``BundleError`` naming the file that is missing or unreadable.

    It parses what it finds: a folder from the registry is checked with
    ``features.model.integrity.verify_bundle_dir`` first (LightGBM crashes on a cut booster file).
    """
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
    skipped = read("skipped.json") if (folder / "skipped.json").exists() else {}
    if not isinstance(skipped, dict):
        raise BundleError(f"model bundle file skipped.json in {folder} is not a JSON object")
    # A model is absent only where skipped.json says training skipped it: a missing file otherwise
    # is a broken bundle, and reading it fails naming the file.
    slip_skipped = "slip" in (skipped.get("models") or {})

    return ModelBundle(
        win_model=read("win_model.txt"),
        slip_model=None if slip_skipped else read("slip_model.txt"),
        win_calibration=Calibration.from_dict(read("calibration_win.json")),
        slip_calibration=None if slip_skipped else Calibration.from_dict(read("calibration_slip.json")),
        feature_state=read("feature_state.json"),
        features=features,
        metrics=read("metrics.json"),
        win_linear=linear("win"),
        slip_linear=None if slip_skipped else linear("slip"),
        skipped=skipped,
    )


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
