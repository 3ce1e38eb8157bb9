"""How many training epochs each search method spends before it finds a good configuration.

Methods, each over several sampler seeds on the same synthetic data (benchmarks/spaces/
efficiency.yaml, real trainable, real local Ray):

- random: random search, every trial to the full budget (no early stopping), 14 trials;
- stock: Optuna TPE through Ray's stock OptunaSearch, with ASHA (ASHA-stopped trials reach
  Optuna as COMPLETE with their early values), 42 trials;
- ours: Optuna TPE through this project's searcher, with ASHA (stopped trials PRUNED with their
  per-epoch values, only full-budget trials COMPLETE), 42 trials.

A configuration counts as found when a trial that ran to the full budget ends within
`--tolerance` (1 point) of the best full-budget validation accuracy any run found. Epochs are
counted over all trials, in the order they were trained; a run that never finds one is
reported with all its epochs and `found: false`.

    python -m benchmarks.search_efficiency [--seeds 3]

Writes benchmarks/results/search_efficiency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.study_utilisation import trial_rows
from study.cli import run_study
from study.options import StudyOptions

SPACE = Path(__file__).resolve().parent / "spaces" / "efficiency.yaml"
# method: (searcher, scheduler, sampled trials). ASHA spends about a third of the epochs per
# trial that running every trial to the end does, so the ASHA methods get three times the
# trials: every method then spends a similar number of epochs in all.
METHODS = {"random": ("random", "fifo", 14), "stock": ("optuna-stock", "asha", 42), "ours": ("optuna", "asha", 42)}


def timeline(folder: Path, max_epochs: int) -> list[tuple[int, float | None]]:
    """(epochs spent so far, full-budget value or None) for every epoch trained, in time order."""
    rows = sorted((r for rows in trial_rows(folder) for r in rows), key=lambda r: r["timestamp"])
    out = []
    for spent, row in enumerate(rows, 1):
        out.append((spent, row["val_acc"] if row["epoch"] >= max_epochs else None))
    return out


def epochs_to(line: list[tuple[int, float | None]], target: float) -> tuple[int, bool]:
    """Epochs spent until a full-budget value reaches the target (or all, when none does)."""
    for spent, value in line:
        if value is not None and value >= target:
            return spent, True
    return (line[-1][0] if line else 0), False


def run(seeds: int, tolerance: float, cpus: int) -> dict[str, Any]:
    """Runs every method for every seed, then scores them against the best value found."""
    work = Path(tempfile.mkdtemp(prefix="eff-"))
    lines: dict[str, list[list[tuple[int, float | None]]]] = {m: [] for m in METHODS}
    try:
        for seed in range(seeds):
            for method, (searcher, scheduler, samples) in METHODS.items():
                opts = StudyOptions(space=str(SPACE), name=f"{method}-{seed}", out=str(work / "runs"), seed=seed,
                                    num_cpus=cpus, baselines=False, evaluate_test=False, verbose=0, report=False,
                                    searcher=searcher, policy=scheduler, num_samples=samples,
                                    tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
                summary = run_study(opts)
                line = timeline(Path(summary["tune_path"]), summary["max_epochs"])
                lines[method].append(line)
                best = max((v for _, v in line if v is not None), default=None)
                print(f"seed {seed} {method}: {line[-1][0]} epochs, best full-budget val_acc {best}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best_found = max(v for runs in lines.values() for line in runs for _, v in line if v is not None)
    target = best_found - tolerance
    results: dict[str, Any] = {}
    for method, runs in lines.items():
        scored = [epochs_to(line, target) for line in runs]
        results[method] = {
            "epochs_to_target": [e for e, _ in scored],
            "found": [f for _, f in scored],
            "total_epochs": [line[-1][0] for line in runs],
            "best_full_budget_val_acc": [max((v for _, v in line if v is not None), default=None) for line in runs],
            "median_epochs_to_target": statistics.median(e for e, _ in scored),
        }
    ratio = results["ours"]["median_epochs_to_target"] / results["random"]["median_epochs_to_target"]
    return {"best_found": best_found, "target": target, "tolerance": tolerance, "methods": results,
            "ours_over_random_median_epochs": round(ratio, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_efficiency.json"))
    args = parser.parse_args()
    report = run(args.seeds, args.tolerance, args.cpus)
    report["command"] = f"python -m benchmarks.search_efficiency --seeds {args.seeds}"
    report["space"] = str(SPACE.relative_to(Path.cwd())) if SPACE.is_relative_to(Path.cwd()) else str(SPACE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({m: r["median_epochs_to_target"] for m, r in report["methods"].items()}))


if __name__ == "__main__":
    main()
