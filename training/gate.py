"""Promotion gate: move ``champion`` to the challenger only if it is at least as good.

Both the challenger and the current champion are re-scored by the same code on the same points:
the challenger run's test period (its logged ``evaluation/test_points.parquet``), each with its
own bundle (feature state, boosters, calibration), so the comparison is like for like.

A run that raised leak alarms (``training.evaluate.leak_alarms``: a feature that alone separates
won from lost, a win model too good to be true) is never promoted, not even with ``force``, unless
``override_leak_alarm`` says the user has looked and accepts it. A run that trained no slip model
(its export had no expected-close-date history) promotes its win model alone and removes the slip
model's champion alias, so serving never pairs models of different runs; it cannot replace a
champion that has a slip model except by ``force``.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.model.names import RegisteredNames
from training.config import GateConfig
from training.metrics import bootstrap_intervals, compute_metrics, per_deal_weights

TARGETS: dict[str, tuple[str, str]] = {"win": ("won", "win_probability"), "slip": ("slipped", "slip_probability")}
# MLflow param training logs: "False" for a run trained below minimum.reliable_closed closed deals whose
# lead over the stage table was within luck (training.pipeline.judge_small_data); never promoted but by force.
PROMOTABLE_PARAM = "data.promotable"


class PromotionError(RuntimeError):
    """Promotion cannot proceed (no challenger, unknown version, no data to re-evaluate on)."""


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate with the numbers behind it."""

    promote: bool
    reasons: tuple[str, ...]
    challenger: dict = field(default_factory=dict)  # {"win": {"auc":..., "log_loss":...}, "slip": {...}}
    champion: dict = field(default_factory=dict)


def decide_promotion(challenger: dict, champion: dict | None, config: GateConfig, leads: dict | None = None) -> GateDecision:
    """Compare metrics of both models on the same points; None champion -> promote.

    ``leads`` (``lead_intervals``): per target, the 90% deal-bootstrap interval of the challenger's
    lead in AUC and log-loss; each reason then says whether the lead is outside it (a real
    difference) or inside (luck of which deals the test period holds). The decision itself is
    the tolerance rule: a challenger within luck of the champion is promoted (newer data).

    >>> good = {"win": {"auc": 0.80, "log_loss": 0.50}}
    >>> decide_promotion(good, {"win": {"auc": 0.802, "log_loss": 0.501}}, GateConfig()).promote
    True
    >>> decide_promotion(good, {"win": {"auc": 0.85, "log_loss": 0.45}}, GateConfig()).promote
    False
    """
    if champion is None:
        return GateDecision(True, ("no champion yet",), challenger, {})
    reasons: list[str] = []
    ok = True
    for target in champion:
        if target not in challenger:
            ok = False
            reasons.append(f"{target}: the challenger has no {target} model and the champion has one "
                           "(promote it with --version N --force to accept losing it)")
    for target in challenger:
        if target not in champion:
            reasons.append(f"{target}: the champion has no {target} model; the challenger's is new (ok)")
            continue
        new, old = challenger[target], champion[target]
        auc_ok = new["auc"] >= old["auc"] - config.auc_drop
        loss_ok = new["log_loss"] <= old["log_loss"] * (1 + config.log_loss_rise)
        ok = ok and auc_ok and loss_ok
        interval = (leads or {}).get(target, {})
        reasons.append(
            f"{target}: AUC challenger {new['auc']:.4f} vs champion {old['auc']:.4f} "
            f"({'ok' if auc_ok else f'drops more than {config.auc_drop}'}){describe_lead(new['auc'] - old['auc'], interval.get('auc'))}; "
            f"log-loss challenger {new['log_loss']:.4f} vs champion {old['log_loss']:.4f} "
            f"({'ok' if loss_ok else f'rises more than {config.log_loss_rise:.0%}'})"
            f"{describe_lead(old['log_loss'] - new['log_loss'], interval.get('log_loss'))}"
        )
    return GateDecision(ok, tuple(reasons), challenger, champion)


def describe_lead(lead: float, interval: tuple[float, float] | None) -> str:
    """", lead +0.0021 (90% -0.0014 .. +0.0057: inside, luck)" - empty without an interval.

    >>> describe_lead(0.01, (0.004, 0.016))
    ', lead +0.0100 (90% +0.0040 .. +0.0160: outside, a real lead)'
    >>> describe_lead(-0.002, (-0.006, 0.001))
    ', lead -0.0020 (90% -0.0060 .. +0.0010: inside, luck)'
    """
    if not interval or not all(math.isfinite(bound) for bound in interval):
        return ""
    low, high = interval
    verdict = "outside, a real lead" if low > 0 else "outside, really behind" if high < 0 else "inside, luck"
    return f", lead {lead:+.4f} (90% {low:+.4f} .. {high:+.4f}: {verdict})"


