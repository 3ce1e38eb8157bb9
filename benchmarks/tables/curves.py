"""The RRA curve table: real learning curves of the ablation space, recorded once and replayed
by the search benchmarks many times (as NAS-Bench-201, LCBench or Syne Tune's blackbox
repository do for other models).

    python -m benchmarks.tables.curves record [--configs 200] [--seeds 2] [--jobs 2] [--work DIR]
    python -m benchmarks.tables.curves write  [--work DIR] [--out benchmarks/data/rra_curves.parquet]
    python -m benchmarks.tables.curves show   [--table benchmarks/data/rra_curves.parquet]
    python -m benchmarks.tables.curves check  [--table ...] [--out benchmarks/results/curve_model_check.json]
    python -m benchmarks.tables.curves draw   --seeds 3 --out DRAWN.parquet [--table ...]

`record` trains every configuration of the table to the full budget with each seed, in `--jobs`
processes of one thread each, with the trial code itself (`trainables.loop.fit`, no Ray): the
configurations are a scrambled Sobol sequence over the space's parameters (recursion steps, crop
scale, temperature where T > 1), the global-only baseline and the paper's point. It is
resumable: every finished run is one line of DIR/runs.jsonl (DIR defaults to a folder under the
system's temporary folder, never the source tree), and a run that did not finish is trained
again; run it in the background and run it again after an interruption.

`write` turns the runs into one Parquet file, a row per (configuration, seed, epoch), with the
command, the space, the machine and the library versions in its metadata (key `rra_curves`).
`show` prints what the table shows: the spread of final accuracies, the RRA gain over the
global-only baseline, how much the crop scale matters, and how often curves cross (the rank
correlation between each epoch's ranking and the final one).

A replayed run never reports a recorded one: it draws from the table's generative model
(trainables.curve_model), fitted to the recorded runs. `check` fits that model on part of the
seeds and tests it on the recorded runs of the others: how often their final values fall in the
model's central intervals (alone, and as differences of two configurations on one seed, which is
what a ranking reads), and how their epoch-to-epoch paths compare with drawn ones. `draw` writes
a table of the same schema drawn from the model (its own draws, never the replays'), whose truth
is then known exactly: the model's mean curves, in its metadata.

The space is benchmarks/spaces/efficiency.yaml: the ablation space on a smaller synthetic set
(6 classes, 9 epochs), so the table records in one to two hours on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import functools
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from trainables import curve_table

SPACE = Path(__file__).resolve().parents[1] / "spaces" / "efficiency.yaml"
# what a table varies: the ablation space's parameters (the search benchmark's table; "steady":
# the same in a steadier regime, its second table), or what moves the inference cost (refine,
# recursion steps, patch size; the Pareto benchmark's)
DESIGNS = {"ablation": SPACE, "cost": SPACE.parent / "cost.yaml", "steady": SPACE.parent / "steady.yaml"}
ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "benchmarks" / "data" / "rra_curves.parquet"
COST_TABLE = TABLE.parent / "rra_cost_curves.parquet"  # --design cost: what moves the inference cost
STEADY_TABLE = TABLE.parent / "rra_steady_curves.parquet"  # --design steady: the second regime
METADATA_KEY = b"rra_curves"
# per-epoch metrics kept in the table
METRICS = ("val_acc", "val_loss", "val_acc_global", "val_acc_local", "train_loss", "train_acc",
           "epoch_seconds", "val_seconds")
PARAMETERS = ("recursion_steps", "crop_scale", "attention_temperature", "refine", "patch_size")
# each configuration's inference cost (trainables.cost, measured when the table is written): the
# columns the replay reads
COST = curve_table.COST



def default_work() -> Path:
    return Path(tempfile.gettempdir()) / "rra-curves"


def configurations(count: int, seed: int = 0, design: str = "ablation") -> dict[str, dict[str, Any]]:
    """The table's configurations by name: `count` Sobol points over the design's parameters,
    the paper's point and the global-only baseline. Ablation: recursion steps, crop scale and
    the temperature where recursion_steps > 1 (as the space samples it). Cost: refine (repeat
    or zoom), recursion steps, patch size (16, 32 or 48 px) and crop scale."""
    from scipy.stats import qmc

    dims = 4 if design == "cost" else 3
    with warnings.catch_warnings():  # a count that is no power of 2 spreads a little less evenly
        warnings.filterwarnings("ignore", message="The balance properties of Sobol")
        points = qmc.Sobol(d=dims, scramble=True, seed=seed).random(count)
    paper: dict[str, Any] = {"recursion_steps": 10, "crop_scale": 0.25, "attention_temperature": 1.0}
    if design == "cost":
        paper = {"refine": "repeat", "recursion_steps": 10, "patch_size": 32, "crop_scale": 0.25}
    configs: dict[str, dict[str, Any]] = {"global_only": {"local_stream": False}, "paper": paper}
    for i, point in enumerate(points):
        steps = 1 + min(9, int(point[0] * 10))
        values: dict[str, Any] = {"recursion_steps": steps, "crop_scale": round(0.2 + 0.8 * float(point[1]), 4)}
        if design == "cost":
            values = {"refine": "zoom" if point[2] >= 0.5 else "repeat", **values,
                      "patch_size": (16, 32, 48)[min(2, int(point[3] * 3))]}
        elif steps > 1:
            values["attention_temperature"] = round(10 ** (-1 + 2 * float(point[2])), 4)
        configs[f"c{i:03d}"] = values
    return configs


@functools.cache
def _space(design: str = "ablation") -> Any:
    from study.spaces import load_space

    return load_space(str(DESIGNS[design]))


@functools.cache
def _data(config: str) -> Any:
    """The table's datasets (a trial config as JSON), built once per worker process: every run
    reads the same images (the synthetic set and the validation split do not depend on the
    training seed)."""
    from trainables.config import TrialConfig
    from trainables.data.build import build_datasets

    return build_datasets(TrialConfig.from_dict(json.loads(config)))


def _train(name: str, values: dict[str, Any], seed: int, design: str = "ablation") -> dict[str, Any]:
    """One run to the full budget, in a worker process: its per-epoch metrics."""
    import torch

    from trainables.config import TrialConfig
    from trainables.loop import fit

    torch.set_num_threads(1)
    space = _space(design)
    cfg = TrialConfig.from_dict({**space.trial_config(values), "seed": seed, "threads": 1})
    data = _data(json.dumps(space.trial_config({}), sort_keys=True))
    epochs: list[dict[str, float]] = []
    start = time.perf_counter()
    fit(cfg, lambda metrics, _state: epochs.append({k: float(metrics[k]) for k in METRICS}), data=data)
    return {"config": name, "seed": seed, "values": values, "epochs": epochs,
            "seconds": round(time.perf_counter() - start, 2)}


def _append(runs: Path, run: dict[str, Any]) -> None:
    with runs.open("a") as sink:
        fcntl.flock(sink, fcntl.LOCK_EX)
        sink.write(json.dumps(run) + "\n")


def _finals(runs: Path) -> dict[tuple[str, int], float]:
    """The final validation accuracy of every run recorded, by (configuration, seed)."""
    if not runs.is_file():
        return {}
    out = {}
    for line in runs.read_text().splitlines():
        if line.strip():
            run = json.loads(line)
            out[(run["config"], run["seed"])] = float(run["epochs"][-1]["val_acc"])
    return out


def next_runs(finals: dict[tuple[str, int], float], names: list[str], seeds: int, top: int,
              target_se: float, max_seeds: int) -> list[tuple[str, int]]:
    """The (configuration, seed) runs to train next, given the finals recorded so far; empty when
    the table is complete.

    First every configuration with seeds 0..seeds-1. Then the `top` configurations by mean final
    accuracy (seed-adjusted, `curve_table.seed_adjusted`: their seeds differ) get more seeds, all
    of them the same seeds (so that comparisons among them are
    paired on the seed, whose effect is shared by every configuration), one seed at a time until
    the standard error of their means is at most `target_se` or they have `max_seeds`. That
    error is the paired one (`paired_standard_error`): the seed's shared effect moves every mean
    of the top alike and cancels in every comparison among them, so it is not counted. A
    configuration that enters the top later is first given the seeds the others have.
    """
    base = [(name, seed) for seed in range(seeds) for name in names if (name, seed) not in finals]
    if base:
        return base
    means = curve_table.seed_adjusted(finals)[0]
    count = collections.Counter(name for name, _ in finals)
    best = sorted((n for n in names if n in means), key=lambda n: (-means[n], n))[:top]
    have = max(count[n] for n in best)
    fill = [(name, seed) for seed in range(have) for name in best if (name, seed) not in finals]
    if fill:
        return fill
    if have >= max_seeds or paired_standard_error(finals, best) <= target_se:
        return []
    return [(name, have) for name in best]


def paired_standard_error(finals: dict[tuple[str, int], float], names: list[str]) -> float:
    """The standard error of a configuration's mean among `names`, paired on their shared seeds:
    the residual sd of a configuration + seed fit (study.noise.seed_noise) over the square root
    of the number of shared seeds; infinite with fewer than two shared seeds or configurations."""
    from study.noise import seed_noise

    values: dict[str, dict[int, float]] = {}
    for (name, seed), final in finals.items():
        if name in names:
            values.setdefault(name, {})[seed] = final
    if len(values) < 2:
        return math.inf
    shared = set.intersection(*(set(v) for v in values.values()))
    noise = seed_noise({n: {s: v[s] for s in shared} for n, v in values.items()})
    return noise.sd / math.sqrt(len(shared)) if noise.sd is not None and noise.paired else math.inf


def record(count: int, seeds: int, jobs: int, work: Path, top: int = 0, target_se: float = 0.015,
           max_seeds: int = 16, design: str = "ablation") -> None:
    """Trains every run that `next_runs` asks for and work/runs.jsonl does not hold yet."""
    work.mkdir(parents=True, exist_ok=True)
    runs = work / "runs.jsonl"
    plan = {"configs": count, "seeds": seeds, "top": top, "target_se": target_se, "max_seeds": max_seeds,
            "space": str(DESIGNS[design].name), "design": design}
    plan_file = work / "plan.json"
    # the configurations, the base seeds and the space define the runs recorded; how far the top
    # is taken (top, target_se, max_seeds) may change between sessions, as more seeds are needed
    defining = ("configs", "seeds", "space")
    if plan_file.is_file():
        before = json.loads(plan_file.read_text())
        if any(before.get(k) != plan[k] for k in defining):
            raise SystemExit(f"{work} holds runs of another plan ({plan_file.read_text().strip()}); "
                             "pass another --work or the same --configs and --seeds")
    plan_file.write_text(json.dumps(plan) + "\n")
    configs = configurations(count, design=design)
    names = list(configs)
    print(f"{len(_finals(runs))} runs recorded; runs in {runs}", flush=True)
    start = time.perf_counter()
    finished = 0
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        while todo := next_runs(_finals(runs), names, seeds, top, target_se, max_seeds):
            print(f"next: {len(todo)} runs (seeds {min(s for _, s in todo)}-{max(s for _, s in todo)}), "
                  f"{jobs} at a time", flush=True)
            pending: set[Future[dict[str, Any]]] = set()
            queue = [(name, configs[name], seed) for name, seed in todo]
            left = len(queue)
            while queue or pending:
                while queue and len(pending) < jobs:
                    pending.add(pool.submit(_train, *queue.pop(0), design))
                ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in ready:
                    run = future.result()
                    _append(runs, run)
                    finished += 1
                    left -= 1
                    rate = (time.perf_counter() - start) / finished
                    print(f"{run['config']} seed {run['seed']}: final val_acc {run['epochs'][-1]['val_acc']:.3f} "
                          f"in {run['seconds']:.0f} s; {left} to go in this round, about {rate * left / 60:.0f} min",
                          flush=True)


def inference_cost(values: dict[str, Any], design: str = "ablation", repeats: int = 10) -> dict[str, float]:
    """A configuration's inference cost (trainables.cost) as its trials measure it, here on this
    machine's CPU with one thread: what a replayed trial reports for it. Its latencies are
    medians of `repeats` timed passes (the trials': 10)."""
    import torch

    from trainables.config import TrialConfig
    from trainables.cost import measure
    from trainables.model import RRA

    torch.set_num_threads(1)
    cfg = TrialConfig.from_dict({**_space(design).trial_config(values), "threads": 1})
    torch.manual_seed(0)
    model = RRA(cfg.model_config(cfg.synthetic_classes))
    cost = measure(model, cfg.image_size, cfg.batch_size, "cpu", repeats=repeats, warmup=min(2, repeats),
                   channels_last=cfg.channels_last).metrics()
    return {k: cost[k] for k in COST}


def _versions() -> dict[str, str]:
    import numpy
    import pyarrow
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__}


