"""From probabilities to what a manager reads first: the 1-99 score, the A-D grade, the risk level and
the value at risk, with their documented cut-offs (``ExplainConfig``, ``WarningThresholds``) as data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

# --- configuration (data, not code) -----------------------------------------------------------


@dataclass(frozen=True)
class WarningThresholds:
    """Thresholds of the rule-based warnings; every value is configurable.

    >>> WarningThresholds().no_activity_days
    14.0
    """

    no_activity_days: float = 14.0  # no activity of any kind for this many days
    ghosted_days: float = 21.0  # nothing inbound for this long while the rep keeps reaching out
    ghosted_min_outbound_30d: float = 3.0  # ... with at least this many touches in the last 30 days
    single_thread_max_contacts: float = 1.0  # at most this many contacts engaged so far ...
    single_thread_share: float = 0.8  # ... or this share of contact activity goes to one person
    decision_maker_days: float = 30.0  # neither decision maker nor economic buyer engaged this long
    stalled_ratio: float = 2.0  # days in stage / days won deals typically take in that stage
    close_date_pushes: float = 2.0  # the expected close date moved out at least this often
    close_date_overdue_days: float = 0.0  # the expected close date known at as_of lies more than this in the past

    @classmethod
    def from_dict(cls, data: dict | None) -> "WarningThresholds":
        """Build from a plain mapping; unknown keys are an error that names them."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown warning thresholds {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in data.items()})


@dataclass(frozen=True)
class ExplainConfig:
    """Cut-offs for grades and risk levels, number of factors and warning thresholds.

    Grades by calibrated win probability: A >= 0.60, B >= 0.40, C >= 0.20, else D.

    Risk level: what a deal puts at stake, so that a manager's short list is short. It reads the
    win probability and the value at risk measured in typical deals of the deal's segment
    (``value_at_risk_ratio``: (1 - win) x ``amount_vs_segment_median``; 1.0 is a whole typical
    deal's amount):

    - ``high``: win < 0.30 and value at risk >= 1.0 typical deal (likely lost, and a typical
      deal's worth or more with it);
    - ``medium``: win < 0.50 and value at risk >= 0.5 typical deal (a coin flip or worse, with half
      a typical deal at stake);
    - ``low``: the rest (likely won, or little at stake).

    A deal whose value at risk cannot be sized (amount unknown, or no closed deal of its segment
    to size it by) is levelled by its win probability alone (the size conditions count as met),
    so a likely-lost deal is never hidden for a missing amount.

    Slip probability takes no part: it is the chance the deal is *not won by* its expected close
    date, which includes never winning, so it is at least about 1 - win and sat at 0.97 for the
    median open deal of the demo export; with ``slip >= 0.70`` making a deal ``high``, 93% of open
    deals were. Slip is its own field of the answer, and an expected close date that has passed is
    the ``close_date_passed`` warning. Shares of open deals per level: ``bench/risk_levels.py``.
    """

    grade_cutoffs: tuple[tuple[str, float], ...] = (("A", 0.60), ("B", 0.40), ("C", 0.20))
    lowest_grade: str = "D"
    high_risk_win_below: float = 0.30
    high_risk_value_at_risk_from: float = 1.0  # in typical deals of the segment (value_at_risk_ratio)
    medium_risk_win_below: float = 0.50
    medium_risk_value_at_risk_from: float = 0.5
    top_factors: int = 5
    warnings: WarningThresholds = field(default_factory=WarningThresholds)

    def to_dict(self) -> dict:
        return asdict(self)


# --- scores ----------------------------------------------------------------------------------


def score_from_probability(win_probability: np.ndarray) -> np.ndarray:
    """Map calibrated win probability to an integer score 1-99 (probability in percent, clipped).

    >>> score_from_probability(np.array([0.0, 0.314, 0.5, 1.0])).tolist()
    [1, 31, 50, 99]
    """
    p = np.asarray(win_probability, dtype=float)
    return np.clip(np.rint(p * 100.0), 1, 99).astype(int)


