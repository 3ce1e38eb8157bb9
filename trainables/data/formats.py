"""Readers of the on-disk formats of fine-grained datasets a user brings.

Each reader takes the folder the user names and returns the train and test samples in
torchvision ImageFolder order (sorted class folder, then sorted file name), which is the order
the reference code's box files follow. A missing file or folder raises DatasetFormatError with
one line that says what was expected where.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainables import names
from trainables.data.base import Box, Sample
from trainables.errors import TrialError
from trainables.names import Registry

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class DatasetFormatError(TrialError, ValueError):
    """A dataset folder that does not hold the expected files."""


@dataclass(frozen=True)
class SplitSamples:
    """The train and test samples of a dataset, and its class names (index = label)."""

    train: list[Sample]
    test: list[Sample]
    classes: list[str]


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetFormatError(f"{what} not found: expected {path}")
    return path


def _order(samples: list[Sample], root: Path) -> list[Sample]:
    return sorted(samples, key=lambda s: s.path.relative_to(root).as_posix())


def _box4(values: list[float]) -> Box:
    if len(values) != 4:
        raise DatasetFormatError(f"expected a box of 4 numbers, got {values}")
    return (values[0], values[1], values[2], values[3])


def _read_table(path: Path) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) < 2:
                raise DatasetFormatError(f"{path}:{n}: expected '<id> <value...>', got {line!r}")
            rows[parts[0]] = parts[1:]
    return rows


def read_cub(root: Path) -> SplitSamples:
    """CUB-200-2011: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt,
    bounding_boxes.txt (x y w h) and images/. `root` is CUB_200_2011/ or the folder above it."""
    if not (root / "images.txt").exists() and (root / "CUB_200_2011").is_dir():
        root = root / "CUB_200_2011"
    names = _read_table(_need(root / "images.txt", "CUB images.txt"))
    labels = _read_table(_need(root / "image_class_labels.txt", "CUB image_class_labels.txt"))
    is_train = _read_table(_need(root / "train_test_split.txt", "CUB train_test_split.txt"))
    classes = [v[0] for v in _read_table(_need(root / "classes.txt", "CUB classes.txt")).values()]
    box_file = root / "bounding_boxes.txt"
    boxes = _read_table(box_file) if box_file.exists() else {}
    images = _need(root / "images", "CUB images folder")
    train: list[Sample] = []
    test: list[Sample] = []
    for image_id, (name,) in names.items():
        try:
            label = int(labels[image_id][0]) - 1
            split = is_train[image_id][0]
        except KeyError:
            raise DatasetFormatError(f"CUB image id {image_id} has no label or split") from None
        box = None
        if image_id in boxes:
            x, y, w, h = map(float, boxes[image_id])
            box = (x, y, x + w, y + h)
        (train if split == "1" else test).append(Sample(images / name, label, box))
    return SplitSamples(_order(train, images), _order(test, images), classes)


def read_stanford_cars(root: Path) -> SplitSamples:
    """Stanford Cars in torchvision's layout (stanford_cars/devkit/cars_meta.mat and
    cars_train_annos.mat, cars_train/, cars_test/, cars_test_annos_withlabels.mat), read from
    the devkit's files: class (1-based), fname and box (bbox_x1..bbox_y2) per image."""
    import scipy.io

    base = root / "stanford_cars" if (root / "stanford_cars").is_dir() else root
    meta = _need(base / "devkit" / "cars_meta.mat", "Stanford Cars devkit/cars_meta.mat")
    classes = [str(c) for c in scipy.io.loadmat(str(meta), squeeze_me=True)["class_names"].reshape(-1)]
    out: dict[str, list[Sample]] = {}
    for split, folder, mat in (("train", "cars_train", base / "devkit" / "cars_train_annos.mat"),
                               ("test", "cars_test", base / "cars_test_annos_withlabels.mat")):
        annos = scipy.io.loadmat(str(_need(mat, f"Stanford Cars {mat.name}")), squeeze_me=True)["annotations"]
        images = _need(base / folder, f"Stanford Cars {folder}/")
        out[split] = [Sample(images / str(a["fname"]), int(a["class"]) - 1,
                             _box4([float(a[k]) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")]))
                      for a in annos.reshape(-1)]
    key = lambda s: (s.label, s.path.name)  # noqa: E731
    return SplitSamples(sorted(out["train"], key=key), sorted(out["test"], key=key), classes)


def read_fgvc_aircraft(root: Path) -> SplitSamples:
    """FGVC-Aircraft (variants) in torchvision's layout (fgvc-aircraft-2013b/data/...), read from
    its text files: variants.txt, images_variant_{trainval,test}.txt ('<image id> <variant>'),
    images_box.txt; trainval is the training split."""
    top = root.parent if root.name == "fgvc-aircraft-2013b" else root
    data = top / "fgvc-aircraft-2013b" / "data"
    classes = [line.strip() for line in _need(data / "variants.txt", "FGVC-Aircraft variants.txt").read_text()
               .splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(classes)}
    box_file = data / "images_box.txt"
    boxes = {k: _box4([float(x) for x in v]) for k, v in _read_table(box_file).items()} if box_file.exists() else {}
    out: dict[str, list[Sample]] = {}
    for split in ("trainval", "test"):
        listing = _need(data / f"images_variant_{split}.txt", f"FGVC-Aircraft images_variant_{split}.txt")
        samples = []
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip():
                continue
            image_id, _, variant = line.strip().partition(" ")
            if variant not in index:
                raise DatasetFormatError(f"{listing}:{n}: unknown variant {variant!r}")
            samples.append(Sample(data / "images" / f"{image_id}.jpg", index[variant], boxes.get(image_id)))
        out[split] = samples
    key = lambda s: (s.label, s.path.name)  # noqa: E731
    return SplitSamples(sorted(out["trainval"], key=key), sorted(out["test"], key=key), classes)


def _dogs_box(annotations: Path, rel: str) -> tuple[float, float, float, float] | None:
    xml = annotations / Path(rel).with_suffix("")
    if not xml.is_file():
        return None
    node = ET.parse(xml).getroot().find("object/bndbox")
    if node is None:
        return None
    return _box4([float(node.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")])


def read_stanford_dogs(root: Path) -> SplitSamples:
    """Stanford Dogs: Images/<wnid>-<Breed>/*.jpg with train_list.mat / test_list.mat
    (file_list, labels 1-based); boxes from Annotation/ when it is there."""
    import scipy.io

    images = _need(root / "Images", "Stanford Dogs Images folder")
    classes = sorted(p.name for p in images.iterdir() if p.is_dir())
    annotations = root / "Annotation"
    out: dict[str, list[Sample]] = {}
    for split in ("train", "test"):
        mat_path = _need(root / f"{split}_list.mat", f"Stanford Dogs {split}_list.mat")
        mat = scipy.io.loadmat(str(mat_path), squeeze_me=True)
        files = [str(f) for f in mat["file_list"].reshape(-1)]
        labels = [int(v) - 1 for v in mat["labels"].reshape(-1)]
        out[split] = _order(
            [Sample(images / f, y, _dogs_box(annotations, f)) for f, y in zip(files, labels, strict=True)],
            images,
        )
    return SplitSamples(out["train"], out["test"], classes)


def _folder(split_dir: Path, classes: list[str]) -> list[Sample]:
    samples = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if folder.is_dir():
            samples += [Sample(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return samples


def read_image_folder(root: Path) -> SplitSamples:
    """Any folder with train/ and test/ (or val/), each of class sub-folders of images."""
    train_dir = _need(root / "train", "image folder train/ split")
    test_dir = root / "test" if (root / "test").is_dir() else root / "val"
    _need(test_dir, "image folder test/ (or val/) split")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DatasetFormatError(f"{train_dir} holds {len(classes)} class folders; need at least 2")
    train = _folder(train_dir, classes)
    if not train:
        raise DatasetFormatError(f"no images found under {train_dir}/<class>/")
    return SplitSamples(train, _folder(test_dir, classes), classes)


READERS: Registry[Callable[[Path], SplitSamples]] = Registry("dataset format", names.DATASET_FORMATS)
READERS.register("cub", read_cub)
READERS.register("stanford_cars", read_stanford_cars)
READERS.register("fgvc_aircraft", read_fgvc_aircraft)
READERS.register("stanford_dogs", read_stanford_dogs)
READERS.register("imagefolder", read_image_folder)
