"""A synthetic fine-grained dataset, generated deterministically from a seed (no download).

Every image shows one object (an ellipse body with a head, random colour, size, position and
orientation) on a cluttered background. The class is written ONLY in a small part on the
object's head: a 3x3 grid of black and white cells, one code per class, about 2 % of the image
area. The part moves with the object. The background also carries distractor parts with the
codes of other classes, painted at a slightly lower contrast (0.7 against 0.9 by default), so
a model that pools over the whole image sees every class's code with nearly equal weight and
must learn to tell them apart, while the peak of an activation map, a maximum, lands on the
true part; a model that localises and zooms then reads one code, at a larger scale.

Each image's part box is recorded (x1, y1, x2, y2 in pixels), so crops from boxes work too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_GRID = 3


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic dataset."""

    num_classes: int = 10
    images_per_class: int = 120
    test_images_per_class: int = 40
    image_size: int = 64
    part_fraction: float = 0.02  # part area / image area
    distractors: int = 3
    distractor_contrast: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= 16:
            raise ValueError(f"synthetic num_classes must be in [2, 16], got {self.num_classes}")
        if self.image_size < 32:
            raise ValueError(f"synthetic image_size must be >= 32, got {self.image_size}")
        if self.images_per_class < 1 or self.test_images_per_class < 1:
            raise ValueError("synthetic images per class must be >= 1")


def class_codes(num_classes: int, seed: int) -> np.ndarray:
    """(num_classes, 3, 3) distinct binary codes, any two differing in at least 2 cells.

    Each code is mirror-symmetric left-right, so a horizontal flip (a usual augmentation)
    keeps an image's class.
    """
    rng = np.random.default_rng([seed, 7919])
    codes: list[np.ndarray] = []
    for cand in rng.permutation(2 ** (_GRID * 2)):
        half = ((cand >> np.arange(_GRID * 2)) & 1).reshape(_GRID, 2)
        code = np.concatenate([half, half[:, :1]], axis=1)  # column 2 mirrors column 0
        if 2 <= code.sum() <= 7 and all((code != c).sum() >= 2 for c in codes):
            codes.append(code)
        if len(codes) == num_classes:
            return np.stack(codes).astype(np.float32)
    raise ValueError(f"cannot draw {num_classes} mirror-symmetric codes")


def _blobs(img: np.ndarray, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, n: int) -> None:
    size = img.shape[0]
    for _ in range(n):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(0.04, 0.16, 2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img[mask] = 0.6 * img[mask] + 0.4 * rng.uniform(0.2, 0.8, 3)


def _paint_part(img: np.ndarray, code: np.ndarray, x0: int, y0: int, side: int, contrast: float) -> None:
    patch = np.kron(code, np.ones((side // _GRID, side // _GRID), dtype=np.float32))
    img[y0 : y0 + side, x0 : x0 + side] = (0.5 + contrast * (patch - 0.5))[..., None]


def _render(
    label: int, codes: np.ndarray, spec: SyntheticSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    size = spec.image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # Background: a colour gradient, then clutter.
    c0, c1 = rng.uniform(0.2, 0.8, (2, 3))
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / (2 * size) + 0.5
    img = (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)
    _blobs(img, rng, yy, xx, 8)
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)

    # a whole number of pixels per code cell
    side = _GRID * max(2, round(size * np.sqrt(spec.part_fraction) / _GRID))
    # Object: an ellipse body and a head disc; the part sits on the head.
    length = rng.uniform(0.22, 0.3) * size
    angle = rng.uniform(0, 2 * np.pi)
    margin = length + side
    cx, cy = rng.uniform(margin, size - margin, 2) if size > 2 * margin else (size / 2, size / 2)
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / length
    v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / (0.45 * length)
    colour = rng.uniform(0.1, 0.9, 3)
    img[u**2 + v**2 <= 1] = colour
    hx, hy = cx + length * np.cos(angle), cy + length * np.sin(angle)
    img[(xx - hx) ** 2 + (yy - hy) ** 2 <= (0.6 * side + 1) ** 2] = colour * 0.7
    px = int(np.clip(round(hx - side / 2), 0, size - side))
    py = int(np.clip(round(hy - side / 2), 0, size - side))
    _paint_part(img, codes[label], px, py, side, 0.9)
    box = np.array([px, py, px + side, py + side], dtype=np.float32)

    # Distractors: other classes' codes on the background, away from the object.
    others = [c for c in range(len(codes)) if c != label]
    placed = 0
    for _ in range(50 * spec.distractors):
        if placed == spec.distractors:
            break
        dx, dy = rng.integers(0, size - side, 2)
        if np.hypot(dx + side / 2 - cx, dy + side / 2 - cy) < length + 1.5 * side:
            continue
        if np.hypot(dx + side / 2 - hx, dy + side / 2 - hy) < 2 * side:
            continue
        _paint_part(img, codes[rng.choice(others)], int(dx), int(dy), side, spec.distractor_contrast)
        placed += 1
    return np.clip(img, 0, 1), box


@functools.lru_cache(maxsize=4)
def generate(spec: SyntheticSpec, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates one split ("train" or "test") of the dataset.

    Cached per process (a reused Ray actor runs many trials on the same data): callers must
    not modify the arrays.

    Returns:
        images (N, H, W, 3) uint8, labels (N,) int64, part boxes (N, 4) float32, in class order.
    """
    if split not in ("train", "test"):
        raise ValueError(f"synthetic split must be 'train' or 'test', got {split!r}")
    per_class = spec.images_per_class if split == "train" else spec.test_images_per_class
    codes = class_codes(spec.num_classes, spec.seed)
    n = spec.num_classes * per_class
    images = np.empty((n, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    boxes = np.empty((n, 4), dtype=np.float32)
    labels = np.repeat(np.arange(spec.num_classes, dtype=np.int64), per_class)
    split_id = 0 if split == "train" else 1
    for i, label in enumerate(labels):
        # One generator per image: any image can be regenerated alone, in any order.
        rng = np.random.default_rng([spec.seed, split_id, i])
        img, boxes[i] = _render(int(label), codes, spec, rng)
        images[i] = np.round(img * 255).astype(np.uint8)
    return images, labels, boxes
