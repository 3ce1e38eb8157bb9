"""The fast lane's rule (tests/conftest.py): the tests that start processes (the rest, and what they share,
are in tests/unit/test_lanes.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow  # what it checks: a slow test may start a process
def test_a_slow_test_may_start_a_process() -> None:
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True,
                          check=True).stdout.strip() == "1"
