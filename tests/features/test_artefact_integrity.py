"""features.model.integrity: the bundle's manifest, written by training and checked before parsing.

A cut booster file crashes LightGBM's parser (a segfault or abort, no exception), so every
damaged-file case here must be refused by ``verify_bundle_dir`` by name; none is ever handed to
``load_bundle_dir``.
"""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest

from features.model.bundle import BundleError, Calibration, ModelBundle, load_bundle_dir, save_bundle_dir
from features.model.integrity import (
    MANIFEST_NAME,
    BundleIntegrityError,
    bundle_digest,
    file_sha256,
    verify_bundle_dir,
    write_manifest,
)


def make_bundle() -> ModelBundle:
    """A two-feature bundle whose boosters are big enough (a few KB) to cut at any fraction."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=20)
    calibration = Calibration(x=(0.0, 1.0), y=(0.0, 1.0))
    return ModelBundle(win_model=booster, slip_model=booster, win_calibration=calibration, slip_calibration=calibration,
                       feature_state={"stage_days": {}}, features={"names": ["a", "b"], "categorical": {}})


@pytest.fixture
def folder(tmp_path):
    return save_bundle_dir(make_bundle(), tmp_path / "bundle")


def test_the_saved_manifest_records_every_file_and_verifies(folder):
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    files = {path.name for path in folder.iterdir()} - {MANIFEST_NAME}
    assert set(manifest["files"]) == files and "win_model.txt" in files
    for name, record in manifest["files"].items():
        assert record == {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
    verify_bundle_dir(folder, bundle_digest(folder))
    assert load_bundle_dir(folder).features["names"] == ["a", "b"]  # the manifest is not a bundle file to read


@pytest.mark.parametrize("percent", [5, 20, 50, 90])
def test_a_cut_booster_is_refused_naming_the_file_and_both_sizes(folder, percent):
    digest = bundle_digest(folder)
    path = folder / "win_model.txt"
    size = path.stat().st_size
    cut = size * percent // 100
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(BundleIntegrityError, match=f"not what training wrote: win_model.txt is {cut:,} bytes, "
                                                   f"training wrote {size:,}$"):
        verify_bundle_dir(folder, digest, "of run r1 (deal-win v1)")


def test_a_flipped_byte_is_refused_naming_the_file_and_both_digests(folder):
    digest = bundle_digest(folder)
    path = folder / "slip_model.txt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    before = json.loads((folder / MANIFEST_NAME).read_text())["files"]["slip_model.txt"]["sha256"]
    path.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError) as refused:
        verify_bundle_dir(folder, digest)
    message = str(refused.value)
    assert f"slip_model.txt has sha256 {file_sha256(path)[:12]}..., training wrote {before[:12]}..." in message
    assert "\n" not in message


def test_a_missing_file_is_refused_by_name(folder):
    digest = bundle_digest(folder)
    (folder / "calibration_win.json").unlink()
    with pytest.raises(BundleIntegrityError, match="calibration_win.json is missing"):
        verify_bundle_dir(folder, digest)


def test_an_extra_file_is_refused_by_name(folder):
    digest = bundle_digest(folder)
    (folder / "notes.txt").write_text("added after training")
    with pytest.raises(BundleIntegrityError, match=r"notes.txt is not in manifest.json \(an extra file\)"):
        verify_bundle_dir(folder, digest)


def test_every_problem_is_named_on_one_line(folder):
    digest = bundle_digest(folder)
    (folder / "metrics.json").unlink()
    (folder / "win_model.txt").write_bytes(b"tree")
    with pytest.raises(BundleIntegrityError, match="metrics.json is missing; win_model.txt is 4 bytes"):
        verify_bundle_dir(folder, digest)


def test_a_manifest_rewritten_to_match_a_changed_file_is_refused(folder):
    digest = bundle_digest(folder)
    path = folder / "win_model.txt"
    path.write_bytes(path.read_bytes()[:100])
    write_manifest(folder)  # the manifest now agrees with the cut file; the recorded digest does not
    with pytest.raises(BundleIntegrityError, match="manifest.json is not the one training recorded"):
        verify_bundle_dir(folder, digest)


def test_a_missing_manifest_or_record_is_refused(folder):
    digest = bundle_digest(folder)
    with pytest.raises(BundleIntegrityError, match="no recorded digest.*retrain and promote"):
        verify_bundle_dir(folder, None)
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(BundleIntegrityError, match="manifest.json is missing"):
        verify_bundle_dir(folder, digest)


def test_a_vouched_manifest_of_another_shape_is_refused(folder):
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": ["win_model.txt"]}))
    with pytest.raises(BundleIntegrityError, match="not a format-1 manifest"):
        verify_bundle_dir(folder, file_sha256(folder / MANIFEST_NAME))


def test_integrity_errors_are_bundle_errors_for_the_cli():
    assert issubclass(BundleIntegrityError, BundleError)
