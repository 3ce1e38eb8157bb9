"""Crop geometry of the local stream: where to look, and a batched crop-and-resize.

Boxes are (x1, y1, x2, y2) in continuous pixel coordinates of the image they refer to
(pixel i covers [i, i + 1)), as torchvision.ops.roi_align with aligned=True expects.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align


def peak_centres(activation: Tensor, boxes: Tensor) -> Tensor:
    """Centre of the highest cell of each activation map, in the frame of the image.

    Args:
        activation: (B, h, w) maps computed on the contents of `boxes`.
        boxes: (B, 4) region of the image each map covers (the whole image, or a crop).

    Returns:
        (B, 2) centres (x, y) in image pixels. Carries no gradient.
    """
    b, h, w = activation.shape
    flat = activation.detach().reshape(b, h * w).argmax(dim=1)
    row = torch.div(flat, w, rounding_mode="floor").to(boxes.dtype)
    col = (flat % w).to(boxes.dtype)
    x = boxes[:, 0] + (col + 0.5) / w * (boxes[:, 2] - boxes[:, 0])
    y = boxes[:, 1] + (row + 0.5) / h * (boxes[:, 3] - boxes[:, 1])
    return torch.stack([x, y], dim=1)


def square_boxes(centres: Tensor, side: Tensor, bounds: Tensor) -> Tensor:
    """Squares of the given side around `centres`, shifted (not shrunk) to lie inside `bounds`.

    Args:
        centres: (B, 2) wanted centres (x, y).
        side: (B,) side lengths; each must not exceed its bounds' shorter side.
        bounds: (B, 4) boxes the squares must stay inside.
    """
    half = side / 2
    cx = torch.maximum(torch.minimum(centres[:, 0], bounds[:, 2] - half), bounds[:, 0] + half)
    cy = torch.maximum(torch.minimum(centres[:, 1], bounds[:, 3] - half), bounds[:, 1] + half)
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1)


def full_boxes(images: Tensor) -> Tensor:
    """(B, 4) boxes covering each whole image of a (B, C, H, W) batch."""
    b, _, h, w = images.shape
    box = torch.tensor([0.0, 0.0, float(w), float(h)], device=images.device)
    return box.expand(b, 4).clone()


def crop_and_resize(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crops each image to its box and resizes it to size x size, in one batched op.

    roi_align samples bilinearly, averaging several points per output cell when a box is
    larger than the output, so shrinking is anti-aliased and enlarging is bilinear.
    """
    index = torch.arange(images.shape[0], device=images.device, dtype=boxes.dtype)
    rois = torch.cat([index[:, None], boxes], dim=1).to(images.dtype)
    return roi_align(images, rois, (size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
