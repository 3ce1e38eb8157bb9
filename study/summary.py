"""The end-of-study summary: built once from the study's results model (study.results'
per-trial rows) and the one ranking, saved as STUDY/summary.json, printed as a table with the
paths and the MLflow page of the study's runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from study.keys import BASELINE, COMPLETED, COST_METRICS, ERRORED, SEARCH, STOPPED_EARLY, TEST_METRICS, sign
from study.ranking import ranked

SUMMARY_FILE = "summary.json"


def build(record: Any, rows: list[dict[str, Any]], tested: dict[str, dict[str, float]],
          finalists: dict[str, dict[int, float]] | None = None, rerun_epochs: int = 0,
          race_stop: str | None = None) -> dict[str, Any]:
    """The summary of a finished study (rows: `study.results.trial_rows` of its table; tested:
    trial id -> test metrics, added to the rows; finalists: the noise-aware ending's values,
    searched trial id -> seed -> metric at max_t, which rank the finalists first, by their mean
    over seeds; rerun_epochs: the epochs their re-runs took; race_stop: why a raced ending
    stopped)."""
    metric = record.metric
    for row in rows:
        row.update(tested.get(row["trial_id"], {}))
    named, noise = noise_aware(finalists or {}, record.mode, record.train_seed)
    order = ordered(record, rows, named)
    best = dict(order[0]) if order else None
    if best is not None and named:
        best["noise_aware"] = named[0]
    counts = {how: sum(r["outcome"] == how for r in rows if r["kind"] == SEARCH)
              for how in (COMPLETED, STOPPED_EARLY, ERRORED)}
    objectives = record.space.study.objective_list()
    return {
        "objectives": [list(o) for o in objectives],
        "front": front(rows, objectives, named) if len(objectives) > 1 else None,
        "study": record.name, "space": record.space.name, "metric": metric, "mode": record.mode,
        "max_epochs": record.max_epochs, "epoch_budget": record.space.study.epoch_budget,
        "epochs_spent": sum(int(r["epochs"]) for r in rows) + rerun_epochs, "rerun_epochs": rerun_epochs,
        "folder": str(record.folder),
        "tune_path": record.tune_paths[0], "finalists_path": record.finalists_path if named else None,
        # the Tune experiments it covers (study.record.finished reads them), and each --extend
        "experiments": list(record.experiments), "tune_paths": list(record.tune_paths),
        "extensions": [e.line() for e in record.extensions] or None,
        "optuna_storage": record.stores.optuna_storage, "tracking_uri": record.stores.tracking_uri,
        "counts": counts, "ranking": [r["trial_id"] for r in order], "best": best,
        "finalists": named, "seed_noise": noise, "race_stop": race_stop,
        "warm_start": list(record.settings.warm_start) or None,
        "baselines": [r for r in rows if r["kind"] == BASELINE], "trials": rows,
    }


def ordered(record: Any, rows: list[dict[str, Any]], named: list[dict[str, Any]]) -> list[Any]:
    """The summary's ranking of `rows` (study.ranking), best first, with the finalists named on
    several seeds (`named`, from `noise_aware`) first, in their order."""
    order = ranked(rows, record.metric, record.mode, record.max_epochs)
    if not named:
        return order
    by_id = {r["trial_id"]: r for r in order}
    first = {f["trial_id"] for f in named}
    return [by_id[f["trial_id"]] for f in named] + [r for r in order if r["trial_id"] not in first]


def front(rows: list[dict[str, Any]], objectives: list[tuple[str, str]],
          named: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Pareto front of a multi-objective study, at equal fidelity: the sampled trials that
    ran to max_t and are dominated by none on the objectives (a finalist by its mean over
    seeds), cheapest first (by the first cost)."""
    from study.pareto import fronts

    means = {f["trial_id"]: f for f in named}
    metric = objectives[0][0]
    done = [r for r in rows if r["kind"] == SEARCH and r["outcome"] == COMPLETED
            and all(r.get(name) is not None for name, _ in objectives)]
    out = []
    for r in done:
        value = means[r["trial_id"]]["mean"] if r["trial_id"] in means else r[metric]
        seeds = means[r["trial_id"]]["seeds"] if r["trial_id"] in means else 1
        out.append({"trial_id": r["trial_id"], "name": r["name"], metric: float(value), "seeds": seeds,
                    **{name: float(r[name]) for name, _ in objectives[1:]}})
    if not out:
        return []
    signed = [tuple(sign(mode) * e[name] for name, mode in objectives) for e in out]
    first = fronts(signed)[0]
    cost, mode = objectives[1]
    return sorted((out[i] for i in first), key=lambda e: (1.0 if mode == "min" else -1.0) * e[cost])


