from __future__ import annotations

import math
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from tests.conftest import tiny_config
from trainables import loop
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.config import ConfigError
from trainables.data.augment import AUGMENTATIONS, get_augmentation
from trainables.data.build import DataSplits
from trainables.loop import (
    NonFiniteLossError,
    fit,
    make_loader,
    setup_trial,
    train_one_epoch,
)

TIMING = ("epoch_seconds", "images_per_second", "val_seconds", "cost_latency_ms_batch1", "cost_latency_ms_per_image")


def _run(cfg: Any, resume: dict[str, Any] | None = None) -> tuple[list[dict[str, float]], list[dict[str, Any]]]:
    metrics: list[dict[str, float]] = []
    states: list[dict[str, Any]] = []

    def on_epoch(m: dict[str, float], s: dict[str, Any]) -> None:
        metrics.append({k: v for k, v in m.items() if k not in TIMING})
        states.append(s)

    fit(cfg, on_epoch, resume=resume)
    return metrics, states


def test_epoch_metrics_have_the_documented_keys() -> None:
    metrics, _ = _run(tiny_config(epochs=2))
    for key in ("train_loss", "train_acc", "val_acc", "val_acc_global", "val_acc_local", "lr", "epoch"):
        assert key in metrics[0]
    assert metrics[0]["epoch"] == 1
    # the inference cost comes once, with the first epoch: the model's own FLOPs and parameters
    from trainables.cost import forward_flops
    from trainables.model import RRA

    cfg = tiny_config(epochs=2)
    model = RRA(cfg.model_config(cfg.synthetic_classes))
    assert metrics[0]["cost_flops_per_image"] == forward_flops(model, torch.randn(1, 3, cfg.image_size, cfg.image_size))
    assert metrics[0]["cost_parameters"] == sum(p.numel() for p in model.parameters())
    assert metrics[0]["cost_batch_size"] == cfg.batch_size and "cost_flops_per_image" not in metrics[1]


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


def _inf_at(calls: set[int], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Makes the training loss infinite at the given (1-based) calls; returns the call log."""
    real, seen = loop.rra_loss, []

    def loss(*args: Any) -> torch.Tensor:
        seen.append(len(seen) + 1)
        value = real(*args)
        return value * float("inf") if seen[-1] in calls else value

    monkeypatch.setattr(loop, "rra_loss", loss)
    return seen


def test_gradscaler_skips_a_non_finite_step_and_the_trial_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # GradScaler's contract (here on the CPU device, as on CUDA under fp16): a step whose
    # gradients are not finite is skipped and the scale lowered; training goes on.
    trial = setup_trial(tiny_config(epochs=1, device="cpu"))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = {k: v.clone() for k, v in trial.model.state_dict().items()}
    _inf_at({2}, monkeypatch)
    loader = loop.make_loader(trial.data.train, trial.cfg, trial.device, True, trial.generator)
    metrics = train_one_epoch(trial.model, loader, trial.optimizer, trial.cfg, trial.device, scaler)
    assert metrics["skipped_steps"] == 1 and len(loader) >= 3
    assert scaler.get_scale() < 2.0**10  # lowered at the skipped step
    assert math.isfinite(metrics["train_loss"])
    after = trial.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the finite steps trained


def test_a_loss_that_stays_non_finite_under_gradscaler_ends_the_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "NONFINITE_PATIENCE", 3)
    monkeypatch.setattr(loop, "CHECK_EVERY", 2)
    trial = setup_trial(tiny_config(epochs=1, device="cpu", batch_size=2))
    calls = _inf_at(set(range(1, 1000)), monkeypatch)
    loader = loop.make_loader(trial.data.train, trial.cfg, trial.device, True, trial.generator)
    with pytest.raises(NonFiniteLossError, match="non-finite for 4 steps in a row"):
        train_one_epoch(trial.model, loader, trial.optimizer, trial.cfg, trial.device,
                        torch.amp.GradScaler("cpu"))
    assert len(calls) == 4 < len(loader)  # read back at the check after the third, not at the epoch's end


class _PidLog(Dataset):
    """A dataset that notes the process each item is read in."""

    def __init__(self, inner: Dataset, log: Path) -> None:
        self.inner, self.log = inner, log

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        with self.log.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return self.inner[index]


def test_every_augmentation_pickles() -> None:
    for name in AUGMENTATIONS:
        assert pickle.loads(pickle.dumps(get_augmentation(name))) == get_augmentation(name)


def _jpegs(tmp_path: Path) -> dict[str, Any]:
    """Config keys of a small on-disk dataset read the plain way (decoded in the loader's workers)."""
    from tests import formats_fixtures as fx

    fx.write_cub(tmp_path / "data", per_class=8)
    return {"dataset": "cub", "data_dir": str(tmp_path / "data"), "val_fraction": 0.25, "image_cache": "off"}


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


class _Parent(Dataset[int]):
    """Each item: the process id of the worker's parent."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        return os.getppid()


class _Aborts(Dataset[int]):
    """Each item aborts the process that reads it, as a double free caught by glibc does."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        return _abort_while_decoding()


def _abort_while_decoding() -> int:
    os.abort()


def _read_aborting() -> None:
    """Reads `_Aborts` through a trial's loader with one worker; exits 3 with the loader's error.
    Without PYTHONFAULTHANDLER (tests.conftest sets it), as a trial's process runs."""
    os.environ.pop("PYTHONFAULTHANDLER", None)  # the fork server starts with the first loader
    try:
        list(make_loader(_Aborts(), tiny_config(num_workers=1), torch.device("cpu"), False))
    except RuntimeError as err:
        print(err, file=sys.stderr)
        sys.exit(3)


@pytest.mark.parametrize("overrides", [{}, {"schedule": "step", "milestones": [1], "optimizer": "sgd",
                                            "augment": "flip_crop", "refine": "zoom"}])
def test_resume_equals_an_uninterrupted_run(overrides: dict[str, Any], tmp_path: Path) -> None:
    if overrides.pop("on_disk", False):  # images decoded by the worker (synthetic ones are read in memory)
        overrides.update(_jpegs(tmp_path))
    cfg = tiny_config(epochs=3, device="cpu", **overrides)  # exact equality: the CPU contract
    straight, _ = _run(cfg)
    first, states = _run_until(cfg, 2)
    save_checkpoint(tmp_path / "ckpt.pt", states[-1])
    torch.manual_seed(12345)  # whatever ran before in this process must not matter
    resumed, _ = _run(cfg, resume=load_checkpoint(tmp_path / "ckpt.pt"))
    assert first + resumed == straight
