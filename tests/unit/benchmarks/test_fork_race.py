"""benchmarks/diagnostics/fork_race.py: counts every forked child's fate, and its own, as data.

The benchmark provokes a hazard (forks while other threads run), so its tests never assert that
the hazard stayed away: with a real load they check that whatever happened was counted; the
counting itself is checked on fates known in advance, without a load (nothing there can race)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from benchmarks.diagnostics.fork_race import fate, main, outcome, run_setting


def _accounted(result: dict) -> bool:
    return result["forks"] == result["exited"] + result["hung"] + sum(result["died"].values())


def test_a_wait_status_names_the_signal_or_an_exit() -> None:
    assert fate(0) == "exited" and fate(3 << 8) == "exited"
    assert fate(int(signal.SIGABRT)) == "SIGABRT" and fate(int(signal.SIGSEGV)) == "SIGSEGV"


def test_a_forking_process_that_died_keeps_its_last_recorded_counts(tmp_path: Path) -> None:
    record = tmp_path / "counts.jsonl"
    lines = [{"forks": n, "exited": n, "hung": 0, "died": {}, "seconds": 0.2 * n, "hung_stacks": []} for n in (3, 7)]
    record.write_text("".join(json.dumps(line) + "\n" for line in lines))
    died = outcome(-int(signal.SIGABRT), "", record)
    assert died["forks"] == 7 and not died["complete"] and died["forker_died"] == "SIGABRT"
    final = {**lines[1], "forks": 9, "exited": 9}
    ended = outcome(0, "noise\n" + json.dumps(final) + "\n", record)
    assert ended["forks"] == 9 and ended["complete"] and ended["forker_died"] is None
    nothing = outcome(-int(signal.SIGABRT), "", tmp_path / "absent.jsonl")
    assert nothing["forks"] == 0 and nothing["forker_died"] == "SIGABRT"


@pytest.mark.parametrize(("args", "message"), [(["--seconds", "0"], "--seconds must be positive"),
                                                (["--load", "none"], "--load none is the tests' control")])
def test_bad_arguments_are_a_one_line_error(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_forking_process_that_hangs_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from benchmarks.diagnostics import fork_race

    def never_ends(command: list[str], **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(command, 1.0, output=b"", stderr=b"stuck")

    monkeypatch.setattr(fork_race.subprocess, "run", never_ends)
    result = run_setting(atfork=True, malloc_check=False, seconds=1, timeout_s=1)
    assert result["forker_hung"] and result["forker_died"] == "SIGKILL" and not result["complete"]
    assert result["forks"] == 0 and result["stderr_tail"] == "stuck"
