"""benchmarks/flakiness.py: reads each round's JUnit XML, counts per test, refuses to mix selections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.flakiness import _load, outcomes, report, summary

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
 <testcase classname="tests.a" name="test_ok" time="0.5"/>
 <testcase classname="tests.a" name="test_bad[x]" time="1.0"><failure message="no">trace</failure></testcase>
 <testcase classname="tests.b" name="test_skip" time="0.0"><skipped message="cuda"/></testcase>
 <testcase classname="tests.b" name="test_teardown" time="0.2"/>
 <testcase classname="tests.b" name="test_teardown" time="0.1"><error message="teardown">trace</error></testcase>
</testsuite></testsuites>
"""


def test_a_rounds_outcomes_come_from_its_junit_xml(tmp_path: Path) -> None:
    (tmp_path / "r.xml").write_text(JUNIT)
    found = outcomes(tmp_path / "r.xml")
    assert {t: o["outcome"] for t, o in found.items()} == {
        "tests.a::test_ok": "passed", "tests.a::test_bad[x]": "failed", "tests.b::test_skip": "skipped",
        "tests.b::test_teardown": "error"}  # a failing teardown is the worse of its two reports
    assert found["tests.b::test_teardown"]["seconds"] == pytest.approx(0.3)


def test_failures_are_counted_per_test_over_rounds() -> None:
    def round_(**tests: str) -> dict:
        return {"exit_code": int("failed" in tests.values()), "wall_s": 1.0,
                "tests": {t: {"outcome": o, "seconds": 1.0} for t, o in tests.items()}}

    rounds = [round_(a="passed", b="failed"), round_(a="passed", b="passed"), round_(a="error", b="skipped")]
    per = summary(rounds)
    assert per["a"] == {"runs": 3, "failures": 1, "skipped": 0, "median_s": 1.0}
    assert per["b"] == {"runs": 3, "failures": 1, "skipped": 1, "median_s": 1.0}
    assert "tests that failed at least once: 2" in report(rounds)


def test_rounds_of_another_selection_are_not_continued(tmp_path: Path) -> None:
    out = tmp_path / "f.json"
    out.write_text(json.dumps({"lane": "fast", "pytest_args": [], "rounds": [{"exit_code": 0}],
                               "tests": {"a": {"outcomes": "P", "seconds": [0.1]}}}))
    assert len(_load(out, "fast", [])) == 1
    with pytest.raises(SystemExit, match="another selection"):
        _load(out, "slow", [])
    assert _load(tmp_path / "absent.json", "slow", []) == []


def test_saved_rounds_read_back_as_they_were(tmp_path: Path) -> None:
    from benchmarks.flakiness import _save

    rounds = [{"commit": "abc", "exit_code": 1, "wall_s": 2.0, "tail": ["1 failed"],
               "tests": {"a": {"outcome": "failed", "seconds": 0.5}, "b": {"outcome": "skipped", "seconds": 0.0}}},
              {"commit": "abc", "exit_code": 0, "wall_s": 1.0, "tail": [],
               "tests": {"a": {"outcome": "passed", "seconds": 0.25}}}]
    _save(tmp_path / "f.json", "fast", ["-k", "x"], rounds)
    assert _load(tmp_path / "f.json", "fast", ["-k", "x"]) == rounds
    assert json.loads((tmp_path / "f.json").read_text())["tests"]["b"]["outcomes"] == "s-"


def test_a_round_from_another_runs_junit_keeps_the_lanes_tests_and_its_source(tmp_path: Path) -> None:
    from benchmarks.flakiness import _save, main

    out = tmp_path / "slow.json"
    lane = {"tests.a::test_ok": {"outcome": "passed", "seconds": 0.4},
            "tests.b::test_teardown": {"outcome": "passed", "seconds": 0.2}}
    _save(out, "slow", [], [{"commit": "abc", "exit_code": 0, "wall_s": 9.0, "tail": [], "tests": lane}])
    (tmp_path / "ci.xml").write_text(JUNIT)  # the whole suite: tests of the other lane as well
    main(["--lane", "slow", "--out", str(out), "--add-junit", str(tmp_path / "ci.xml"), "--commit", "def",
          "--source", "bash .ci/run"])
    rounds = _load(out, "slow", [])
    assert len(rounds) == 2 and set(rounds[1]["tests"]) == set(lane)
    assert rounds[1]["commit"] == "def" and rounds[1]["source"] == "bash .ci/run" and rounds[1]["exit_code"] is None
    assert summary(rounds)["tests.b::test_teardown"]["failures"] == 1
    with pytest.raises(SystemExit):  # no rounds of the lane to say which tests are its own
        main(["--lane", "slow", "--out", str(tmp_path / "new.json"), "--add-junit", str(tmp_path / "ci.xml"),
              "--commit", "def"])
