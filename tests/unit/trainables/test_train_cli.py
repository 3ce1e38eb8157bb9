from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY
from trainables.train import main

FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def test_cli_trains_checkpoints_and_evaluates_the_best_on_test(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main([*FLAGS, "--epochs=2", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/2" in printed and "epoch 2/2" in printed and "test" in printed
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    result = json.loads((out / "result.json").read_text())
    assert result["val_acc"] == max(m["val_acc"] for m in lines)
    assert (out / "checkpoint.pt").is_file() and (out / "best.pt").is_file()
    # resume to a longer run continues at epoch 3: refused, the schedule depends on epochs
    assert main([*FLAGS, "--epochs=3", f"--out={out}", "--resume"]) == 2
    assert "changed: epochs" in capsys.readouterr().err


def test_cli_reads_a_yaml_config_and_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("recursion_steps: 2\nlocal_stream: false\nepochs: 1\n")
    out = tmp_path / "run"
    assert main([*FLAGS, f"--config={config}", "--epochs=1", "--recursion-steps=3", f"--out={out}"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["recursion_steps"] == 3 and saved["local_stream"] is False
