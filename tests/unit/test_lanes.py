"""The fast lane's rule (tests/conftest.py): a unit test starts no process, but may read a fact
from git or lscpu; a test marked slow may start any."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import UNIT_TESTS_START_NO_PROCESS


def test_a_unit_test_that_starts_python_or_forks_fails_naming_the_rule() -> None:
    with pytest.raises(AssertionError, match="a unit test started a process"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)
    with pytest.raises(AssertionError, match="a unit test started a process"):
        os.fork()
    import multiprocessing

    with pytest.raises(AssertionError, match="a unit test started a process"):
        multiprocessing.get_context("forkserver").Process(target=print).start()
    assert "tests/integration" in UNIT_TESTS_START_NO_PROCESS


def test_a_unit_test_may_read_a_fact_from_git() -> None:
    assert subprocess.run(["git", "--version"], capture_output=True, text=True, check=True).stdout.startswith("git")
