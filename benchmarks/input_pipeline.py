"""Images per second that the on-disk input pipeline delivers to the training loop.

A generated dataset in CUB's layout (smooth 500x375 JPEGs at quality 90, about CUB's file
sizes), read the way a trial reads it (`build_datasets`, the trial's DataLoader, flip_crop
augmentation, 448 px), one epoch of the training split per row:

- `pil`: every image decoded and resized in every epoch (image_cache: off);
- `cache_cold`: the decoded-image cache built (with the same workers), then the epoch;
- `cache_warm`: the next epoch from the cache (the page cache holds the file).

Delivered means the batch as the DataLoader hands it over (uint8 since the cache came) and moved
to the device; the training loop then converts, augments and normalises it on the device, whose
rate on this CPU is measured apart (`prepare`: what a CPU-only trial pays on top).

Rows at 0, 1 and 2 DataLoader workers (`workers`: the trial's num_workers; `loader_workers`: those
its loader starts, none for the cache, whose batches are read in the trial's process, since
handing them over from a worker costs more than reading them); and, for scale, the paper-size train step's images per
second on this CPU (VGG-19 with the add-on, 448/224, T = 10, batch 2). The GPU rate the
pipeline must beat is the one `make gpu-check` measured (benchmarks/results/gpu_check).

The loaders with workers start them from the fork server (trainables.data.base.worker_context),
started first and timed apart (`fork_server_start`): a process pays it once, with its first such
loader; the rows are timed without it.

    python -m benchmarks.input_pipeline [--images 3000] [--workers 0 1 2] [--out FILE]

Writes benchmarks/results/input_pipeline.json (with `lscpu`'s model and flags).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

GPU_RESULTS = Path("benchmarks/results/gpu_check/throughput_cuda.json")


def write_cub_like(root: Path, classes: int, per_class: int) -> Path:
    """A CUB_200_2011 layout of smooth 500x375 JPEGs (quality 90, about CUB's file sizes)."""
    import numpy as np
    from PIL import Image

    base = root / "CUB_200_2011"
    rng = np.random.default_rng(0)
    lines: dict[str, list[str]] = {k: [] for k in ("images", "labels", "split", "boxes")}
    image_id = 0
    for c in range(classes):
        name = f"{c + 1:03d}.Bird_{c}"
        for i in range(per_class):
            image_id += 1
            rel = f"{name}/Bird_{c}_{i:04d}.jpg"
            (base / "images" / name).mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            big = np.asarray(Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC)).astype(np.int16)
            big = np.clip(big + rng.integers(-12, 12, big.shape), 0, 255).astype(np.uint8)
            Image.fromarray(big).save(base / "images" / rel, quality=90)
            lines["images"].append(f"{image_id} {rel}")
            lines["labels"].append(f"{image_id} {c + 1}")
            lines["split"].append(f"{image_id} {int(i % 2 == 0)}")
            lines["boxes"].append(f"{image_id} 100.0 80.0 250.0 200.0")
    for key, fname in (("images", "images.txt"), ("labels", "image_class_labels.txt"),
                       ("split", "train_test_split.txt"), ("boxes", "bounding_boxes.txt")):
        (base / fname).write_text("\n".join(lines[key]) + "\n")
    (base / "classes.txt").write_text("".join(f"{c + 1} {c + 1:03d}.Bird_{c}\n" for c in range(classes)))
    return root