def grade_from_probability(win_probability: np.ndarray, config: ExplainConfig = ExplainConfig()) -> np.ndarray:
    """Grade A-D by calibrated win probability, using ``config.grade_cutoffs``.

    >>> grade_from_probability(np.array([0.75, 0.45, 0.25, 0.05])).tolist()
    ['A', 'B', 'C', 'D']
    """
    labels, codes = grade_codes(win_probability, config)
    return np.array(labels, dtype=object)[codes]


def grade_codes(win_probability, config: ExplainConfig) -> tuple[tuple[str, ...], np.ndarray]:
    """Grade labels and each deal's position in them (``grade_from_probability`` without the strings)."""
    p = np.asarray(win_probability, dtype=float)
    conditions = [p >= cut for _, cut in config.grade_cutoffs]
    labels = tuple(grade for grade, _ in config.grade_cutoffs) + (config.lowest_grade,)
    return labels, np.select(conditions, range(len(conditions)), default=len(conditions))


def risk_level_from(
    win_probability: np.ndarray, value_at_risk_ratio: np.ndarray, config: ExplainConfig = ExplainConfig()
) -> np.ndarray:
    """Risk level ``high`` / ``medium`` / ``low`` from win probability and value at risk in typical deals.

    ``value_at_risk_ratio`` is ``value_at_risk_ratio_from``'s (NaN: cannot be sized; the win
    probability alone decides). Cut-offs and why: ``ExplainConfig``.

    >>> risk_level_from(np.array([0.1, 0.1, 0.4, 0.4, 0.7, 0.2]), np.array([1.2, 0.3, 0.6, 0.4, 2.0, np.nan])).tolist()
    ['high', 'low', 'medium', 'low', 'low', 'high']
    """
    return np.array(RISK_LEVELS, dtype=object)[risk_codes(win_probability, value_at_risk_ratio, config)]


RISK_LEVELS: tuple[str, ...] = ("high", "medium", "low")


def risk_codes(win_probability, value_at_risk_ratio, config: ExplainConfig) -> np.ndarray:
    """Each deal's position in ``RISK_LEVELS``."""
    win = np.asarray(win_probability, dtype=float)
    ratio = np.asarray(value_at_risk_ratio, dtype=float)
    unsized = np.isnan(ratio)
    with np.errstate(invalid="ignore"):
        high = (win < config.high_risk_win_below) & (unsized | (ratio >= config.high_risk_value_at_risk_from))
        medium = (win < config.medium_risk_win_below) & (unsized | (ratio >= config.medium_risk_value_at_risk_from))
    return np.select([high, medium], [0, 1], default=2)


def value_at_risk_ratio_from(amount_vs_segment_median: np.ndarray, win_probability: np.ndarray) -> np.ndarray:
    """Value at risk in typical deals of the segment: (1 - win) x amount / the segment's median amount.

    The feature ``amount_vs_segment_median`` carries the size (NaN when the amount or the
    segment's median is unknown, and so is the result), so a threshold on it means the same in
    any currency and for small and large customers alike.

    >>> value_at_risk_ratio_from(np.array([2.0, np.nan]), np.array([0.25, 0.5])).tolist()
    [1.5, nan]
    """
    return np.asarray(amount_vs_segment_median, dtype=float) * (1.0 - np.asarray(win_probability, dtype=float))


def value_at_risk_from(amount: np.ndarray, win_probability: np.ndarray) -> np.ndarray:
    """Value at risk = amount x (1 - win probability); a missing amount gives 0.

    >>> value_at_risk_from(np.array([1000.0, np.nan]), np.array([0.25, 0.5])).tolist()
    [750.0, 0.0]
    """
    amount = np.nan_to_num(np.asarray(amount, dtype=float), nan=0.0)
    return amount * (1.0 - np.asarray(win_probability, dtype=float))


