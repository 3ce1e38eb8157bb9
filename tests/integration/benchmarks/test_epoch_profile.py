"""benchmarks.epoch_profile: the tests that start processes (the rest, and what they share, are in
tests/unit/benchmarks/test_epoch_profile.py)."""

from __future__ import annotations

import pytest

from benchmarks import epoch_profile


@pytest.mark.slow  # trains in a child process with the emulated ISA's environment
def test_the_avx2_arm_runs_avx2_kernels() -> None:
    result = epoch_profile._run("avx2", "default", epochs=2, profile=False)
    assert result["cpu_capability"] == "AVX2" and len(result["epoch_s"]) == 2
    assert all(s > 0 for s in result["epoch_s"])
