"""Runs a lane of the test suite N times, each round in a fresh pytest process, and counts per
test how often it failed: a test that fails on an unchanged tree fails by chance.

    python -m benchmarks.flakiness --lane fast --rounds 10 [--out benchmarks/results/flakiness_fast.json]
    python -m benchmarks.flakiness --lane slow --rounds 5 [--out ...] [-- PYTEST_ARGS]

`fast` is `make check`'s selection (tests/unit, one process), `slow` the tests `make check`
leaves out (tests/integration, two processes with `--dist loadgroup`, as `make test` runs them;
tests/conftest.py marks every test there `slow`, so the lanes select by that mark, and a module
after `--` narrows them); words
after `--` go to pytest as they are (a module, `-k`). Each round writes pytest's JUnit XML into a
temporary folder; the results file gains one entry a round as it ends, so a run stopped part way
continues where it stopped when started again with the same lane, selection and `--out`. Each
round records the commit it ran (`git describe --dirty`).

    python -m benchmarks.flakiness --lane slow --out F --add-junit ci.xml --commit REV --source "..."

adds a round from a run of the whole suite instead (e.g. `ARGS=--junitxml=ci.xml bash .ci/run`
on a fresh clone at REV): the lane's tests in it, which are the tests `F`'s own rounds ran; the
round keeps its `source` and has no exit code or wall time of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
LANES: dict[str, list[str]] = {
    "fast": ["-m", "not slow"],
    "slow": ["-m", "slow", "-n", "2", "--dist", "loadgroup"],
}


def outcomes(junit_xml: Path) -> dict[str, dict[str, Any]]:
    """Each test of one pytest run's JUnit XML: its outcome (passed, failed, error or skipped) and
    its time in seconds. A test with a failing teardown is reported twice; the worse one counts."""
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    found: dict[str, dict[str, Any]] = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        outcome = ("error" if "error" in tags else "failed" if "failure" in tags else
                   "skipped" if "skipped" in tags else "passed")
        seconds = float(case.get("time") or 0.0)
        before = found.get(test)
        if before is None or rank[outcome] > rank[before["outcome"]]:
            found[test] = {"outcome": outcome, "seconds": seconds + (before["seconds"] if before else 0.0)}
    return found


def one_round(lane: str, extra: list[str], folder: Path, index: int) -> dict[str, Any]:
    """One fresh pytest process over the lane; its exit code, wall time and every test's outcome."""
    junit = folder / f"round{index}.xml"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *LANES[lane], f"--junitxml={junit}",
               *extra]
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    tests = outcomes(junit) if junit.is_file() else {}
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"commit": commit, "exit_code": done.returncode, "wall_s": round(wall, 1), "tests": tests,
            "tail": done.stdout.strip().splitlines()[-1:] if done.returncode else []}


def junit_round(junit_xml: Path, lane_tests: set[str], commit: str, source: str) -> dict[str, Any]:
    """A round read from another run's JUnit XML (of the whole suite, say): its outcomes of
    `lane_tests` only. The lane has no exit code or wall time of its own in such a run."""
    tests = {test: o for test, o in outcomes(junit_xml).items() if test in lane_tests}
    if not tests:
        raise SystemExit(f"error: {junit_xml} holds none of the lane's tests")
    return {"commit": commit, "exit_code": None, "wall_s": None, "tests": tests, "tail": [], "source": source}


