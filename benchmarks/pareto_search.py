"""How close each search method's front of accuracy against inference cost comes to the curve
table's true front, at equal epoch budget, replayed in simulated time (study.simulate).

Methods, all with the same budget (`--budget` epochs, the study's `--epoch-budget`), no
baselines and no noise-aware ending (a front is the answer, not one best):

- random_fifo: random search, every trial to max_t;
- random_asha: random search, ASHA on accuracy alone;
- mo_asha: the multi-objective study (`--objectives val_acc:max,cost_flops_per_image:min`):
  Optuna's TPE for several objectives, ASHA's rungs by non-dominated sorting (MO-ASHA);
- random_mo_asha: the same study with random proposals (`--searcher random`), as MO-ASHA was
  published and as Syne Tune runs it: Optuna's multi-objective TPE learns only from trials
  that reached max_t (a pruned trial of a multi-objective study has no values), so this tells
  the rungs' part from the sampler's.

A study's named front is the rule `study.summary.front` gives every multi-objective study: the
trials that reached max_t that no other dominates on their observed accuracy and FLOPs. It is
scored with the table's truth: each named configuration at its true (seed-adjusted mean)
accuracy and its measured FLOPs. The hypervolume (area dominated, accuracy up and cost down)
is taken on axes scaled to [0, 1] over the table's sampled configurations (accuracy linearly,
from the worst true accuracy to the best; FLOPs on a log scale, from the cheapest to the
dearest), with the reference point at (0, 1.1) so the dearest configuration still counts; the
regret is the true front's hypervolume minus the named front's, in percent of the true one.
Over the seeds: interquartile mean with a 95% bootstrap interval, quartiles, and paired
permutation tests of the mean difference on the same seeds with Holm's correction
(benchmarks.search_efficiency.compare).

    python -m benchmarks.pareto_search [--seeds 30] [--budget 270] [--grace-period N] [--table FILE]

`--grace-period` sets the rungs' first epoch (default: the space's, 1); a run with other
settings reuses nothing from the work folder that another setting left.

Writes benchmarks/results/pareto_search.json. The studies search the space the table was
recorded in (`benchmarks.tables.curves record --design cost`: refine, recursion steps, patch size and
crop scale, benchmarks/spaces/cost.yaml). The cost axis is the FLOPs the table recorded
(`cost_*` columns, measured by `benchmarks.tables.curves write` on its machine's CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from benchmarks.search_efficiency import compare, iqm, iqm_interval, open_table, replayed_config, simulated_study
from benchmarks.tables.curves import COST_TABLE

RESULTS = Path("benchmarks/results")
COST = "cost_flops_per_image"
OBJECTIVES = (("val_acc", "max"), (COST, "min"))
# method: (searcher, policy, multi-objective)
METHODS = {"random_fifo": ("random", "fifo", False), "random_asha": ("random", "asha", False),
           "mo_asha": ("optuna", "asha", True), "random_mo_asha": ("random", "asha", True)}
COMPARISONS = (("mo_asha", "random_fifo"), ("mo_asha", "random_asha"), ("random_mo_asha", "random_fifo"),
               ("random_mo_asha", "random_asha"), ("mo_asha", "random_mo_asha"), ("random_asha", "random_fifo"))
REFERENCE_COST = 1.1  # the reference point's scaled cost


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area dominated by `points` (accuracy to maximise, cost to minimise) and bounded by
    `reference` (an accuracy below and a cost above every point that counts)."""
    low, high = reference
    kept = sorted((cost, acc) for acc, cost in points if acc > low and cost < high)
    area, best = 0.0, low
    for i, (cost, acc) in enumerate(kept):
        best = max(best, acc)
        following = kept[i + 1][0] if i + 1 < len(kept) else high
        area += (following - cost) * (best - low)
    return area


class Axes:
    """The table's sampled configurations on [0, 1] axes: true accuracy (worst to best) and log
    FLOPs (cheapest to dearest)."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.names = [n for n, v in table.values.items() if v["local_stream"] and COST in table.costs.get(n, {})]
        truth = [table.true_final(n) for n in self.names]
        costs = [math.log10(table.costs[n][COST]) for n in self.names]
        self.acc_range = (min(truth), max(truth))
        self.cost_range = (min(costs), max(costs))

    def point(self, name: str) -> tuple[float, float]:
        low, high = self.acc_range
        acc = (self.table.true_final(name) - low) / (high - low) if high > low else 1.0
        low, high = self.cost_range
        cost = (math.log10(self.table.costs[name][COST]) - low) / (high - low) if high > low else 0.0
        return acc, cost

    def volume(self, names: list[str]) -> float:
        return hypervolume([self.point(n) for n in names], (0.0, REFERENCE_COST))

    def true_front(self) -> list[str]:
        """The table's configurations that no other dominates on true accuracy and FLOPs."""
        points = {n: self.point(n) for n in self.names}
        return sorted(n for n, (a, c) in points.items()
                      if not any(b >= a and d <= c and (b, d) != (a, c) for b, d in points.values()))


