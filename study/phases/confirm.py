"""Confirmation runs: the best configuration and one-factor-at-a-time variations around it,
each with N seeds at the full budget and without early stopping, plus the baselines with the
same seeds. This is what a paper's ablation table needs: mean and standard deviation per level.

Variations: every other choice of a categorical factor; both ends of a numeric factor's range
(T = 1 is "no recursion", crop scale 1 is "the whole image"). A conditional factor is varied
only where its condition holds at the best point; a variation that switches a condition off
drops the parameter it governs (it falls back to the trial default).

The runs go to a Tune experiment STUDY-confirm beside the study's, to the study's MLflow
experiment as child runs of kind "confirm", and to STUDY/confirm.parquet. Running it again
continues an interrupted confirmation.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from study.errors import StudyInputError
from study.keys import CONFIRM, KIND, LEVEL, NAME, PARAMS, VARIANT, run_name, searched_values
from study.record import StudyRecord
from study.spaces import Parameter, SearchSpace


def _levels(param: Parameter) -> list[Any]:
    if param.type == "categorical":
        return list(param.choices)
    assert param.low is not None and param.high is not None
    if param.type == "int":
        return [int(param.low), int(param.high)]
    return [float(param.low), float(param.high)]


def active(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the parameters whose `when:` condition does not hold."""
    out = dict(values)
    for name, param in space.parameters.items():
        if param.when is not None and not param.when.holds(out):
            out.pop(name, None)
    return out


