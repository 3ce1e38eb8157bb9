from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests import formats_fixtures as fx
from tests.conftest import tiny_config
from trainables.data.augment import hflip, scale_crop
from trainables.data.base import CorruptImageError, ImageFileDataset, Sample, stratified_split
from trainables.data.boxes import BoxFileError, attach_reference_boxes
from trainables.data.build import build_datasets
from trainables.data.formats import READERS, DatasetFormatError, SplitSamples
from trainables.data.synthetic import SyntheticSpec, class_codes, generate
from trainables.loop import prepare_for

SPEC = SyntheticSpec(num_classes=5, images_per_class=6, test_images_per_class=2, image_size=48)


def test_synthetic_data_is_deterministic_per_seed() -> None:
    a, b = generate(SPEC, "train"), generate(SPEC, "train")
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    other = generate(SyntheticSpec(**{**SPEC.__dict__, "seed": 1}), "train")
    assert not np.array_equal(a[0], other[0])
    assert not np.array_equal(a[0][:4], generate(SPEC, "test")[0][:4])


def test_synthetic_class_lives_only_in_the_part_on_the_object() -> None:
    images, labels, boxes = generate(SPEC, "train")
    codes = class_codes(SPEC.num_classes, SPEC.seed)
    assert len({c.tobytes() for c in codes}) == SPEC.num_classes
    assert np.array_equal(codes, codes[:, :, ::-1])  # a horizontal flip keeps the class
    for img, label, box in zip(images, labels, boxes, strict=True):
        x1, y1, x2, y2 = box.astype(int)
        part = img[y1:y2, x1:x2].astype(float).mean(axis=2) / 255
        assert 0.01 < (x2 - x1) * (y2 - y1) / SPEC.image_size**2 < 0.05  # a few per cent
        # the part shows its class's code: dark cells where the code is 0, light where 1
        side = x2 - x1
        cells = part[: side // 3 * 3, : side // 3 * 3].reshape(3, side // 3, 3, side // 3).mean(axis=(1, 3))
        assert np.array_equal(cells > 0.5, codes[label] > 0.5)
    assert np.bincount(labels).tolist() == [SPEC.images_per_class] * SPEC.num_classes


def test_stratified_split_is_deterministic_and_keeps_every_class() -> None:
    labels = [0] * 10 + [1] * 10 + [2] * 3
    train, val = stratified_split(labels, 0.2, seed=3)
    assert (train, val) == stratified_split(labels, 0.2, seed=3)
    assert sorted(train + val) == list(range(23)) and not set(train) & set(val)
    assert {labels[i] for i in val} == {0, 1, 2}


def test_build_datasets_carves_val_from_train_and_keeps_test_apart() -> None:
    cfg = tiny_config()
    splits = build_datasets(cfg)
    per_class = cfg.synthetic_images_per_class
    assert len(splits.train) + len(splits.val) == cfg.synthetic_classes * per_class
    assert len(splits.test) == cfg.synthetic_classes * cfg.synthetic_test_images_per_class
    image, label, box = splits.val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and 0 <= label < 4 and box.shape == (4,)


def test_a_batch_reaches_the_model_normalised_with_the_backbones_statistics() -> None:
    from trainables.backbones import IMAGENET_MEAN, IMAGENET_STD

    cfg = tiny_config()
    val = build_datasets(cfg).val
    raw = torch.stack([val[i][0] for i in range(4)])
    boxes = torch.stack([val[i][2] for i in range(4)])
    images, same_boxes = prepare_for(cfg, torch.device("cpu"), train=False)(raw, boxes)
    # pixel = (raw / 255 - mean) / std, channel by channel
    expected = (raw.float() / 255.0 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert torch.allclose(images, expected) and torch.equal(same_boxes, boxes)
    channels_last = prepare_for(tiny_config(channels_last=True), torch.device("cpu"), train=False)(raw, boxes)[0]
    assert channels_last.is_contiguous(memory_format=torch.channels_last) and torch.equal(channels_last, images)


def test_the_validation_split_follows_the_studys_split_seed_not_the_training_seed() -> None:
    """Confirmation runs vary `seed`: they must train differently and validate on the same images."""
    def val_images(**overrides: object) -> list[int]:
        return list(build_datasets(tiny_config(**overrides)).val.indices)  # type: ignore[attr-defined]

    assert val_images(seed=0) == val_images(seed=5)
    assert val_images(split_seed=0) != val_images(split_seed=1)


def test_flip_and_scale_crop_move_the_box_with_the_image() -> None:
    image = torch.zeros(3, 20, 20)
    image[:, 2:6, 10:18] = 1.0
    images = image.expand(16, 3, 20, 20).clone()
    boxes = torch.tensor([10.0, 2.0, 18.0, 6.0]).expand(16, 4).clone()
    boxes[3] = float("nan")  # an image without a box keeps none
    torch.manual_seed(0)
    flipped, moved = hflip(images, boxes)
    assert 0 < sum(not torch.equal(f, image) for f in flipped) < 16  # some flipped, some not
    cropped, moved_too = scale_crop(images, boxes, min_scale=0.9)
    for out, box in ((flipped, moved), (cropped, moved_too)):
        assert torch.isnan(box[3]).all()
        for i in (0, 1, 2, *range(4, 16)):
            x1, y1, x2, y2 = box[i].tolist()
            inside = out[i, 0, int(y1) + 1 : int(y2) - 1, int(x1) + 1 : int(x2) - 1]
            assert inside.numel() > 0 and inside.min() > 0.5
    assert torch.equal(flipped.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))


@pytest.mark.parametrize(
    ("name", "writer", "n_classes", "n_train", "n_test"),
    [
        ("cub", fx.write_cub, 3, 6, 6),
        ("stanford_cars", fx.write_stanford_cars, 2, 4, 4),
        ("fgvc_aircraft", fx.write_fgvc_aircraft, 3, 6, 6),
        ("stanford_dogs", fx.write_stanford_dogs, 2, 4, 4),
        ("imagefolder", fx.write_image_folder, 2, 6, 6),
    ],
)
def test_every_format_reader_on_its_fixture(tmp_path: Path, name: str, writer, n_classes: int, n_train: int,
                                             n_test: int) -> None:
    root = writer(tmp_path)
    samples: SplitSamples = READERS[name](root)
    assert len(samples.classes) == n_classes
    assert (len(samples.train), len(samples.test)) == (n_train, n_test)
    assert all(s.path.is_file() for s in samples.train + samples.test)
    labels = [s.label for s in samples.train]
    assert set(labels) == set(range(n_classes)) and labels == sorted(labels)  # ImageFolder order
    if name != "imagefolder":
        assert all(s.box is not None for s in samples.train)
    ds = ImageFileDataset(samples.train, 24)
    image, label, box = ds[0]
    assert image.shape == (3, 24, 24) and label == samples.train[0].label
    if name != "imagefolder":
        assert torch.isfinite(box).all() and (box >= 0).all() and (box <= 24).all()


def test_cub_trains_end_to_end_through_build_datasets(tmp_path: Path) -> None:
    fx.write_cub(tmp_path)
    splits = build_datasets(tiny_config(dataset="cub", data_dir=str(tmp_path), val_fraction=0.5))
    assert splits.num_classes == 3 and len(splits.train) == 3 and len(splits.val) == 3


def test_image_folder_accepts_val_for_test(tmp_path: Path) -> None:
    fx.write_image_folder(tmp_path, test_name="val")
    assert len(READERS["imagefolder"](tmp_path).test) == 6


def test_missing_dataset_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"images\.txt"):
        READERS["cub"](tmp_path)
    with pytest.raises(DatasetFormatError, match="train"):
        READERS["imagefolder"](tmp_path)
    with pytest.raises(DatasetFormatError, match="Stanford Cars"):
        READERS["stanford_cars"](tmp_path)
    with pytest.raises(DatasetFormatError, match="FGVC-Aircraft"):
        READERS["fgvc_aircraft"](tmp_path)


