"""The names a trial config may choose from, without importing torch, and the registry class
of what they name.

The driver validates a search space against these (so a typo answers as fast as ``--help``);
the heavy registries (`trainables.backbones`, `trainables.data.formats.READERS`,
`trainables.data.augment.AUGMENTATIONS`, `trainables.registry.TRAINABLES`) refuse to register
a name that is not listed here, and a test checks that every name listed here has an entry, so
the two never drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

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


class Registry(Generic[T]):
    """What a name chooses, for one kind of thing (dataset readers, augmentations, trainables;
    the study's policies and searchers).

    `register` refuses a name that is not listed in the light names module `home` (or is
    registered twice); looking up an unknown name raises ValueError naming the known ones.
    """

    def __init__(self, kind: str, listed: tuple[str, ...], home: str = "trainables.names") -> None:
        self.kind, self.listed, self.home = kind, listed, home
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if name not in self.listed:
            raise ValueError(f"{self.kind} {name!r} is not listed in {self.home}")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        check(self.kind, name, tuple(self._entries))
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
