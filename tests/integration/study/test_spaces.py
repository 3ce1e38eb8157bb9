from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.unit.study.test_spaces import _image_folder


@pytest.mark.slow  # the command, as a user starts it
def test_cli_rejects_a_bad_space_in_one_line_before_ray_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: {mode: maximise}\n")
    proc = subprocess.run([sys.executable, "-m", "study.run", "--space", str(bad), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: study.mode: expected min or max, got 'maximise'"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "runs" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpus-per-trial", "-1"], "expected a number >= 0"),
        (["--scheduler", "bohb"], "invalid choice: 'bohb'"),
        (["--num-samples", "0"], "expected an integer >= 1"),
        (["--epoch-budget", "0"], "expected an integer >= 1"),
        (["--space", "smoke", "--backbone", "vit"], "backbone: unknown backbone 'vit'"),
        (["--space", "smoke", "--dataset", "cub", "--data-dir", "/no/such/dir"], "--data-dir /no/such/dir is not a folder"),
        (["--space", "smoke", "--resume", "--name", "nothing-here"], "no study 'nothing-here'"),
        (["--space", "smoke", "--backbone", "tiny", "--max-epochs", "2", "--seed", "x"], "invalid int value: 'x'"),
        *([] if torch.cuda.is_available() else
          [(["--space", "smoke", "--gpus-per-trial", "1"], "--gpus-per-trial 1: this machine has no CUDA GPU")]),
    ],
)
@pytest.mark.slow  # the command, as a user starts it
def test_cli_flag_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "study.run", "--out", str(tmp_path / "runs"), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown space", "unknown search space 'ablate'; known: ablation, full, paper, smoke"),
        ("dataset without folder", "data_dir"),
        ("folder of another format", "image folder train/ split"),
        ("corrupt image", "cannot read image"),
    ],
)
@pytest.mark.slow  # the command, as a user starts it
def test_cli_bad_data_and_names_fail_in_one_line_before_ray_starts(tmp_path: Path, case: str, message: str) -> None:
    args = {
        "unknown space": ["--space", "ablate"],
        "dataset without folder": ["--space", "smoke", "--dataset", "cub"],
        "folder of another format": ["--space", "smoke", "--dataset", "imagefolder", "--data-dir", str(tmp_path)],
        "corrupt image": ["--space", "smoke", "--dataset", "imagefolder", "--data-dir",
                          str(_image_folder(tmp_path / "data", corrupt=True))],
    }[case]
    proc = subprocess.run([sys.executable, "-m", "study.run", "--out", str(tmp_path / "runs"), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr[-2000:]
    if case == "corrupt image":
        assert "broken.jpg" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "runs" / "mlflow.db").exists()  # before anything started


@pytest.mark.slow  # a fresh interpreter
def test_cli_module_imports_no_heavy_library() -> None:
    code = "import sys, study.run; print(sorted(m for m in ('torch', 'ray', 'mlflow', 'optuna') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("constants", "message"),
    [
        ("augment: flip_rotate", "augment: expected one of none, flip, flip_crop, got 'flip_rotate'"),
        ("synthetic_classes: 40", "synthetic num_classes must be in [2, 16], got 40"),
        ("weights: imagenet", "weights: backbone 'tiny' has no pretrained weights 'imagenet'"),
        ("backbone: resnet18\n  weights: IMAGENET1K_V9", "unknown weights 'IMAGENET1K_V9' for backbone 'resnet18'"),
        ("weights: /no/such/weights.pth", "weights file not found: /no/such/weights.pth"),
        ("refine: spiral", "refine: expected one of repeat, zoom, got 'spiral'"),
    ],
)
@pytest.mark.slow  # the command, as a user starts it
def test_every_bad_trial_value_fails_before_ray_starts(tmp_path: Path, constants: str, message: str) -> None:
    """Values that pass the schema but would fail in every trial (and be retried) fail on the
    driver, in one line: the trial's setup is built there without data or weights."""
    space = tmp_path / "bad.yaml"
    space.write_text(f"study: {{max_epochs: 2}}\nconstants:\n  {constants}\n"
                     "parameters:\n  crop_scale: {type: float, low: 0.3, high: 1.0}\n")
    proc = subprocess.run([sys.executable, "-m", "study.run", "--space", str(space), "--out", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # a fresh interpreter
def test_a_space_typo_answers_without_importing_any_heavy_library(tmp_path: Path) -> None:
    """A typo in a space or a flag is reported before torch, Ray, MLflow or Optuna is imported,
    so it answers in about the time --help does."""
    bad = tmp_path / "typo.yaml"
    bad.write_text("parameters:\n  crop_scal: {type: float, low: 0.2, high: 1.0}\n")
    code = ("import sys\nfrom study.cli import main\n"
            f"rc = main(['--space', {str(bad)!r}, '--out', {str(tmp_path / 'runs')!r}])\n"
            "print(rc, sorted(m for m in ('torch', 'torchvision', 'ray', 'mlflow', 'optuna', 'pandas') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr[-2000:]
    assert "parameters.crop_scal: expected a trial config key" in proc.stderr
