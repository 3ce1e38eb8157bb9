"""A simulated trial: it reports a learning curve computed from its config and sleeps a set time
per epoch instead of training, through the same Tune calls as the RRA trainable (metrics every
epoch, checkpoints at the epochs the driver asks for, resume from a checkpoint).

It exists to try a study's machinery (searcher, scheduler, MLflow, Tune storage, a cluster) at
a scale that training would make slow: `python -m study.run --trainable replay
--replay-epoch-s 0.5 ...`, and the scale benchmark. The curve is a smooth function of the
config (no recorded data yet): the final accuracy depends on the local stream, the crop scale,
the recursion steps and the temperature; the speed of learning on the learning rate and the
recursion steps, so curves of different configs cross. Values are deterministic per
(config, seed, epoch): a resumed trial reports what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from trainables.checkpoint import wants_checkpoint
from trainables.config import TrialConfig, settings

STATE_FILE = "replay.json"


def _noise(cfg: TrialConfig, epoch: int, salt: str) -> float:
    """A deterministic value in [-1, 1) for (config, seed, epoch, salt)."""
    key = json.dumps([sorted(cfg.to_dict().items()), epoch, salt], default=str)
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**31 - 1.0


def final_accuracy(cfg: TrialConfig) -> float:
    """The accuracy a config's curve tends to (classes: chance level at worst)."""
    chance = 1.0 / max(cfg.synthetic_classes, 2)
    global_only = 0.55
    if not cfg.local_stream:
        return global_only
    crop = math.exp(-((math.log(cfg.crop_scale / 0.35)) ** 2) / 0.5)  # best near a third of the image
    steps = 1.0 - math.exp(-cfg.recursion_steps / 2.5)
    temperature = math.exp(-((math.log(cfg.attention_temperature)) ** 2) / 2.0)
    return max(chance, global_only + 0.35 * crop * steps * temperature - 0.05)


def curve(cfg: TrialConfig, epoch: int) -> dict[str, float]:
    """The metrics a config reports at `epoch` (1-based)."""
    speed = min(1.0, cfg.lr / 0.01) ** 0.5 / (1.0 + 0.08 * cfg.recursion_steps)  # larger T learns later
    tau = max(0.5, cfg.epochs * 0.25 / max(speed, 1e-3))
    chance = 1.0 / max(cfg.synthetic_classes, 2)
    top = final_accuracy(cfg)
    acc = chance + (top - chance) * (1.0 - math.exp(-epoch / tau)) + 0.01 * _noise(cfg, epoch, "val")
    acc = min(1.0, max(0.0, acc))
    loss = -math.log(max(acc, 1e-3)) + 0.05 * _noise(cfg, epoch, "loss")
    return {"val_acc": acc, "val_acc_global": min(acc, 0.55 + 0.01 * _noise(cfg, epoch, "global")),
            "val_acc_local": acc, "val_loss": loss, "train_loss": loss * 0.9, "train_acc": min(1.0, acc + 0.05),
            "lr": cfg.lr}


def replayed(cfg: TrialConfig, epoch: int, table: str | None = None) -> dict[str, float]:
    """The metrics a replayed trial reports at `epoch`: the table's recorded curve of the
    configuration nearest to the trial's (and `replay_distance`, how near), or, without a table,
    the smooth `curve`."""
    if table is None:
        return curve(cfg, epoch)
    from trainables.curve_table import load

    recorded = load(table)
    match = recorded.match(cfg.to_dict(), cfg.seed)
    return {**recorded.metrics(match, epoch), "lr": cfg.lr, "replay_distance": match.distance}


def train_replay(config: dict[str, Any], checkpoint_epochs: Collection[int] | None = None,
                 epoch_seconds: float = 1.0, table: str | None = None) -> None:
    """Runs one simulated trial under Ray Tune: `table`, a recorded curve table's path (see
    trainables.curve_table), else the smooth curve."""
    from ray import tune

    cfg = TrialConfig.from_dict(settings(config))
    epoch, best = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = json.loads((Path(folder) / STATE_FILE).read_text())
        epoch, best = int(state["epoch"]), float(state["best_val_acc"])
    waited = 0.0  # how long the last report held the trial: the driver's turnaround of a result
    while epoch < cfg.epochs:
        start = time.perf_counter()
        time.sleep(epoch_seconds)
        epoch += 1
        metrics = replayed(cfg, epoch, table)
        best = max(best, metrics["val_acc"])
        metrics.update({"epoch": epoch, "best_val_acc": best, "epoch_seconds": time.perf_counter() - start,
                        "report_wait_s": waited, "wall_time": time.time()})
        sent = time.perf_counter()
        if not wants_checkpoint(epoch, checkpoint_epochs) and epoch < cfg.epochs:
            tune.report(metrics)
        else:
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / STATE_FILE).write_text(json.dumps({"epoch": epoch, "best_val_acc": best}))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        waited = time.perf_counter() - sent


def evaluate_replay_checkpoint(config: dict[str, Any], checkpoint: Any, split: str = "test",
                               table: str | None = None) -> dict[str, float]:
    """The test metrics of a simulated trial: its curve at the checkpoint's epoch (a table
    records no test split: its validation values stand in)."""
    cfg = TrialConfig.from_dict(settings(config))
    with checkpoint.as_directory() as folder:
        epoch = int(json.loads((Path(folder) / STATE_FILE).read_text())["epoch"])
    values = replayed(cfg, epoch, table)
    return {f"{split}_acc": values["val_acc"], f"{split}_acc_global": values["val_acc_global"],
            f"{split}_acc_local": values["val_acc_local"], f"{split}_loss": values["val_loss"]}
