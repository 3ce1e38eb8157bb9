"""How many epochs each search method spends before it recommends a good RRA configuration,
replayed on the RRA curve table (benchmarks/data/rra_curves.parquet, `python -m benchmarks.tables.curves`).

By default every study runs in simulated time (`--engine simulated`, study.simulate): the
study's own searcher, its policy's scheduler and its noise-aware ending, built from its record
as `study.run` builds them, fed the table's results without Ray's runtime, 8 trials at once,
about a second a study. `--engine tune` runs the real study instead (`study.cli.run_study`:
Tune, its storage, MLflow) with the replay trainable (`--trainable replay --replay-table`) at
`--epoch-s` seconds an epoch; the two make the same decisions with one trial at a time, and with
several where the results come in the same order and no epoch budget stops the search (under
Tune, results in flight at the stop still arrive; tests/unit/study/test_simulate.py). Either way a
trial reports a curve of the table's configuration nearest to its own, drawn from the table's
model (trainables.curve_table) for its training seed: fresh noise, never a recorded run and
never the noise the truth was computed from. Study N trains every trial with seed N x
SEED_STRIDE (`--train-seed`), as a real study's trials share its seed, and its finalists'
re-runs with the next seeds: no two studies of the benchmark share a training seed, so each is an
independent draw of the noise. Methods:

- random_fifo: random search, every trial to max_t;
- random_asha: random search, ASHA;
- tpe_asha: the project's TPE (stopped trials PRUNED), ASHA;
- tpe_asha_race: the same, its ending raced (`--ending race`: as many re-runs, a round at a time);
- tpe_asha_wide: the same, its re-runs spread wide: 6 finalists with one new seed each (as many);
- tpe_asha_plain: the same without the noise-aware ending: the best single run is named;
- tpe_hyperband: the project's TPE, ASHA with Hyperband's brackets drawn uniformly;
- tpe_adaptive: the project's TPE, brackets drawn by measured rank agreement (study.policies.adaptive):
  the default pipeline since both tables were measured;
- stock_asha (not run by default): Optuna TPE through Ray's stock OptunaSearch, ASHA.

All but tpe_asha_plain end as a study does by default: their finalists re-run with new seeds
inside the same epoch budget (`--budget`, the study's `--epoch-budget`), and the best is named
on the mean (study.phases.finalists).

Scoring. A configuration's true accuracy is its mean final validation accuracy over the table's
seeds (the best ones have more seeds: `python -m benchmarks.tables.curves show`). A study's final
regret is the table's best true accuracy minus the true accuracy of the configuration the study
named (its summary's best), in points; the benchmark reports, per method over the seeds, the
interquartile mean (IQM) with a 95% bootstrap interval, the median and quartiles, the share of
studies whose named best is in the table's true top 5, and paired comparisons of methods on the
same seeds (the mean difference, its bootstrap interval and a paired permutation test of it,
Holm-corrected over `COMPARISONS`). The anytime curve (plot)
is the regret of the incumbent, the best single run at max_t so far, at every epoch spent;
"epochs to within 1 point" counts from the epoch it stays there to the end of the budget (a
study that touched it and left does not count).

    python -m benchmarks.search_efficiency [--seeds 30] [--budget 270] [--methods ...] [--work DIR]
    python -m benchmarks.search_efficiency --rescore benchmarks/results/search_efficiency.json

Resumable: each (method, seed) study's timeline is saved in DIR (default: a folder under the
system's temporary folder) and not run again. Writes benchmarks/results/search_efficiency.json
(every study's final regret and anytime curve, and the statistics above) and
search_efficiency.png (regret against epochs spent: median and quartiles over seeds).
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

from benchmarks.machine import machine
from benchmarks.tables.curves import TABLE

SPACE = Path(__file__).resolve().parent / "spaces" / "efficiency.yaml"
RESULTS = Path("benchmarks/results")
# method: (searcher, policy, finalists: None = the space's noise-aware ending, 0 = none)
METHODS = {
    "random_fifo": ("random", "fifo", None),
    "random_asha": ("random", "asha", None),
    "tpe_asha": ("optuna", "asha", None),
    "tpe_asha_race": ("optuna", "asha", None),
    "tpe_asha_wide": ("optuna", "asha", 6),
    "tpe_asha_plain": ("optuna", "asha", 0),
    "tpe_hyperband": ("optuna", "hyperband", None),
    "tpe_adaptive": ("optuna", "adaptive", None),
    "stock_asha": ("optuna-stock", "asha", None),
}
# more study options of a method (the others: the space's)
OPTIONS: dict[str, dict[str, Any]] = {"tpe_asha_race": {"ending": "race"}, "tpe_asha_wide": {"finalist_seeds": 1}}
DEFAULT_METHODS = [m for m in METHODS if m != "stock_asha"]
# The comparisons the README draws, paired over seeds (permutation test of the mean difference),
# Holm-corrected together:
# (method, against).
COMPARISONS = (("random_asha", "random_fifo"), ("tpe_asha", "random_asha"), ("tpe_hyperband", "tpe_asha"),
               ("tpe_adaptive", "tpe_asha"), ("tpe_asha", "tpe_asha_plain"), ("tpe_asha_race", "tpe_asha"),
               ("tpe_asha", "random_fifo"), ("tpe_asha_wide", "tpe_asha"), ("tpe_adaptive", "random_fifo"))
TOLERANCE_POINTS = 1.0
LOOSER_POINTS = (3.0, 5.0)  # beside the goal's 1 point: tolerances nearer the table's seed noise
TOP = 5  # "in the true top 5": the share of studies whose named best is one of the table's 5 best
# study N trains with seed N * SEED_STRIDE and re-runs with the seeds after it: no two studies
# share a training seed (and so a draw of the noise) while they re-run fewer than this many
SEED_STRIDE = 1000


def timeline(tune_path: Path, table: Any, max_epochs: int) -> list[dict[str, Any]]:
    """Every result of a replayed study in the order it was reported: the trial, its epoch, its
    observed value, and its configuration's true accuracy in the table."""
    from study.results import reports

    rows = sorted((r for trial in reports(tune_path).values() for r in trial), key=lambda r: r["wall_time"])
    out, truth = [], {}
    for row in rows:
        trial = row["trial_id"]
        if trial not in truth:
            truth[trial] = table.true_final(replayed_config(table, row["config"]))
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


