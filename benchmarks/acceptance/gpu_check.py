"""One command a GPU machine runs to exercise the trial's CUDA paths and record their figures.

    python -m benchmarks.acceptance.gpu_check [--out benchmarks/results/gpu_check] [--quick]
    make gpu-check

Each step runs in its own process with its own time limit, and a step that fails is recorded
and the next one runs, so a short lease gives every figure it can:

1. the train step's throughput and peak memory at the paper configuration (VGG-19 with the
   add-on, 448/224, T = 10, batch 32): fp32 / bf16 / fp16, channels_last off and on;
2. the paper configuration's inference cost per T, repeat and zoom, in bf16
   (benchmarks.inference_cost: FLOPs, latency of one image and of a batch of 32, peak memory);
3. the real training loop (`trainables.loop.fit`) for one epoch at the paper's model on
   synthetic 448 px images, in fp16 and bf16 (does fp16 survive; what does an epoch cost);
4. the trial tests on CUDA (`tests/unit/trainables` and `tests/integration/trainables`, where
   `device: auto` means the GPU);
5. the on-disk input pipeline: images per second delivered at 448 px from a generated
   CUB-layout set of 500x375 JPEGs, PIL every epoch and the decoded-image cache cold and warm,
   at 0, 4, 8 and 15 workers.

6. a smoke study (the ablation space, 2 samples, 2 epochs) with `--gpus-per-trial 0.5`: two
   trials share the GPU (skipped, and said so, where Ray, Optuna or MLflow is not installed).

Results: one JSON file per step under --out, and `summary.json` beside them. Without CUDA it says
so in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

HERE = Path(__file__).resolve().parents[2]


def _device() -> str:
    """The probes run on CUDA; on a machine without it (a dry run of this script) on the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _step(name: str, argv: list[str], limit: float, log: Path) -> dict[str, Any]:
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            proc = subprocess.run(argv, cwd=HERE, stdout=out, stderr=subprocess.STDOUT, timeout=limit,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = round(time.perf_counter() - start, 1)
    tail = log.read_text(errors="replace").splitlines()[-15:]
    print(f"[gpu-check] {name}: exit {rc} in {seconds} s", flush=True)
    return {"step": name, "exit": rc, "seconds": seconds, "log_tail": tail}


def loop_probe(out: Path) -> None:
    """One epoch of the real loop at the paper's model (random weights, synthetic 448 px)."""
    import torch

    from trainables.config import TrialConfig
    from trainables.loop import fit

    rows = []
    for amp in ("fp16", "bf16"):
        cfg = TrialConfig.from_dict({
            "backbone": "vgg19", "add_on": True, "image_size": 448, "patch_size": 224, "recursion_steps": 10,
            "lstm_hidden": 512, "batch_size": 32, "epochs": 1, "amp": amp, "channels_last": True,
            "device": _device(), "num_workers": 4, "synthetic_classes": 8, "synthetic_images_per_class": 24,
            "synthetic_test_images_per_class": 2, "val_fraction": 0.25, "lr": 1e-3})
        if _device() == "cuda":
            torch.cuda.reset_peak_memory_stats()
        row: dict[str, Any] = {"amp": amp}
        start = time.perf_counter()
        try:
            epochs: list[dict[str, float]] = []
            fit(cfg, lambda m, _s, into=epochs: into.append(m))  # type: ignore[misc]
            row.update({k: round(v, 4) for k, v in epochs[-1].items()})
        except Exception as exc:  # the figure is whether it raises
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["wall_seconds"] = round(time.perf_counter() - start, 1)
        if _device() == "cuda":
            row["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    (out / "loop_probe.json").write_text(json.dumps({"machine": machine(gpu=True), "rows": rows}, indent=2) + "\n")


def pipeline_probe(out: Path, images: int) -> None:
    """Images per second that the on-disk pipeline delivers at 448 px (benchmarks.input_pipeline:
    PIL every epoch, the decoded-image cache cold and warm) at 0, 4, 8 and 15 workers."""
    import tempfile

    from benchmarks.input_pipeline import pipeline_rows, write_cub_like

    with tempfile.TemporaryDirectory() as tmp:
        root = write_cub_like(Path(tmp) / "data", classes=20, per_class=images // 10)
        sizes = [p.stat().st_size for p in (root / "CUB_200_2011" / "images").rglob("*.jpg")]
        rows = pipeline_rows(root, [0, 4, 8, 15], 448, _device(), Path(tmp) / "cache")
    report = {"machine": machine(gpu=True), "jpeg_bytes_mean": round(sum(sizes) / len(sizes)),
              "source": "500x375 JPEG", "image_size": 448, "rows": rows}
    (out / "pipeline_probe.json").write_text(json.dumps(report, indent=2) + "\n")


def smoke_study(out: Path, py: str) -> dict[str, Any]:
    """A small ablation study with two trials sharing the GPU (--gpus-per-trial 0.5), in a
    temporary folder; skipped, and said so, where Ray is not installed."""
    import importlib.util
    import tempfile

    missing = [m for m in ("ray", "optuna", "mlflow") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"[gpu-check] smoke_study: skipped ({', '.join(missing)} not installed here)", flush=True)
        return {"step": "smoke_study", "exit": "skipped", "reason": f"not installed: {', '.join(missing)}"}
    with tempfile.TemporaryDirectory() as tmp:
        return _step("smoke_study", [py, "-m", "study.run", "--space", "ablation", "--num-samples", "2",
                                     "--max-epochs", "2", "--gpus-per-trial", "0.5", "--concurrency", "2",
                                     "--out", tmp], 300, out / "smoke_study.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check"))
    parser.add_argument("--quick", action="store_true", help="fewer timed steps and images")
    parser.add_argument("--step", choices=["loop", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "loop":
        return loop_probe(args.out)
    if args.step == "pipeline":
        return pipeline_probe(args.out, args.images)

    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; run it on a machine with a GPU", file=sys.stderr)
        sys.exit(2)
    py = sys.executable
    steps = 5 if args.quick else 10
    images = 400 if args.quick else 1000
    plan = [  # the figures first: a lease that ends early still has them
        ("throughput", [py, "-m", "benchmarks.throughput", "--device", "cuda", "--paper", "--batch", "32",
                        "--steps", str(steps), "--amp", "none", "bf16", "fp16", "--channels-last", "both",
                        "--out", str(args.out / "throughput_cuda.json")], 240),
        ("inference_cost", [py, "-m", "benchmarks.inference_cost", "--device", "cuda", "--amp", "bf16",
                            "--out", str(args.out / "inference_cost_cuda.json")], 180),
        ("loop_probe", [py, "-m", "benchmarks.acceptance.gpu_check", "--out", str(args.out), "--step", "loop"], 150),
        ("cuda_tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                        "tests/unit/trainables", "tests/integration/trainables"], 180),
        ("pipeline_probe", [py, "-m", "benchmarks.acceptance.gpu_check", "--out", str(args.out), "--step", "pipeline",
                            "--images", str(images)], 150),
    ]
    results = [_step(name, argv, limit, args.out / f"{name}.log") for name, argv, limit in plan]
    results.append(smoke_study(args.out, py))
    summary = {"command": "python -m benchmarks.acceptance.gpu_check " + " ".join(sys.argv[1:]),
               "machine": machine(gpu=True), "steps": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [r["step"] for r in results if r["exit"] not in (0, "skipped")]
    print(f"[gpu-check] done; failed steps: {', '.join(failed) or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
