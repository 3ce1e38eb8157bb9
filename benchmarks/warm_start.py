"""Does a warm start pay? Studies in simulated time (study.simulate, as benchmarks.search_efficiency
runs them: the default pipeline, TPE + the adaptive policy + the noise-aware ending) on a target
curve table, each drawing fresh noise.

Per seed N:
- a source study on the target table and one on the other regime's table, each at the full
  `--budget`, trained with seeds no other study of the benchmark uses (their noise is their own);
- cold: a study on the target table at half the budget, as a user would run one anew;
- warm_same: the same study, its sampler started from the source on the same table
  (`--warm-start`, the study a user ran before with another seed);
- warm_other: the same, started from the source on the other regime's table (the transfer a
  user makes between settings: another dataset size, image size, contrast).

Scored as search_efficiency scores a study: the final regret, in points, of the configuration the
study named, against the target table's truth; every comparison at equal epochs (the new
study's half budget; the source's epochs are sunk), paired over the seeds (the mean difference,
its bootstrap interval, a paired permutation test, Holm over both comparisons).

    python -m benchmarks.warm_start [--seeds 100] [--budget 270] [--target efficiency|steady] [--work DIR]

Resumable: every study's result is kept in DIR. Writes benchmarks/results/warm_start.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from benchmarks.tables.curves import STEADY_TABLE, TABLE

TABLES = {"efficiency": TABLE, "steady": STEADY_TABLE}
SOURCE_SEEDS = 10_000  # source study N trains with seed (N + SOURCE_SEEDS) x SEED_STRIDE: a noise of its own
METHODS = ("cold", "warm_same", "warm_other")
COMPARISONS = (("warm_same", "cold"), ("warm_other", "cold"))
POLICY = {"searcher": "optuna", "policy": "adaptive"}  # the default pipeline


def source(table: Path, role: str, seed: int, budget: int, work: Path, workers: int) -> str:
    """The Optuna storage of a source study (`role`: same or other; kept in work/sources), as
    STORAGE#STUDY."""
    from benchmarks.search_efficiency import simulated_study

    name = f"source-{role}-{seed}"
    kept = work / "sources" / f"{name}.db"
    if not kept.is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        simulated_study(table, work, name, seed + SOURCE_SEEDS, budget, workers, keep_optuna=kept,
                        searcher=POLICY["searcher"], policy=POLICY["policy"])
    return f"sqlite:///{kept.resolve()}#{name}"


def study(method: str, seed: int, target: Path, other: Path, budget: int, work: Path, workers: int) -> dict[str, Any]:
    """One new study at half the budget, cold or warm-started; its named configuration."""
    from benchmarks.search_efficiency import replayed_config, simulated_study
    from study.simulate import end
    from trainables.curve_table import load

    out = work / f"{method}-{seed}.json"
    if out.is_file():
        return dict(json.loads(out.read_text()))
    warm: tuple[str, ...] = ()
    if method == "warm_same":
        warm = (source(target, "same", seed, budget, work, workers),)
    elif method == "warm_other":
        warm = (source(other, "other", seed, budget, work, workers),)
    start = time.perf_counter()
    record, simulated, _ = simulated_study(target, work, f"{method}-{seed}", seed, budget // 2, workers,
                                           warm_start=warm, searcher=POLICY["searcher"], policy=POLICY["policy"])
    ending = end(record, simulated)
    table = load(str(target))
    named = next((replayed_config(table, t.config) for t in simulated.trials if t.trial_id == ending.named), None)
    result = {"method": method, "seed": seed, "named": named, "trials": len(simulated.trials),
              "wall_s": round(time.perf_counter() - start, 2), "warm_start": list(warm)}
    out.write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--budget", type=int, default=270, help="a source study's epochs; a new study runs half")
    parser.add_argument("--target", choices=tuple(TABLES), default="efficiency")
    parser.add_argument("--tables", type=Path, nargs=2, metavar=("TARGET", "OTHER"),
                        help="curve tables to use instead of the two regimes' (the target, then the other)")
    parser.add_argument("--workers", type=int, default=8, help="trials at once in a simulated study")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/warm_start.json"))
    args = parser.parse_args(argv)
    from benchmarks.search_efficiency import compare, iqm, iqm_interval
    from trainables.curve_table import load

    target = TABLES[args.target]
    other = next(t for name, t in TABLES.items() if name != args.target)
    if args.tables is not None:
        target, other = args.tables
    table = load(str(target))
    if args.seeds < 1 or args.budget // 2 < table.epochs:
        parser.error(f"--seeds must be at least 1 and half the --budget at least one full trial ({table.epochs})")
    args.work = args.work or Path(tempfile.gettempdir()) / f"rra-warm-start-{args.target}"
    args.work.mkdir(parents=True, exist_ok=True)
    finals = {n: table.true_final(n) for n, v in table.values.items() if v["local_stream"]}
    best = max(finals.values())
    regrets: dict[str, list[float]] = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        for method in METHODS:
            result = study(method, seed, target, other, args.budget, args.work, args.workers)
            regrets[method].append(round(100 * (best - finals[result["named"]]), 2) if result["named"] else
                                   round(100 * (best - min(finals.values())), 2))
        if seed % 10 == 9:
            print(f"seed {seed}: " + ", ".join(f"{m} {sum(r) / len(r):.2f}" for m, r in regrets.items()), flush=True)
    report = {
        "command": "python -m benchmarks.warm_start " + " ".join(sys.argv[1:] if argv is None else argv),
        "target": str(target), "other": str(other), "seeds": args.seeds, "budget_new_study": args.budget // 2,
        "budget_source": args.budget, "policy": POLICY, "machine": machine(),
        "methods": {m: {"final_regret_points": r, "mean": round(sum(r) / len(r), 2), "iqm": round(iqm(r), 2),
                        "iqm_interval": [round(v, 2) for v in iqm_interval(r)]} for m, r in regrets.items()},
        "comparisons": compare(regrets, list(COMPARISONS)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["comparisons"]:
        print(f"{row['method']} - {row['against']}: {row['mean_difference']:+.2f} points {row['interval']}, "
              f"p (Holm) {row['p_holm']:.3g}{' significant' if row['significant'] else ''}")


if __name__ == "__main__":
    main()
