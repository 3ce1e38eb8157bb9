"""`make test` runs the suite in two processes (pytest-xdist, `--dist loadgroup`), and relies on
`xdist_group` to keep a module's tests in one of them: the two-node cluster tests, and a module
whose fixture runs a whole study. pytest 9.2 with xdist 3.8 silently ignored the groups
(pytest-dev/pytest-xdist#1386); this fails if a version of either does that again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GROUPED = '''
import os

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("one-worker")]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with open(os.environ["SETUPS"], "a") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("i", range(6))
def test_grouped(shared, i):
    pass
'''
OTHERS = '''
import pytest


@pytest.mark.parametrize("i", range(6))
def test_other(i):
    pass
'''


@pytest.mark.slow  # pytest with two worker processes
def test_a_group_runs_in_one_worker_and_its_module_fixture_once(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "test_others.py").write_text(OTHERS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: as the project's\n")
    setups = tmp_path / "setups.txt"
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
                           "-v", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SETUPS": str(setups)})
    assert done.returncode == 0, done.stdout[-3000:]
    workers = {line.split()[0] for line in done.stdout.splitlines() if "PASSED" in line and "test_grouped" in line}
    assert len(workers) == 1, f"the group ran in {sorted(workers)}:\n{done.stdout[-3000:]}"
    assert len(setups.read_text().splitlines()) == 1  # the module's fixture, once
