"""Tests for features.model.matrix: the spec fitted on training features, and the float64 encoding."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.model.matrix import MatrixSpec, encode_matrix, fit_matrix_spec
from features.pointintime.definitions import FEATURE_NAMES
from features.pointintime.pipeline import build_features
from features.pointintime.state import fit_feature_state
from tests.factories import make_export, ts


@pytest.fixture
def features_frame() -> pd.DataFrame:
    export = make_export()
    points = pd.DataFrame({"deal_id": ["D1", "D3", "D2"], "as_of": ts(["2026-03-01", "2026-03-09", "2026-02-01"])})
    return build_features(export, points, fit_feature_state(export, "2026-12-31"))


def test_spec_keeps_registry_order_and_sorted_levels(features_frame):
    spec = fit_matrix_spec(features_frame)
    assert spec.names == FEATURE_NAMES and spec["names"] == list(FEATURE_NAMES)
    assert spec.categorical["deal_type"] == ("expansion", "new_business", "renewal")
    assert spec.categorical["lead_source"] == ("partner", "web")  # missing is not a level


def test_spec_round_trips_through_json(features_frame):
    spec = fit_matrix_spec(features_frame)
    assert MatrixSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert MatrixSpec.from_dict(spec) is spec


def test_encode_gives_float64_codes_and_nan_for_unknown_levels(features_frame):
    spec = fit_matrix_spec(features_frame)
    serving = features_frame.assign(segment=["smb", "ent", "galactic"])
    matrix = encode_matrix(serving, spec)
    assert matrix.dtype == np.float64 and matrix.shape == (3, len(FEATURE_NAMES))
    segment = matrix[:, FEATURE_NAMES.index("segment")]
    assert segment[0] == spec.categorical["segment"].index("smb") and np.isnan(segment[1:]).all()
    lead = matrix[:, FEATURE_NAMES.index("lead_source")]
    assert np.isnan(lead[1])  # D3 has no lead source
    assert matrix[0, FEATURE_NAMES.index("days_in_stage")] == 14.0


def test_encode_ignores_extra_columns_and_follows_the_spec_order(features_frame):
    spec = MatrixSpec(names=("amount", "days_in_stage"))
    matrix = encode_matrix(features_frame.assign(extra="x")[::-1], spec)
    assert matrix[:, 0].tolist() == [500.0, 2000.0, 1500.0]


def test_encode_names_a_missing_column(features_frame):
    with pytest.raises(ValueError, match=r"missing feature column\(s\) \['amount'\] required by the model"):
        encode_matrix(features_frame.drop(columns=["amount"]), fit_matrix_spec(features_frame))


def test_encode_names_a_non_numeric_column(features_frame):
    spec = MatrixSpec(names=("amount",))
    with pytest.raises(ValueError, match="column amount: not numeric"):
        encode_matrix(features_frame.assign(amount=["a", "b", "c"]), spec)


def test_from_dict_rejects_malformed_specs():
    with pytest.raises(ValueError, match="expected"):
        MatrixSpec.from_dict({"categorical": {}})
    with pytest.raises(ValueError, match=r"categorical features \['segment'\] are not in names"):
        MatrixSpec.from_dict({"names": ["amount"], "categorical": {"segment": ["smb"]}})
