"""Fault injection, for reliability tests and drills: make a trial fail the way a real one can.

Set RRA_INJECT_FAULT in the environment Ray's workers start with (e.g. before starting the study
or `ray start`):

    RRA_INJECT_FAULT="oom@2"                  # every trial: out of memory when it reaches epoch 2
    RRA_INJECT_FAULT="oom@2:crop_scale=0.7"   # only trials whose config has crop_scale 0.7

The error is torch's own OutOfMemoryError (what a CUDA allocation failure raises), thrown after
the epoch's training and before its report, so a retried trial resumes from the previous
epoch's checkpoint and meets it again: retries run out as they would for a real, repeatable
fault. Unset, nothing happens.
"""

from __future__ import annotations

import os

import torch

from trainables.config import TrialConfig

ENV = "RRA_INJECT_FAULT"
FAULTS = {"oom": lambda: torch.OutOfMemoryError(f"CUDA out of memory (simulated by {ENV})")}


def check(cfg: TrialConfig, epoch: int) -> None:
    """Raises the injected fault if RRA_INJECT_FAULT targets this trial at this epoch."""
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return
    what, _, where = spec.partition(":")
    kind, _, at = what.partition("@")
    if kind not in FAULTS or not at.isdigit():
        raise ValueError(f"{ENV}={spec!r}: expected KIND@EPOCH[:KEY=VALUE] with KIND in {sorted(FAULTS)}")
    if int(at) != epoch:
        return
    if where:
        key, _, value = where.partition("=")
        if str(cfg.to_dict().get(key)) != value:
            return
    raise FAULTS[kind]()
