from training.config import GateConfig
from training.gate import decide_promotion

CHAMPION = {"win": {"auc": 0.800, "log_loss": 0.500}, "slip": {"auc": 0.700, "log_loss": 0.600}}


def test_no_champion_promotes():
    assert decide_promotion(CHAMPION, None, GateConfig()).promote


def test_within_tolerance_promotes():
    challenger = {"win": {"auc": 0.796, "log_loss": 0.504}, "slip": {"auc": 0.70, "log_loss": 0.60}}
    assert decide_promotion(challenger, CHAMPION, GateConfig()).promote


def test_auc_drop_refuses_and_says_both_numbers():
    challenger = {"win": {"auc": 0.790, "log_loss": 0.49}, "slip": {"auc": 0.70, "log_loss": 0.60}}
    decision = decide_promotion(challenger, CHAMPION, GateConfig())
    assert not decision.promote
    assert "0.7900" in decision.reasons[0] and "0.8000" in decision.reasons[0]


def test_log_loss_rise_on_slip_refuses():
    challenger = {"win": {"auc": 0.81, "log_loss": 0.49}, "slip": {"auc": 0.71, "log_loss": 0.61}}
    assert not decide_promotion(challenger, CHAMPION, GateConfig()).promote