def lead_intervals(points: pd.DataFrame, new: pd.DataFrame, old: pd.DataFrame, targets, seed: int = 0) -> dict:
    """Per target, 90% deal-bootstrap intervals of the challenger's lead over the champion (AUC
    higher, log-loss lower: positive = the challenger is better), both scored on the same points
    and the same resampled deals."""
    result = {}
    for target in targets:
        label, column = TARGETS[target]
        mask = points[label].notna().to_numpy()
        y, w = points.loc[mask, label].to_numpy(dtype=float), per_deal_weights(points.loc[mask, "deal_id"])
        predictions = {"challenger": new[column].to_numpy()[mask], "champion": old[column].to_numpy()[mask]}
        intervals = bootstrap_intervals(points.loc[mask, "deal_id"], y, w, predictions, (("challenger", "champion"),), seed=seed)
        result[target] = {metric: intervals["challenger-champion"][metric] for metric in ("auc", "log_loss")}
    return result


def score_bundle_on_points(bundle, export, points: pd.DataFrame, probabilities: pd.DataFrame | None = None) -> dict[str, dict[str, float]]:
    """Re-score a bundle on labelled points (deal_id, as_of, won, slipped): per-deal weighted metrics."""
    if probabilities is None:
        probabilities = predict_on_points(bundle, export, points)
    result = {}
    for target in bundle.targets:
        label, column = TARGETS[target]
        mask = points[label].notna().to_numpy()
        y = points.loc[mask, label].to_numpy(dtype=float)
        w = per_deal_weights(points.loc[mask, "deal_id"])
        metrics = compute_metrics(y, probabilities[column].to_numpy()[mask], w)
        result[target] = {"auc": metrics["auc"], "log_loss": metrics["log_loss"], "brier": metrics["brier"]}
    return result


def predict_on_points(bundle, export, points: pd.DataFrame) -> pd.DataFrame:
    """The bundle's calibrated probabilities at (deal_id, as_of) points, with its own feature state."""
    from features.model.predict import predict_probabilities
    from features.pointintime.pipeline import build_features
    from features.pointintime.state import FeatureState

    state = FeatureState.from_dict(bundle.feature_state)
    return predict_probabilities(bundle, build_features(export, points[["deal_id", "as_of"]], state))


