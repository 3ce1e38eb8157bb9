"""benchmarks/diagnostics/fork_race.py: the tests that start processes (the rest, and what they share,
are in tests/unit/benchmarks/test_fork_race.py)."""

from __future__ import annotations

import signal

import pytest

from benchmarks.diagnostics.fork_race import run_setting
from tests.unit.benchmarks.test_fork_race import _accounted


@pytest.mark.slow  # forks, in a process of its own
@pytest.mark.parametrize("load", ["arrow", "native-threads"])
def test_whatever_the_race_does_every_child_and_the_forking_process_are_counted(load: str) -> None:
    result = run_setting(atfork=True, malloc_check=False, seconds=1, load=load, timeout_s=120)
    assert isinstance(result["exit_status"], int) and isinstance(result["forker_hung"], bool)
    assert result["forker_died"] == (signal.Signals(-result["exit_status"]).name if result["exit_status"] < 0 else None)
    # a clean exit printed the final counts; a death may come before them or after (at its exit:
    # seen, -6 after a complete count, in the slow lane's second flakiness round at 70371aa)
    assert result["complete"] or result["exit_status"] != 0
    if result["complete"]:  # else the death took its last child's count with it
        assert _accounted(result) and result["forks"] > 0 and result["seconds"] >= 1


@pytest.mark.slow  # forks, in a process of its own
@pytest.mark.parametrize(("child", "counted", "hang_s"), [("exit", "exited", 120), ("abort", "SIGABRT", 120),
                                                          ("hang", "hung", 0.05)])
def test_children_of_a_known_fate_are_counted_as_that(child: str, counted: str, hang_s: float) -> None:
    # a child that ends is given far longer than it needs on a loaded machine (with 0.05 s, one
    # that exits at once was once counted as hung); one that hangs never ends, so 0.05 s suffices
    result = run_setting(atfork=False, malloc_check=False, seconds=0.5, load="none", child=child, hang_s=hang_s)
    assert result["complete"] and result["exit_status"] == 0 and not result["forker_hung"]
    assert result["forks"] > 0 and _accounted(result)
    found = {"exited": result["exited"], "hung": result["hung"], **result["died"]}
    assert found[counted] == result["forks"]
