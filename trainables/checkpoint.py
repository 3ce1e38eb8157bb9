"""Atomic checkpoint files: a trial's full training state, written so a crash never leaves half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = "checkpoint.pt"


def wants_checkpoint(epoch: int, checkpoint_epochs: Collection[int] | None) -> bool:
    """Whether a trial checkpoints at `epoch` (None: at every epoch). Its last epoch is saved
    whatever this says."""
    return checkpoint_epochs is None or epoch in checkpoint_epochs


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes `state` to `path` atomically: a temporary file in the same folder, then a rename."""
    import torch  # here: the replay trainable uses this module without torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Reads a checkpoint written by `save_checkpoint` (tensors and plain values only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
