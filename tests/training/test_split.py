import pandas as pd
import pytest

from training.config import SplitConfig
from training.split import SplitError, assign_sides, attach_sides, plan_split

MATURE_BY = pd.Timestamp("2025-08-01", tz="UTC")


@pytest.fixture
def deals():
    created = pd.Series(pd.date_range("2025-01-01", periods=40, freq="7D", tz="UTC"))
    closed = created + pd.to_timedelta([10 + 30 * (i % 3) for i in range(40)], unit="D")
    return pd.DataFrame({
        "deal_id": [f"D{i}" for i in range(40)] + ["OPEN"],
        "outcome": ["won", "lost"] * 20 + ["open"],
        "created_at": pd.concat([created, created.tail(1)], ignore_index=True),
        "closed_at": pd.concat([closed, pd.Series([pd.NaT], dtype=closed.dtype)], ignore_index=True),
    })


def test_sides_respect_cutoff_gap_and_maturity(deals):
    plan = plan_split(deals, SplitConfig(train_share=0.5, gap_days=15, validation_share=0.5), MATURE_BY)
    sides = assign_sides(deals, plan)
    by_id = deals.set_index("deal_id")
    train, post = sides[sides == "train"].index, sides[sides != "train"].index
    assert "OPEN" not in sides.index
    assert (by_id.loc[train, "closed_at"] < plan.cutoff).all()
    # validation and test deals were created after cutoff + gap, so they also closed after the cutoff
    assert (by_id.loc[post, "created_at"] >= plan.cutoff + pd.Timedelta(days=15)).all()
    assert (by_id.loc[post, "closed_at"] > plan.cutoff).all()
    assert (by_id.loc[post, "created_at"] <= MATURE_BY).all()
    val, test = sides[sides == "validation"].index, sides[sides == "test"].index
    assert by_id.loc[val, "created_at"].max() < by_id.loc[test, "created_at"].min()


def test_every_snapshot_of_a_deal_lands_on_its_deal_side(deals):
    plan = plan_split(deals, SplitConfig(train_share=0.5, gap_days=0), MATURE_BY)
    sides = assign_sides(deals, plan)
    snapshots = pd.DataFrame({"deal_id": ["D1", "D1", "D25", "D25", "D25", "OPEN"]})
    attached = attach_sides(snapshots, sides)
    assert attached.groupby("deal_id")["side"].nunique().max() == 1
    assert "OPEN" not in set(attached["deal_id"])
    assert not set(sides[sides == "train"].index) & set(sides[sides != "train"].index)


def test_cutoff_after_the_mature_deals_is_refused_with_reason(deals):
    with pytest.raises(SplitError, match="too recent"):
        plan_split(deals, SplitConfig(cutoff="2025-07-30"), MATURE_BY)


def test_plan_round_trips(deals):
    plan = plan_split(deals, SplitConfig(), MATURE_BY)
    assert type(plan).from_dict(plan.to_dict()) == plan
