"""Shared test helpers: small trial configs that train in seconds on the CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from trainables.config import TrialConfig

TINY: dict[str, Any] = {
    "synthetic_classes": 4,
    "synthetic_images_per_class": 16,
    "synthetic_test_images_per_class": 4,
    "image_size": 32,
    "patch_size": 32,
    "batch_size": 16,
    "epochs": 2,
    "lstm_hidden": 16,
    "recursion_steps": 3,
    "val_fraction": 0.25,
    "threads": 1,
}


def tiny_config(**overrides: Any) -> TrialConfig:
    """A trial that runs an epoch in well under a second."""
    return TrialConfig.from_dict({**TINY, **overrides})


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def small_space(study: str, images: int, rest: str) -> str:
    """A search space file for study tests: a small synthetic set (4 classes, `images` per class,
    32 px) and a small model; `study` is the study block's flow mapping, `rest` the YAML after
    the constants (parameters, baselines, enqueue)."""
    return f"""study: {{{study}}}
constants:
  synthetic_classes: 4
  synthetic_images_per_class: {images}
  synthetic_test_images_per_class: 4
  val_fraction: 0.25
  image_size: 32
  patch_size: 32
  lstm_hidden: 16
  batch_size: 16
{rest.strip()}
"""
