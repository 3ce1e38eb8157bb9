"""benchmarks/diagnostics/worker_start.py: each arm starts its workers the way it names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.diagnostics.worker_start import main, paired

ROOT = Path(__file__).resolve().parents[3]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.diagnostics.worker_start", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def test_the_paired_interval_holds_the_mean_difference() -> None:
    out = paired([1.0, 1.2, 0.9, 1.1])
    low, high = out["ci95_s"]
    assert low < out["mean_s"] < high and low > 0 and out["t_test_p"] < 0.05 and out["pairs"] == 4


def test_a_single_round_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--rounds", "1"])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "--rounds must be at least 2 (the comparison is paired over rounds)")