def noise_aware(values: dict[str, dict[int, float]], mode: str,
                selection_seed: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The finalists best first under seed noise (study.noise), each as the searched trial's id
    with its mean over its new seeds, interval, gap to the best and probability of being the
    best (the means shrunk, study.noise.SHRINK, and recalibrated, study.noise.RECALIBRATION); and
    the seed noise. `selection_seed`: the
    study's own training seed, whose runs chose the finalists and are left out."""
    if not values:
        return [], None
    from study.noise import CONFIDENCE, RECALIBRATION, SHRINK, WIDEN, finalists

    stats, noise = finalists(values, mode, selection_seed=selection_seed, shrink=SHRINK, recalibrate=RECALIBRATION,
                             widen=WIDEN)
    named = [{"trial_id": f.key, **{k: v for k, v in f.as_dict().items() if k != "key"}} for f in stats]
    return named, {"sd": noise.sd, "df": noise.df, "paired": noise.paired, "confidence": CONFIDENCE,
                   "selection_seed": selection_seed, "shrunk": SHRINK, "recalibrated": RECALIBRATION,
                   "widened": WIDEN}


def save(summary: dict[str, Any], folder: Path) -> None:
    (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))


def load(folder: Path) -> dict[str, Any] | None:
    path = folder / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if not math.isnan(value) else "nan"
    return str(value)


def print_finalists(summary: dict[str, Any]) -> None:
    """The noise-aware ending's table: each finalist's mean over its new seeds, its interval, its
    gap to the best and the probability that it is the best; then the best, named in one line,
    and how well such probabilities held on the benchmark's fresh noise."""
    from study.noise import CALIBRATION

    named, noise, metric = summary.get("finalists") or [], summary.get("seed_noise") or {}, summary["metric"]
    if not named:
        return
    names = {r["trial_id"]: r["name"] for r in summary["trials"]}
    level = f"{100 * noise.get('confidence', 0.95):.0f}%"
    header = ["finalist", "new seeds", f"mean {metric}", f"{level} interval", "gap to the best", "P(best)"]
    lines = [[names.get(f["trial_id"], f["trial_id"]), str(f["seeds"]), _fmt(f["mean"]), _interval(f), _gap(f),
              "-" if f["p_best"] is None else f"{f['p_best']:.2f}"] for f in named]
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
    sd = noise.get("sd")
    paired = ", seeds paired" if noise.get("paired") else ""
    said = "not measured (one new seed each)" if sd is None else \
        f"sd {100 * sd:.2f} points a run ({noise['df']} degrees of freedom{paired})"
    left_out = "; the run that chose each is left out (the luckiest of many)" \
        if noise.get("selection_seed") is not None else ""
    raced = f" (raced: {summary['race_stop']})" if summary.get("race_stop") else ""
    print(f"\nNamed on several seeds: each finalist trained again with new seeds{raced}{left_out}; seed noise "
          f"{said}:")
    for row in [header, *lines]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    top = named[0]
    sure = "" if top["p_best"] is None else \
        f"; the probability that it is the best of the finalists: {top['p_best']:.2f}"
    print(f"Best: {names.get(top['trial_id'], top['trial_id'])}, {metric} {_fmt(top['mean'])} over {top['seeds']} "
          f"new seed(s) ({level} interval {_interval(top)}){sure}.")
    if top["p_best"] is not None:
        print(f"How far such a P(best) holds: {CALIBRATION}")


def print_front(summary: dict[str, Any]) -> None:
    """The Pareto front of a multi-objective study, cheapest first."""
    named = summary.get("front")
    if not named:
        return
    objectives = [tuple(o) for o in summary["objectives"]]
    metric = objectives[0][0]
    header = ["run", metric, "seeds", *(name for name, _ in objectives[1:])]
    lines = [[e["name"], _fmt(e[metric]), str(e["seeds"]),
              *(_flops(e[n]) if n == "cost_flops_per_image" else _fmt(e[n]) for n, _ in objectives[1:])]
             for e in named]
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
    wanted = ", ".join(f"{name} {mode}" for name, mode in objectives)
    print(f"\nPareto front ({wanted}; trials that reached max_t, a finalist by its mean; cheapest first):")
    for row in [header, *lines]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _flops(value: Any) -> str:
    """FLOPs in a short form: 38.9M, 157G."""
    if value is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def _gap(finalist: dict[str, Any]) -> str:
    if finalist.get("gap_low") is None:
        return "-" if finalist.get("gap", 0.0) != 0.0 else "0"
    return f"{finalist['gap']:+.3f} ({finalist['gap_low']:+.3f} to {finalist['gap_high']:+.3f})"