def _epoch(loader: Any, device: str) -> tuple[int, float]:
    """Iterates one epoch, moving each batch to `device`; (images, seconds)."""
    import torch

    start, seen = time.perf_counter(), 0
    for images, _labels, _boxes in loader:
        images.to(device, non_blocking=True)
        seen += images.shape[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return seen, time.perf_counter() - start


def start_fork_server() -> float:
    """Starts the fork server the loaders' workers come from (trainables.data.base.worker_context)
    with a one-item loader; its seconds. A process pays them with its first loader that has
    workers (benchmarks/diagnostics/worker_start.py compares them with forked workers), so the rows below,
    which all run in this process, are timed without them."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from trainables.data.base import worker_settings

    start = time.perf_counter()
    list(DataLoader(TensorDataset(torch.zeros(1)), num_workers=1, **worker_settings(1)))
    return time.perf_counter() - start


def pipeline_rows(root: Path, workers: list[int], image_size: int, device: str, cache_root: Path) -> list[dict]:
    """One row per (workers, way of reading): images per second over one training epoch."""
    import torch

    from trainables.config import TrialConfig
    from trainables.data.build import build_datasets
    from trainables.loop import make_loader

    rows = []
    if any(n > 0 for n in workers):  # started once a process, as a trial's first loader does
        rows.append({"way": "fork_server_start", "seconds": round(start_fork_server(), 2)})
        print(json.dumps(rows[-1]), flush=True)

    def row(way: str, n: int, images: int, seconds: float, **extra: Any) -> None:
        rows.append({"workers": n, "way": way, "images": images, "seconds": round(seconds, 2),
                     "images_per_second": round(images / seconds, 1), **extra})
        print(json.dumps(rows[-1]), flush=True)

    for n in workers:
        base = {"dataset": "cub", "data_dir": str(root), "image_size": image_size, "patch_size": image_size // 2,
                "batch_size": 32, "num_workers": n, "device": device, "val_fraction": 0.1, "augment": "flip_crop"}
        cfg = TrialConfig.from_dict({**base, "image_cache": "off"})
        data = build_datasets(cfg)
        loader = make_loader(data.train, cfg, torch.device(device), True, torch.Generator().manual_seed(0))
        row("pil", n, *_epoch(loader, device), loader_workers=loader.num_workers)
        folder = cache_root / f"workers{n}"  # a cold cache for each worker count
        cfg = TrialConfig.from_dict({**base, "image_cache": str(folder)})
        start = time.perf_counter()
        data = build_datasets(cfg)
        built = time.perf_counter() - start
        loader = make_loader(data.train, cfg, torch.device(device), True, torch.Generator().manual_seed(0),
                             persistent=True)
        images, seconds = _epoch(loader, device)
        row("cache_cold", n, images, built + seconds, build_seconds=round(built, 2),
            cache_bytes=sum(p.stat().st_size for p in folder.glob("*.npy")), loader_workers=loader.num_workers)
        row("cache_warm", n, *_epoch(loader, device), loader_workers=loader.num_workers)
    return rows


def prepare_rate(image_size: int, device: str, batches: int = 10) -> dict[str, Any]:
    """Images per second of the training loop's own share: a uint8 batch of 32 converted,
    augmented (flip_crop) and normalised on `device` (trainables.data.augment.Prepare)."""
    import torch

    from trainables.config import TrialConfig
    from trainables.loop import prepare_for

    cfg = TrialConfig.from_dict({"image_size": image_size, "augment": "flip_crop", "channels_last": True})
    prepare = prepare_for(cfg, torch.device(device), train=True)
    images = torch.randint(0, 256, (32, 3, image_size, image_size), dtype=torch.uint8)
    boxes = torch.tensor([100.0, 80.0, 250.0, 200.0]).expand(32, 4)
    prepare(images, boxes)
    start = time.perf_counter()
    for _ in range(batches):
        prepare(images, boxes)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"device": device, "images_per_second": round(32 * batches / seconds, 1),
            "threads": torch.get_num_threads()}


def paper_step_cpu(threads: int) -> dict[str, Any]:
    """The paper-size train step on this CPU (throughput benchmark's measurement)."""
    from benchmarks.throughput import _in_process

    case = {"backbone": "vgg19", "image": 448, "patch": 224, "local_stream": True, "refine": "repeat",
            "steps_T": 10, "batch": 2, "steps": 2, "device": "cpu", "threads": threads}
    return {**case, **_in_process(case)}


def gpu_rate() -> dict[str, Any] | None:
    """The fastest paper-size RRA train step `make gpu-check` measured, if it ran."""
    if not GPU_RESULTS.is_file():
        return None
    report = json.loads(GPU_RESULTS.read_text())
    rows = [r for r in report["rows"] if r.get("model") == "rra_repeat" and "images_per_second" in r]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["images_per_second"])
    return {"images_per_second": best["images_per_second"], "amp": best["amp"],
            "channels_last": best["channels_last"], "gpu": report["machine"].get("gpu", {}).get("name"),
            "source": str(GPU_RESULTS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="images in the generated set (half of them train)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-model", action="store_true", help="skip the paper-size train step on the CPU")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/input_pipeline.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = write_cub_like(Path(tmp) / "data", classes=20, per_class=max(2, args.images // 20))
        jpegs = [p.stat().st_size for p in (root / "CUB_200_2011" / "images").rglob("*.jpg")]
        rows = pipeline_rows(root, args.workers, args.image_size, args.device, Path(tmp) / "cache")
    report: dict[str, Any] = {
        "command": "python -m benchmarks.input_pipeline " + " ".join(sys.argv[1:]),
        "machine": machine(), "images": len(jpegs), "source": "500x375 JPEG, quality 90",
        "jpeg_bytes_mean": round(sum(jpegs) / len(jpegs)),
        "image_size": args.image_size, "augment": "flip_crop", "rows": rows,
        "warm_over_pil": {str(n): round(next(r["images_per_second"] for r in rows
                                             if r.get("workers") == n and r["way"] == "cache_warm")
                                        / next(r["images_per_second"] for r in rows
                                               if r.get("workers") == n and r["way"] == "pil"), 2)
                          for n in args.workers},
        "gpu_rate": gpu_rate(),
        "prepare": prepare_rate(args.image_size, args.device),
    }
    if not args.no_model:
        report["paper_step_cpu"] = paper_step_cpu(threads=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("warm_over_pil", "gpu_rate")}))


if __name__ == "__main__":
    main()
