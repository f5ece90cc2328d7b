"""The checkout guard of tests/conftest.py, run by a nested pytest in a throwaway git checkout.

The guard decides whether the whole suite passes, so it gets its own failing case: a test that
writes beside the code must turn a green run red and name the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = '''
import os
from pathlib import Path


def test_probe():
    leak = os.environ.get("PROBE_LEAK")
    if leak:
        path = Path(__file__).resolve().parent.parent / leak
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("left behind")
'''


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git checkout holding the suite's conftest and one probe test."""
    if shutil.which("git") is None:
        pytest.skip("git not found: the guard itself is skipped without git")
    (tmp_path / "tests").mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_probe.py").write_text(PROBE)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def run_pytest(checkout: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    environment["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the venv's plugins (schemathesis, ...) take seconds to load
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_probe.py"],
        cwd=checkout, env={**environment, **env}, capture_output=True, text=True, timeout=120,
    )


def test_clean_run_passes(checkout):
    result = run_pytest(checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checkout guard" not in result.stdout


def test_a_file_left_in_the_checkout_fails_the_run_and_is_named(checkout):
    result = run_pytest(checkout, PROBE_LEAK="mlruns.tmp")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout  # the test itself passed: the guard failed the run
    assert "left 1 new file(s)" in result.stdout and "  mlruns.tmp" in result.stdout


def test_caches_do_not_count(checkout):
    result = run_pytest(checkout, PROBE_LEAK="package/__pycache__/module.pyc")
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_git_the_guard_is_skipped_with_a_note(checkout):
    result = run_pytest(checkout, PROBE_LEAK="left.tmp", PATH=str(checkout / "no-such-folder"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checkout guard skipped: git not found" in result.stdout
