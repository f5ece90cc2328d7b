"""Model behaviour tests on the session's trained model: directional and invariance checks.

Changes are made to the raw export (new contacts and activities, renamed ids) and go through
the real feature pipeline and the shared scoring path, as a CRM request would.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract.schema import TIMESTAMP_DTYPE


@pytest.fixture(scope="module")
def scored(trained, tmp_path_factory):
    """The export, the champion bundle, and one test point per test deal (up to 300 deals)."""
    import mlflow

    from features.contract.load import load_export
    from training.tracking import download_bundle, download_table

    mlflow.set_tracking_uri(trained.uri)
    tmp = tmp_path_factory.mktemp("behaviour")
    run_id = trained.report["run_id"]
    bundle = download_bundle(run_id, tmp / "bundle")
    points = download_table(run_id, "evaluation/test_points.parquet", tmp / "points")
    one = points.sample(frac=1.0, random_state=0).drop_duplicates("deal_id").head(300)
    return load_export(trained.export), bundle, one[["deal_id", "as_of"]].reset_index(drop=True)


def win_probability(export, bundle, points) -> np.ndarray:
    from features.model.predict import predict_probabilities
    from features.pointintime.pipeline import build_features
    from features.pointintime.state import FeatureState

    frame = build_features(export, points, FeatureState.from_dict(bundle.feature_state))
    return predict_probabilities(bundle, frame)["win_probability"].to_numpy()


def with_rows(export, table: str, rows: pd.DataFrame):
    """A new export with ``rows`` appended to ``table`` (same dtypes)."""
    from dataclasses import replace

    current = export.table(table)
    return replace(export, **{table: pd.concat([current, rows.astype({c: t for c, t in current.dtypes.items() if c in rows.columns})], ignore_index=True)})


def engaged_decision_maker(export, points: pd.DataFrame):
    """Add a C-level decision maker to each deal two days before its point, met the day before."""
    n = len(points)
    contact_ids = [f"BT-DM-{i}" for i in range(n)]
    contacts = pd.DataFrame({
        "deal_id": points["deal_id"].to_numpy(), "contact_id": contact_ids, "role": "decision_maker",
        "seniority": "c_level", "added_at": (points["as_of"] - pd.Timedelta(days=2)).astype(TIMESTAMP_DTYPE).to_numpy(),
    })
    activities = activity_rows(points, contact_ids, "meeting", "outbound", "BT-DM-A")
    return with_rows(with_rows(export, "contacts", contacts), "activities", activities)


def activity_rows(points, contact_ids, kind: str, direction: str, prefix: str) -> pd.DataFrame:
    n = len(points)
    rows = pd.DataFrame({
        "activity_id": [f"{prefix}-{i}" for i in range(n)],
        "deal_id": points["deal_id"].to_numpy(),
        "contact_id": contact_ids,
        "type": kind,
        "direction": direction,
        "occurred_at": (points["as_of"] - pd.Timedelta(days=1)).astype(TIMESTAMP_DTYPE).to_numpy(),
        "duration_min": 30.0,
    })
    return rows


def recent_inbound(export, points: pd.DataFrame):
    """Add an inbound email and an inbound call from the customer the day before each point."""
    first = activity_rows(points, [None] * len(points), "email", "inbound", "BT-IN-E")
    second = activity_rows(points, [None] * len(points), "call", "inbound", "BT-IN-C")
    return with_rows(export, "activities", pd.concat([first, second], ignore_index=True))


def test_engaging_the_decision_maker_does_not_lower_win_probability(scored):
    export, bundle, points = scored
    before = win_probability(export, bundle, points)
    after = win_probability(engaged_decision_maker(export, points), bundle, points)
    assert after.mean() >= before.mean()


def test_recent_inbound_activity_does_not_lower_win_probability(scored):
    export, bundle, points = scored
    before = win_probability(export, bundle, points)
    after = win_probability(recent_inbound(export, points), bundle, points)
    assert after.mean() >= before.mean()


def test_renaming_ids_changes_nothing(scored):
    from dataclasses import replace

    export, bundle, points = scored
    rename = {d: f"renamed-{i:05d}" for i, d in enumerate(export.deals["deal_id"].sample(frac=1.0, random_state=1))}
    renamed = replace(export, **{
        name: None if table is None else table.assign(deal_id=table["deal_id"].map(rename).astype(table["deal_id"].dtype))
        for name, table in export.tables().items()
    })
    if renamed.activities is not None:
        renamed = replace(renamed, activities=renamed.activities.assign(activity_id="A-" + renamed.activities["activity_id"]))
    moved = points.assign(deal_id=points["deal_id"].map(rename))
    np.testing.assert_array_equal(win_probability(export, bundle, points), win_probability(renamed, bundle, moved))


def test_more_close_date_pushes_never_raise_win_or_lower_slip(scored):
    """A monotone direction of both halves of the model (trees and logistic regression): exact per row."""
    from features.model.predict import predict_probabilities
    from features.pointintime.pipeline import build_features
    from features.pointintime.state import FeatureState

    export, bundle, points = scored
    frame = build_features(export, points, FeatureState.from_dict(bundle.feature_state))
    before = predict_probabilities(bundle, frame)
    pushed = frame.assign(close_date_pushes=frame["close_date_pushes"].fillna(0) + 3)
    after = predict_probabilities(bundle, pushed)
    assert (after["win_probability"].to_numpy() <= before["win_probability"].to_numpy() + 1e-12).all()
    assert (after["slip_probability"].to_numpy() >= before["slip_probability"].to_numpy() - 1e-12).all()
    assert (after["win_probability"].to_numpy() < before["win_probability"].to_numpy()).any()  # the feature is used