def run_one(method: str, seed: int, budget: int, epoch_s: float, table_path: Path, work: Path, cpus: int) -> Path:
    """One replayed study; its timeline saved as work/METHOD-SEED.json."""
    from study.cli import run_study
    from study.options import StudyOptions
    from trainables.curve_table import load

    out = work / f"{method}-{seed}.json"
    if out.is_file():
        return out
    searcher, policy, finalists = METHODS[method]
    max_epochs = load(str(table_path)).epochs  # the study runs as long as the table's curves
    runs = Path(tempfile.mkdtemp(prefix=f"{method}-{seed}-", dir=work))
    try:
        opts = StudyOptions(space=str(SPACE), name=f"{method}-{seed}", out=str(runs), seed=seed, num_cpus=cpus,
                            cpus_per_trial=0.25, baselines=False, evaluate_test=False, verbose=0, report=False,
                            searcher=searcher, policy=policy, num_samples=budget, max_epochs=max_epochs,
                            epoch_budget=budget, finalists=finalists, train_seed=seed * SEED_STRIDE,
                            **OPTIONS.get(method, {}),
                            trainable="replay", replay_epoch_s=epoch_s, replay_table=str(table_path),
                            tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
        start = time.perf_counter()
        summary = run_study(opts)
        wall = time.perf_counter() - start
        table = load(str(table_path))
        line = timeline(Path(summary["tune_path"]), table, int(summary["max_epochs"]))
        if summary.get("finalists_path"):
            line += rerun_line(Path(summary["finalists_path"]), table, int(summary["max_epochs"]))
        named = _config_of(summary["best"], table) if summary["best"] else None
        single = _config_of(_best_single(summary), table)
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    out.write_text(json.dumps({"method": method, "seed": seed, "wall_s": round(wall, 1), "named": named,
                               "best_single_run": single, "line": line}))
    return out


def replayed_config(table: Any, config: dict[str, Any]) -> str:
    """The table's configuration a trial (its Tune config) replays."""
    from trainables.config import TrialConfig, settings

    cfg = TrialConfig.from_dict(settings(config))
    return str(table.match(cfg.to_dict(), cfg.seed).config)


def simulated_study(table_path: Path, work: Path, name: str, seed: int, budget: int, workers: int,
                    grace_period: int | None = None, keep_optuna: Path | None = None,
                    **flags: Any) -> tuple[Any, Any, float]:
    """A replayed study of the table's own space (the one it was recorded in) in simulated time
    (study.simulate), seed `seed` for the sampler and the training, at an epoch budget, without
    baselines, test or report; `grace_period`: the rungs' first epoch, where not the space's;
    `flags`: the study's other options (searcher, policy, ...). Returns its record, the
    simulated search and the search's wall time; its folder is removed (its Optuna storage first
    copied to `keep_optuna`, if given: a source for a warm start). Its trials train with
    seed `seed` x SEED_STRIDE (no other study of a benchmark draws their noise)."""
    import yaml

    from benchmarks.tables.curves import DESIGNS
    from study.options import StudyOptions
    from study.record import new_record, resolve_space
    from study.simulate import simulate
    from trainables.curve_table import load

    table = load(str(table_path))
    space = DESIGNS[str(table.metadata.get("plan", {}).get("design", "ablation"))]
    runs = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    try:
        if grace_period is not None:
            raw = yaml.safe_load(space.read_text())
            raw["study"]["grace_period"] = grace_period
            space = runs / space.name
            space.write_text(yaml.safe_dump(raw, sort_keys=False))
        opts = StudyOptions(space=str(space), name=name, out=str(runs), seed=seed, train_seed=seed * SEED_STRIDE,
                            baselines=False, evaluate_test=False, report=False, num_samples=budget,
                            max_epochs=table.epochs, epoch_budget=budget, trainable="replay", replay_epoch_s=0.0,
                            replay_table=str(table_path), concurrency=workers, **flags)
        record = new_record(opts, resolve_space(opts))
        record.folder.mkdir(parents=True)
        start = time.perf_counter()
        simulated = simulate(record, workers)
        wall = time.perf_counter() - start
        if keep_optuna is not None:  # SQLite's own copy (what its journal still holds included)
            import sqlite3

            with sqlite3.connect(record.stores.optuna_storage.removeprefix("sqlite:///")) as src, \
                    sqlite3.connect(keep_optuna) as dst:
                src.backup(dst)
        return record, simulated, wall
    finally:
        shutil.rmtree(runs, ignore_errors=True)


def run_simulated(method: str, seed: int, budget: int, table_path: Path, work: Path, workers: int) -> Path:
    """One study in simulated time (`simulated_study`: the same searcher, policy and ending, over
    the table without Ray's runtime; every epoch lasts one simulated second); its timeline
    saved as work/METHOD-SEED.json, as `run_one` saves a real study's."""
    from study.simulate import end
    from trainables.curve_table import load

    out = work / f"{method}-{seed}.json"
    if out.is_file():
        return out
    searcher, policy, finalists = METHODS[method]
    if searcher == "optuna-stock":
        raise ValueError("stock_asha is Ray's own searcher: it runs with --engine tune only")
    table = load(str(table_path))
    start = time.perf_counter()
    record, simulated, _ = simulated_study(table_path, work, f"{method}-{seed}", seed, budget, workers,
                                           searcher=searcher, policy=policy, finalists=finalists,
                                           **OPTIONS.get(method, {}))
    ending = end(record, simulated)
    wall = time.perf_counter() - start
    truth = {t.trial_id: replayed_config(table, t.config) for t in simulated.trials}
    line = [{"trial": simulated.trials[i].trial_id, "epoch": epoch,
             "val_acc": float(simulated.trials[i].results[epoch - 1]["val_acc"]),
             "true": table.true_final(truth[simulated.trials[i].trial_id]), "full": epoch >= table.epochs}
            for i, epoch in simulated.order]
    line += [{"trial": f"{trial_id}-seed{s}", "epoch": epoch, "val_acc": value, "full": False, "rerun": True,
              "true": table.true_final(truth[trial_id])} for trial_id, s, epoch, value in ending.reruns]
    # the ending's values, by finalist and seed (the study's own run with train_seed, the re-runs
    # with the seeds after it), with each finalist's table configuration: what the calibration
    # of P(best) and of the intervals is measured on (benchmarks.calibration)
    ending_values = {trial_id: {"config": truth[trial_id], "values": {str(s): v for s, v in by_seed.items()}}
                     for trial_id, by_seed in ending.finalists.items()}
    out.write_text(json.dumps({"method": method, "seed": seed, "wall_s": round(wall, 1), "engine": "simulated",
                               "train_seed": record.train_seed, "finalists": ending_values,
                               "race_stop": ending.race_stop,
                               "named": truth.get(ending.named) if ending.named else None,
                               "best_single_run": truth.get(ending.plain) if ending.plain else None, "line": line}))
    return out


def _config_of(row: dict[str, Any] | None, table: Any) -> str | None:
    """The table's configuration a summary row (a trial's searched values) replays."""
    if row is None:
        return None
    values = {k: row.get(k) for k in ("recursion_steps", "crop_scale", "attention_temperature")
              if row.get(k) is not None}
    return str(table.match({"local_stream": True, **values}).config)


def _best_single(summary: dict[str, Any]) -> dict[str, Any] | None:
    """What the plain maximum names: the best single run among the trials that reached max_t."""
    from study.ranking import ranked

    order = ranked(summary["trials"], summary["metric"], summary["mode"], summary["max_epochs"])
    return dict(order[0]) if order else None


def rerun_line(tune_path: Path, table: Any, max_epochs: int) -> list[dict[str, Any]]:
    """The finalists' re-runs as epochs spent (after the search's: they run once it ended); not
    candidates for the anytime incumbent, which is the search's."""
    base = timeline(tune_path, table, max_epochs) if tune_path.is_dir() else []
    return [{**row, "full": False, "rerun": True} for row in base]


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def iqm(values: list[float]) -> float:
    """The interquartile mean: the mean of the middle half (scipy.stats.trim_mean, 25% cut each
    side), robust to the few studies that fail badly and less noisy than the median."""
    from scipy.stats import trim_mean

    return float(trim_mean(values, 0.25))


def iqm_interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval of the IQM (scipy.stats.bootstrap, percentile, 10,000 resamples)."""
    import numpy as np
    from scipy.stats import bootstrap, trim_mean

    if len(set(values)) < 2:
        return values[0], values[0]
    res = bootstrap((np.asarray(values),), lambda x, axis: trim_mean(x, 0.25, axis=axis), n_resamples=10_000,
                    method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def sustained(curve: list[float], tolerance: float) -> int | None:
    """The epoch from which the regret stays within `tolerance` points to the end of the budget
    (None: it does not end there): a study that touched the target and left it is not counted."""
    if not curve or curve[-1] > tolerance:
        return None
    epoch = len(curve)
    while epoch > 1 and curve[epoch - 2] <= tolerance:
        epoch -= 1
    return epoch


def _median_epochs(reached: list[int | None], budget: int) -> float:
    """The median over seeds of the epochs to a tolerance; a seed that never got there counts as
    past the budget."""
    return statistics.median(e if e is not None else budget + 1 for e in reached)


def compare(regrets: dict[str, list[float]], pairs: list[tuple[str, str]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Paired comparisons of final regret over the same studies: the mean difference (method
    minus against; negative: the method does better) with a 95% bootstrap interval, and the test
    of that same statistic: a paired permutation test of the mean difference (each study's sign
    flipped at random, 20,000 resamples; scipy.stats.permutation_test), Holm's correction over
    every pair, and the verdict at `alpha`. Beside it, the paired t test's p-value, and how many
    studies the two tie in (both named configurations equally good: a zero difference)."""
    import numpy as np
    from scipy.stats import bootstrap, permutation_test, ttest_rel

    from study.reporting.analysis import holm

    out: list[dict[str, Any]] = []
    for method, against in pairs:
        a, b = np.asarray(regrets[method]), np.asarray(regrets[against])
        diff = a - b
        if len(set(diff.tolist())) > 1:
            res = bootstrap((diff,), np.mean, n_resamples=10_000, method="percentile", random_state=0)
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
            p = float(permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                                       permutation_type="samples", n_resamples=20_000, random_state=0).pvalue)
            t_p = float(ttest_rel(a, b).pvalue)
        else:
            low = high = float(diff[0])
            p = t_p = 1.0
        out.append({"method": method, "against": against, "seeds": len(diff), "mean_difference": float(diff.mean()),
                    "interval": [round(low, 2), round(high, 2)], "better_in": int((diff < 0).sum()),
                    "worse_in": int((diff > 0).sum()), "ties": int((diff == 0).sum()), "p": p, "p_paired_t": t_p,
                    "test": "paired permutation test of the mean difference"})
    for row, adjusted in zip(out, holm([float(r["p"]) for r in out]), strict=True):
        row["p_holm"] = adjusted
        row["significant"] = adjusted < alpha
        row["mean_difference"] = round(float(row["mean_difference"]), 2)
    return out