def summary(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per test over the rounds: runs, failures (failed or error), skips and the median time."""
    per: dict[str, dict[str, Any]] = {}
    for r in rounds:
        for test, o in r["tests"].items():
            row = per.setdefault(test, {"runs": 0, "failures": 0, "skipped": 0, "seconds": []})
            row["runs"] += 1
            row["failures"] += o["outcome"] in ("failed", "error")
            row["skipped"] += o["outcome"] == "skipped"
            row["seconds"].append(o["seconds"])
    return {t: {"runs": r["runs"], "failures": r["failures"], "skipped": r["skipped"],
                "median_s": round(statistics.median(r["seconds"]), 3)} for t, r in sorted(per.items())}


def report(rounds: list[dict[str, Any]], slowest: int = 15) -> str:
    """The tests that failed at least once, the rounds' exit codes and times, the slowest tests."""
    per = summary(rounds)
    lines = [f"{len(rounds)} rounds, {len(per)} tests; exit codes {[r['exit_code'] for r in rounds]}; "
             f"wall s {[r['wall_s'] for r in rounds]}"]
    failing = {t: r for t, r in per.items() if r["failures"]}
    lines.append(f"tests that failed at least once: {len(failing)}")
    lines += [f"  {r['failures']}/{r['runs']}  {t}" for t, r in failing.items()]
    lines.append(f"slowest {slowest} (median s):")
    ranked = sorted(per.items(), key=lambda item: -item[1]["median_s"])[:slowest]
    lines += [f"  {r['median_s']:8.2f}  {t}" for t, r in ranked]
    return "\n".join(lines)


LETTERS = {"passed": "P", "failed": "F", "error": "E", "skipped": "s"}


def _load(out: Path | None, lane: str, extra: list[str]) -> list[dict[str, Any]]:
    """The rounds already in `out`, when it was written for the same lane and selection."""
    if out is None or not out.is_file():
        return []
    before = json.loads(out.read_text())
    if before.get("lane") != lane or before.get("pytest_args") != extra:
        raise SystemExit(f"error: {out} holds rounds of another selection ({before.get('lane')} "
                         f"{before.get('pytest_args')}); give another --out")
    outcome = {letter: name for name, letter in LETTERS.items()}
    rounds: list[dict[str, Any]] = [{**r, "tests": {}} for r in before["rounds"]]
    for test, row in before["tests"].items():
        for index, (letter, seconds) in enumerate(zip(row["outcomes"], row["seconds"], strict=True)):
            if letter != "-":  # not collected in that round
                rounds[index]["tests"][test] = {"outcome": outcome[letter], "seconds": seconds}
    return rounds


def _save(out: Path, lane: str, extra: list[str], rounds: list[dict[str, Any]]) -> None:
    """The rounds, a column per test (its outcome each round as a letter: P passed, F failed,
    E error, s skipped, - not run; its seconds each round), and the summary."""
    tests = sorted({t for r in rounds for t in r["tests"]})
    columns = {t: {"outcomes": "".join(LETTERS[r["tests"][t]["outcome"]] if t in r["tests"] else "-" for r in rounds),
                   "seconds": [round(r["tests"].get(t, {}).get("seconds", 0.0), 3) for r in rounds]} for t in tests}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "lane": lane, "pytest_args": extra,
                               "command": [*LANES[lane], *extra],
                               "rounds": [{k: v for k, v in r.items() if k != "tests"} for r in rounds],
                               "summary": summary(rounds), "tests": columns}) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lane", choices=sorted(LANES), required=True, help="which tests: make check's or the rest")
    parser.add_argument("--rounds", type=int, default=10, help="fresh pytest processes over the lane")
    parser.add_argument("--out", type=Path, default=None, help="JSON results, extended round by round")
    parser.add_argument("--add-junit", type=Path, default=None, metavar="XML",
                        help="add a round from this JUnit XML of another run (needs --out with rounds, --commit)")
    parser.add_argument("--commit", default=None, help="with --add-junit: the revision that run tested")
    parser.add_argument("--source", default="", help="with --add-junit: what that run was (its command)")
    parser.add_argument("pytest_args", nargs="*", help="after --: more arguments for pytest (a module, -k ...)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rounds = _load(args.out, args.lane, args.pytest_args)
    if args.add_junit is not None:
        if args.out is None or not rounds or not args.commit:
            parser.error("--add-junit needs --out with rounds of the lane already in it, and --commit")
        rounds.append(junit_round(args.add_junit, {t for r in rounds for t in r["tests"]}, args.commit, args.source))
        _save(args.out, args.lane, args.pytest_args, rounds)
        print(report(rounds))
        return
    with tempfile.TemporaryDirectory(prefix="flakiness-") as tmp:
        for index in range(len(rounds), args.rounds):
            rounds.append(one_round(args.lane, args.pytest_args, Path(tmp), index))
            failed = sum(o["outcome"] in ("failed", "error") for o in rounds[-1]["tests"].values())
            print(f"round {index + 1}/{args.rounds}: exit {rounds[-1]['exit_code']}, {failed} failed, "
                  f"{rounds[-1]['wall_s']} s", flush=True)
            if args.out:
                _save(args.out, args.lane, args.pytest_args, rounds)
    print(report(rounds))


if __name__ == "__main__":
    main()
