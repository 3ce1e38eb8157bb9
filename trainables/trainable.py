"""The Ray Tune trainable: a thin function over `trainables.loop.fit`.

It builds the TrialConfig from the sampled config dict, resumes from Tune's checkpoint when
there is one (a retried or restored trial), and after every epoch reports the epoch's metrics
together with a checkpoint of the full training state, so ASHA counts epochs and a trial whose
worker dies continues from its last epoch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from trainables.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from trainables.config import TrialConfig
from trainables.loop import fit


def train_rra(config: dict[str, Any]) -> None:
    """Runs one trial under Ray Tune (call it through tune.Tuner, not directly)."""
    from ray import tune

    cfg = TrialConfig.from_dict(config)
    start = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = load_checkpoint(Path(folder) / CHECKPOINT_NAME)

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder) / CHECKPOINT_NAME, state)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    fit(cfg, report, resume=start)
