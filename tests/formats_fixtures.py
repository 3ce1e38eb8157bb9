"""Writers of tiny datasets in the exact on-disk formats of the real ones (no real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

CLASSES = ["001.Red_bird", "002.Blue_bird", "003.Green_bird"]


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def write_cub(root: Path, per_class: int = 4) -> Path:
    """CUB_200_2011 with images.txt, labels, split (every other image is train), boxes."""
    base = root / "CUB_200_2011"
    lines: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes")}
    image_id = 0
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            image_id += 1
            rel = f"{name}/{name.split('.')[1]}_{i:04d}.jpg"
            write_image(base / "images" / rel, image_id)
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {int(i % 2 == 0)}")
            x = 2 if (i // 2) % 2 == 0 else 24  # objects alternate between left and right
            lines["boxes"].append(f"{image_id} {x}.0 6.0 14.0 15.0")
    (base / "images.txt").write_text("\n".join(lines["images"]) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(lines["labels"]) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(lines["split"]) + "\n")
    (base / "bounding_boxes.txt").write_text("\n".join(lines["boxes"]) + "\n")
    (base / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CLASSES)))
    return root


def _annotations(files: list[str], labels: list[int]) -> np.ndarray:
    dtype = [(k, "O") for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    rows = [(2.0, 3.0, 30.0 + i, 25.0, label + 1, f) for i, (f, label) in enumerate(zip(files, labels, strict=True))]
    return np.array([rows], dtype=dtype)  # a 1 x N struct array, as in the devkit


def write_stanford_cars(root: Path, per_class: int = 2) -> Path:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    for split, folder, mat in (("train", "cars_train", base / "devkit" / "cars_train_annos.mat"),
                               ("test", "cars_test", base / "cars_test_annos_withlabels.mat")):
        files, labels = [], []
        for c in range(len(names)):
            for i in range(per_class):
                fname = f"{split}{c}{i:04d}.jpg"
                write_image(base / folder / fname, hash(fname) % 1000)
                files.append(fname)
                labels.append(c)
        scipy.io.savemat(mat, {"annotations": _annotations(files, labels)})
    return root


def write_fgvc_aircraft(root: Path, per_class: int = 2) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A320", "Tu-154"]
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    boxes = []
    n = 1000000
    for split in ("trainval", "test"):
        lines = []
        for v in variants:
            for _ in range(per_class):
                n += 1
                write_image(data / "images" / f"{n:07d}.jpg", n)
                lines.append(f"{n:07d} {v}")
                boxes.append(f"{n:07d} 1 2 30 20")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    (data / "images_box.txt").write_text("\n".join(boxes) + "\n")
    return root


def write_stanford_dogs(root: Path, per_class: int = 2) -> Path:
    breeds = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    for split in ("train", "test"):
        files, labels = [], []
        for c, breed in enumerate(breeds):
            for i in range(per_class):
                rel = f"{breed}/{breed.split('-')[0]}_{split}{i}.jpg"
                write_image(root / "Images" / rel, c * 10 + i + (split == "test") * 100)
                files.append(rel)
                labels.append(c + 1)
                xml = root / "Annotation" / Path(rel).with_suffix("")
                xml.parent.mkdir(parents=True, exist_ok=True)
                xml.write_text("<annotation><object><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax>"
                               "<ymax>25</ymax></bndbox></object></annotation>")
        cell = np.empty((len(files), 1), dtype=object)
        for k, f in enumerate(files):
            cell[k, 0] = np.array([f])
        scipy.io.savemat(root / f"{split}_list.mat",
                         {"file_list": cell, "labels": np.array(labels, dtype=np.float64)[:, None]})
    return root


def write_image_folder(root: Path, test_name: str = "test", per_class: int = 3) -> Path:
    for split in ("train", test_name):
        for c in ("cat", "dog"):
            for i in range(per_class):
                write_image(root / split / c / f"{i}.png", i + len(c) + len(split))
    return root
