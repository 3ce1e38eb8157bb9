"""Datasets of a trial: the synthetic default and the fine-grained formats users bring.

`build_datasets` returns train / val / test datasets: val is carved from the training set
(stratified, seeded by `split_seed`, not by the training `seed`: trials of one study that
differ only in seed are validated on the same images) and is what model selection uses; test
is for a final evaluation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from trainables import names
from trainables.backbones import normalisation
from trainables.config import TrialConfig
from trainables.data.augment import get_augmentation
from trainables.data.base import ArrayDataset, ImageFileDataset, Sample, stratified_split
from trainables.data.boxes import attach_reference_boxes
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


def _synthetic(cfg: TrialConfig) -> tuple[list[Dataset], list[int], int]:
    spec = cfg.synthetic_spec()
    mean, std = normalisation(cfg.backbone, cfg.weights)
    train_arrays, test_arrays = generate(spec, "train"), generate(spec, "test")
    augmented = ArrayDataset(*train_arrays, mean, std, get_augmentation(cfg.augment))
    plain = ArrayDataset(*train_arrays, mean, std)
    test = ArrayDataset(*test_arrays, mean, std)
    return [augmented, plain, test], plain.labels, spec.num_classes


def _read(cfg: TrialConfig) -> SplitSamples:
    assert cfg.data_dir is not None
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(f"data_dir {root} is not a folder")
    samples = READERS[cfg.dataset](root)
    if not samples.train:
        raise DatasetFormatError(f"no training images found in {root} ({cfg.dataset} format)")
    return samples


def _on_disk(cfg: TrialConfig) -> tuple[list[Dataset], list[int], int]:
    samples = _read(cfg)
    train: list[Sample] = samples.train
    test: list[Sample] = samples.test
    if cfg.boxes_file:
        train = attach_reference_boxes(train, Path(cfg.boxes_file))
    if cfg.test_boxes_file:
        test = attach_reference_boxes(test, Path(cfg.test_boxes_file))
    mean, std = normalisation(cfg.backbone, cfg.weights)
    size = cfg.image_size
    augmented = ImageFileDataset(train, size, mean, std, get_augmentation(cfg.augment), random_crop_box=True)
    plain = ImageFileDataset(train, size, mean, std)
    return [augmented, plain, ImageFileDataset(test, size, mean, std)], plain.labels, len(samples.classes)


def build_datasets(cfg: TrialConfig) -> DataSplits:
    """Builds the train (augmented), val and test datasets of a trial config.

    Raises:
        DatasetFormatError: unknown dataset name, or a folder that does not hold the format.
    """
    if cfg.dataset not in DATASETS:
        raise DatasetFormatError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    build = _synthetic if cfg.dataset == "synthetic" else _on_disk
    (augmented, plain, test), labels, num_classes = build(cfg)
    train_idx, val_idx = stratified_split(labels, cfg.val_fraction, cfg.split_seed)
    return DataSplits(Subset(augmented, train_idx), Subset(plain, val_idx), test, num_classes)
