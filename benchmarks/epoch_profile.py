"""Where an epoch of the embedded default goes, on this CPU and on a narrower one emulated here.

    python -m benchmarks.epoch_profile [--epochs 2] [--out benchmarks/results/epoch_profile.json]

Trains the ablation space's paper point (T = 10, crop 0.25) as a trial of `python -m study.run
--space ablation` does (same constants, one thread), in a fresh process per arm, and times its
epochs (training and validation, after a first epoch that warms up), for each arm:

- the ISA: this machine's own, and AVX2 only (`DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`:
  oneDNN's and ATen's kernels for a CPU without AVX-512), the two kinds of CPU this project runs on;
- the memory format (channels_last or not) and whether the convolutions go through oneDNN
  (`torch.backends.mkldnn`);

and, on the default arm, the operators that take the time (torch.profiler, self CPU time). Each
arm runs `--rounds` times, interleaved, so that the ratios between arms are measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
ISAS: dict[str, dict[str, str]] = {"native": {}, "avx2": {"DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
ARMS: dict[str, dict[str, Any]] = {
    "default": {},
    "no_channels_last": {"channels_last": False},
    "no_mkldnn": {"mkldnn": False},
    "no_channels_last_no_mkldnn": {"channels_last": False, "mkldnn": False},
}
PAPER_POINT = {"recursion_steps": 10, "crop_scale": 0.25, "attention_temperature": 1.0}


def _trial_config(overrides: dict[str, Any]) -> Any:
    from study.spaces import load_space
    from trainables.config import TrialConfig

    values = load_space("ablation").trial_config(PAPER_POINT)
    values.update({k: v for k, v in overrides.items() if k != "mkldnn"})
    return TrialConfig.from_dict(values)


def child(arm: str, epochs: int, profile: bool) -> dict[str, Any]:
    """Runs the arm's trial for `epochs` epochs in this process; its epoch times (and profile)."""
    import torch

    from trainables.loop import run_epoch, setup_trial

    overrides = ARMS[arm]
    torch.backends.mkldnn.enabled = overrides.get("mkldnn", True)
    trial = setup_trial(_trial_config(overrides))
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        run_epoch(trial)
        seconds.append(time.perf_counter() - start)
    out: dict[str, Any] = {"epoch_s": seconds, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        with profiler(activities=[ProfilerActivity.CPU]) as prof:
            run_epoch(trial)
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        out["top_ops"] = [{"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 3)} for e in rows]
    return out


def _run(isa: str, arm: str, epochs: int, profile: bool) -> dict[str, Any]:
    env = {**os.environ, **ISAS[isa]}
    done = subprocess.run([sys.executable, "-m", "benchmarks.epoch_profile", "--child", arm, "--epochs", str(epochs)]
                          + (["--profile"] if profile else []), cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(f"error: the {isa} {arm} run failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs an arm's run trains (the first is left out)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every arm, interleaved")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=sorted(ARMS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first warms up)")
    if args.child:
        print(json.dumps(child(args.child, args.epochs, args.profile)))
        return
    runs: dict[str, dict[str, list[float]]] = {isa: {arm: [] for arm in args.arms} for isa in ISAS}
    details: dict[str, Any] = {}
    for r in range(args.rounds):
        for isa in ISAS:
            for arm in args.arms:
                result = _run(isa, arm, args.epochs, profile=(r == 0 and arm == "default"))
                runs[isa][arm].append(statistics.median(result["epoch_s"][1:]))
                details.setdefault(isa, {}).setdefault(arm, result)
                print(f"{isa:6s} {arm:28s} {runs[isa][arm][-1]:6.2f} s/epoch ({result['cpu_capability']})", flush=True)
    table = {isa: {arm: round(statistics.median(v), 2) for arm, v in arms.items()} for isa, arms in runs.items()}
    print(json.dumps(table, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine(), "command": "python -m benchmarks.epoch_profile "
                                        + " ".join(argv or sys.argv[1:]), "point": PAPER_POINT, "epoch_s": table,
                                        "runs": runs, "details": details}, indent=1) + "\n")


if __name__ == "__main__":
    main()
