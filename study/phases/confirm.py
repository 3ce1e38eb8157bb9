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
from study.keys import CONFIRM, LEVEL, VARIANT
from study.phases import reruns
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


def confirmation_configs(record: StudyRecord, best: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """Every trial config of the confirmation: variations and baselines, each with every seed."""
    out = []
    for factor, level, values in variations(record.space, best):
        out += reruns.configs(record, values, seeds, CONFIRM, "confirm", **{VARIANT: factor, LEVEL: level})
    for name, overrides in record.space.baselines.items():
        out += reruns.configs(record, overrides, seeds, CONFIRM, f"confirm-baseline-{name}", searched=False,
                              **{VARIANT: f"baseline-{name}", LEVEL: None})
    return out


def run_confirmation(record: StudyRecord, n_seeds: int) -> pd.DataFrame:
    """Runs (or continues) the confirmation of a finished study; returns its table. Seeds vary
    the training only: the validation split keeps the study's `split_seed`."""
    from study import summary
    from study.results import CONFIRM_FILE, save_table
    from study.session import StudySession

    done = summary.load(record.folder)
    if done is None:
        raise StudyInputError(f"study {record.name!r} has not finished (no summary): resume it first")
    best = done["best"]
    if best is None:
        raise StudyInputError(f"study {record.name!r} has no sampled trial to confirm")
    values = {k: best.get(k) for k in record.space.parameters}
    configs = confirmation_configs(record, values, reruns.seeds(record, n_seeds))
    print(f"confirmation of {best['name']}: {len(configs)} runs ({n_seeds} seed(s) each), "
          f"{record.max_epochs} epochs, no early stopping", flush=True)
    with StudySession(record, resume=True) as session:
        try:
            table, _ = reruns.run(record, f"{record.name}-confirm", record.confirm_path, configs, test=True)
        finally:
            session.settle(status="FINISHED")
    table.insert(0, "study", record.name)
    save_table(table, record.folder / CONFIRM_FILE)
    return table


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
    tests = paired_tests(record.confirm)
    doc.text("p: a paired t test of test accuracy against the best configuration over the seeds both share "
             f"(scipy.stats.ttest_rel), after Holm's correction over the {len(tests)} comparisons; "
             "'beyond the noise' where it is below 0.05.")
    for factor in [*record.space.parameters, *sorted(v for v in set(table["variant"]) if v.startswith("baseline"))]:
        rows = table[table["variant"] == factor]
        if rows.empty:
            continue
        if factor.startswith("baseline"):
            lines = [_line("RRA, best configuration", best, best, record.metric, tests),
                     _line(factor.removeprefix("baseline-"), rows.iloc[0], best, record.metric, tests)]
            column = "model"
        else:
            lines = [_line(f"{_text(point[factor])} (best)", best, best, record.metric, tests),
                     *[_line(_text(r["value"]), r, best, record.metric, tests) for _, r in rows.iterrows()]]
            lines.sort(key=lambda line: _order(line["level"]))
            column = factor
        doc.text(f"**{factor}**")
        doc.table(pd.DataFrame(lines).rename(columns={"level": column}))
    facts["confirmation"] = table.to_dict("records")
    facts["confirmation_tests"] = {f"{v}={lv}": t for (v, lv), t in tests.items()}


def paired_tests(confirm: pd.DataFrame, column: str = "test_acc") -> dict[tuple[str, str], dict[str, float]]:
    """Each variant's (variant, level) paired t test against the best configuration over the seeds
    both have (scipy.stats.ttest_rel on `column` at the last epoch), with Holm's correction over
    all of them: mean difference, p, p_holm, seeds. Pairs with fewer than two shared seeds, or
    no spread in their differences, are left out."""
    from scipy import stats

    from study.analysis import holm

    final = confirm.sort_values("epoch").groupby("trial_id").tail(1)
    level = final["level"].map(lambda v: "None" if v is None or v != v else str(v))
    by = {key: dict(zip(group["config.seed"], group[column], strict=True))
          for key, group in final.assign(level=level).groupby(["variant", "level"], sort=False)}
    best = next((v for (variant, _), v in by.items() if variant == "best"), None)
    out: dict[tuple[str, str], dict[str, float]] = {}
    if best is None:
        return out
    for key, seeds in by.items():
        shared = sorted(s for s in seeds if s in best and seeds[s] == seeds[s] and best[s] == best[s])
        diffs = [seeds[s] - best[s] for s in shared]
        if key[0] == "best" or len(shared) < 2 or len(set(diffs)) < 2:
            continue
        test = stats.ttest_rel([seeds[s] for s in shared], [best[s] for s in shared])
        out[key] = {"difference": sum(diffs) / len(diffs), "p": float(test.pvalue), "seeds": len(shared)}
    for key, adjusted in zip(out, holm([t["p"] for t in out.values()]), strict=True):
        out[key]["p_holm"] = adjusted
    return out


def _line(label: str, row: Any, best: Any, metric: str,
          tests: dict[tuple[str, str], dict[str, float]]) -> dict[str, Any]:
    is_best = row is best
    diff = row["test_mean"] - best["test_mean"]
    err = math.sqrt(_var(row) / row["seeds"] + _var(best) / best["seeds"])
    test = tests.get((str(row["variant"]), "None" if row["value"] is None or row["value"] != row["value"]
                      else str(row["value"])))
    return {"level": label, "seeds": int(row["seeds"]), metric: _pm(row["val_mean"], row["val_sd"]),
            "test_acc": _pm(row["test_mean"], row["test_sd"]), "Δ test_acc": "-" if is_best else _pm(diff, err),
            "p (paired, Holm)": "-" if test is None else f"{test['p_holm']:.3g}",
            "beyond the noise": "-" if test is None else ("yes" if test["p_holm"] < 0.05 else "no")}


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