def write(work: Path, out: Path, command: str, latency_repeats: int = 10) -> Path:
    """The Parquet table of the runs in work/runs.jsonl: a row per (config, seed, epoch), with
    each configuration's inference cost (`inference_cost`, latencies over `latency_repeats`)."""
    runs = [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines() if line.strip()]
    plan = json.loads((work / "plan.json").read_text())
    design = str(plan.get("design", "ablation"))
    costs = {run["config"]: run["values"] for run in runs}
    costs = {name: inference_cost(values, design, latency_repeats) for name, values in sorted(costs.items())}
    truth, errors = curve_table.seed_adjusted({(run["config"], run["seed"]): float(run["epochs"][-1]["val_acc"])
                                               for run in runs})
    meta = {"command": command, "plan": plan, "space": _space(design).to_raw(),
            # each configuration's seeds and the standard error of its mean final accuracy (its truth)
            # (seed-adjusted: `curve_table.seed_adjusted`)
            "true_val_acc": {n: round(v, 5) for n, v in sorted(truth.items())},
            "standard_error": {n: (round(v, 5) if math.isfinite(v) else None) for n, v in sorted(errors.items())},
            # a run's wall time, which counts any pause of the recording (kill -STOP) too
            "run_seconds_median": round(statistics.median(r["seconds"] for r in runs), 1) if runs else None,
            "cost": "cost_* columns: each configuration's inference cost, measured when the table was written, "
                    "on the machine above's CPU, one thread (trainables.cost)"}
    return _write_table(runs, costs, meta, out)


