"""Train-step throughput and peak memory of RRA and of the global-only model, same backbone.

Each configuration runs in a fresh process (peak memory is per process): it builds the model,
runs a few warm-up steps, then times `--steps` SGD steps on random data. On the CPU, memory is
the process's peak resident set size (ru_maxrss) and its growth over the resident size before
the first step; on CUDA, torch.cuda.max_memory_allocated. Writes
benchmarks/results/throughput.json.

    python -m benchmarks.throughput [--device cpu] [--steps 10] [--batch 16]
    python -m benchmarks.throughput --device cuda --paper --amp none bf16 fp16 --channels-last both

`--paper` measures only the paper's configuration (VGG-19 with the 1024-channel add-on, 448/224,
T = 10, LSTM 512 x 2, batch 32); `--amp` and `--channels-last` add those axes (fp16 uses a
GradScaler, as a trial does).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

# (backbone, image size, patch size): CPU-sized settings; the paper's VGG-19 at 448 is for GPUs.
CPU_CASES = [("tiny", 64, 64), ("resnet18", 112, 112), ("resnet50", 112, 112)]
GPU_CASES = [*CPU_CASES, ("vgg19", 448, 224)]
PAPER_CASE = [("vgg19", 448, 224)]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(case: dict[str, Any], queue: Any) -> None:
    import torch

    from trainables.loop import Batch, train_step
    from trainables.model import RRAConfig, build_model

    torch.set_num_threads(case["threads"]) if case["threads"] else None
    device = torch.device(case["device"])
    cfg = RRAConfig(num_classes=200, backbone=case["backbone"], local_stream=case["local_stream"],
                    patch_size=case["patch"], recursion_steps=case["steps_T"], lstm_hidden=512,
                    add_on=case["backbone"] == "vgg19", refine=case["refine"])
    fmt = torch.channels_last if case.get("channels_last") else torch.contiguous_format
    model = build_model(cfg).to(device).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(case["batch"], 3, case["image"], case["image"], device=device).contiguous(memory_format=fmt)
    batch = Batch(x, torch.randint(0, 200, (case["batch"],), device=device), None)
    amp = case.get("amp", "none")
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def step() -> None:  # the training loop's own step (trainables.loop.train_step)
        train_step(model, opt, batch, amp, 1.0, scaler)

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


def _in_process(case: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(case, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or queue.empty():
        return {"error": f"the measuring process exited with code {proc.exitcode}"}
    result: dict[str, Any] = queue.get()
    return result


def run(device: str, steps: int, batch: int, threads: int, paper: bool = False,
        amps: tuple[str, ...] = ("none",), channels_last: tuple[bool, ...] = (False,)) -> list[dict[str, Any]]:
    """Measures every case in its own process; returns one row per case."""
    rows = []
    cases = PAPER_CASE if paper else GPU_CASES if device.startswith("cuda") else CPU_CASES
    models: list[tuple[str, bool, str]] = [("global_only", False, "repeat"), ("rra_repeat", True, "repeat")]
    if not paper:
        models.append(("rra_zoom", True, "zoom"))
    steps_T = 10 if paper else 4
    for backbone, image, patch in cases:
        for model, local, refine in models:
            for amp in amps:
                for cl in channels_last:
                    case = {"backbone": backbone, "image": image, "patch": patch, "local_stream": local,
                            "refine": refine, "steps_T": steps_T, "batch": batch, "steps": steps,
                            "device": device, "threads": threads, "amp": amp, "channels_last": cl}
                    row = {"backbone": backbone, "model": model, "image_size": image, "patch_size": patch,
                           "recursion_steps": steps_T, "batch": batch, "amp": amp, "channels_last": cl,
                           **_in_process(case)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--paper", action="store_true", help="only the paper configuration (batch: --batch)")
    parser.add_argument("--amp", nargs="+", default=["none"], choices=["none", "bf16", "fp16"])
    parser.add_argument("--channels-last", choices=["off", "on", "both"], default="off")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput.json"))
    args = parser.parse_args()
    cl = {"off": (False,), "on": (True,), "both": (False, True)}[args.channels_last]
    rows = run(args.device, args.steps, args.batch, args.threads, args.paper, tuple(args.amp), cl)
    report = {
        "command": "python -m benchmarks.throughput " + " ".join(sys.argv[1:]),
        "machine": machine(gpu=args.device.startswith("cuda")),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
