"""The training loop as plain functions that know nothing of Ray.

`fit` runs a trial epoch by epoch, calling `on_epoch(metrics, state)` after each one with the
epoch's metrics and the full state to checkpoint; given such a state it resumes exactly where
it stopped (on the CPU with a fixed seed, the metrics equal an uninterrupted run's: every epoch
reseeds torch's generators from (seed, epoch), and the state carries model, optimizer,
scheduler, epoch and RNG states).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from trainables.config import ConfigError, TrialConfig
from trainables.data.build import DataSplits, build_datasets
from trainables.errors import TrialError
from trainables.model import RRA, RRAOutput, build_model

Progress = Callable[[int, int], None]
# Settings that change where and how fast a trial runs, not what it computes.
RESUME_MAY_CHANGE = ("device", "num_workers", "threads", "data_dir")
OnEpoch = Callable[[dict[str, float], dict[str, Any]], None]


class NonFiniteLossError(TrialError, RuntimeError):
    """The loss became NaN or infinite: the trial stops rather than train on garbage."""


def select_device(name: str) -> torch.device:
    """'auto' picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available")
    return device


def rra_loss(out: RRAOutput, target: Tensor, xent_coef: float) -> Tensor:
    """CE(global) + xent_coef x CE(local), as in the paper's code."""
    loss = F.cross_entropy(out.global_logits.float(), target)
    if out.local_logits is not None:
        loss = loss + xent_coef * F.cross_entropy(out.local_logits.float(), target)
    return loss


def _is_global(name: str) -> bool:
    return name.startswith(("global_features.", "add_on.", "global_classifier."))


def make_optimizer(model: nn.Module, cfg: TrialConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or AdamW; the global stream may have its own lr."""
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if _is_global(n)], "lr": cfg.global_lr or cfg.lr},
        {"params": [p for n, p in named if not _is_global(n)], "lr": cfg.lr},
    ]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrialConfig], torch.optim.lr_scheduler.LRScheduler]] = {
    "step": lambda opt, cfg: torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), cfg.gamma),
    "cosine": lambda opt, cfg: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs),
    "constant": lambda opt, cfg: torch.optim.lr_scheduler.MultiStepLR(opt, [], 1.0),
}


def _autocast(cfg: TrialConfig, device: torch.device) -> AbstractContextManager[Any]:
    if cfg.amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Batch:
    """A batch moved to the device."""

    images: Tensor
    labels: Tensor
    boxes: Tensor | None


def _batches(loader: DataLoader, device: torch.device, cfg: TrialConfig) -> Iterator[Batch]:
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    for images, labels, boxes in loader:
        images = images.to(device, non_blocking=True, memory_format=fmt)
        use_boxes = cfg.crop_source == "box"
        yield Batch(images, labels.to(device, non_blocking=True), boxes.to(device) if use_boxes else None)


def train_one_epoch(
    model: RRA,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: TrialConfig,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """One pass over the training data. Returns train_loss, train_acc, epoch_seconds,
    images_per_second. Raises NonFiniteLossError on a NaN or infinite loss."""
    model.train()
    start = time.perf_counter()
    total_loss, correct, seen = 0.0, 0, 0
    for step, batch in enumerate(_batches(loader, device, cfg), 1):
        with _autocast(cfg, device):
            out = model(batch.images, batch.boxes)
            loss = rra_loss(out, batch.labels, cfg.xent_coef)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at batch {step}; stopping this trial")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = batch.labels.shape[0]
        total_loss += loss.item() * n
        correct += int((out.logits.argmax(1) == batch.labels).sum())
        seen += n
        if progress is not None:
            progress(step, len(loader))
    seconds = time.perf_counter() - start
    return {
        "train_loss": total_loss / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "epoch_seconds": seconds,
        "images_per_second": seen / seconds if seconds > 0 else 0.0,
    }


@torch.no_grad()
def evaluate(model: RRA, loader: DataLoader, cfg: TrialConfig, device: torch.device) -> dict[str, float]:
    """Accuracy of the fused, global and local logits and the loss; deterministic."""
    model.eval()
    total_loss, seen = 0.0, 0
    correct = {"acc": 0, "acc_global": 0, "acc_local": 0}
    for batch in _batches(loader, device, cfg):
        with _autocast(cfg, device):
            out = model(batch.images, batch.boxes)
            loss = rra_loss(out, batch.labels, cfg.xent_coef)
        n = batch.labels.shape[0]
        total_loss += loss.item() * n
        seen += n
        local = out.local_logits if out.local_logits is not None else out.global_logits
        for key, logits in (("acc", out.logits), ("acc_global", out.global_logits), ("acc_local", local)):
            correct[key] += int((logits.argmax(1) == batch.labels).sum())
    metrics = {k: v / max(seen, 1) for k, v in correct.items()}
    metrics["loss"] = total_loss / max(seen, 1)
    return metrics


def make_loader(dataset: Dataset, cfg: TrialConfig, device: torch.device, shuffle: bool,
                generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader with the trial's workers, pinned memory on CUDA."""
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        generator=generator,
        drop_last=False,
    )