def run_promote(
    *,
    data: Path | None,
    names: RegisteredNames,
    config: GateConfig,
    version: str | None = None,
    force: bool = False,
    mapping: Path | None = None,
    uri: str | None = None,
    echo=print,
    override_leak_alarm: bool = False,
) -> GateDecision:
    """Gate the challenger (or ``version``) against the champion and move the alias if it passes.

    ``force`` moves ``champion`` to ``version`` without evaluation: that is how to roll back.
    A run with leak alarms is refused unless ``override_leak_alarm`` (with or without ``force``).
    """
    import mlflow
    from mlflow import MlflowClient

    from training.tracking import (
        MODELS_TAG,
        download_bundle,
        download_table,
        remove_alias,
        run_id_of_version,
        version_by_alias,
        version_of_run,
    )

    if uri:
        mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    win_name, slip_name = names.win_model, names.slip_model
    if version is None:
        challenger = version_by_alias(client, win_name, names.challenger_alias)
        if challenger is None:
            raise PromotionError(f"model {win_name} has no '{names.challenger_alias}' version; run `dealrisk train` first")
        version = str(challenger.version)
    run_id = run_id_of_version(client, win_name, version)
    slip_version = version_of_run(client, slip_name, run_id)
    run_tags = client.get_run(run_id).data.tags
    trained_slip = "slip" in run_tags.get(MODELS_TAG, "win,slip").split(",")
    if slip_version is None and trained_slip:
        raise PromotionError(f"no version of {slip_name} was registered by run {run_id} (of {win_name} v{version})")
    alarms = read_leak_alarms(client, run_id)
    if alarms and not override_leak_alarm:
        for alarm in alarms:
            echo(f"LEAK ALARM: {alarm}")
        echo(f"refused: run {run_id} ({win_name} v{version}) raised {len(alarms)} leak alarm(s); a model that "
             "knows the outcome looks great offline and fails on open deals. Fix the export, or pass "
             "--override-leak-alarm if you have checked that these inputs are known before the outcome")
        return GateDecision(False, tuple(f"leak alarm: {alarm}" for alarm in alarms))

    def move() -> None:
        client.set_registered_model_alias(win_name, names.champion_alias, version)
        if slip_version is not None:
            client.set_registered_model_alias(slip_name, names.champion_alias, slip_version)
            echo(f"'{names.champion_alias}' -> {win_name} v{version}, {slip_name} v{slip_version} (run {run_id})")
            return
        removed = remove_alias(client, slip_name, names.champion_alias)
        echo(f"'{names.champion_alias}' -> {win_name} v{version} (run {run_id}); run {run_id} trained no slip model"
             + (f", so '{names.champion_alias}' was removed from {slip_name}" if removed else ""))

    if alarms:
        echo(f"leak alarm overridden: promoting run {run_id} despite {len(alarms)} alarm(s)")
    if force:
        move()
        return GateDecision(True, (f"forced: {win_name} v{version}",))
    unproven = client.get_run(run_id).data.params.get(PROMOTABLE_PARAM) == "False"

    def refuse_unproven(decision: GateDecision) -> GateDecision:
        reason = (f"refused: run {run_id} ({win_name} v{version}) was trained on fewer closed deals than "
                  "minimum.reliable_closed and its lead over the CRM stage table on its test period is within luck "
                  "(its report's small_data); the challenger stays registered and the champion alias stays where it "
                  f"is. `dealrisk promote --version {version} --force` promotes it anyway")
        echo(reason)
        return GateDecision(False, (*decision.reasons, reason), decision.challenger, decision.champion)

    champion = version_by_alias(client, win_name, names.champion_alias)
    if champion is None:
        decision = decide_promotion({}, None, config)
        if unproven:
            return refuse_unproven(decision)
        move()
        return decision
    champion_run = run_id_of_version(client, win_name, str(champion.version))
    if champion_run == run_id:
        echo(f"{win_name} v{version} is already the champion")
        return GateDecision(True, ("already champion",))
    if data is None:
        raise PromotionError(
            "a champion exists, so the challenger must be compared with it on the same test period: "
            "pass --data EXPORT_FOLDER (the export the challenger was trained on)"
        )
    from features.contract.load import load_export

    export = load_export(data, mapping=mapping)
    with tempfile.TemporaryDirectory() as tmp:
        points = download_table(run_id, "evaluation/test_points.parquet", Path(tmp) / "points")
        new_bundle = download_bundle(run_id, Path(tmp) / "challenger")
        old_bundle = download_bundle(champion_run, Path(tmp) / "champion")
    new_probabilities = predict_on_points(new_bundle, export, points)
    old_probabilities = predict_on_points(old_bundle, export, points)
    new = score_bundle_on_points(new_bundle, export, points, new_probabilities)
    old = score_bundle_on_points(old_bundle, export, points, old_probabilities)
    shared = [target for target in new_bundle.targets if target in old_bundle.targets]
    decision = decide_promotion(new, old, config, lead_intervals(points, new_probabilities, old_probabilities, shared))
    for reason in decision.reasons:
        echo(reason)
    if decision.promote and unproven:
        return refuse_unproven(decision)
    if decision.promote:
        move()
    else:
        echo(f"refused: {win_name} v{version} is worse than champion v{champion.version} on the same test period")
    return decision


def read_leak_alarms(client, run_id: str) -> list[str]:
    """The leak alarms a training run raised (its report's ``leak_alarms``); [] when none or an older run."""
    from training.tracking import LEAK_ALARMS_TAG, download_report

    count = client.get_run(run_id).data.tags.get(LEAK_ALARMS_TAG, "0")
    if count in ("", "0"):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        alarms = download_report(run_id, Path(tmp)).get("leak_alarms") or []
    return [str(alarm) for alarm in alarms] or [f"{count} leak alarm(s) (their text is not in the run's report)"]


def list_models(names: RegisteredNames, uri: str | None = None) -> pd.DataFrame:
    """Registered versions of both models with aliases and headline test metrics of their run."""
    import mlflow
    from mlflow import MlflowClient

    if uri:
        mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    rows = []
    for target, name in (("win", names.win_model), ("slip", names.slip_model)):
        try:
            versions = client.search_model_versions(f"name = '{name}'")
            aliases = dict(client.get_registered_model(name).aliases) if versions else {}
        except Exception:  # noqa: BLE001 - an empty store has no registry tables or model yet
            versions, aliases = [], {}
        for mv in versions:
            run_id = mv.run_id or mv.tags.get("run_id")
            metrics = client.get_run(run_id).data.metrics if run_id else {}
            rows.append({
                "model": name,
                "version": int(mv.version),
                # search results carry no aliases in MLflow 3; the registered model has them
                "aliases": ",".join(sorted(a for a, v in aliases.items() if str(v) == str(mv.version))),
                "run_id": (run_id or "")[:12],
                "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M"),
                "test_auc": metrics.get(f"{target}.model.auc", math.nan),
                "test_log_loss": metrics.get(f"{target}.model.log_loss", math.nan),
                "test_brier": metrics.get(f"{target}.model.brier", math.nan),
                "test_ece": metrics.get(f"{target}.model.ece", math.nan),
            })
    frame = pd.DataFrame(rows)
    return frame.sort_values(["model", "version"]).reset_index(drop=True) if len(frame) else frame
