import pandas as pd
import pytest

from training.config import SplitConfig
from training.split import SplitError, assign_sides, attach_sides, plan_split


@pytest.fixture
def deals():
    closed = pd.Series(pd.date_range("2025-01-01", periods=20, freq="10D", tz="UTC"))
    return pd.DataFrame({
        "deal_id": [f"D{i}" for i in range(20)] + ["OPEN"],
        "outcome": ["won", "lost"] * 10 + ["open"],
        "closed_at": pd.concat([closed, pd.Series([pd.NaT], dtype=closed.dtype)], ignore_index=True),
    })


def test_sides_follow_close_dates_and_gap(deals):
    plan = plan_split(deals, SplitConfig(train_share=0.5, gap_days=15, validation_share=0.5))
    sides = assign_sides(deals, plan)
    closed = deals.set_index("deal_id")["closed_at"]
    assert "OPEN" not in sides.index
    assert (closed[sides[sides == "train"].index] < plan.cutoff).all()
    assert (closed[sides[sides != "train"].index] >= plan.cutoff + pd.Timedelta(days=15)).all()
    assert closed[sides[sides == "validation"].index].max() < closed[sides[sides == "test"].index].min()
    # a deal inside the gap gets no side at all
    in_gap = closed[(closed >= plan.cutoff) & (closed < plan.validation_start)].index
    assert len(in_gap) > 0 and not set(in_gap) & set(sides.index)


def test_every_snapshot_of_a_deal_lands_on_its_deal_side(deals):
    plan = plan_split(deals, SplitConfig(train_share=0.5, gap_days=0))
    sides = assign_sides(deals, plan)
    snapshots = pd.DataFrame({"deal_id": ["D1", "D1", "D19", "D19", "OPEN"]})
    attached = attach_sides(snapshots, sides)
    assert attached.groupby("deal_id")["side"].nunique().max() == 1
    assert "OPEN" not in set(attached["deal_id"])


def test_explicit_cutoff_after_last_close_is_refused(deals):
    with pytest.raises(SplitError, match="no deal closed on or after"):
        plan_split(deals, SplitConfig(cutoff="2030-01-01"))


def test_plan_round_trips(deals):
    plan = plan_split(deals, SplitConfig())
    assert type(plan).from_dict(plan.to_dict()) == plan
