"""How many epochs each search method spends before it recommends a good RRA configuration,
replayed on the RRA curve table (benchmarks/data/rra_curves.parquet, `python -m benchmarks.curves`).

Every method runs the real study (`study.cli.run_study`: its searcher, its policy's scheduler,
Tune's storage, MLflow) with the replay trainable (`--trainable replay --replay-table`): a
trial reports the recorded curve of the table's configuration nearest to its own (one of that
configuration's seeds; see trainables.curve_table), at `--epoch-s` seconds an epoch. Methods:

- random_fifo: random search, every trial to max_t;
- random_asha: random search, ASHA;
- stock_asha: Optuna TPE through Ray's stock OptunaSearch (stopped trials reach it as COMPLETE), ASHA;
- tpe_asha: the project's TPE (stopped trials PRUNED), ASHA;
- tpe_hyperband: the project's TPE, ASHA with Hyperband's brackets drawn uniformly;
- tpe_adaptive: the project's TPE, brackets drawn by measured rank agreement (study.policies.adaptive).

Scoring, at every epoch spent (results in the order they were reported, over the whole study):
the incumbent is the trial that has reached max_t with the best observed final accuracy so far
(what a user would pick); its regret is the table's best true accuracy minus the incumbent's
true accuracy, in points, where a configuration's true accuracy is its mean final validation
accuracy over the table's seeds. Before any trial reaches max_t the regret is the table's worst
(best minus worst configuration). Every method is scored over the same epoch budget
(`--budget`): each study ends when its trials have run that many epochs (`--epoch-budget`).

    python -m benchmarks.search_efficiency [--seeds 20] [--budget 270] [--methods ...] [--work DIR]

Resumable: each (method, seed) study's timeline is saved in DIR (default: a folder under the
system's temporary folder) and not run again. Writes benchmarks/results/search_efficiency.json
and search_efficiency.png (regret against epochs spent: median and quartiles over seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.curves import TABLE
from benchmarks.machine import machine

SPACE = Path(__file__).resolve().parent / "spaces" / "efficiency.yaml"
RESULTS = Path("benchmarks/results")
# method: (searcher, policy)
METHODS = {
    "random_fifo": ("random", "fifo"),
    "random_asha": ("random", "asha"),
    "stock_asha": ("optuna-stock", "asha"),
    "tpe_asha": ("optuna", "asha"),
    "tpe_hyperband": ("optuna", "hyperband"),
    "tpe_adaptive": ("optuna", "adaptive"),
}
TOLERANCE_POINTS = 1.0
LOOSER_POINTS = (3.0, 5.0)  # beside the goal's 1 point: tolerances nearer the table's seed noise


def timeline(tune_path: Path, table: Any, max_epochs: int) -> list[dict[str, Any]]:
    """Every result of a replayed study in the order it was reported: the trial, its epoch, its
    observed value, and its configuration's true accuracy in the table."""
    from study.results import reports
    from trainables.config import TrialConfig, settings

    rows = sorted((r for trial in reports(tune_path).values() for r in trial), key=lambda r: r["wall_time"])
    out, truth = [], {}
    for row in rows:
        trial = row["trial_id"]
        if trial not in truth:
            cfg = TrialConfig.from_dict(settings(row["config"]))
            truth[trial] = table.true_final(table.match(cfg.to_dict(), cfg.seed).config)
        out.append({"trial": trial, "epoch": int(row["epoch"]), "val_acc": float(row["val_acc"]),
                    "true": truth[trial], "full": int(row["epoch"]) >= max_epochs})
    return out


def regret_curve(line: list[dict[str, Any]], best: float, worst: float, budget: int) -> list[float]:
    """Regret in points after each of the first `budget` epochs spent (the last value repeats
    when a study spent fewer)."""
    regret, incumbent, out = 100 * (best - worst), -math.inf, []
    for row in line[:budget]:
        if row["full"] and row["val_acc"] > incumbent:
            incumbent, regret = row["val_acc"], 100 * (best - row["true"])
        out.append(regret)
    return out + [out[-1] if out else 100 * (best - worst)] * (budget - len(out))


def epochs_to(curve: list[float], tolerance: float) -> int | None:
    """The first epoch spent at which the regret is within `tolerance` points (None: never)."""
    return next((i + 1 for i, r in enumerate(curve) if r <= tolerance), None)


