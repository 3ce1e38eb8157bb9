from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from tests.conftest import tiny_config
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.config import ConfigError
from trainables.data.build import DataSplits
from trainables.loop import NonFiniteLossError, fit

TIMING = ("epoch_seconds", "images_per_second", "val_seconds")


def _run(cfg: Any, resume: dict[str, Any] | None = None) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    metrics: list[dict[str, float]] = []
    states: list[dict[str, Any]] = []

    def on_epoch(m: dict[str, float], s: dict[str, Any]) -> None:
        metrics.append({k: v for k, v in m.items() if k not in TIMING})
        states.append(s)

    fit(cfg, on_epoch, resume=resume)
    return metrics, states


def test_epoch_metrics_have_the_documented_keys() -> None:
    metrics, _ = _run(tiny_config(epochs=1))
    for key in ("train_loss", "train_acc", "val_acc", "val_acc_global", "val_acc_local", "lr", "epoch"):
        assert key in metrics[0]
    assert metrics[0]["epoch"] == 1


@pytest.mark.parametrize("overrides", [{}, {"schedule": "step", "milestones": [1], "optimizer": "sgd",
                                            "augment": "flip_crop", "refine": "zoom"}])
def test_resume_equals_an_uninterrupted_run(overrides: dict[str, Any], tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3, device="cpu", **overrides)  # exact equality: the CPU contract
    straight, _ = _run(cfg)
    first, states = _run_until(cfg, 2)
    save_checkpoint(tmp_path / "ckpt.pt", states[-1])
    torch.manual_seed(12345)  # whatever ran before in this process must not matter
    resumed, _ = _run(cfg, resume=load_checkpoint(tmp_path / "ckpt.pt"))
    assert first + resumed == straight


def _run_until(cfg: Any, epochs: int) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    """Runs `cfg` but stops after `epochs` epochs, as an interrupted trial would."""
    metrics: list[dict[str, float]] = []
    states: list[dict[str, Any]] = []

    class Stop(Exception):
        pass

    def on_epoch(m: dict[str, float], s: dict[str, Any]) -> None:
        metrics.append({k: v for k, v in m.items() if k not in TIMING})
        states.append(s)
        if len(metrics) == epochs:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, on_epoch)
    return metrics, states


def test_resume_with_another_config_is_refused() -> None:
    _, states = _run(tiny_config(epochs=1))
    with pytest.raises(ConfigError, match="changed: recursion_steps"):
        _run(tiny_config(epochs=1, recursion_steps=5), resume=states[-1])


def test_non_finite_loss_stops_the_trial() -> None:
    images = torch.zeros(8, 3, 32, 32)
    images[3] = float("nan")
    ds = TensorDataset(images, torch.zeros(8, dtype=torch.long), torch.zeros(8, 4))
    data = DataSplits(ds, ds, ds, num_classes=4)
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        fit(tiny_config(batch_size=4), lambda m, s: None, data=data)


@pytest.mark.slow
def test_a_short_run_beats_chance_by_a_wide_margin() -> None:
    # The embedded default made smaller (4 classes, so chance is 0.25) and easier (fainter
    # distractors), so that ten short epochs show learning.
    cfg = tiny_config(epochs=10, synthetic_images_per_class=100, image_size=64, patch_size=64, lstm_hidden=32,
                      recursion_steps=4, val_fraction=0.15, threads=0, synthetic_distractor_contrast=0.45)
    metrics, _ = _run(cfg)
    best = max(m["val_acc"] for m in metrics)
    assert best > 0.25 + 0.3, metrics
    assert all(math.isfinite(m["train_loss"]) for m in metrics)


def test_bf16_autocast_trains_on_the_cpu() -> None:
    metrics, _ = _run(tiny_config(epochs=1, amp="bf16", device="cpu", channels_last=True))
    assert math.isfinite(metrics[0]["train_loss"])


def test_fp16_needs_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the CUDA test below covers fp16")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        _run(tiny_config(epochs=1, amp="fp16", device="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_and_channels_last(amp: str, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=2, amp=amp, device="cuda", channels_last=True, num_workers=2)
    metrics, states = _run(cfg)
    assert all(math.isfinite(m["train_loss"]) for m in metrics)
    assert states[-1]["model"]["global_classifier.weight"].is_cuda
    _, early = _run_until(cfg, 1)
    save_checkpoint(tmp_path / "c.pt", early[-1])
    resumed, _ = _run(cfg, resume=load_checkpoint(tmp_path / "c.pt"))
    assert resumed[0]["epoch"] == 2
