"""Arrow's at-fork handlers are off in the study's processes: the tests that start processes
(the rest, and what they share, are in tests/unit/study/test_arrow_at_fork.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.study.test_arrow_at_fork import PROBE, ROOT, _probe  # noqa: F401


@pytest.mark.slow  # Python processes that fork
def test_the_variable_turns_arrows_at_fork_handlers_off(tmp_path: Path) -> None:
    assert _probe(tmp_path) == "handlers ran"
    assert _probe(tmp_path, ARROW_REGISTER_ATFORK="0") == "no handlers"


@pytest.mark.slow  # Python processes that fork
def test_the_study_turns_them_off_before_arrow_makes_a_pool(tmp_path: Path) -> None:
    setup = "from study import execution; execution.set_ray_env()"
    assert _probe(tmp_path, setup) == "no handlers"


@pytest.mark.slow
def test_trial_processes_inherit_the_setting(tmp_path: Path) -> None:
    code = ("import ray\nfrom study import execution\nexecution.set_ray_env()\n"
            "ray.init(num_cpus=1, include_dashboard=False)\n"
            "print(ray.get(ray.remote(lambda: __import__('os').environ.get('ARROW_REGISTER_ATFORK')).remote()))\n"
            "ray.shutdown()\n")
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_REGISTER_ATFORK"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "0"
