"""A decoded-image cache for on-disk datasets, shared by every trial on a node.

Reading a JPEG dataset the plain way decodes every image and resizes it to the trial's input
size in every epoch of every trial. The cache does that once per (dataset, split, size): each
image decoded, converted to RGB and resized exactly as `ImageFileDataset` does it, stored as
uint8 in one .npy file, (N, S, S, 3), which every trial on the node then maps into memory (the page
cache holds it once for all of them).

- The file's name carries a digest of what it holds: the image size and every image's path,
  byte size and modification time. A changed dataset or size makes a new file.
- The first trial that needs a file builds it under an exclusive lock (other trials wait, then
  use it). It writes a temporary file and renames it into place when every image is in it: a
  half-written cache is never read, and a build that dies leaves nothing a later trial trusts.
- Before building, it prints the space the file will take and the space left; without room
  (the file and 1 GiB to spare) the trial reads the images the plain way and says so.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from trainables.data.base import ImageFileDataset, Sample, decode_resized, worker_settings

FORMAT = 1  # bump when the layout or the decoding changes: old files are then not matched
SPARE_BYTES = 1 << 30


def default_folder() -> Path:
    """Where caches go when a trial's image_cache is "auto": $RRA_IMAGE_CACHE, else the node's
    temporary folder."""
    return Path(os.environ.get("RRA_IMAGE_CACHE") or Path(tempfile.gettempdir()) / "rra-image-cache")


def cache_folder(setting: str) -> Path:
    """The folder a trial's `image_cache` setting names ("auto": `default_folder()`)."""
    return default_folder() if setting == "auto" else Path(setting).expanduser()


def cache_name(samples: Sequence[Sample], image_size: int, label: str) -> str:
    """The file name for these images at this size: `label`, the size, a digest of the files."""
    digest = hashlib.sha256(f"{FORMAT} {image_size}".encode())
    for sample in samples:
        stat = sample.path.stat()
        digest.update(f"\0{sample.path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return f"{label}-{image_size}px-{digest.hexdigest()[:16]}"


def _decode(path: Path, image_size: int) -> tuple[np.ndarray, tuple[int, int]]:
    return decode_resized(path, image_size)  # the plain way's decoding, so the items are the same


class _Decoding(Dataset[tuple[int, np.ndarray, tuple[int, int]]]):
    def __init__(self, paths: list[Path], image_size: int) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray, tuple[int, int]]:
        return (index, *_decode(self.paths[index], self.image_size))


def _as_is(item: Any) -> Any:
    return item


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_bytes(count: int, image_size: int) -> int:
    """The size of a cache file of `count` images at `image_size`."""
    return count * image_size * image_size * 3


def ensure_cache(samples: Sequence[Sample], image_size: int, folder: Path, label: str,
                 workers: int = 0) -> Path | None:
    """The cache file of `samples` at `image_size` in `folder`, built if missing; None when the
    disk has no room for it (the caller reads images the plain way)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = cache_name(samples, image_size, label)
    data, meta = folder / f"{name}.npy", folder / f"{name}.json"
    with _locked(folder / f"{name}.lock"):
        if meta.is_file() and data.is_file():  # meta is written last: its presence means complete
            return data
        need, free = cache_bytes(len(samples), image_size), shutil.disk_usage(folder).free
        print(f"image cache: decoding {len(samples)} images at {image_size} px into {data} "
              f"({need / 2**30:.2f} GiB; {free / 2**30:.1f} GiB free)", file=sys.stderr, flush=True)
        if free < need + SPARE_BYTES:
            print(f"image cache: not enough room in {folder}; reading the images from their files "
                  "(set image_cache to another folder, or off)", file=sys.stderr, flush=True)
            return None
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
        os.close(fd)
        try:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                              shape=(len(samples), image_size, image_size, 3))
            sizes = np.zeros((len(samples), 2), dtype=np.int64)
            loader = DataLoader(_Decoding([s.path for s in samples], image_size), batch_size=None,
                                num_workers=workers, collate_fn=_as_is, **worker_settings(workers))
            for index, pixels, size in loader:
                array[index] = pixels
                sizes[index] = size
            array.flush()
            del array
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, data)
            meta_tmp = meta.with_suffix(".json.partial")
            meta_tmp.write_text(json.dumps({"format": FORMAT, "count": len(samples), "image_size": image_size,
                                            "sizes": sizes.tolist()}))
            os.replace(meta_tmp, meta)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return data


class CachedImageDataset(ImageFileDataset):
    """`ImageFileDataset` whose images come from a cache file (see `ensure_cache`): the same
    items, without decoding. The file is mapped in each process on first use, so the dataset
    pickles small (DataLoader workers, spawn included)."""

    decoded = True  # read in the trial's process (trainables.loop.make_loader)

    def __init__(self, path: Path, samples: Sequence[Sample], image_size: int, random_crop_box: bool = False) -> None:
        super().__init__(samples, image_size, random_crop_box)
        self.path = path
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta["count"] != len(self.samples) or meta["image_size"] != image_size:
            raise ValueError(f"image cache {path} holds {meta['count']} images at {meta['image_size']} px, "
                             f"not {len(self.samples)} at {image_size}")
        self.sizes = [tuple(s) for s in meta["sizes"]]
        self._images: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}

    def _mapped(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return self._images

    def _pixels(self, index: int) -> tuple[Tensor, int, int]:
        width, height = self.sizes[index]
        return torch.from_numpy(np.array(self._mapped()[index])).permute(2, 0, 1), width, height

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int, Tensor]]:
        """A batch's items with their pixels read from the file in one go (one copy for the
        batch, not one an image); boxes drawn in order, as `ImageFileDataset.__getitems__`."""
        pixels = torch.from_numpy(self._mapped()[np.asarray(indices)]).permute(0, 3, 1, 2)
        return [(pixels[i], self.samples[index].label, self._box(self.samples[index], *self.sizes[index]))
                for i, index in enumerate(indices)]
