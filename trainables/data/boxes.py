"""The reference code's box files: .npy arrays (N, K, 5) of [row0, row1, col0, col1, label].

Boxes are in the frame of the image after a non-aspect-preserving resize to 448 x 448, rows in
torchvision ImageFolder order. The reference matched boxes to images by file order alone and
checked only the label; here a file is rejected when its count, labels or coordinates do not
fit, or, where the dataset has its own object boxes (CUB), when too few of its boxes fall on
the annotated object: a box file for another ordering or another subset passes the label check
but fails this one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from trainables.data.base import Sample
from trainables.errors import TrialError

REFERENCE_FRAME = 448.0


class BoxFileError(TrialError, ValueError):
    """A box file that does not match the images it is meant for."""


def _centre_inside(crop: np.ndarray, sample: Sample) -> bool:
    assert sample.box is not None
    with Image.open(sample.path) as img:  # reads the header only
        width, height = img.size
    cx = (crop[:, 2] + crop[:, 3]).mean() / 2 * width / REFERENCE_FRAME
    cy = (crop[:, 0] + crop[:, 1]).mean() / 2 * height / REFERENCE_FRAME
    x1, y1, x2, y2 = sample.box
    return bool(x1 <= cx <= x2 and y1 <= cy <= y2)


def attach_reference_boxes(samples: list[Sample], path: Path, min_on_object: float = 0.5) -> list[Sample]:
    """Returns the samples with the file's K boxes per image as their crop boxes.

    Raises:
        BoxFileError: shape, count, label, coordinate or object-agreement mismatch; the message
            names the first offending row and image.
    """
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise BoxFileError(f"cannot read box file {path}: {err}") from None
    if arr.ndim != 3 or arr.shape[2] != 5 or arr.shape[1] < 1:
        raise BoxFileError(f"box file {path}: expected shape (N, K, 5), got {arr.shape}")
    if arr.shape[0] != len(samples):
        raise BoxFileError(f"box file {path} has {arr.shape[0]} rows for {len(samples)} images")
    for i, (rows, sample) in enumerate(zip(arr, samples, strict=True)):
        if not np.all(rows[:, 4] == sample.label):
            raise BoxFileError(
                f"box file {path} row {i}: label {rows[0, 4]:g} but image {sample.path} has label {sample.label}"
            )
    r0, r1, c0, c1 = (arr[..., k] for k in range(4))
    bad = ~((r0 >= 0) & (r0 < r1) & (r1 <= REFERENCE_FRAME) & (c0 >= 0) & (c0 < c1) & (c1 <= REFERENCE_FRAME))
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise BoxFileError(f"box file {path} row {i}: box outside the 448 x 448 frame or empty: {arr[i, 0, :4]}")
    annotated = [i for i, s in enumerate(samples) if s.box is not None]
    if annotated:
        on_object = np.array([_centre_inside(arr[i], samples[i]) for i in annotated])
        if on_object.mean() < min_on_object:
            first = annotated[int(np.argmin(on_object))]
            raise BoxFileError(
                f"box file {path} does not match the images: only {on_object.mean():.0%} of its boxes "
                f"lie on the annotated object (first miss: row {first}, {samples[first].path})"
            )
    return [
        replace(s, crops=tuple((float(c0_), float(r0_), float(c1_), float(r1_)) for r0_, r1_, c0_, c1_, _ in rows),
                crops_frame=(REFERENCE_FRAME, REFERENCE_FRAME))
        for s, rows in zip(samples, arr, strict=True)
    ]