def variations(space: SearchSpace, best: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(factor, level, values) for the best point ("best", None) and each one-factor change."""
    best = active(space, {k: v for k, v in best.items() if v is not None})
    out: list[tuple[str, Any, dict[str, Any]]] = [("best", None, best)]
    for name, param in space.parameters.items():
        if name not in best:
            continue  # inactive at the best point: varying it changes nothing
        for level in _levels(param):
            if level != best[name]:
                out.append((name, level, active(space, {**best, name: level})))
    return out


def confirmation_configs(space: SearchSpace, best: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """Every trial config of the confirmation: variations and baselines, each with every seed."""
    epochs = space.study.max_epochs
    configs = []
    for factor, level, values in variations(space, best):
        for seed in seeds:
            configs.append({**space.trial_config(values), "seed": seed, "epochs": epochs, KIND: CONFIRM,
                            NAME: f"confirm-{run_name(values)}-seed{seed}",
                            PARAMS: searched_values(space.parameters, values), VARIANT: factor, LEVEL: level})
    for name, overrides in space.baselines.items():
        for seed in seeds:
            configs.append({**space.trial_config(overrides), "seed": seed, "epochs": epochs, KIND: CONFIRM,
                            NAME: f"confirm-baseline-{name}-seed{seed}", PARAMS: searched_values(space.parameters, {}),
                            VARIANT: f"baseline-{name}", LEVEL: None})
    return configs


def run_confirmation(record: StudyRecord, n_seeds: int) -> pd.DataFrame:
    """Runs (or continues) the confirmation of a finished study; returns its table. Seeds vary
    the training only: the validation split keeps the study's `split_seed`."""
    from ray.tune import ExperimentAnalysis

    from study import summary
    from study.results import CONFIRM_FILE, save_table, trials_table

    done = summary.load(record.folder)
    if done is None:
        raise StudyInputError(f"study {record.name!r} has not finished (no summary): resume it first")
    best = done["best"]
    if best is None:
        raise StudyInputError(f"study {record.name!r} has no sampled trial to confirm")
    values = {k: best.get(k) for k in record.space.parameters}
    base_seed = int(record.space.constants.get("seed", 0))
    configs = confirmation_configs(record.space, values, [base_seed + 1000 + i for i in range(n_seeds)])
    print(f"confirmation of {best['name']}: {len(configs)} runs ({n_seeds} seed(s) each), "
          f"{record.max_epochs} epochs, no early stopping", flush=True)
    tested = _tune_confirmation(record, configs)
    table = trials_table(ExperimentAnalysis(record.confirm_path), record.space, tested)
    table.insert(0, "study", record.name)
    save_table(table, record.folder / CONFIRM_FILE)
    return table


def _tune_confirmation(record: StudyRecord, configs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Runs the configs under Tune (FIFO) on the study's Ray; returns test metrics by trial id."""
    import ray
    from ray import tune

    from study import execution
    from study.searchers import FixedConfigs

    res = record.resources
    execution.set_ray_env()
    started = execution.init_ray(res)
    _, queue = execution.open_tracking(record, resume=True)
    try:
        tune_config, run_config = execution.tune_configs(
            record, f"{record.name}-confirm", FixedConfigs(configs, record.metric, record.mode), len(configs),
            execution.concurrency(res), tune.CheckpointConfig(num_to_keep=1))
        tuner = execution.tuner(record.confirm_path, execution.trainable(record), tune_config, run_config)
        results = tuner.fit()
        # No model selection in a confirmation: every run is tested at its last epoch.
        finished = [results[i] for i in range(len(results))]
        jobs = {r.metrics["trial_id"]: (r.config, r.checkpoint) for r in finished if r.checkpoint and r.metrics}
        return execution.test_checkpoints(record, jobs)
    finally:
        queue.put(lambda: queue.tracker.finish("FINISHED"))
        execution.settle_tracking(record, queue, None, False, wait_s=60)
        if started:
            ray.shutdown()


# ---------------------------------------------------------------- the report's section


def summarise(confirm: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (variant, level): seeds, and mean and sd of the final metric and of test accuracy."""
    final = confirm.sort_values("epoch").groupby("trial_id").tail(1)
    final = final.assign(level=final["level"].map(lambda v: None if v is None or v != v else v))
    grouped = final.groupby(["variant", final["level"].astype(str)], sort=False, dropna=False)
    out = grouped.agg(seeds=("trial_id", "count"), value=("level", "first"), val_mean=(metric, "mean"),
                      val_sd=(metric, "std"), test_mean=("test_acc", "mean"), test_sd=("test_acc", "std"))
    return out.reset_index(level=1, drop=True).reset_index()


def confirmation_section(doc: Any, record: Any, facts: dict[str, Any]) -> None:
    """Adds the ablation tables (mean ± sd over seeds), one per factor, to the report."""
    table = summarise(record.confirm, record.metric)
    best_rows = table[table["variant"] == "best"]
    if best_rows.empty:
        return
    best = best_rows.iloc[0]
    point = record.confirm[record.confirm["variant"] == "best"].iloc[0]
    doc.heading("Confirmation: one factor at a time around the best configuration, several seeds")
    doc.text(f"Around {point['name'].rsplit('-seed', 1)[0].removeprefix('confirm-')}: every run trained "
             f"{record.space.study.max_epochs} epochs without early stopping, {int(best['seeds'])} seed(s) each; "
             "test accuracy of the last epoch (no model selection). Δ: difference of mean test accuracy against "
             "the best configuration, ± its standard error. The seeds vary the training only: every run is "
             f"validated on the same images (split_seed {int(record.space.constants.get('split_seed', 0))}).")
    for factor in [*record.space.parameters, *sorted(v for v in set(table["variant"]) if v.startswith("baseline"))]:
        rows = table[table["variant"] == factor]
        if rows.empty:
            continue
        if factor.startswith("baseline"):
            lines = [_line("RRA, best configuration", best, best, record.metric),
                     _line(factor.removeprefix("baseline-"), rows.iloc[0], best, record.metric)]
            column = "model"
        else:
            lines = [_line(f"{_text(point[factor])} (best)", best, best, record.metric),
                     *[_line(_text(r["value"]), r, best, record.metric) for _, r in rows.iterrows()]]
            lines.sort(key=lambda line: _order(line["level"]))
            column = factor
        doc.text(f"**{factor}**")
        doc.table(pd.DataFrame(lines).rename(columns={"level": column}))
    facts["confirmation"] = table.to_dict("records")


def _line(label: str, row: Any, best: Any, metric: str) -> dict[str, Any]:
    is_best = row is best
    diff = row["test_mean"] - best["test_mean"]
    err = math.sqrt(_var(row) / row["seeds"] + _var(best) / best["seeds"])
    return {"level": label, "seeds": int(row["seeds"]), metric: _pm(row["val_mean"], row["val_sd"]),
            "test_acc": _pm(row["test_mean"], row["test_sd"]), "Δ test_acc": "-" if is_best else _pm(diff, err)}


def _text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _order(level: str) -> tuple[int, float, str]:
    head = level.split(" ")[0]
    try:
        return (0, float(head), level)
    except ValueError:
        return (1, 0.0, level)


def _var(row: Any) -> float:
    sd = row["test_sd"]
    return 0.0 if sd != sd else float(sd) ** 2


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.3f}" + ("" if sd != sd else f" ± {sd:.3f}")
