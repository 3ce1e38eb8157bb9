"""CPU utilisation and per-trial overhead of a study on this machine.

Runs `python -m study.run --space SPACE` (in this process, through `run_study`), once with Ray
actor reuse and once without, and reads every trial's per-epoch results from Tune's folder:

- compute: the seconds a trial spends training and validating (sum of epoch_seconds and
  val_seconds over its epochs) times its CPUs;
- utilisation = total compute / (Tune's wall time x CPUs), Tune's wall time running from the
  first trial's start to the last trial's end; `command_utilisation` divides by the whole
  command's wall time instead (Ray start-up, validation, the final test and MLflow included);
- per-trial overhead = (Tune's wall time x concurrent slots - total compute) / trials: the
  slot time each trial costs beyond its own training (actor start, imports, data, model
  build, Tune's bookkeeping, idle slots);
- setup: the part of that overhead inside the trainable (its first iteration's time minus
  that epoch's training and validation).

    python -m benchmarks.study_utilisation [--space ablation] [--cpus 2]

Writes benchmarks/results/study_utilisation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from study.cli import run_study
from study.options import StudyOptions


def trial_rows(folder: Path) -> list[list[dict[str, Any]]]:
    """Every trial's result rows, as the trials reported them (study.results.reports)."""
    from study.results import reports

    return list(reports(folder).values())


def measure(trials: list[list[dict[str, Any]]], cpus: int, cpus_per_trial: float) -> dict[str, Any]:
    """Utilisation and overhead figures of one study's trials."""
    compute = sum((r["epoch_seconds"] + r["val_seconds"]) * cpus_per_trial for rows in trials for r in rows)
    starts = [rows[0]["timestamp"] - rows[0]["time_this_iter_s"] for rows in trials]
    ends = [rows[-1]["timestamp"] for rows in trials]
    wall = max(ends) - min(starts)
    slots = cpus / cpus_per_trial
    setup = [rows[0]["time_this_iter_s"] - rows[0]["epoch_seconds"] - rows[0]["val_seconds"] for rows in trials]
    return {
        "trials": len(trials),
        "epochs": sum(len(rows) for rows in trials),
        "compute_seconds": round(compute, 1),
        "tune_wall_seconds": round(wall, 1),
        "utilisation": round(compute / (wall * cpus), 3),
        "per_trial_overhead_seconds": round((wall * slots - compute / cpus_per_trial) / len(trials), 2),
        "mean_setup_seconds_in_trainable": round(sum(setup) / len(setup), 2),
    }


def run(space: str, cpus: int, reuse: bool, work: Path) -> dict[str, Any]:
    """Runs one study and measures it."""
    name = f"util-{'reuse' if reuse else 'fresh'}"
    opts = StudyOptions(space=space, name=name, out=str(work / "runs"), num_cpus=cpus, reuse_actors=reuse,
                        tracking_uri=f"sqlite:///{work / 'mlflow.db'}", verbose=0, report=False)
    start = time.perf_counter()
    summary = run_study(opts)
    command_wall = time.perf_counter() - start
    figures = measure(trial_rows(Path(summary["tune_path"])), cpus, opts.cpus_per_trial)
    figures["command_wall_seconds"] = round(command_wall, 1)
    figures["command_utilisation"] = round(figures["compute_seconds"] / (command_wall * cpus), 3)
    figures["reuse_actors"] = reuse
    figures["counts"] = summary["counts"]
    best = summary["best"] or {}
    baseline = summary["baselines"][0] if summary["baselines"] else {}
    figures["best"] = {k: best.get(k) for k in ("name", "val_acc", "test_acc")}
    figures["baseline"] = {k: baseline.get(k) for k in ("name", "val_acc", "test_acc")}
    print(json.dumps(figures), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="ablation")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/study_utilisation.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="util-"))
    try:
        runs = [run(args.space, args.cpus, reuse, work) for reuse in (True, False)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"command": f"python -m benchmarks.study_utilisation --space {args.space} --cpus {args.cpus}",
              "space": args.space, "cpus": args.cpus, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
