"""benchmarks/fork_race.py: forks while Arrow's pool runs, in a process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.fork_race", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "ARROW_REGISTER_ATFORK": "1"})


@pytest.mark.parametrize("load", ["arrow", "native-threads"])
def test_the_forking_process_counts_every_child(load: str) -> None:
    done = _run("--child", "--seconds", "1", "--load", load)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["forks"] > 10 and result["seconds"] >= 1
    assert isinstance(result["hung"], int) and isinstance(result["died"], dict) and "hung_stacks" in result


def test_bad_seconds_is_a_one_line_error() -> None:
    done = _run("--seconds", "0")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith("--seconds must be positive")
