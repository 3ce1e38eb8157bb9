"""benchmarks/diagnostics/worker_start.py: the tests that start processes (the rest, and what they share,
are in tests/unit/benchmarks/test_worker_start.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.diagnostics.worker_soak import write_jpegs
from tests.unit.benchmarks.test_worker_start import ROOT, _run  # noqa: F401


@pytest.mark.slow  # a benchmark process of its own, with loader workers
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_an_arm_starts_its_loaders_workers_by_its_method(method: str, tmp_path: Path) -> None:
    data = write_jpegs(tmp_path / "images", classes=2, per_class=8, size=32)
    done = _run("--child", method, "--data", str(data), "--workers", "2", "--loaders", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["start_methods_used"] == [method]
    assert len(result["first_batch_s"]) == 2
    assert all(0 < f <= e for f, e in zip(result["first_batch_s"], result["epoch_s"], strict=True))
