"""Training augmentations that move an image's box with the image, chosen by name.

They draw from torch's global generator, which the training loop seeds per epoch (and each
DataLoader worker is seeded from the loader's generator), so a run is reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.data.base import Augment


def hflip(image: Tensor, box: Tensor) -> tuple[Tensor, Tensor]:
    """Flips left-right with probability 1/2."""
    if torch.rand(()) < 0.5:
        return image, box
    width = image.shape[-1]
    return image.flip(-1), torch.stack([width - box[2], box[1], width - box[0], box[3]])


def scale_crop(image: Tensor, box: Tensor, min_scale: float = 0.75) -> tuple[Tensor, Tensor]:
    """Crops a random square of side in [min_scale, 1] x image side and resizes it back."""
    _, height, width = image.shape
    scale = float(torch.empty(()).uniform_(min_scale, 1.0))
    ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
    top = int(torch.randint(0, height - ch + 1, ()))
    left = int(torch.randint(0, width - cw + 1, ()))
    crop = image[:, top : top + ch, left : left + cw]
    out = F.interpolate(crop[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    sx, sy = width / cw, height / ch
    moved = torch.stack([(box[0] - left) * sx, (box[1] - top) * sy, (box[2] - left) * sx, (box[3] - top) * sy])
    limits = torch.tensor([width, height, width, height], dtype=moved.dtype)
    return out, torch.minimum(moved.clamp(min=0), limits)


def _compose(*steps: Augment) -> Augment:
    def run(image: Tensor, box: Tensor) -> tuple[Tensor, Tensor]:
        for step in steps:
            image, box = step(image, box)
        return image, box

    return run


AUGMENTATIONS: dict[str, Augment | None] = {
    "none": None,
    "flip": hflip,
    "flip_crop": _compose(scale_crop, hflip),
}


def get_augmentation(name: str) -> Augment | None:
    """The augmentation called `name`; an unknown name lists the known ones."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {name!r}; known: {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
