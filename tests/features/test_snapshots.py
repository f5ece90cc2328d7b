"""Tests for features.pointintime.snapshots: sampling strictly inside the open life, labels, and the maturity rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract.schema import Export
from features.pointintime.snapshots import (
    SnapshotConfig,
    export_end,
    label_snapshots,
    maturity_days,
    sample_snapshots,
    sample_training_snapshots,
    select_mature_deals,
)
from tests.factories import make_export, random_export, ts


def test_snapshots_are_weekly_and_at_stage_entries_by_hand():
    points = sample_snapshots(make_export(), deal_ids=["D4"])
    # D4: created 01-10, closed 02-15 (36 days): weekly 01-10 .. 02-14, plus negotiate on 01-20.
    weekly = pd.date_range("2026-01-10", periods=6, freq="7D", tz="UTC")
    expected = sorted(list(weekly) + [pd.Timestamp("2026-01-20", tz="UTC")])
    assert list(points["as_of"]) == expected and set(points["deal_id"]) == {"D4"}


def test_snapshots_never_at_or_after_closing_nor_before_creation():
    export = random_export(200, seed=2)
    points = sample_snapshots(export)
    deals = export.deals.set_index("deal_id")
    assert len(points) > 500
    assert (points["as_of"] < points["deal_id"].map(deals["closed_at"])).all()
    assert (points["as_of"] >= points["deal_id"].map(deals["created_at"])).all()
    assert not points.duplicated().any()
    assert set(deals.loc[points["deal_id"].unique(), "outcome"]) <= {"won", "lost"}


def test_config_turns_families_of_moments_off():
    export = make_export()
    only_entries = sample_snapshots(export, SnapshotConfig(every_days=0))
    assert list(only_entries.loc[only_entries["deal_id"] == "D2", "as_of"]) == list(ts(["2026-01-05", "2026-01-20"]))
    only_weekly = sample_snapshots(Export(deals=export.deals), SnapshotConfig(every_days=14))
    assert only_weekly.groupby("deal_id").size().to_dict() == {"D1": 5, "D2": 4, "D4": 3}
    none = sample_snapshots(export, SnapshotConfig(every_days=0, at_stage_entries=False))
    assert none.empty and list(none.columns) == ["deal_id", "as_of"]


def test_labels_use_the_close_date_known_at_as_of():
    points = pd.DataFrame({"deal_id": ["D1", "D1", "D2", "D4", "D3"],
                           "as_of": ts(["2026-02-01", "2026-03-01", "2026-02-01", "2026-02-01", "2026-03-01"])})
    labels = label_snapshots(make_export(), points)
    # D1 on 02-01 expected 02-28 (changed on 02-10), won 03-10: slipped. On 03-01 expected 03-15: on time.
    # D2 lost: slipped. D4 won 02-15, expected 02-15: on time. D3 open: no labels.
    assert labels["won"].tolist()[:4] == [1.0, 1.0, 0.0, 1.0]
    assert labels["slipped"].tolist()[:4] == [1.0, 0.0, 1.0, 0.0]
    assert labels[["won", "slipped"]].iloc[4].isna().all()


def test_slipped_is_missing_when_no_close_date_was_known():
    export = make_export()
    deals = export.deals.assign(expected_close_date=export.deals["expected_close_date"].where(
        export.deals["deal_id"] != "D4"))
    points = pd.DataFrame({"deal_id": ["D4"], "as_of": ts(["2026-02-01"])})
    labels = label_snapshots(Export(**{**export.tables(), "deals": deals}), points)
    assert labels["won"].iloc[0] == 1.0 and np.isnan(labels["slipped"].iloc[0])


def test_no_points_get_no_labels():
    # A partition of a Dask run can hold no mature deal: no snapshots, an empty labelled frame.
    export = make_export()
    labels = label_snapshots(export, sample_snapshots(export, deal_ids=[]))
    assert labels.empty and list(labels.columns) == ["deal_id", "as_of", "won", "slipped"]


def test_maturity_rule_drops_recent_and_open_deals():
    export = make_export()
    # Cycles: D1 68, D2 46, D4 36 days -> the 90% quantile is 63.6 days.
    assert maturity_days(export) == pytest.approx(63.6)
    assert list(select_mature_deals(export, end="2026-03-16")) == ["D1", "D2", "D4"]
    # End 2026-03-10: D1 was created 68 days before (mature), D2 64 days before (mature), D4 59 (not).
    assert list(select_mature_deals(export, end="2026-03-10")) == ["D1", "D2"]
    assert "D3" not in select_mature_deals(export, end="2030-01-01")


def test_maturity_keeps_slow_lost_deals_in_proportion():
    export = random_export(400, seed=4)
    mature = select_mature_deals(export)
    deals = export.deals.set_index("deal_id")
    recent_cut = export_end(export) - pd.Timedelta(days=maturity_days(export))
    assert (deals.loc[mature, "created_at"] <= recent_cut).all()
    assert 0 < len(mature) < (deals["outcome"] != "open").sum()


def test_no_closed_deal_means_no_mature_deal():
    export = make_export()
    open_deals = export.deals.assign(outcome="open", closed_at=export.deals["closed_at"].where(export.deals["deal_id"] == ""))
    assert len(select_mature_deals(Export(deals=open_deals))) == 0


def test_training_snapshots_are_labelled_mature_points():
    export = random_export(150, seed=6)
    rows = sample_training_snapshots(export)
    assert list(rows.columns) == ["deal_id", "as_of", "won", "slipped"]
    assert set(rows["deal_id"]) <= set(select_mature_deals(export))
    assert rows["won"].notna().all()


def test_export_end_is_the_latest_timestamp_anywhere():
    assert export_end(make_export()) == pd.Timestamp("2026-03-10", tz="UTC")


def test_labels_reject_unknown_deals():
    with pytest.raises(ValueError, match="deal 'D9' is not in deals"):
        label_snapshots(make_export(), pd.DataFrame({"deal_id": ["D9"], "as_of": ts(["2026-03-01"])}))