def test_corrupt_image_error_names_the_file(tmp_path: Path) -> None:
    fx.write_image_folder(tmp_path)
    bad = tmp_path / "train" / "cat" / "0.png"
    bad.write_bytes(b"not a png")
    ds = ImageFileDataset(READERS["imagefolder"](tmp_path).train, 16)
    with pytest.raises(CorruptImageError, match=str(bad)):
        ds[0]


def _reference_boxes(samples: list[Sample], k: int = 3) -> np.ndarray:
    """Boxes as the reference's .npy: [row0, row1, col0, col1, label] in the 448 frame,
    centred on each sample's object box."""
    out = np.zeros((len(samples), k, 5), dtype=np.float32)
    for i, s in enumerate(samples):
        assert s.box is not None
        # fixture images are 40 x 30 px
        cx, cy = (s.box[0] + s.box[2]) / 2 * 448 / 40, (s.box[1] + s.box[3]) / 2 * 448 / 30
        for j in range(k):
            out[i, j] = [cy - 20 - j, cy + 20, cx - 20, cx + 20 + j, s.label]
    return out


def test_reference_boxes_load_and_become_crop_boxes(tmp_path: Path) -> None:
    samples = READERS["cub"](fx.write_cub(tmp_path)).train
    arr = _reference_boxes(samples)
    np.save(tmp_path / "boxes.npy", arr)
    attached = attach_reference_boxes(samples, tmp_path / "boxes.npy")
    assert len(attached[0].crops) == 3
    first = attached[0].crops[0]
    assert first == (arr[0, 0, 2], arr[0, 0, 0], arr[0, 0, 3], arr[0, 0, 1])
    ds = ImageFileDataset(attached, 448)
    assert torch.allclose(ds[0][2], torch.tensor(first))  # evaluation: always the first box


