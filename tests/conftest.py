"""Suite-wide guard: a test run leaves nothing behind in the checkout.

Tests write into temporary folders only. MLflow's defaults make that easy to get wrong (a run in
the default experiment puts its artifacts into ``./mlruns`` of the working directory), and such a
leak passes every test, so the session compares ``git status`` of the checkout before and after
and fails the run when new files appeared, naming them. Untracked and ignored files count
(``--ignored``: ``mlruns/`` is in .gitignore precisely because it kept appearing); edits of
tracked files do not, since in a working tree shared by several people those are someone's work
in progress. Caches that Python, pytest and the linters keep are left out.

The state is kept on the config object, not in pytest's cache, so the guard also runs under
``-p no:cacheprovider``. Without git, or outside a git checkout, the guard is skipped with a note.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Caches written by the interpreter and the tools themselves, not by the code under test.
IGNORED_PARTS = frozenset({".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".import_linter_cache"})
IGNORED_SUFFIXES = (".egg-info",)
BEFORE = pytest.StashKey[frozenset]()
REPORT = pytest.StashKey[list]()


def is_cache(path: str) -> bool:
    """True for paths inside a cache folder (``a/__pycache__/b.pyc``, ``.venv/...``, ``x.egg-info/...``).

    >>> is_cache("serving/__pycache__/service.cpython-311.pyc"), is_cache("mlruns/0/meta.yaml")
    (True, False)
    """
    parts = path.split("/")
    return any(part in IGNORED_PARTS or part.endswith(IGNORED_SUFFIXES) for part in parts)


def parse_porcelain(output: str) -> frozenset:
    """Untracked (``??``) and ignored (``!!``) paths of ``git status --porcelain -z`` output.

    >>> sorted(parse_porcelain("?? a b.txt\\0!! mlruns/0/x\\0 M edited.py\\0R  new.py\\0old.py\\0"))
    ['a b.txt', 'mlruns/0/x']
    """
    paths = set()
    entries = iter(output.split("\0"))
    for entry in entries:
        if entry[:2] in ("??", "!!"):
            paths.add(entry[3:])
        elif "R" in entry[:2] or "C" in entry[:2]:
            next(entries, None)  # a rename's source path follows as its own field
    return frozenset(paths)


def checkout_paths(root: Path) -> frozenset | str:
    """Untracked and ignored paths of the checkout at ``root``, caches left out; or why not."""
    git = shutil.which("git")
    if git is None:
        return "git not found on PATH"
    command = [git, "-C", str(root), "status", "--porcelain", "-z", "--ignored", "--untracked-files=all",
               "--", ".", ":(exclude).venv"]  # excluded here, so git does not walk the virtualenv
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"git status failed ({exc})"
    if done.returncode != 0:
        return f"git status failed: {done.stderr.strip() or done.returncode} (not a git checkout?)"
    return frozenset(path for path in parse_porcelain(done.stdout) if not is_cache(path))


def pytest_sessionstart(session: pytest.Session) -> None:
    before = checkout_paths(ROOT)
    if isinstance(before, str):
        session.config.stash[REPORT] = [f"checkout guard skipped: {before}"]
        return
    session.config.stash[BEFORE] = before


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(BEFORE, None)
    if before is None:
        return
    after = checkout_paths(ROOT)
    if isinstance(after, str):
        session.config.stash[REPORT] = [f"checkout guard could not check at the end: {after}"]
        return
    new = sorted(after - before)
    if not new:
        return
    shown = new[:50] + ([f"... and {len(new) - 50} more"] if len(new) > 50 else [])
    session.config.stash[REPORT] = [
        f"the test run left {len(new)} new file(s) in the checkout {ROOT} "
        "(tests must write under tmp_path; MLflow runs need an experiment whose artifact_location is there):",
        *(f"  {path}" for path in shown),
    ]
    if session.exitstatus == pytest.ExitCode.OK or session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(REPORT, None)
    if lines:
        failed = lines[0].startswith("the test run left")
        terminalreporter.section("checkout guard", sep="=", red=failed, yellow=not failed)
        for line in lines:
            terminalreporter.line(line)
