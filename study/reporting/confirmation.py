"""The report's confirmation section: per factor, each level's mean ± sd over seeds at the full
budget, tested against the best configuration with a paired t test over the seeds both share
(Holm-corrected). The runs are the confirmation phase's (study.phases.confirm)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def summarise(confirm: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (variant, level): seeds, and mean and sd of the final metric and of test accuracy."""
    final = confirm.sort_values("epoch").groupby("trial_id").tail(1)
    final = final.assign(level=final["level"].map(lambda v: None if v is None or v != v else v))
    grouped = final.groupby(["variant", final["level"].astype(str)], sort=False, dropna=False)
    out = grouped.agg(seeds=("trial_id", "count"), value=("level", "first"), val_mean=(metric, "mean"),
                      val_sd=(metric, "std"), test_mean=("test_acc", "mean"), test_sd=("test_acc", "std"))
    return out.reset_index(level=1, drop=True).reset_index()


def confirmation_section(doc: Any, results: Any, facts: dict[str, Any]) -> None:
    """Adds the ablation tables (mean ± sd over seeds), one per factor, to the report."""
    table = summarise(results.confirm, results.metric)
    best_rows = table[table["variant"] == "best"]
    if best_rows.empty:
        return
    best = best_rows.iloc[0]
    point = results.confirm[results.confirm["variant"] == "best"].iloc[0]
    doc.heading("Confirmation: one factor at a time around the best configuration, several seeds")
    doc.text(f"Around {point['name'].rsplit('-seed', 1)[0].removeprefix('confirm-')}: every run trained "
             f"{results.space.study.max_epochs} epochs without early stopping, {int(best['seeds'])} seed(s) each; "
             "test accuracy of the last epoch (no model selection). Δ: difference of mean test accuracy against "
             "the best configuration, ± its standard error. The seeds vary the training only: every run is "
             f"validated on the same images (split_seed {int(results.space.constants.get('split_seed', 0))}).")
    tests = paired_tests(results.confirm)
    doc.text("p: a paired t test of test accuracy against the best configuration over the seeds both share "
             f"(scipy.stats.ttest_rel), after Holm's correction over the {len(tests)} comparisons; "
             "'beyond the noise' where it is below 0.05.")
    for factor in [*results.space.parameters, *sorted(v for v in set(table["variant"]) if v.startswith("baseline"))]:
        rows = table[table["variant"] == factor]
        if rows.empty:
            continue
        if factor.startswith("baseline"):
            lines = [_line("RRA, best configuration", best, best, results.metric, tests),
                     _line(factor.removeprefix("baseline-"), rows.iloc[0], best, results.metric, tests)]
            column = "model"
        else:
            lines = [_line(f"{_text(point[factor])} (best)", best, best, results.metric, tests),
                     *[_line(_text(r["value"]), r, best, results.metric, tests) for _, r in rows.iterrows()]]
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

    from study.reporting.analysis import holm

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