def _write_table(runs: list[dict[str, Any]], costs: dict[str, dict[str, float]], meta: dict[str, Any],
                 out: Path) -> Path:
    """A table file: a row per (config, seed, epoch) of `runs`, each configuration's cost (None
    where `costs` has none), and `meta` (with the machine, versions and seeds) in its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.machine import machine

    rows: dict[str, list[Any]] = {k: [] for k in ("config", "seed", "epoch", "local_stream", *PARAMETERS, *METRICS,
                                                   *COST)}
    for run in sorted(runs, key=lambda r: (r["config"], r["seed"])):
        values = run["values"]
        for epoch, metrics in enumerate(run["epochs"], 1):
            for key in COST:
                rows[key].append(costs.get(run["config"], {}).get(key))
            rows["config"].append(run["config"])
            rows["seed"].append(run["seed"])
            rows["epoch"].append(epoch)
            rows["local_stream"].append(values.get("local_stream", True))
            for key in PARAMETERS:
                rows[key].append(values.get(key))
            for key in METRICS:
                rows[key].append(metrics.get(key, 0.0))
    seeds_of = collections.Counter(str(run["config"]) for run in runs)
    meta = {**meta, "machine": machine(), "versions": _versions(), "recorded_runs": len(runs),
            "seeds_per_config": dict(sorted(seeds_of.items()))}
    table = pa.table(rows).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    return out


DRAW_SALT = "table"  # a drawn table's own runs; replays draw with another salt (curve_model.REPLAY_SALT)


def write_drawn(model: Any, values: dict[str, dict[str, Any]], seeds: int, out: Path, command: str,
                costs: dict[str, dict[str, float]] | None = None, source: dict[str, Any] | None = None) -> Path:
    """A table of `seeds` runs (seeds 0..seeds-1) of every configuration in `values` (name ->
    its values), drawn from `model` (a trainables.curve_model.CurveModel): the same schema as a
    recorded table, with the model in its metadata, so its truth (the model's mean curves) is
    known exactly and replays draw from that model. `source`: the recorded table's metadata it
    was fitted to (its plan and space), if any; `costs`: each configuration's inference cost."""
    runs = [{"config": name, "seed": seed, "values": v, "seconds": 0.0, "epochs": model.draw(name, seed, DRAW_SALT)}
            for name, v in values.items() for seed in range(seeds)]
    source = source or {}
    meta = {"command": command, "plan": source.get("plan", {"design": "ablation"}),
            "space": source.get("space", _space().to_raw()),
            "drawn": {"seeds": seeds, "salt": DRAW_SALT, "from": source.get("command")},
            "model": model.to_dict(),
            "true_val_acc": {n: round(model.true_final(n), 5) for n in sorted(values)},
            "standard_error": dict.fromkeys(sorted(values), 0.0)}
    return _write_table(runs, costs or {}, meta, out)


def draw(table: Path, seeds: int, out: Path, command: str) -> Path:
    """A table drawn from the model fitted to the recorded `table`, with its configurations and
    costs (`write_drawn`)."""
    recorded = curve_table.CurveTable(table)
    return write_drawn(recorded.model, recorded.values, seeds, out, command, recorded.costs, recorded.metadata)


def check(table: Path, held_out_every: int = 2, draws: int = 2000) -> dict[str, Any]:
    """The model fitted on part of a recorded table's seeds, tested on the recorded runs of the
    others. Held out: of each configuration with at least 3 seeds more than the first ones (the
    seeds every configuration has, at most 3), every `held_out_every`-th seed after those; the
    seeds held out are then absent from the fit altogether, so the model knows neither their
    runs nor their shared effect.

    Reported: the share of held-out final values inside the model's central 50%, 80% and 95%
    intervals (a run's value: mean + a new seed's effect + the configuration's own noise), the
    same for differences of two configurations on one held-out seed (the seed's effect cancels:
    what a ranking reads), the probability integral transform's spread, and the held-out
    paths' epoch-to-epoch steps and lag-1 autocorrelation of residuals against drawn paths."""
    import numpy as np
    from scipy.stats import norm

    from trainables.curve_model import CurveModel

    recorded = curve_table.CurveTable(table)
    counts = collections.Counter(n for n, _ in recorded.curves)
    # the first seeds, those every configuration has (at most 3), are never held out
    base = min(3, len(set.intersection(*({s for m, s in recorded.curves if m == n} for n in counts))))
    rich = sorted(n for n, k in counts.items() if k >= base + 3)
    seeds_of = {n: sorted(s for m, s in recorded.curves if m == n) for n in rich}
    held = {(n, s) for n in rich for i, s in enumerate(seeds_of[n])
            if i >= base and (i - base) % held_out_every == 0}
    held_seeds = {s for _, s in held}
    held = {(n, s) for (n, s) in recorded.curves if s in held_seeds}
    fit_on = {k: c for k, c in recorded.curves.items() if k not in held}
    model = CurveModel.fit(fit_on, curve_table.METRICS, recorded.model.grid)
    acc = model.metrics["val_acc"]
    last = model.epochs - 1
    seed_var = float(np.sum(np.square(np.asarray(acc.seed_factor)[last])))
    shape_var = float(np.sum(np.square(np.asarray(acc.residual_factor)[last])))
    pit, pit_diff = [], []
    for name, seed in sorted(held):
        value = recorded.curves[(name, seed)][last]["val_acc"]
        sd = math.sqrt(seed_var + acc.sigma[name] ** 2 * shape_var)
        pit.append(float(norm.cdf((value - acc.mean[name][last]) / sd)))
    for seed in sorted(held_seeds):
        names = sorted(n for n, s in held if s == seed)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                diff = recorded.curves[(a, seed)][last]["val_acc"] - recorded.curves[(b, seed)][last]["val_acc"]
                sd = math.sqrt((acc.sigma[a] ** 2 + acc.sigma[b] ** 2) * shape_var)
                pit_diff.append(float(norm.cdf((diff - (acc.mean[a][last] - acc.mean[b][last])) / sd)))

    def coverage(values: list[float]) -> dict[str, float]:
        u = np.asarray(values)
        return {f"{level}%": round(float(np.mean(np.abs(u - 0.5) <= level / 200)), 3) for level in (50, 80, 95)}

    def paths(runs: list[tuple[str, list[float]]]) -> dict[str, float]:
        steps = [b - a for _, path in runs for a, b in itertools.pairwise(path)]
        resid = [np.asarray(path) - np.asarray(acc.mean[name]) for name, path in runs]
        lag1 = [float(np.corrcoef(r[:-1], r[1:])[0, 1]) for r in resid if np.std(r[:-1]) > 0 and np.std(r[1:]) > 0]
        return {"step_sd_points": round(100 * float(np.std(steps)), 2),
                "residual_lag1_autocorrelation": round(float(np.median(lag1)), 3)}

    held_paths = [(n, [row["val_acc"] for row in recorded.curves[(n, s)]]) for n, s in sorted(held)]
    fresh = [(n, [row["val_acc"] for row in model.draw(n, 10_000 + i)]) for i in range(draws // len(rich) + 1)
             for n in rich]
    shown = table.resolve().relative_to(ROOT) if table.resolve().is_relative_to(ROOT) else table
    return {"table": str(shown), "held_out_seeds": sorted(held_seeds), "held_out_runs": len(held),
            "fitted_on_runs": len(fit_on), "configs_with_held_out_runs": len(rich),
            "final_value_coverage": coverage(pit), "paired_difference_coverage": coverage(pit_diff),
            "paired_differences": len(pit_diff),
            "pit_sd": round(float(np.std(pit)), 3), "pit_sd_uniform": round(1 / math.sqrt(12), 3),
            "held_out_paths": paths(held_paths), "drawn_paths": paths(fresh),
            "seed_effect_sd_points": round(100 * math.sqrt(seed_var), 2),
            "residual_sd_points_median": round(100 * float(np.median([acc.sigma[n] for n in rich])) *
                                               math.sqrt(shape_var), 2)}


def show(path: Path) -> dict[str, Any]:
    """What the table shows: final accuracies, the gain over global-only, the crop scale's
    effect, how far each epoch's ranking is from the final one, and how far one seed's ranking
    is from the true one (a configuration's true accuracy: its seed-adjusted mean final)."""
    import pandas as pd
    from scipy.stats import spearmanr

    frame = pd.read_parquet(path)
    last = int(frame["epoch"].max())
    ends = frame[frame["epoch"] == last]
    truth, errors = curve_table.seed_adjusted({(str(r.config), int(r.seed)): float(r.val_acc)
                                               for r in ends.itertuples()})
    final, error = pd.Series(truth).sort_index(), pd.Series(errors).sort_index()
    shared = [s for s in sorted(frame["seed"].unique()) if ends.groupby("seed")["config"].nunique().get(s, 0)
              == len(final)]
    # each epoch's mean over the seeds every configuration has (comparable between configurations)
    mean = frame[frame["seed"].isin(shared)].groupby(["config", "epoch"])["val_acc"].mean().unstack("epoch")
    sampled = final.drop(index=["global_only"])
    params = frame.drop_duplicates("config").set_index("config")
    seeds = frame[frame["epoch"] == last].pivot(index="config", columns="seed", values="val_acc")
    crop = params.loc[sampled.index, "crop_scale"]
    count = ends.groupby("config")["val_acc"].count()
    top = final.drop(index=["global_only"]).sort_values(ascending=False).index[:30]
    out = {
        "configs": len(final), "seeds": int(frame["seed"].nunique()), "epochs": last,
        "seeds_shared_by_every_config": [int(s) for s in shared],
        "seeds_per_config": {str(k): int(v) for k, v in count.value_counts().sort_index().items()},
        "validation_images": curve_table.validation_images(_metadata(path)),
        "standard_error_points": {
            "top30_max": round(100 * float(error[top].max()), 2),
            "top30_median": round(100 * float(error[top].median()), 2),
            "all_median": round(100 * float(error.median()), 2),
            # the configurations with the most seeds, paired on them: the seed's shared effect cancels
            "most_seeded_paired": _paired_points(ends, count)},
        "top10": [{"config": str(n), "true_val_acc": round(float(final[n]), 4), "seeds": int(count[n]),
                   "standard_error_points": round(100 * float(error[n]), 2)} for n in top[:10]],
        "final_val_acc": {"best": round(float(final.max()), 4), "median": round(float(sampled.median()), 4),
                          "worst": round(float(sampled.min()), 4), "best_config": str(final.idxmax())},
        "global_only": round(float(final["global_only"]), 4),
        "rra_gain_points": round(100 * float(final.max() - final["global_only"]), 1),
        "seed_noise_points": (round(100 * float((seeds[0] - seeds[1]).abs().median()), 2)
                              if seeds.shape[1] > 1 else None),
        # a seed's shared effect: each seed's mean final accuracy over the configurations every seed has
        "seed_means": {int(c): round(float(seeds[c][seeds[shared].notna().all(axis=1)].mean()), 4) for c in shared},
        "crop_scale_spearman_with_final": round(float(spearmanr(crop, sampled).statistic), 3),
        "final_by_crop_scale": {f"{lo:.1f}-{lo + 0.2:.1f}":
                                round(float(sampled[(crop >= lo) & (crop < lo + 0.2)].mean()), 4)
                                for lo in (0.2, 0.4, 0.6, 0.8)},
        "rank_correlation_with_final": {int(e): round(float(spearmanr(mean[e], final).statistic), 3)
                                        for e in mean.columns if e < last},
        "configs_within_1pt_of_best": int((sampled >= sampled.max() - 0.01).sum()),
        # a search sees one seed of a configuration: pick the best of every sampled configuration
        # by one seed's final accuracy, and this is how far its true accuracy is from the best
        "regret_of_best_by_one_seed_points": {
            int(s): round(100 * float(sampled.max() - sampled[seeds.loc[sampled.index, s].idxmax()]), 2)
            for s in shared},
    }
    if "cost_flops_per_image" in frame:  # a cost table: the true front of accuracy against FLOPs
        out["true_front"] = _true_front(sampled, params, count)
    return out


def _true_front(truth: Any, params: Any, count: Any) -> list[dict[str, Any]]:
    """The configurations no other beats on both true accuracy and FLOPs an image, cheapest
    first (the front benchmarks.pareto_search scores against), each with its FLOPs."""
    from study.pareto import fronts

    names = list(truth.index)
    flops = params.loc[names, "cost_flops_per_image"]
    first = fronts([(float(truth[n]), -float(flops[n])) for n in names])[0]
    out = []
    for name in sorted((names[i] for i in first), key=lambda n: float(flops[n])):
        values = {k: params.loc[name, k] for k in ("refine", "recursion_steps", "patch_size") if k in params}
        out.append({"config": str(name), "true_val_acc": round(float(truth[name]), 4), "seeds": int(count[name]),
                    "mflops_per_image": round(float(flops[name]) / 1e6, 2),
                    **{k: v if isinstance(v, str) else int(v) for k, v in values.items() if v is not None and v == v}})
    return out


def _paired_points(last: Any, count: Any) -> dict[str, Any]:
    """The paired standard error (points) of the configurations that have the most seeds."""
    most = [str(n) for n in count[count == count.max()].index]
    finals = {(str(r.config), int(r.seed)): float(r.val_acc) for r in last.itertuples()}
    return {"configs": len(most), "seeds": int(count.max()),
            "standard_error": round(100 * paired_standard_error(finals, most), 2)}


def _metadata(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    meta: dict[str, Any] = json.loads((pq.read_schema(path).metadata or {}).get(METADATA_KEY, b"{}"))
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="train the table's runs (resumable)")
    rec.add_argument("--configs", type=int, default=200,
                     help="Sobol configurations, besides the paper's and global-only")
    rec.add_argument("--seeds", type=int, default=3, help="seeds of every configuration")
    rec.add_argument("--top", type=int, default=30,
                     help="configurations (best by mean final accuracy) that get more seeds")
    rec.add_argument("--target-se", type=float, default=0.015,
                     help="... until the largest standard error of their mean is at most this")
    rec.add_argument("--max-seeds", type=int, default=16, help="... or they have this many seeds")
    rec.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="runs at a time, one thread each")
    rec.add_argument("--design", choices=tuple(DESIGNS), default="ablation",
                     help="ablation: recursion steps, crop scale, temperature (benchmarks/spaces/efficiency.yaml); "
                          "cost: refine, recursion steps, patch size, crop scale (benchmarks/spaces/cost.yaml); "
                          "steady: as ablation, in a steadier regime (benchmarks/spaces/steady.yaml)")
    rec.add_argument("--work", type=Path, default=default_work())
    wr = sub.add_parser("write", help="write the Parquet table from the runs recorded")
    wr.add_argument("--work", type=Path, default=default_work())
    wr.add_argument("--out", type=Path, default=TABLE)
    sh = sub.add_parser("show", help="print what the table shows")
    sh.add_argument("--table", type=Path, default=TABLE)
    ch = sub.add_parser("check", help="test the replays' model on recorded seeds it was not fitted on")
    ch.add_argument("--table", type=Path, default=TABLE)
    ch.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    dr = sub.add_parser("draw", help="write a table drawn from the model fitted to a recorded one")
    dr.add_argument("--table", type=Path, default=TABLE)
    dr.add_argument("--seeds", type=int, default=3, help="seeds (0, 1, ...) of every configuration")
    dr.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command in ("show", "check", "draw") and not args.table.is_file():
        parser.error(f"no table at {args.table}")
    if args.command == "record":
        if args.configs < 1 or args.seeds < 1 or args.jobs < 1 or args.top < 0 or args.max_seeds < args.seeds:
            parser.error("--configs, --seeds and --jobs must be at least 1, --top at least 0, "
                         "and --max-seeds at least --seeds")
        if not 0 < args.target_se < 1:
            parser.error(f"--target-se: expected an accuracy in (0, 1), got {args.target_se}")
        record(args.configs, args.seeds, args.jobs, args.work, args.top, args.target_se, args.max_seeds,
               args.design)
    elif args.command == "write":
        if not (args.work / "runs.jsonl").is_file():
            parser.error(f"no runs recorded in {args.work}; run `python -m benchmarks.tables.curves record` first")
        plan = json.loads((args.work / "plan.json").read_text())
        command = (f"python -m benchmarks.tables.curves record --configs {plan['configs']} --seeds {plan['seeds']}"
                   + (f" --design {plan['design']}" if plan.get("design", "ablation") != "ablation" else "")
                   + (f" --top {plan['top']} --target-se {plan['target_se']} --max-seeds {plan['max_seeds']}"
                      if "top" in plan else ""))
        print(write(args.work, args.out, command))
    elif args.command == "check":
        figures = {"command": "python -m benchmarks.tables.curves check " + " ".join(argv or sys.argv[2:]),
                   **check(args.table)}
        if args.out:
            from benchmarks.machine import machine

            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({**figures, "machine": machine()}, indent=1) + "\n")
        print(json.dumps(figures, indent=2))
    elif args.command == "draw":
        if args.seeds < 1:
            parser.error("--seeds must be at least 1")
        print(draw(args.table, args.seeds, args.out, f"python -m benchmarks.tables.curves draw --table {args.table} "
                                                      f"--seeds {args.seeds}"))
    else:
        print(json.dumps(show(args.table), indent=2))


if __name__ == "__main__":
    main()
