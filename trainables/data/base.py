"""Datasets shared by every format: image files or in-memory arrays, with optional boxes.

Every item is ``(image, label, box)``: image a uint8 tensor (3, S, S) after a
non-aspect-preserving resize to S x S (as the reference code does); box a (4,) tensor
(x1, y1, x2, y2) in pixels of that S x S frame, NaN where the dataset has no box. The training
loop converts, augments and normalises whole batches on its device (`trainables.data.augment`).

A corrupt or unreadable image raises `CorruptImageError` naming the file: a study should not
silently train on fewer images than it reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from trainables.errors import TrialError

NO_BOX = (float("nan"),) * 4


def worker_context() -> Any:
    """How a loader starts its workers (a trial's loaders, the image cache's build): forked from
    a fork server, a process of its own that has imported torch and the trial's data code and
    runs no other thread, rather than forked from the process that reads the loader (a trial's,
    which holds Ray's, gRPC's, Arrow's and torch's threads; a fork of a threaded process runs
    other libraries' after-fork code and copies locks other threads held: docs/reliability.md).
    The server starts once, with the process's first loader; later loaders reuse it. None where
    the platform has no fork server."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "trainables.loop"])  # read when the server starts
    return context


def worker_started(worker_id: int) -> None:
    """A DataLoader worker's first step (its `worker_init_fn`): a worker that dies of a signal (an
    abort such as glibc's "double free or corruption", a segmentation fault) writes every thread's
    Python stack to its stderr, the trial's log, before it dies; the loader itself reports only
    the signal (docs/reliability.md)."""
    import faulthandler

    faulthandler.enable(all_threads=True)


def worker_settings(workers: int) -> dict[str, Any]:
    """A DataLoader's arguments for how its `workers` start (`worker_context`) and what each does
    first (`worker_started`); none without workers. Every loader that has workers takes them."""
    return {"multiprocessing_context": worker_context(), "worker_init_fn": worker_started} if workers > 0 else {}


class CorruptImageError(TrialError, RuntimeError):
    """An image file that cannot be read or decoded."""


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One image on disk and its 0-based label.

    Attributes:
        box: optional (x1, y1, x2, y2): the object's box from the dataset's annotations, in the
            image's own pixels.
        crops: optional boxes to centre the local crop on (the reference code's box files), in
            a `crops_frame` (width, height) frame; training draws one at random, evaluation
            always takes the first.
    """

    path: Path
    label: int
    box: Box | None = None
    crops: tuple[Box, ...] = ()
    crops_frame: tuple[float, float] = (448.0, 448.0)


def load_image(path: Path) -> Image.Image:
    """Opens an image as RGB, or raises CorruptImageError naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise CorruptImageError(f"cannot read image {path}: {err}") from err


def decode_resized(path: Path, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An image as every dataset reads it: RGB, resized to S x S (bilinear), uint8 (S, S, 3);
    and its own (width, height)."""
    img = load_image(path)
    resized = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8), img.size


def verify_image(path: Path) -> None:
    """Checks that a file is a readable image without decoding all of it (fast enough to run
    over a whole dataset before a study starts); raises CorruptImageError naming the file."""
    try:
        with Image.open(path) as img:
            img.verify()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise CorruptImageError(f"cannot read image {path}: {err}") from err


class ImageFileDataset(Dataset[tuple[Tensor, int, Tensor]]):
    """Images read from disk and resized to image_size x image_size.

    Args:
        random_crop_box: with several crop boxes per image (a box file), draw one at random
            (training) rather than take the first (evaluation).
    """

    def __init__(self, samples: Sequence[Sample], image_size: int, random_crop_box: bool = False) -> None:
        self.samples = list(samples)
        self.image_size = image_size
        self.random_crop_box = random_crop_box

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        sample = self.samples[index]
        image, width, height = self._pixels(index)
        return image, sample.label, self._box(sample, width, height)

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int, Tensor]]:
        """A batch's items, in order (the DataLoader reads batches this way). Crop boxes are drawn
        in this order, so a `CachedImageDataset`, which reads a batch's pixels at once, makes the
        same items."""
        return [self[index] for index in indices]

    def _pixels(self, index: int) -> tuple[Tensor, int, int]:
        """The resized image, uint8 (3, S, S), and its own width and height before the resize."""
        pixels, (width, height) = decode_resized(self.samples[index].path, self.image_size)
        return torch.from_numpy(pixels).permute(2, 0, 1), width, height

    def _box(self, sample: Sample, width: int, height: int) -> Tensor:
        """The box that centres the crop, in the resized frame: a crop box, else the object's."""
        if sample.crops:
            pick = int(torch.randint(len(sample.crops), ())) if self.random_crop_box else 0
            box, (fw, fh) = sample.crops[pick], sample.crops_frame
        elif sample.box is not None:
            box, fw, fh = sample.box, float(width), float(height)
        else:
            return torch.tensor(NO_BOX)
        sx, sy = self.image_size / fw, self.image_size / fh
        return torch.tensor([box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy])


class ArrayDataset(Dataset[tuple[Tensor, int, Tensor]]):
    """Images held in memory as uint8 (N, H, W, 3) arrays (the synthetic dataset)."""

    decoded = True  # read in the trial's process (trainables.loop.make_loader)

    def __init__(self, images: np.ndarray, labels: np.ndarray, boxes: np.ndarray | None) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # a view, no copy
        self._labels = labels.astype(np.int64)
        self.boxes = torch.from_numpy(boxes) if boxes is not None else None

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        box = self.boxes[index].clone() if self.boxes is not None else torch.tensor(NO_BOX)
        return self.images[index], int(self._labels[index]), box


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Splits indices into (train, val), taking `fraction` of each class for val.

    Deterministic for a seed; every class with at least two images keeps one in each part.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 104729])
    arr = np.asarray(labels)
    train: list[int] = []
    val: list[int] = []
    for label in np.unique(arr):
        idx = rng.permutation(np.flatnonzero(arr == label))
        k = round(len(idx) * fraction)
        k = min(max(k, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val.extend(idx[:k].tolist())
        train.extend(idx[k:].tolist())
    return sorted(train), sorted(val)