def run_one(method: str, seed: int, budget: int, table_path: Path, work: Path, workers: int,
            grace_period: int | None = None) -> tuple[dict[str, Any], bool]:
    """One simulated study; its named front (the table's configurations) saved as
    work/METHOD-SEED.json, and whether it ran now (a saved one of the same settings is reused)."""
    from study.simulate import rows
    from study.summary import front
    from trainables.curve_table import load

    out = work / f"{method}-{seed}.json"
    settings = {"table": str(table_path), "budget": budget, "grace_period": grace_period, "workers": workers}
    if out.is_file() and (saved := json.loads(out.read_text())).get("settings") == settings:
        return saved, False
    searcher, policy, multi = METHODS[method]
    table = load(str(table_path))
    record, simulated, wall = simulated_study(table_path, work, f"{method}-{seed}", seed, budget, workers,
                                              grace_period=grace_period, searcher=searcher, policy=policy,
                                              finalists=0, objectives=OBJECTIVES if multi else None)
    by_id = {t.trial_id: t for t in simulated.trials}
    configs = [replayed_config(table, by_id[e["trial_id"]].config)
               for e in front(rows(record, simulated.trials), list(OBJECTIVES), [])]
    result = {"method": method, "seed": seed, "settings": settings, "wall_s": round(wall, 1), "front": configs,
              "trials": len(simulated.trials), "epochs": sum(t.epochs for t in simulated.trials)}
    out.write_text(json.dumps(result))
    return result, True


def score(work: Path, methods: list[str], seeds: int, table: Any) -> dict[str, Any]:
    axes = Axes(table)
    truth = axes.true_front()
    best = axes.volume(truth)
    most_accurate = max(truth, key=table.true_final)
    regrets: dict[str, list[float]] = {}
    out: dict[str, Any] = {}
    for method in methods:
        runs = [json.loads((work / f"{method}-{seed}.json").read_text()) for seed in range(seeds)]
        regret = [100 * (best - axes.volume(sorted(set(r["front"])))) / best for r in runs]
        missed = [x for r, x in zip(runs, regret, strict=True) if most_accurate not in r["front"]]
        regrets[method] = regret
        low, high = iqm_interval(regret)
        out[method] = {"hypervolume_regret_percent": [round(r, 2) for r in regret],
                       "iqm": round(iqm(regret), 2), "iqm_interval": [round(low, 2), round(high, 2)],
                       "median": round(statistics.median(regret), 2),
                       "quartiles": [round(q, 2) for q in statistics.quantiles(regret, n=4, method="inclusive")]
                       if len(regret) > 1 else [round(regret[0], 2)] * 3,
                       "front_size_median": statistics.median(len(set(r["front"])) for r in runs),
                       # how often the named front holds each point of the true front, and what a
                       # front that misses the most accurate one costs
                       "studies_holding": {n: sum(n in r["front"] for r in runs) for n in truth},
                       "mean_regret_without_the_best": round(statistics.mean(missed), 2) if missed else None,
                       "trials_median": statistics.median(r["trials"] for r in runs),
                       "study_wall_s_median": statistics.median(r["wall_s"] for r in runs)}
    pairs = [(m, a) for m, a in COMPARISONS if m in regrets and a in regrets]
    return {"true_front": truth, "true_hypervolume": round(best, 4),
            "axes": {"accuracy": [round(v, 4) for v in axes.acc_range],
                     "log10_flops": [round(v, 4) for v in axes.cost_range]},
            "methods": out, "comparisons": compare(regrets, pairs)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--budget", type=int, default=270, help="epochs each study may run")
    parser.add_argument("--grace-period", type=int, help="the rungs' first epoch (default: the space's)")
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS))
    parser.add_argument("--table", type=Path, default=COST_TABLE,
                        help="a table recorded with --design cost (default: benchmarks/data/rra_cost_curves.parquet)")
    parser.add_argument("--workers", type=int, default=8, help="trials at once in a simulated study")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rra-pareto-search")
    parser.add_argument("--out", type=Path, default=RESULTS / "pareto_search.json")
    args = parser.parse_args(argv)
    table = open_table(parser, args.table)
    design = table.metadata.get("plan", {}).get("design", "ablation")
    if design != "cost":
        parser.error(f"{args.table} was recorded with --design {design}, where the cost barely moves: "
                     "give a table recorded with --design cost")
    if not any(COST in c for c in table.costs.values()):
        parser.error(f"{args.table} records no {COST}: write it again with python -m benchmarks.tables.curves write")
    if args.seeds < 2 or args.budget < table.epochs:
        parser.error(f"--seeds must be at least 2 and --budget at least one full trial ({table.epochs} epochs)")
    if args.grace_period is not None and not 1 <= args.grace_period < table.epochs:
        parser.error(f"--grace-period must be an epoch from 1 to {table.epochs - 1} (max_t is {table.epochs})")
    args.work.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        for method in args.methods:
            result, ran = run_one(method, seed, args.budget, args.table, args.work, args.workers, args.grace_period)
            if ran:
                print(f"seed {seed} {method}: front of {len(set(result['front']))} in {result['wall_s']:.1f} s",
                      flush=True)
    report = {"command": "python -m benchmarks.pareto_search " + " ".join(sys.argv[1:] if argv is None else argv),
              "table": str(args.table), "seeds": args.seeds, "budget": args.budget, "workers": args.workers,
              "grace_period": args.grace_period, "holm_family": "the comparisons of this file",
              "objectives": [list(o) for o in OBJECTIVES], "machine": machine(),
              **score(args.work, args.methods, args.seeds, table)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({m: {"iqm": r["iqm"], "interval": r["iqm_interval"]} for m, r in report["methods"].items()}))
    for row in report["comparisons"]:
        print(f"{row['method']} - {row['against']}: {row['mean_difference']:+.2f} % {row['interval']}, "
              f"p (Holm) {row['p_holm']:.3g}{' significant' if row['significant'] else ''}")


if __name__ == "__main__":
    main()