def score(work: Path, methods: list[str], seeds: int, budget: int, table: Any) -> dict[str, Any]:
    finals = {name: table.true_final(name) for name in table.values}
    sampled = {n: v for n, v in finals.items() if table.values[n]["local_stream"]}
    best, worst = max(sampled.values()), min(sampled.values())
    top = sorted(sampled, key=lambda n: -sampled[n])[:TOP]
    grid = sorted({*range(table.epochs, budget + 1, table.epochs), budget})
    out: dict[str, Any] = {}
    regrets: dict[str, list[float]] = {}
    for method in methods:
        curves, walls, trials, named, single, finalists = [], [], [], [], [], []
        for seed in range(seeds):
            run = json.loads((work / f"{method}-{seed}.json").read_text())
            finalists.append([f["config"] for f in (run.get("finalists") or {}).values()])
            curves.append(regret_curve(run["line"], best, worst, budget))
            walls.append(run["wall_s"])
            trials.append(len({r["trial"] for r in run["line"][:budget] if not r.get("rerun")}))
            named.append(run.get("named"))
            single.append(run.get("best_single_run"))
        # the final regret is the named best's: the study's answer at its end, not the best touched on the way
        final = [100 * (best - sampled[n]) if n in sampled else 100 * (best - worst) for n in named]
        regrets[method] = final
        # the best the ending could have named from its own finalists (an oracle's pick): what is
        # left is the regret of a search whose finalists missed the truly best
        among = [min((100 * (best - sampled[c]) for c in cs if c in sampled), default=None) if cs else None
                 for cs in finalists]
        picked = [f - a for f, a in zip(final, among, strict=True) if a is not None]
        reach = [sustained(c, TOLERANCE_POINTS) for c in curves]
        looser = {}
        for points in LOOSER_POINTS:
            got = [sustained(c, points) for c in curves]
            looser[f"{points:g}"] = {"median_epochs": _median_epochs(got, budget),
                                     "reached_within_budget": sum(e is not None for e in got)}
        low, high = iqm_interval(final)
        out[method] = {
            "final_regret_points": [round(r, 2) for r in final],
            "final_regret_iqm": round(iqm(final), 2), "final_regret_iqm_interval": [round(low, 2), round(high, 2)],
            "final_regret_mean": round(statistics.fmean(final), 2),
            "final_regret_quartiles": [round(v, 2) for v in _quartiles(final)],
            "named_in_true_top5": round(sum(n in top for n in named) / len(named), 3),
            "named": named,
            "best_finalist_regret_points": [None if a is None else round(a, 2) for a in among],
            # what naming another of its finalists than the truly best among them cost, on average
            "pick_cost_mean_points": round(statistics.fmean(picked), 2) if picked else None,
            "picked_the_best_finalist": round(sum(abs(p) < 1e-9 for p in picked) / len(picked), 3) if picked else None,
            # the plain maximum of the same study (the best single run at max_t), for the ending's effect
            "best_single_run_regret_points": [round(100 * (best - sampled[n]), 2) if n in sampled else None
                                              for n in single],
            "epochs_to_within_1pt_sustained": reach,
            "median_epochs_to_within_1pt": _median_epochs(reach, budget),
            "reached_within_budget": sum(e is not None for e in reach),
            "within_looser_points": looser,
            "trials_in_budget_median": statistics.median(trials),
            "study_wall_s_median": statistics.median(walls),
            "anytime": {"epochs": grid, "quartiles": [[round(v, 2) for v in _quartiles([c[e - 1] for c in curves])]
                                                      for e in grid]},
            # every study's anytime regret of its incumbent (the best single run at max_t so far)
            "curves": [[round(c[e - 1], 2) for e in grid] for c in curves],
        }
    pairs = [(m, a) for m, a in COMPARISONS if m in regrets and a in regrets]
    # how well the table knows its truth near the top: the standard error of each of the true
    # top 5's difference from the best (trainables.curve_table.difference_error; 0 in a drawn table)
    near_top = {n: round(100 * table.difference_error(top[0], n), 2) for n in top[1:]}
    return {"table_best_true_val_acc": round(best, 4), "table_worst_true_val_acc": round(worst, 4),
            "truth_difference_error_points": near_top,
            "true_top5": top, "methods": out, "comparisons": compare(regrets, pairs)}


