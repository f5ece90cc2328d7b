"""The promotion gate with a run that trained no slip model (its export had no close-date history)."""

from __future__ import annotations

from training.config import GateConfig
from training.gate import decide_promotion

WIN = {"auc": 0.80, "log_loss": 0.50}
SLIP = {"auc": 0.70, "log_loss": 0.55}


def test_a_win_only_challenger_does_not_replace_a_champion_with_a_slip_model():
    decision = decide_promotion({"win": WIN}, {"win": WIN, "slip": SLIP}, GateConfig())
    assert not decision.promote
    assert decision.reasons[0] == ("slip: the challenger has no slip model and the champion has one "
                                   "(promote it with --version N --force to accept losing it)")


def test_a_slip_model_where_the_champion_had_none_is_new_and_the_win_models_are_compared():
    decision = decide_promotion({"win": WIN, "slip": SLIP}, {"win": WIN}, GateConfig())
    assert decision.promote
    assert "slip: the champion has no slip model; the challenger's is new (ok)" in decision.reasons
    worse = decide_promotion({"win": {"auc": 0.70, "log_loss": 0.60}, "slip": SLIP}, {"win": WIN}, GateConfig())
    assert not worse.promote


def test_two_win_only_runs_compare_their_win_models():
    assert decide_promotion({"win": WIN}, {"win": WIN}, GateConfig()).promote
    assert not decide_promotion({"win": {"auc": 0.79, "log_loss": 0.50}}, {"win": WIN}, GateConfig()).promote
