"""What looking again costs: the paper configuration's inference cost at every number of
recursion steps T, for `refine: repeat` (the paper's code: one look, the LSTM reads it T
times) and `refine: zoom` (this project's variant: every step re-crops and runs the local
backbone again).

    python -m benchmarks.inference_cost [--device cpu|cuda] [--steps 1 2 ... 10] [--out FILE]

Per (refine, T): FLOPs an image (trainables.cost: PyTorch's FLOP counter with the fused LSTM
and the crops), parameters, and the median latency of one image after warm-up (at most
`--repeats` timed passes, fewer once `--budget-s` is spent: VGG-19 at 448 px on a laptop CPU);
on CUDA also a batch of `--batch` per image and the peak memory. Writes
benchmarks/results/inference_cost.json (cpu) or inference_cost_cuda.json; `make gpu-check`
runs it on the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

RESULTS = Path("benchmarks/results")


def measure_paper(refine: str, steps: int, device: str, batch: int, repeats: int, budget_s: float,
                  amp: str) -> dict[str, Any]:
    """One (refine, T) point of the paper configuration (200 classes, 448 / 224 px)."""
    from contextlib import nullcontext

    import torch

    from trainables.cost import measure
    from trainables.model import RRA, paper_config

    cfg = dataclasses.replace(paper_config(200, steps), refine=refine)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = RRA(cfg)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def context() -> Any:
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype) if dtype else nullcontext()

    start = time.perf_counter()
    cost = measure(model, 448, batch, device, repeats=repeats, warmup=1, budget_s=budget_s,
                   channels_last=device.startswith("cuda"), context=context)
    return {"refine": refine, "recursion_steps": steps, **dataclasses.asdict(cost),
            "gflops_per_image": round(cost.flops_per_image / 1e9, 2), "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--refine", nargs="+", choices=("repeat", "zoom"), default=["repeat", "zoom"])
    parser.add_argument("--batch", type=int, default=None, help="batch for the per-image latency (cpu: 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=20.0)
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if any(s < 1 for s in args.steps):
        parser.error("--steps: every T must be at least 1")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("inference_cost: no CUDA device here", file=sys.stderr)
        sys.exit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (32 if args.device.startswith("cuda") else 1)
    name = "inference_cost_cuda.json" if args.device.startswith("cuda") else "inference_cost.json"
    out = args.out or RESULTS / name
    rows = []
    for refine in args.refine:
        for steps in args.steps:
            row = measure_paper(refine, steps, args.device, batch, args.repeats, args.budget_s, args.amp)
            rows.append(row)
            print(f"{refine} T={steps}: {row['gflops_per_image']} GFLOPs an image, {row['latency_ms_batch1']:.0f} ms "
                  f"for one image ({row['seconds']:.0f} s)", flush=True)
    report = {"command": "python -m benchmarks.inference_cost " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(gpu=args.device.startswith("cuda")), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "amp": args.amp, "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
