from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--recursion-steps=many"], "recursion_steps: expected an integer", 2),
        (["--bogus=1"], "unrecognized arguments", 2),
        (["--dataset=cub", "--data-dir=/does/not/exist"], "data_dir /does/not/exist is not a folder", 1),
        (["--resume"], "no checkpoint", 2),
    ],
)
@pytest.mark.slow  # the command, as a user starts it
def test_bad_input_is_one_line_and_non_zero(tmp_path: Path, args: list[str], message: str, code: int) -> None:
    proc = subprocess.run([sys.executable, "-m", "trainables.train", f"--out={tmp_path}", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3  # argparse prints usage + one error line
