"""The names a trial config may choose from, without importing torch.

The driver validates a search space against these (so a typo answers as fast as ``--help``);
the heavy registries (`trainables.backbones`, `trainables.data.formats`,
`trainables.data.augment`) refuse to register a name that is not listed here, and a test
checks that every name listed here has a builder, so the two never drift apart.
"""

from __future__ import annotations

BACKBONES: tuple[str, ...] = ("resnet18", "resnet50", "tiny", "vgg19")
# Backbones with torchvision pretrained weights ("imagenet" or a weight-enum member name).
PRETRAINED: tuple[str, ...] = ("resnet18", "resnet50", "vgg19")
# On-disk formats a user brings, besides the generated "synthetic" set.
DATASET_FORMATS: tuple[str, ...] = ("cub", "stanford_cars", "fgvc_aircraft", "stanford_dogs", "imagefolder")
DATASETS: tuple[str, ...] = ("synthetic", *DATASET_FORMATS)
AUGMENTATIONS: tuple[str, ...] = ("none", "flip", "flip_crop")
# What runs inside a trial: the RRA training loop, or a replay of a learning curve (no training).
TRAINABLES: tuple[str, ...] = ("rra", "replay")


def check(kind: str, name: str, known: tuple[str, ...]) -> None:
    """Raises ValueError naming the known names when `name` is not one of them."""
    if name not in known:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
