"""A batch's way from the DataLoader to the model: uint8 pixels to normalised floats, with the
training augmentations, on the trial's device.

Datasets hand out uint8 images (decoded once into the image cache, or generated), so workers
do no per-image arithmetic; `Prepare` then converts a whole batch where the model runs (the
GPU when there is one): to [0, 1], the augmentation (which moves each image's box with it),
normalisation with the backbone's statistics, the model's memory format.

Augmentations are batched and draw their random numbers from torch's global generator on the
CPU (the training loop seeds it per epoch), so a run's numbers do not depend on the device's
generator or on the DataLoader's workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from trainables import names
from trainables.crops import crop_and_resize
from trainables.names import Registry

# An augmentation takes a float batch (B, 3, H, W) in [0, 1] and its boxes (B, 4), and returns
# both, transformed alike (a NaN box, an image without one, stays NaN).
Augment = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def hflip(images: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Flips each image left-right with probability 1/2."""
    flip = (torch.rand(images.shape[0]) >= 0.5).to(images.device)
    width = images.shape[-1]
    mirrored = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return (torch.where(flip[:, None, None, None], images.flip(-1), images),
            torch.where(flip[:, None], mirrored, boxes))


def scale_crop(images: Tensor, boxes: Tensor, min_scale: float = 0.75) -> tuple[Tensor, Tensor]:
    """Crops from each image a random region of side in [min_scale, 1] x the image's side and
    resizes it back (bilinear; `crop_and_resize`)."""
    count, _, height, width = images.shape
    if height != width:
        raise ValueError(f"scale_crop: square images expected, got {height} x {width}")
    scale = torch.empty(count).uniform_(min_scale, 1.0)
    ch, cw = (height * scale).round().clamp(min=1), (width * scale).round().clamp(min=1)
    top = (torch.rand(count) * (height - ch + 1)).floor()
    left = (torch.rand(count) * (width - cw + 1)).floor()
    crops = torch.stack([left, top, left + cw, top + ch], dim=1).to(images.device)
    out = crop_and_resize(images, crops, height)
    offset = crops[:, [0, 1, 0, 1]].to(boxes.dtype)
    stretch = torch.stack([width / cw, height / ch, width / cw, height / ch], dim=1).to(boxes)
    moved = (boxes - offset) * stretch
    limits = torch.tensor([width, height, width, height], dtype=moved.dtype, device=moved.device)
    return out, torch.minimum(moved.clamp(min=0), limits)


@dataclass(frozen=True)
class Compose:
    """Steps applied in order."""

    steps: tuple[Augment, ...]

    def __call__(self, images: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        for step in self.steps:
            images, boxes = step(images, boxes)
        return images, boxes


AUGMENTATIONS: Registry[Augment | None] = Registry("augment", names.AUGMENTATIONS)
AUGMENTATIONS.register("none", None)
AUGMENTATIONS.register("flip", hflip)
AUGMENTATIONS.register("flip_crop", Compose((scale_crop, hflip)))


def get_augmentation(name: str) -> Augment | None:
    """The augmentation called `name`; an unknown name lists the known ones."""
    return AUGMENTATIONS[name]


class Prepare:
    """Turns a DataLoader batch (uint8 images (B, 3, S, S), boxes (B, 4)) into the model's input
    on `device`: [0, 1], augmented when training, normalised, in `memory_format`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 augment: Augment | None = None, memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.device, self.augment, self.memory_format = device, augment, memory_format

    def unit(self, images: Tensor) -> Tensor:
        """uint8 pixels to floats in [0, 1] on the device (as PIL's bytes / 255)."""
        return images.to(self.device, non_blocking=True).float() / 255.0

    def __call__(self, images: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        x, boxes = self.unit(images), boxes.to(self.device, non_blocking=True)
        if self.augment is not None:
            x, boxes = self.augment(x, boxes)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format), boxes
