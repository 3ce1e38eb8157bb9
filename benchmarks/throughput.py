"""Train-step throughput and peak memory of RRA and of the global-only model, same backbone.

Each configuration runs in a fresh process (peak memory is per process): it builds the model,
runs a few warm-up steps, then times `--steps` SGD steps on random data. On the CPU, memory is
the process's peak resident set size (ru_maxrss) and its growth over the resident size before
the first step; on CUDA, torch.cuda.max_memory_allocated. Writes
benchmarks/results/throughput.json.

    python -m benchmarks.throughput [--device cpu] [--steps 10] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path
from typing import Any

# (backbone, image size, patch size): CPU-sized settings; the paper's VGG-19 at 448 is for GPUs.
CPU_CASES = [("tiny", 64, 64), ("resnet18", 112, 112), ("resnet50", 112, 112)]
GPU_CASES = [*CPU_CASES, ("vgg19", 448, 224)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(case: dict[str, Any], queue: Any) -> None:
    import torch

    from trainables.loop import rra_loss
    from trainables.model import RRAConfig, build_model

    torch.set_num_threads(case["threads"]) if case["threads"] else None
    device = torch.device(case["device"])
    cfg = RRAConfig(num_classes=200, backbone=case["backbone"], local_stream=case["local_stream"],
                    patch_size=case["patch"], recursion_steps=case["steps_T"], lstm_hidden=512,
                    add_on=case["backbone"] == "vgg19", refine=case["refine"])
    model = build_model(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(case["batch"], 3, case["image"], case["image"], device=device)
    y = torch.randint(0, 200, (case["batch"],), device=device)

    def step() -> None:
        out = model(x)
        loss = rra_loss(out, y, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rss_before = _rss_mb()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(case["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "images_per_second": round(case["batch"] * case["steps"] / seconds, 1),
        "seconds_per_step": round(seconds / case["steps"], 4),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    else:
        result["peak_rss_mb"] = round(_rss_mb(), 1)
        result["rss_growth_mb"] = round(_rss_mb() - rss_before, 1)
    queue.put(result)


def run(device: str, steps: int, batch: int, threads: int) -> list[dict[str, Any]]:
    """Measures every case in its own process; returns one row per (backbone, model)."""
    ctx = mp.get_context("spawn")
    rows = []
    cases = GPU_CASES if device.startswith("cuda") else CPU_CASES
    for backbone, image, patch in cases:
        for model, local, refine in (("global_only", False, "repeat"), ("rra_repeat", True, "repeat"),
                                     ("rra_zoom", True, "zoom")):
            case = {"backbone": backbone, "image": image, "patch": patch, "local_stream": local, "refine": refine,
                    "steps_T": 4, "batch": batch, "steps": steps, "device": device, "threads": threads}
            queue = ctx.Queue()
            proc = ctx.Process(target=_measure, args=(case, queue))
            proc.start()
            result = queue.get()
            proc.join()
            row = {"backbone": backbone, "model": model, "image_size": image, "patch_size": patch,
                   "recursion_steps": 4, "batch": batch, **result}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput.json"))
    args = parser.parse_args()
    rows = run(args.device, args.steps, args.batch, args.threads)
    report = {
        "command": f"python -m benchmarks.throughput --device {args.device} --steps {args.steps} --batch {args.batch}",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": mp.cpu_count()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