def rescore(path: Path) -> dict[str, Any]:
    """The statistics above (IQM with its interval, median and quartiles, paired comparisons)
    from the per-seed final regrets of a results file, including one written before they were
    computed (the README's re-scoring of the 20-seed run on the previous table)."""
    report = json.loads(path.read_text())
    regrets = {m: [float(v) for v in r["final_regret_points"]] for m, r in report["methods"].items()}
    pairs = [(m, a) for m, a in (*COMPARISONS, ("stock_asha", "tpe_asha")) if m in regrets and a in regrets]
    methods = {m: {"iqm": round(iqm(v), 2), "iqm_interval": [round(x, 2) for x in iqm_interval(v)],
                   "quartiles": [round(x, 2) for x in _quartiles(v)], "seeds": len(v)} for m, v in regrets.items()}
    return {"results": str(path), "methods": methods, "comparisons": compare(regrets, pairs)}


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


def open_table(parser: argparse.ArgumentParser, path: Path) -> Any:
    """The curve table at `path`, or the parser's one-line error (exit 2)."""
    if not path.is_file():
        parser.error(f"no curve table at {path}; record one with python -m benchmarks.tables.curves")
    from trainables.curve_table import CurveTableError, load

    try:
        return load(str(path))
    except CurveTableError as err:
        parser.error(str(err))