def run_one(method: str, seed: int, budget: int, epoch_s: float, table_path: Path, work: Path, cpus: int) -> Path:
    """One replayed study; its timeline saved as work/METHOD-SEED.json."""
    from study.cli import run_study
    from study.options import StudyOptions
    from trainables.curve_table import load

    out = work / f"{method}-{seed}.json"
    if out.is_file():
        return out
    searcher, policy = METHODS[method]
    max_epochs = load(str(table_path)).epochs  # the study runs as long as the table's curves
    runs = Path(tempfile.mkdtemp(prefix=f"{method}-{seed}-", dir=work))
    try:
        opts = StudyOptions(space=str(SPACE), name=f"{method}-{seed}", out=str(runs), seed=seed, num_cpus=cpus,
                            cpus_per_trial=0.25, baselines=False, evaluate_test=False, verbose=0, report=False,
                            searcher=searcher, policy=policy, num_samples=budget, max_epochs=max_epochs,
                            epoch_budget=budget,
                            trainable="replay", replay_epoch_s=epoch_s, replay_table=str(table_path),
                            tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
        start = time.perf_counter()
        summary = run_study(opts)
        wall = time.perf_counter() - start
        line = timeline(Path(summary["tune_path"]), load(str(table_path)), int(summary["max_epochs"]))
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    out.write_text(json.dumps({"method": method, "seed": seed, "wall_s": round(wall, 1), "line": line}))
    return out


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def _median_epochs(reached: list[int | None], budget: int) -> float:
    """The median over seeds of the epochs to a tolerance; a seed that never got there counts as
    past the budget."""
    return statistics.median(e if e is not None else budget + 1 for e in reached)


def score(work: Path, methods: list[str], seeds: int, budget: int, table: Any) -> dict[str, Any]:
    finals = {name: table.true_final(name) for name in table.values}
    sampled = {n: v for n, v in finals.items() if table.values[n]["local_stream"]}
    best, worst = max(sampled.values()), min(sampled.values())
    out: dict[str, Any] = {}
    for method in methods:
        curves, walls, trials = [], [], []
        for seed in range(seeds):
            run = json.loads((work / f"{method}-{seed}.json").read_text())
            curves.append(regret_curve(run["line"], best, worst, budget))
            walls.append(run["wall_s"])
            trials.append(len({r["trial"] for r in run["line"][:budget]}))
        reach = [epochs_to(c, TOLERANCE_POINTS) for c in curves]
        grid = sorted({*range(table.epochs, budget + 1, table.epochs), budget})
        looser = {}
        for points in LOOSER_POINTS:
            got = [epochs_to(c, points) for c in curves]
            looser[f"{points:g}"] = {"median_epochs": _median_epochs(got, budget),
                                     "reached_within_budget": sum(e is not None for e in got)}
        out[method] = {
            "epochs_to_within_1pt": reach,
            "median_epochs_to_within_1pt": _median_epochs(reach, budget),
            "reached_within_budget": sum(e is not None for e in reach),
            "within_looser_points": looser,
            "final_regret_points": [round(c[-1], 2) for c in curves],
            "final_regret_quartiles": [round(v, 2) for v in _quartiles([c[-1] for c in curves])],
            "trials_in_budget_median": statistics.median(trials),
            "study_wall_s_median": statistics.median(walls),
            "anytime": {"epochs": grid, "quartiles": [[round(v, 2) for v in _quartiles([c[e - 1] for c in curves])]
                                                      for e in grid]},
        }
    return {"table_best_true_val_acc": round(best, 4), "table_worst_true_val_acc": round(worst, 4), "methods": out}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, result in report["methods"].items():
        epochs = result["anytime"]["epochs"]
        q = result["anytime"]["quartiles"]
        line, = ax.plot(epochs, [v[1] for v in q], label=method)
        ax.fill_between(epochs, [v[0] for v in q], [v[2] for v in q], color=line.get_color(), alpha=0.12)
    ax.axhline(TOLERANCE_POINTS, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("epochs spent")
    ax.set_ylabel("regret, points of val_acc (median, quartiles)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0)
    ax.set_title(f"Search on the RRA curve table, {report['seeds']} seeds a method")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=270, help="epochs each method is scored over")
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--epoch-s", type=float, default=0.0, help="seconds a replayed epoch lasts")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rra-search-efficiency")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_efficiency.json")
    args = parser.parse_args(argv)
    if not args.table.is_file():
        parser.error(f"no curve table at {args.table}; record one with python -m benchmarks.curves")
    from trainables.curve_table import CurveTableError, load

    try:
        table = load(str(args.table))
    except CurveTableError as err:
        parser.error(str(err))
    if args.seeds < 1 or args.budget < table.epochs:
        parser.error(f"--seeds must be at least 1 and --budget at least one full trial ({table.epochs} epochs)")
    args.work.mkdir(parents=True, exist_ok=True)
    import ray

    from study import execution

    execution.set_ray_env()
    # one local Ray for every study (run_study leaves a Ray it did not start running)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        for seed in range(args.seeds):
            for method in args.methods:
                done = (args.work / f"{method}-{seed}.json").is_file()
                path = run_one(method, seed, args.budget, args.epoch_s, args.table, args.work, args.cpus)
                if not done:
                    run = json.loads(path.read_text())
                    print(f"seed {seed} {method}: {len(run['line'])} epochs in {run['wall_s']:.0f} s", flush=True)
    finally:
        ray.shutdown()
    report = {
        "command": "python -m benchmarks.search_efficiency " + " ".join(sys.argv[1:] if argv is None else argv),
        "table": str(args.table), "table_surrogate": table.held_out(), "seeds": args.seeds, "budget": args.budget,
        "tolerance_points": TOLERANCE_POINTS, "machine": machine(), **score(args.work, args.methods, args.seeds,
                                                                             args.budget, table)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({m: r["median_epochs_to_within_1pt"] for m, r in report["methods"].items()}))


if __name__ == "__main__":
    main()