def _interval(finalist: dict[str, Any]) -> str:
    if finalist.get("low") is None:
        return "-"
    return f"{finalist['low']:.3f} to {finalist['high']:.3f}"


def print_summary(summary: dict[str, Any], runs_url: str | None, top: int = 5) -> None:
    """The end-of-run table (the study's ranking), the baselines, where everything is (printed
    before the study waits for MLflow; runs_url None: MLflow never made the study's runs)."""
    metric = summary["metric"]
    by_id = {r["trial_id"]: r for r in summary["trials"]}
    best = [by_id[t] for t in summary["ranking"][:top]]
    fixed = ("trial_id", "name", "kind", "outcome", "epochs", metric, *TEST_METRICS, *COST_METRICS)
    params = [k for k in (best[0] if best else {}) if k not in fixed]
    header = ["run", *params, metric, "test_acc", "FLOPs/image", "epochs", "outcome"]
    lines = [[r["name"], *(_fmt(r.get(k)) for k in params), _fmt(r[metric]), _fmt(r.get("test_acc")),
              _flops(r.get("cost_flops_per_image")), str(r["epochs"]), r["outcome"]] for r in best]
    lines += [[r["name"], *("-" for _ in params), _fmt(r[metric]), _fmt(r.get("test_acc")),
               _flops(r.get("cost_flops_per_image")), str(r["epochs"]), "baseline"] for r in summary["baselines"]]
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(header)]
    order = "the finalists first, by their mean over seeds (below); then trials that reached max_t" \
        if summary.get("finalists") else "trials that reached max_t first"
    print(f"\nBest configurations ({metric} at the last epoch of one run, {order}; test accuracy of the best "
          "checkpoint):")
    for row in [header, *lines]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print_finalists(summary)
    print_front(summary)
    counts = summary["counts"]
    budget = summary.get("epoch_budget")
    reruns = summary.get("rerun_epochs") or 0
    of_them = f", {reruns} of them the finalists' re-runs" if reruns else ""
    by = "the scheduler" if budget is None else \
        f"the scheduler or the epoch budget ({budget}; {summary['epochs_spent']} run{of_them})"
    if summary.get("warm_start"):
        print(f"Warm-started from: {', '.join(summary['warm_start'])}")
    for line in summary.get("extensions") or []:
        print(f"Extended {line}")
    print(f"\nTrials: {counts[COMPLETED]} ran to {summary['max_epochs']} epochs, {counts[STOPPED_EARLY]} stopped "
          f"early by {by}, {counts[ERRORED]} errored; {len(summary['baselines'])} baseline(s).")
    top_row, baselines = summary["best"], summary["baselines"]
    if top_row and baselines and top_row.get(metric) is not None and baselines[0].get(metric) is not None:
        print(f"Best {top_row['name']} against {baselines[0]['name']}: {metric} "
              f"{top_row[metric] - baselines[0][metric]:+.3f}")
    tune = ", ".join(summary.get("tune_paths") or [summary["tune_path"]])
    print(f"\nStudy folder: {summary['folder']}\nTune results: {tune}")
    print(f"Optuna storage: {summary['optuna_storage']}\nMLflow: {summary['tracking_uri']} "
          f"(experiment {summary['study']})")
    uri = summary["tracking_uri"]
    if runs_url is None:
        print(f"\nMLflow has not received this study yet; `python -m study.report --name {summary['study']}` "
              "sends it and gives the page of its runs.")
    else:
        which = "its Pareto front, cheapest first" if summary.get("front") is not None else "best first"
        print(f"\nThis study's trial runs in the MLflow UI, {which} (once MLflow has taken what is queued):")
        if not uri.startswith("http"):
            print(f"  .venv/bin/mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000   # then open:")
        print(f"  {runs_url}")
    print("Open optuna-dashboard on its Optuna storage:")
    print(f"  .venv/bin/optuna-dashboard {summary['optuna_storage']} --host 127.0.0.1 --port 8080")