def _run_all(args: argparse.Namespace, run: Any) -> None:
    """Every (seed, method) study not run yet, with `run(method, seed)`."""
    for seed in range(args.seeds):
        for method in args.methods:
            done = (args.work / f"{method}-{seed}.json").is_file()
            path = run(method, seed)
            if not done:
                result = json.loads(path.read_text())
                print(f"seed {seed} {method}: {len(result['line'])} epochs in {result['wall_s']:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--budget", type=int, default=270, help="epochs each method is scored over")
    parser.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=DEFAULT_METHODS)
    parser.add_argument("--epoch-s", type=float, default=0.0, help="seconds a replayed epoch lasts")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--engine", choices=("simulated", "tune"), default="simulated",
                        help="simulated: each study in simulated time (study.simulate), seconds a study; tune: the "
                             "real study under Ray Tune with the replay trainable (--epoch-s, --cpus)")
    parser.add_argument("--workers", type=int, default=8, help="trials at once in a simulated study (the tune "
                        "engine runs as many as --cpus allow at 0.25 CPU a trial)")
    parser.add_argument("--work", type=Path, help="where each study's timeline is kept (default: a folder per "
                        "engine under the system's temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_efficiency.json")
    parser.add_argument("--rescore", type=Path, metavar="RESULTS",
                        help="print the statistics of a results file's final regrets, and run nothing")
    args = parser.parse_args(argv)
    if args.rescore is not None:
        if not args.rescore.is_file():
            parser.error(f"--rescore: no results file at {args.rescore}")
        print(json.dumps(rescore(args.rescore), indent=2))
        return
    table = open_table(parser, args.table)
    if args.seeds < 1 or args.budget < table.epochs:
        parser.error(f"--seeds must be at least 1 and --budget at least one full trial ({table.epochs} epochs)")
    if args.engine == "simulated" and "stock_asha" in args.methods:
        parser.error("stock_asha is Ray's own searcher: run it with --engine tune")
    args.work = args.work or Path(tempfile.gettempdir()) / f"rra-search-efficiency-{args.engine}"
    args.work.mkdir(parents=True, exist_ok=True)
    if args.engine == "simulated":
        from study.errors import StudyInputError

        try:
            _run_all(args, lambda method, seed: run_simulated(method, seed, args.budget, args.table, args.work,
                                                              args.workers))
        except StudyInputError as err:  # what study.run would refuse (a table with too few seeds)
            parser.error(str(err))
    else:
        import ray

        from study import execution

        execution.set_ray_env()
        # one local Ray for every study (run_study leaves a Ray it did not start running)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        try:
            _run_all(args, lambda method, seed: run_one(method, seed, args.budget, args.epoch_s, args.table,
                                                        args.work, args.cpus))
        finally:
            ray.shutdown()
    report = {
        "command": "python -m benchmarks.search_efficiency " + " ".join(sys.argv[1:] if argv is None else argv),
        "engine": args.engine, "workers": args.workers if args.engine == "simulated" else None,
        "table": str(args.table), "table_surrogate": table.held_out(), "seeds": args.seeds, "budget": args.budget,
        "tolerance_points": TOLERANCE_POINTS, "machine": machine(), **score(args.work, args.methods, args.seeds,
                                                                             args.budget, table)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({m: {"iqm": r["final_regret_iqm"], "top5": r["named_in_true_top5"]}
                      for m, r in report["methods"].items()}))
    for row in report["comparisons"]:
        print(f"{row['method']} - {row['against']}: {row['mean_difference']:+.2f} points {row['interval']}, "
              f"p (Holm) {row['p_holm']:.3g}{' significant' if row['significant'] else ''}")


if __name__ == "__main__":
    main()
