"""The training loop as plain functions that know nothing of Ray.

`fit` runs a trial epoch by epoch, calling `on_epoch(metrics, state)` after each one with the
epoch's metrics and the full state to checkpoint; given such a state it resumes exactly where
it stopped (on the CPU with a fixed seed, the metrics equal an uninterrupted run's: every epoch
reseeds torch's generators from (seed, epoch), and the state carries model, optimizer,
scheduler, epoch and RNG states).

A trial's DataLoaders are built once and keep their worker processes between epochs. They
hand out uint8 images; each batch is converted, augmented and normalised on the trial's device
(`trainables.data.augment.Prepare`), with random numbers from torch's generator in this
process. Each training batch is read under its own seed (a random crop box where a box file
gives several), picked here by the sampler. So an epoch's shuffling and augmentation are the
same whatever the number of workers and whatever ran before (a resumed trial may change
`num_workers`). Images already decoded in memory (the image cache's mapped file, the synthetic
set) are read in this process whatever `num_workers` says: workers would have nothing to decode,
and handing a batch over from a worker costs more than reading it from memory
(benchmarks/input_pipeline).

The training step does not wait for the GPU: loss, accuracy and the non-finite check stay on
the device and are read every `CHECK_EVERY` steps. With fp16's GradScaler a non-finite loss
skips its step and lowers the scale, as GradScaler intends; only a loss that stays non-finite
for `NONFINITE_PATIENCE` steps in a row ends the trial. Without a scaler (fp32, bf16) the first
non-finite loss ends it: its gradients have reached the weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from trainables.backbones import normalisation
from trainables.config import ConfigError, TrialConfig
from trainables.data.augment import Prepare, get_augmentation
from trainables.data.base import worker_settings
from trainables.data.build import DataSplits, build_datasets
from trainables.errors import TrialError
from trainables.model import RRA, RRAOutput, build_model

Progress = Callable[[int, int], None]
# Settings that change where and how fast a trial runs, not what it computes.
RESUME_MAY_CHANGE = ("device", "num_workers", "threads", "data_dir", "image_cache")
OnEpoch = Callable[[dict[str, float], dict[str, Any]], None]


# How often (in steps) the training loop reads its running sums back from the device.
CHECK_EVERY = 50
# With a GradScaler: non-finite losses in a row that end a trial. The scaler halves its scale
# (2**16 at the start) at each skipped step, so after 20 the scale is below 1/16 and an overflow
# that persists is not one scaling can cure.
NONFINITE_PATIENCE = 20


class NonFiniteLossError(TrialError, RuntimeError):
    """The loss became NaN or infinite (and stayed so under fp16's GradScaler): the trial stops
    rather than train on garbage."""


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


@dataclass
class Batch:
    """A batch moved to the device."""

    images: Tensor
    labels: Tensor
    boxes: Tensor | None


def _autocast(amp: str, device: torch.device) -> AbstractContextManager[Any]:
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(model: RRA, optimizer: torch.optim.Optimizer, batch: Batch, amp: str, xent_coef: float,
               scaler: torch.amp.GradScaler | None = None) -> tuple[Tensor, RRAOutput]:
    """One optimisation step on a batch already on the device (the training loop's, and the one
    benchmarks.throughput times); returns the loss and the model's output, not synchronised."""
    with _autocast(amp, batch.images.device):
        out = model(batch.images, batch.boxes)
        loss = rra_loss(out, batch.labels, xent_coef)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:  # a non-finite loss gives non-finite gradients: the scaler skips the step
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss, out


def prepare_for(cfg: TrialConfig, device: torch.device, train: bool) -> Prepare:
    """How a batch of this trial reaches the model (see `trainables.data.augment.Prepare`):
    the backbone's normalisation, the model's memory format, the augmentation when training."""
    mean, std = normalisation(cfg.backbone, cfg.weights)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return Prepare(mean, std, device, get_augmentation(cfg.augment) if train else None, fmt)


def _batches(loader: DataLoader, prepare: Prepare, cfg: TrialConfig) -> Iterator[Batch]:
    for images, labels, boxes in loader:
        images, boxes = prepare(images, boxes)
        use_boxes = cfg.crop_source == "box"
        yield Batch(images, labels.to(prepare.device, non_blocking=True), boxes if use_boxes else None)


class _Tally:
    """Running sums of an epoch kept on the device, so a step never waits for the GPU."""

    def __init__(self, device: torch.device) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.loss, self.finite_seen = zero.clone(), zero.clone()
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.bad = torch.zeros((), dtype=torch.int64, device=device)  # non-finite losses
        self.streak = torch.zeros((), dtype=torch.int64, device=device)  # non-finite losses in a row
        self.worst = torch.zeros((), dtype=torch.int64, device=device)  # longest such run so far
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # its step
        self.first_value = torch.zeros((), dtype=torch.float32, device=device)

    def add(self, step: int, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        n = labels.shape[0]
        self.loss += torch.where(finite, loss.double() * n, 0.0)
        self.finite_seen += finite.double() * n
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.bad += (~finite).long()
        self.streak = torch.where(finite, 0, self.streak + 1)
        self.worst = torch.maximum(self.worst, self.streak)
        new = (self.first_bad < 0) & ~finite
        self.first_bad = torch.where(new, step, self.first_bad)
        self.first_value = torch.where(new, loss, self.first_value)

    def check(self, patience: int) -> None:
        """Raises NonFiniteLossError once `patience` non-finite losses came in a row (one sync)."""
        worst, first, value = torch.stack([self.worst.double(), self.first_bad.double(),
                                           self.first_value.double()]).tolist()
        if worst < patience:
            return
        if patience == 1:
            raise NonFiniteLossError(f"loss is {value} at batch {int(first)}; stopping this trial")
        raise NonFiniteLossError(f"the loss stayed non-finite for {int(worst)} steps in a row (first: {value} at "
                                 f"batch {int(first)}) although GradScaler lowered its scale; stopping this trial")


def train_one_epoch(
    model: RRA,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: TrialConfig,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """One pass over the training data. Returns train_loss (over the steps with a finite loss),
    train_acc, epoch_seconds, images_per_second and skipped_steps (steps with a non-finite loss,
    which GradScaler skipped). Raises NonFiniteLossError on a non-finite loss without a scaler, or
    on NONFINITE_PATIENCE of them in a row with one."""
    model.train()
    start = time.perf_counter()
    tally = _Tally(device)
    patience = NONFINITE_PATIENCE if scaler is not None else 1
    seen, steps = 0, len(loader)
    for step, batch in enumerate(_batches(loader, prepare_for(cfg, device, train=True), cfg), 1):
        loss, out = train_step(model, optimizer, batch, cfg.amp, cfg.xent_coef, scaler)
        tally.add(step, loss, out.logits, batch.labels)
        seen += batch.labels.shape[0]
        if step % CHECK_EVERY == 0:
            tally.check(patience)
        if progress is not None:
            progress(step, steps)
    tally.check(patience)
    seconds = time.perf_counter() - start
    loss_sum, finite_seen, correct, bad = torch.stack(
        [tally.loss, tally.finite_seen, tally.correct.double(), tally.bad.double()]).tolist()
    return {
        "train_loss": loss_sum / max(finite_seen, 1),
        "train_acc": correct / max(seen, 1),
        "skipped_steps": bad,
        "epoch_seconds": seconds,
        "images_per_second": seen / seconds if seconds > 0 else 0.0,
    }


@torch.no_grad()
def evaluate(model: RRA, loader: DataLoader, cfg: TrialConfig, device: torch.device) -> dict[str, float]:
    """Accuracy of the fused, global and local logits and the loss; deterministic."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros(3, dtype=torch.int64, device=device)  # fused, global, local
    seen = 0
    for batch in _batches(loader, prepare_for(cfg, device, train=False), cfg):
        with _autocast(cfg.amp, device):
            out = model(batch.images, batch.boxes)
            loss = rra_loss(out, batch.labels, cfg.xent_coef)
        n = batch.labels.shape[0]
        total_loss += loss.double() * n
        seen += n
        local = out.local_logits if out.local_logits is not None else out.global_logits
        correct += torch.stack([(logits.argmax(1) == batch.labels).sum()
                                for logits in (out.logits, out.global_logits, local)])
    fused, glob, loc = correct.tolist()
    metrics = {k: v / max(seen, 1) for k, v in (("acc", fused), ("acc_global", glob), ("acc_local", loc))}
    metrics["loss"] = total_loss.item() / max(seen, 1)
    return metrics


class SeededSampler(Sampler[tuple[int, int]]):
    """An epoch's items as (index, seed): in a random order drawn from `generator` (or in order),
    each with a seed drawn from it too. It runs in the main process, so reseeding `generator`
    before an epoch fixes that epoch whatever the workers did before."""

    def __init__(self, size: int, shuffle: bool, generator: torch.Generator) -> None:
        self.size, self.shuffle, self.generator = size, shuffle, generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=self.generator)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))


class SeededItems(Dataset[Any]):
    """A dataset read by (index, seed) keys, a batch at a time: the batch is made with torch's
    CPU generator seeded with its first key's seed (a random crop box, where a box file gives
    several), in a worker or in the main process alike, by the dataset's own batched read where
    it has one (`__getitems__`); the caller's generator state is left as it was."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        indices = [index for index, _ in keys]
        read = getattr(self.dataset, "__getitems__", None)
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed also seeds every accelerator's
            # generators, at about 2 ms a call
            torch.default_generator.manual_seed(keys[0][1])
            return read(indices) if callable(read) else [self.dataset[index] for index in indices]


def decoded(dataset: Dataset) -> bool:
    """Whether a dataset (or the one a Subset or SeededItems reads) hands out images already
    decoded in memory (`decoded = True` on its class)."""
    while not getattr(dataset, "decoded", False):
        inner = getattr(dataset, "dataset", None)
        if inner is None:
            return False
        dataset = inner
    return True


def make_loader(dataset: Dataset, cfg: TrialConfig, device: torch.device, shuffle: bool,
                generator: torch.Generator | None = None, persistent: bool = False) -> DataLoader:
    """A DataLoader with the trial's workers (none for images decoded in memory: `decoded`),
    pinned memory on CUDA. Shuffled: every batch is seeded from `generator` (see `SeededSampler`
    and `SeededItems`). `persistent` keeps the workers between epochs (a loader that is iterated
    again)."""
    workers = 0 if decoded(dataset) else cfg.num_workers
    if shuffle:
        dataset = SeededItems(dataset)
        sampler: Sampler[Any] | None = SeededSampler(len(dataset), True, generator or torch.Generator())
    else:
        sampler = None
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        # the workers' own seeds come from this one, not from `generator` or torch's: a loader
        # that starts its workers again (a resumed trial) draws no more than one that did not
        generator=torch.Generator().manual_seed(0),
        drop_last=False,
        **worker_settings(workers),
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
    train_loader: DataLoader | None = None  # built at the first epoch, kept (and its workers)
    val_loader: DataLoader | None = None

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


def load_model(cfg: TrialConfig, model_state: dict[str, Tensor]) -> RRA:
    """The trial's model with a checkpoint's weights, on the trial's device, built without its
    data, optimizer or pretrained backbone weights (the state replaces them): what evaluating a
    checkpoint needs."""
    device = select_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    num_classes = int(model_state["global_classifier.weight"].shape[0])
    model = build_model(replace(cfg.model_config(num_classes), weights="none"))
    model.load_state_dict(model_state)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def run_epoch(trial: Trial, progress: Progress | None = None) -> dict[str, float]:
    """Trains and validates one epoch, steps the scheduler; returns the epoch's metrics."""
    cfg, epoch = trial.cfg, trial.epoch + 1
    # Reseed from (seed, epoch) so that an epoch's shuffling and augmentation do not depend
    # on what ran before it in this process: resuming gives the same numbers.
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)
    trial.generator.manual_seed(cfg.seed * 1_000_003 + epoch)
    lr = trial.optimizer.param_groups[-1]["lr"]
    if trial.train_loader is None or trial.val_loader is None:
        trial.train_loader = make_loader(trial.data.train, cfg, trial.device, True, trial.generator, persistent=True)
        trial.val_loader = make_loader(trial.data.val, cfg, trial.device, False, persistent=True)
    metrics = train_one_epoch(trial.model, trial.train_loader, trial.optimizer, cfg, trial.device, trial.scaler,
                              progress)
    val_start = time.perf_counter()
    val = evaluate(trial.model, trial.val_loader, cfg, trial.device)
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
        if trial.epoch == 1:  # once per trial, with its first report (a resumed attempt made it)
            metrics.update(trial_cost(trial).metrics())
        on_epoch(metrics, trial.state())
    return trial


def trial_cost(trial: Trial) -> Any:
    """The trial's model's inference cost on the trial's device, at its image size, batch size,
    memory format and autocast (trainables.cost)."""
    from trainables.cost import measure

    cfg = trial.cfg
    return measure(trial.model, cfg.image_size, cfg.batch_size, trial.device, channels_last=cfg.channels_last,
                   context=lambda: _autocast(cfg.amp, trial.device))
