"""Arrow's at-fork handlers are off in the study's processes (study.execution sets
ARROW_REGISTER_ATFORK=0 before Ray starts), a precaution: they run code that is not
async-signal-safe in every forked child of a threaded process, and the DataLoader workers never
use Arrow (docs/reliability.md). The first test pins what the variable does in the installed
pyarrow, so that a pyarrow that stops reading it fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# A child forked after the parent used Arrow's thread pool can use that pool only if Arrow's
# after-fork handler rebuilt it; without the handler the child waits on threads it does not have.
PROBE = """
import os, sys, time
import pyarrow as pa, pyarrow.parquet as pq
{setup}
path = sys.argv[1]
pq.write_table(pa.table({{"x": list(range(100_000))}}), path, row_group_size=5_000)
pq.read_table(path, use_threads=True)
pid = os.fork()
if pid == 0:
    pq.read_table(path, use_threads=True)
    os._exit(0)
for _ in range(50):
    if os.waitpid(pid, os.WNOHANG)[0]:
        print("handlers ran"); break
    time.sleep(0.1)
else:
    os.kill(pid, 9); os.waitpid(pid, 0); print("no handlers")
"""


def _probe(tmp_path: Path, setup: str = "", **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_REGISTER_ATFORK"} | env
    proc = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup), str(tmp_path / "t.parquet")],
                          cwd=ROOT, env={**environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_the_study_sets_the_variable_off_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from study import execution

    for key in execution._RAY_ENV:  # restored after the test, with whatever set_ray_env sets
        monkeypatch.delenv(key, raising=False)
    execution.set_ray_env()
    assert os.environ["ARROW_REGISTER_ATFORK"] == "0"
    monkeypatch.setenv("ARROW_REGISTER_ATFORK", "1")  # the user's own setting wins, as for every variable there
    execution.set_ray_env()
    assert os.environ["ARROW_REGISTER_ATFORK"] == "1"