@dataclass
class Trial:
    """Everything a running trial holds."""

    cfg: TrialConfig
    device: torch.device
    data: DataSplits
    model: RRA
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator
    epoch: int = 0  # epochs completed
    best_val_acc: float = 0.0

    def state(self) -> dict[str, Any]:
        """Full training state to checkpoint."""
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "loader": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "best_val_acc": self.best_val_acc,
            "rng": rng,
            "config": self.cfg.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restores a state written by `state()`."""
        self.model.load_state_dict(state["model"])
        self.epoch = int(state["epoch"])
        self.best_val_acc = float(state["best_val_acc"])
        if "optimizer" not in state:  # a trial's last checkpoint (the model alone): nothing to continue
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.generator.set_state(state["rng"]["loader"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)


def setup_trial(cfg: TrialConfig, data: DataSplits | None = None) -> Trial:
    """Builds data, model, optimizer and scheduler for a config."""
    device = select_device(cfg.device)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp: fp16 needs a CUDA device; use bf16 or none on the CPU")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = data or build_datasets(cfg)
    model = build_model(cfg.model_config(data.num_classes)).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    generator = torch.Generator()
    return Trial(cfg, device, data, model, optimizer, SCHEDULES[cfg.schedule](optimizer, cfg), scaler, generator)


def run_epoch(trial: Trial, progress: Progress | None = None) -> dict[str, float]:
    """Trains and validates one epoch, steps the scheduler; returns the epoch's metrics."""
    cfg, epoch = trial.cfg, trial.epoch + 1
    # Reseed from (seed, epoch) so that an epoch's shuffling and augmentation do not depend
    # on what ran before it in this process: resuming gives the same numbers.
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)
    trial.generator.manual_seed(cfg.seed * 1_000_003 + epoch)
    lr = trial.optimizer.param_groups[-1]["lr"]
    train_loader = make_loader(trial.data.train, cfg, trial.device, True, trial.generator)
    metrics = train_one_epoch(trial.model, train_loader, trial.optimizer, cfg, trial.device, trial.scaler, progress)
    val_start = time.perf_counter()
    val = evaluate(trial.model, make_loader(trial.data.val, cfg, trial.device, False), cfg, trial.device)
    metrics["val_seconds"] = time.perf_counter() - val_start
    trial.scheduler.step()  # after the epoch (the reference stepped first: milestones one early)
    trial.epoch = epoch
    trial.best_val_acc = max(trial.best_val_acc, val["acc"])
    metrics.update({f"val_{k}": v for k, v in val.items()})
    metrics.update({"epoch": epoch, "lr": lr, "best_val_acc": trial.best_val_acc})
    if not all(math.isfinite(v) for v in metrics.values()):
        raise NonFiniteLossError(f"non-finite metrics at epoch {epoch}: {metrics}")
    return metrics


def fit(cfg: TrialConfig, on_epoch: OnEpoch, resume: dict[str, Any] | None = None,
        progress: Progress | None = None, data: DataSplits | None = None) -> Trial:
    """Runs the trial to cfg.epochs, resuming from a checkpoint state when one is given."""
    if resume is not None:
        changed = cfg.differences(resume["config"], ignore=RESUME_MAY_CHANGE)
        if changed:
            raise ConfigError(f"cannot resume with a different config; changed: {', '.join(changed)}")
    trial = setup_trial(cfg, data)
    if resume is not None:
        trial.load_state(resume)
    while trial.epoch < cfg.epochs:
        metrics = run_epoch(trial, progress)
        on_epoch(metrics, trial.state())
    return trial
