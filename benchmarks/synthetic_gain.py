"""RRA against the global-only baseline on the synthetic dataset (the project's reason to exist).

Trains the embedded default configuration (tiny backbone, 64 px, 15 epochs) with and without
the local stream, over several seeds, and writes each run's best validation accuracy and the
test accuracy of that best checkpoint to benchmarks/results/synthetic_gain.json.

    python -m benchmarks.synthetic_gain [--seeds 3] [--epochs 15]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.train import train

VARIANTS: dict[str, dict[str, Any]] = {
    "global_only": {"local_stream": False},
    "rra_T4_s0.4": {"recursion_steps": 4, "crop_scale": 0.4},
    "rra_T2_s0.3": {"recursion_steps": 2, "crop_scale": 0.3},
}


def run(seeds: int, epochs: int, out: Path) -> dict[str, Any]:
    """Trains every variant for every seed; returns the JSON-ready summary."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for seed in range(seeds):
        for name, overrides in VARIANTS.items():
            cfg = TrialConfig.from_dict({"epochs": epochs, "seed": seed, "synthetic_seed": seed, **overrides})
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                result = train(cfg, out / f"{name}_seed{seed}", resume=False)
            result["seconds"] = time.perf_counter() - start
            runs[name].append(result)
            print(f"seed {seed} {name}: val {result['val_acc']:.3f} test {result['test_acc']:.3f} "
                  f"({result['seconds']:.0f}s)", flush=True)
    summary = {
        name: {
            f"{key}_{stat}": round(fn([r[key] for r in results]), 4)
            for key in ("val_acc", "test_acc", "seconds")
            for stat, fn in (("mean", statistics.mean), ("std", statistics.pstdev))
        }
        for name, results in runs.items()
    }
    return {
        "command": f"python -m benchmarks.synthetic_gain --seeds {seeds} --epochs {epochs}",
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
        "config": {k: v for k, v in TrialConfig().to_dict().items() if k not in ("data_dir",)},
        "variants": VARIANTS,
        "summary": summary,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synthetic_gain.json"))
    args = parser.parse_args()
    report = run(args.seeds, args.epochs, Path("benchmarks/out/synthetic_gain"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
