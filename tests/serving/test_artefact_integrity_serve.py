"""``dealrisk serve`` refuses a champion whose booster file was cut, in one line, and never crashes.

The champion is trained and promoted by the real commands (``python -m dealrisk train`` and
``promote``) into a temporary MLflow store, so the record checked is the one training writes.
Then its ``win_model.txt`` in the store's artefact folder is cut to 5, 20, 50 and 90% of its
length and ``dealrisk serve`` is started on each: before the check, LightGBM's parser killed the
process (SIGSEGV, a shell's exit 139, no message; or SIGABRT, 134, after hundreds of lines); now
the start-up check exits 1 with one line naming the file and both sizes.

Slow tier: a training run and five command start-ups (one to three minutes on two cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serving.process import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXPORT_DEALS, EXPORT_SEED = 1200, 5


def command_env(uri: str) -> dict:
    """This process's environment without any ``DEALRISK_*`` setting, using the store at ``uri``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALRISK_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", BENTOML_DO_NOT_TRACK="True",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", COLUMNS="200")
    return env


def dealrisk(*args: str, uri: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m dealrisk ARGS`` (this tree's code) against the store at ``uri``."""
    return subprocess.run([sys.executable, "-m", "dealrisk", *args], cwd=ROOT, env=command_env(uri), check=False,
                          capture_output=True, text=True, errors="replace", timeout=timeout)


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> dict:
    """A store whose champion was trained and promoted by the commands; its URI and booster file."""
    from mlflow import MlflowClient

    from features.contract.io import write_tables
    from generator.export import generate_export

    folder = tmp_path_factory.mktemp("integrity-serve")
    # The conftest's 900-deal export has too few won deals before the default cutoff for `dealrisk train`.
    export = write_tables(generate_export(n_deals=EXPORT_DEALS, seed=EXPORT_SEED, truth_snapshots=0).tables,
                          folder / "export")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    trained = dealrisk("train", "--data", str(export), uri=uri)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    # --force: the gate may call this small export's lead within luck; the check under test is not the gate's.
    promoted = dealrisk("promote", "--version", "1", "--force", uri=uri)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias("deal-win", "champion")
    root = Path(client.get_run(version.run_id).info.artifact_uri.removeprefix("file://"))
    return {"uri": uri, "booster": root / "bundle" / "win_model.txt", "run_id": version.run_id, "client": client}


def test_training_records_the_digest_on_the_run_and_both_versions(champion):
    from features.model.integrity import BUNDLE_DIGEST_TAG, bundle_digest

    client = champion["client"]
    digest = client.get_run(champion["run_id"]).data.tags[BUNDLE_DIGEST_TAG]
    assert digest == bundle_digest(champion["booster"].parent)
    for name in ("deal-win", "deal-slip"):
        assert client.get_model_version(name, "1").tags[BUNDLE_DIGEST_TAG] == digest


def test_the_intact_champion_passes_the_start_up_check(champion):
    checked = subprocess.run([sys.executable, "-c", "from serving.run import check_champion; print(check_champion())"],
                             cwd=ROOT, env=command_env(champion["uri"]), capture_output=True, text=True, timeout=300,
                             check=False)
    assert checked.returncode == 0 and "champion models: deal-win v1" in checked.stdout, checked.stderr[-3000:]


@pytest.mark.parametrize("percent", [5, 20, 50, 90])
def test_a_cut_booster_stops_dealrisk_serve_with_one_line(champion, percent):
    booster = champion["booster"]
    original = booster.read_bytes()
    left = len(original) * percent // 100
    booster.write_bytes(original[:left])
    try:
        served = dealrisk("serve", "--port", str(free_port()), uri=champion["uri"], timeout=300)
    finally:
        booster.write_bytes(original)
    output = (served.stdout + served.stderr).strip()
    assert served.returncode == 1, f"exit {served.returncode} (-11: segfault, -6: abort):\n{output[-2000:]}"
    assert len(output.splitlines()) == 1, output[-2000:]
    assert output.startswith("dealrisk serve: cannot start: model bundle 'bundle/' of run "
                             f"{champion['run_id']} (deal-win v1) is not what training wrote: ")
    assert output.endswith(f"win_model.txt is {left:,} bytes, training wrote {len(original):,}")


def test_the_gate_reads_a_recorded_bundle_only_after_checking_it(champion, tmp_path):
    """``dealrisk promote`` compares bundles downloaded by ``training.tracking.download_bundle``: checked the same way."""
    import mlflow

    from features.model.integrity import BundleIntegrityError
    from training.tracking import download_bundle

    mlflow.set_tracking_uri(champion["uri"])
    booster = champion["booster"]
    original = booster.read_bytes()
    booster.write_bytes(original[: len(original) // 2])
    try:
        with pytest.raises(BundleIntegrityError, match=f"win_model.txt is {len(original) // 2:,} bytes"):
            download_bundle(champion["run_id"], tmp_path / "cut")
    finally:
        booster.write_bytes(original)
    assert download_bundle(champion["run_id"], tmp_path / "intact").has("slip")
