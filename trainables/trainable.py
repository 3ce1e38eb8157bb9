"""The Ray Tune trainable: a thin function over `trainables.loop.fit`.

It builds the TrialConfig from the sampled config dict, resumes from Tune's checkpoint when
there is one (a retried or restored trial), and after every epoch reports the epoch's metrics,
so ASHA counts epochs. The driver says at which epochs a checkpoint is written
(`checkpoint_epochs`: every N epochs, the epochs where the policy may stop the trial, the last
one; None: every epoch): a checkpoint holds the full training state, so a trial whose worker
dies continues from it, except at the last epoch, which nothing resumes from: that one holds
the model alone (what the final test and the report load), half the bytes with SGD's momentum.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from trainables import faults
from trainables.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, wants_checkpoint
from trainables.config import TrialConfig, settings
from trainables.loop import fit


def final_state(state: dict[str, Any]) -> dict[str, Any]:
    """What a trial's last checkpoint keeps: the model and the bookkeeping, no optimizer or RNG."""
    return {k: v for k, v in state.items() if k not in ("optimizer", "scheduler", "scaler", "rng")}


def train_rra(config: dict[str, Any], checkpoint_epochs: Collection[int] | None = None) -> None:
    """Runs one trial under Ray Tune (call it through tune.Tuner, not directly)."""
    from ray import tune

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per checkpoint otherwise
    cfg = TrialConfig.from_dict(settings(config))
    start = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = load_checkpoint(Path(folder) / CHECKPOINT_NAME)

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        faults.check(cfg, epoch)
        if not wants_checkpoint(epoch, checkpoint_epochs) and epoch < cfg.epochs:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder) / CHECKPOINT_NAME, final_state(state) if epoch >= cfg.epochs else state)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    fit(cfg, report, resume=start)


def evaluate_checkpoint(config: dict[str, Any], checkpoint_dir: str, split: str = "test") -> dict[str, float]:
    """Evaluates a trial's checkpoint on a split ("test" or "val"): the study's final test.

    Runs wherever it is called (the driver sends it to a worker as a Ray task with the
    trial's resources); the model selection that chose the checkpoint used validation only.
    """
    from trainables.data.build import build_split
    from trainables.loop import evaluate, load_model, make_loader

    cfg = TrialConfig.from_dict(settings(config))
    model = load_model(cfg, load_checkpoint(Path(checkpoint_dir) / CHECKPOINT_NAME)["model"])
    device = next(model.parameters()).device
    metrics = evaluate(model, make_loader(build_split(cfg, split), cfg, device, False), cfg, device)
    return {f"{split}_{k}": v for k, v in metrics.items()}


def evaluate_tune_checkpoint(config: dict[str, Any], checkpoint: Any, split: str = "test") -> dict[str, float]:
    """`evaluate_checkpoint` on a Tune checkpoint (local or remote storage)."""
    with checkpoint.as_directory() as folder:
        return evaluate_checkpoint(config, folder, split)