def test_reference_box_mismatches_are_caught(tmp_path: Path) -> None:
    samples = READERS["cub"](fx.write_cub(tmp_path, per_class=6)).train
    arr = _reference_boxes(samples)
    path = tmp_path / "boxes.npy"
    np.save(path, arr[:-1])
    with pytest.raises(BoxFileError, match="rows for"):
        attach_reference_boxes(samples, path)
    wrong_label = arr.copy()
    wrong_label[2, :, 4] = 9
    np.save(path, wrong_label)
    with pytest.raises(BoxFileError, match="row 2: label"):
        attach_reference_boxes(samples, path)
    # Same labels, rows rotated within each class (as a box file for another file order would
    # be): the label check passes, the object check does not.
    shuffled = arr.copy()
    for label in range(3):
        idx = np.flatnonzero(arr[:, 0, 4] == label)
        shuffled[idx] = arr[np.roll(idx, 1)]
    np.save(path, shuffled)
    with pytest.raises(BoxFileError, match=r"does not match the images"):
        attach_reference_boxes(samples, path)
    np.save(path, np.zeros((len(samples), 3)))
    with pytest.raises(BoxFileError, match="expected shape"):
        attach_reference_boxes(samples, path)


def test_verify_image_accepts_images_and_names_a_corrupt_file(tmp_path: Path) -> None:
    from PIL import Image

    from trainables.data.base import CorruptImageError, verify_image

    good, bad, truncated = tmp_path / "good.jpg", tmp_path / "bad.png", tmp_path / "cut.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(good)
    bad.write_bytes(b"not an image at all")
    Image.new("RGB", (16, 16)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:20])
    verify_image(good)
    for path in (bad, truncated):
        with pytest.raises(CorruptImageError, match=path.name):
            verify_image(path)
