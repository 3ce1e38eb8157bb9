"""Datasets of a trial: the synthetic default and the fine-grained formats users bring.

`build_datasets` returns train / val / test datasets: val is carved from the training set
(stratified, seeded by `split_seed`, not by the training `seed`: trials of one study that
differ only in seed are validated on the same images) and is what model selection uses; test
is for a final evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch.utils.data import Dataset, Subset

from trainables import names
from trainables.config import TrialConfig
from trainables.data.base import ArrayDataset, ImageFileDataset, Sample, stratified_split
from trainables.data.boxes import attach_reference_boxes
from trainables.data.cache import CachedImageDataset, cache_folder, ensure_cache
from trainables.data.formats import READERS, DatasetFormatError, SplitSamples
from trainables.data.synthetic import generate

DATASETS = names.DATASETS


@dataclass
class DataSplits:
    """The three splits of a trial and the number of classes."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int


# The datasets a trial is made of: the training images (drawing one of several crop boxes at
# random, where a box file gives several) and the plain ones (val is carved from these), and the
# test images. Augmentation is the training loop's (trainables.data.augment.Prepare).
Part = Literal["train", "plain", "test", "test_cache"]  # test_cache: the test split from the cache


def _synthetic(cfg: TrialConfig, parts: tuple[Part, ...]) -> tuple[dict[Part, Dataset], int]:
    spec = cfg.synthetic_spec()
    made: dict[Part, Dataset] = {}
    if "train" in parts or "plain" in parts:
        made["train"] = made["plain"] = ArrayDataset(*generate(spec, "train"))
    if "test" in parts:
        made["test"] = ArrayDataset(*generate(spec, "test"))
    return made, spec.num_classes


def _read(cfg: TrialConfig) -> SplitSamples:
    assert cfg.data_dir is not None
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(f"data_dir {root} is not a folder")
    samples = READERS[cfg.dataset](root)
    if not samples.train:
        raise DatasetFormatError(f"no training images found in {root} ({cfg.dataset} format)")
    return samples


def _on_disk(cfg: TrialConfig, parts: tuple[Part, ...]) -> tuple[dict[Part, Dataset], int]:
    samples = _read(cfg)
    made: dict[Part, Dataset] = {}
    if "train" in parts or "plain" in parts:
        train: list[Sample] = samples.train
        if cfg.boxes_file:
            train = attach_reference_boxes(train, Path(cfg.boxes_file))
        cache = _cache(cfg, "train", train)
        made["train"] = _images(cfg, train, cache, random_crop_box=True)
        made["plain"] = _images(cfg, train, cache)
    if "test" in parts:
        test: list[Sample] = samples.test
        if cfg.test_boxes_file:
            test = attach_reference_boxes(test, Path(cfg.test_boxes_file))
        # every trial holds a test split, but only evaluations read it: they build its cache
        made["test"] = _images(cfg, test, _cache(cfg, "test", test) if "test_cache" in parts else None)
    return made, len(samples.classes)


def _cache(cfg: TrialConfig, split: str, samples: list[Sample]) -> Path | None:
    """The node's decoded-image cache of a split (built if missing); None when it is off or the
    disk has no room for it."""
    if cfg.image_cache == "off":
        return None
    return ensure_cache(samples, cfg.image_size, cache_folder(cfg.image_cache), f"{cfg.dataset}-{split}",
                        cfg.num_workers)


def _images(cfg: TrialConfig, samples: list[Sample], cache: Path | None, random_crop_box: bool = False) -> Dataset:
    if cache is not None:
        return CachedImageDataset(cache, samples, cfg.image_size, random_crop_box)
    return ImageFileDataset(samples, cfg.image_size, random_crop_box)


def _build(cfg: TrialConfig, parts: tuple[Part, ...]) -> tuple[dict[Part, Dataset], int]:
    if cfg.dataset not in DATASETS:
        raise DatasetFormatError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    return (_synthetic if cfg.dataset == "synthetic" else _on_disk)(cfg, parts)


def _split(cfg: TrialConfig, plain: Dataset) -> tuple[list[int], list[int]]:
    return stratified_split(plain.labels, cfg.val_fraction, cfg.split_seed)  # type: ignore[attr-defined]


def build_datasets(cfg: TrialConfig) -> DataSplits:
    """Builds the train, val and test datasets of a trial config (augmentation is the training
    loop's).

    Raises:
        DatasetFormatError: unknown dataset name, or a folder that does not hold the format.
    """
    made, num_classes = _build(cfg, ("train", "plain", "test"))
    train_idx, val_idx = _split(cfg, made["plain"])
    return DataSplits(Subset(made["train"], train_idx), Subset(made["plain"], val_idx), made["test"], num_classes)


def build_split(cfg: TrialConfig, split: str) -> Dataset:
    """One evaluation split alone, "val" (the same images as `build_datasets`' val) or "test":
    what evaluating a checkpoint needs, without the other splits (the synthetic test set is
    generated without the training set; on disk, only the split's box file is read).

    Raises:
        DatasetFormatError: as `build_datasets`.
    """
    if split == "test":
        return _build(cfg, ("test", "test_cache"))[0]["test"]
    if split != "val":
        raise ValueError(f"split: expected 'val' or 'test', got {split!r}")
    plain = _build(cfg, ("plain",))[0]["plain"]
    return Subset(plain, _split(cfg, plain)[1])
