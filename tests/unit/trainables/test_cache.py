"""The decoded-image cache: the same items as reading the files, built once per node, never half."""

from __future__ import annotations

import dataclasses
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from tests import formats_fixtures as fx
from tests.conftest import tiny_config
from trainables.data import cache
from trainables.data.base import ImageFileDataset
from trainables.data.build import build_datasets, build_split
from trainables.data.cache import CachedImageDataset, cache_name, ensure_cache
from trainables.data.formats import READERS
from trainables.loop import SeededItems


def _items(dataset: Any, seeds: bool = False) -> list[Any]:
    if seeds:  # as the training loader reads them: batches of (index, seed) keys
        dataset, keys = SeededItems(dataset), [(i, 1000 + i) for i in range(len(dataset))]
        return [item for start in range(0, len(keys), 4) for item in dataset.__getitems__(keys[start:start + 4])]
    return [dataset[i] for i in range(len(dataset))]


def _same(a: list[Any], b: list[Any]) -> bool:
    """Items equal to the bit: image, label and box (NaN where there is none)."""
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and x[1] == y[1] and torch.allclose(x[2], y[2], rtol=0, atol=0, equal_nan=True)
        for x, y in zip(a, b, strict=True))


def test_cached_items_equal_the_decoded_ones(tmp_path: Path) -> None:
    fx.write_cub(tmp_path / "data", per_class=6)
    base = {"dataset": "cub", "data_dir": str(tmp_path / "data"), "val_fraction": 0.5, "image_size": 24}
    cached = build_datasets(tiny_config(**base, image_cache=str(tmp_path / "cache")))
    plain = build_datasets(tiny_config(**base, image_cache="off"))
    assert isinstance(cached.train.dataset, CachedImageDataset)  # type: ignore[attr-defined]
    assert type(plain.train.dataset) is ImageFileDataset  # type: ignore[attr-defined]
    assert _same(_items(cached.train, seeds=True), _items(plain.train, seeds=True))
    assert _same(_items(cached.val), _items(plain.val))
    test = build_split(tiny_config(**base, image_cache=str(tmp_path / "cache")), "test")
    assert isinstance(test, CachedImageDataset) and _same(_items(test), _items(plain.test))
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")) == [
        ".json", ".json", ".lock", ".lock", ".npy", ".npy"]  # train and test, nothing half-written


def test_a_batch_read_at_once_draws_the_crop_boxes_the_decoded_read_draws(tmp_path: Path) -> None:
    # The cache reads a batch's pixels in one go; with several crop boxes an image, the random
    # picks must still be those of the plain dataset, item by item.
    samples = READERS["cub"](fx.write_cub(tmp_path / "data", per_class=4)).train
    boxes = tuple((float(k), float(k), 40.0 + k, 40.0 + k) for k in range(5))
    samples = [dataclasses.replace(s, crops=boxes, crops_frame=(64.0, 64.0)) for s in samples]
    path = ensure_cache(samples, 16, tmp_path / "c", "cub-train")
    assert path is not None
    cached = _items(CachedImageDataset(path, samples, 16, random_crop_box=True), seeds=True)
    plain = _items(ImageFileDataset(samples, 16, random_crop_box=True), seeds=True)
    assert _same(cached, plain)
    assert len({tuple(item[2].tolist()) for item in cached}) > 1  # the picks differ between items


def test_a_cache_is_built_once_by_one_of_many_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = READERS["cub"](fx.write_cub(tmp_path / "data")).train
    decoded: list[Path] = []
    real = cache._decode
    monkeypatch.setattr(cache, "_decode", lambda path, size: decoded.append(path) or real(path, size))
    paths: list[Path | None] = []
    threads = [threading.Thread(target=lambda: paths.append(ensure_cache(samples, 16, tmp_path / "c", "cub-train")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1 and paths[0] is not None
    assert sorted(decoded) == sorted(s.path for s in samples)  # each image decoded once


def test_a_changed_image_or_size_makes_a_new_cache(tmp_path: Path) -> None:
    samples = READERS["cub"](fx.write_cub(tmp_path / "data")).train
    first = cache_name(samples, 16, "cub-train")
    assert cache_name(samples, 16, "cub-train") == first
    assert cache_name(samples, 24, "cub-train") != first
    fx.write_image(samples[0].path, seed=999, size=(41, 30))
    assert cache_name(samples, 16, "cub-train") != first


def test_a_build_that_dies_leaves_nothing_a_trial_would_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = READERS["cub"](fx.write_cub(tmp_path / "data")).train
    real = cache._decode

    def dies(path: Path, size: int) -> Any:
        if path == samples[3].path:
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(cache, "_decode", dies)
    with pytest.raises(KeyboardInterrupt):
        ensure_cache(samples, 16, tmp_path / "c", "cub-train")
    assert sorted(p.suffix for p in (tmp_path / "c").iterdir()) == [".lock"]
    monkeypatch.setattr(cache, "_decode", real)
    path = ensure_cache(samples, 16, tmp_path / "c", "cub-train")
    assert path is not None
    ds = CachedImageDataset(path, samples, 16)
    assert _same(_items(ds), _items(ImageFileDataset(samples, 16)))


def test_without_room_on_disk_the_images_are_read_from_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fx.write_cub(tmp_path / "data")
    monkeypatch.setattr(cache, "SPARE_BYTES", 1 << 60)
    splits = build_datasets(tiny_config(dataset="cub", data_dir=str(tmp_path / "data"), val_fraction=0.5,
                                        image_cache=str(tmp_path / "c")))
    assert type(splits.train.dataset) is ImageFileDataset  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert "GiB free" in err and "not enough room" in err


def test_a_cached_dataset_pickles_without_its_images(tmp_path: Path) -> None:
    samples = READERS["cub"](fx.write_cub(tmp_path / "data", per_class=20)).train
    path = ensure_cache(samples, 64, tmp_path / "c", "cub-train")
    assert path is not None
    ds = CachedImageDataset(path, samples, 64)
    before = _items(ds)  # maps the file in this process
    blob = pickle.dumps(ds)
    assert len(blob) < path.stat().st_size / 4
    assert _same(_items(pickle.loads(blob)), before)
