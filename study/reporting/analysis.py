"""Ablation statistics on a study's tidy table (see study.results), at equal fidelity.

ASHA stops most trials early, so a trial's last value is an epoch-2 value for some and an
epoch-15 value for others. Every comparison here is made at one rung (one epoch) at a time,
over the trials that reached it: a trial stopped after one epoch never sits beside one that
ran to the end.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from study.keys import sign as direction
from study.policies.asha import rungs
from study.ranking import LOW_AGREEMENT, MIN_TRIALS, rank_agreement
from study.results import trials
from study.spaces import Parameter, SearchSpace

INACTIVE = "inactive"
# Importance from fewer trials than this is noise (PED-ANOVA's top 10% would be one trial).
MIN_IMPORTANCE_TRIALS = 8


def searched(table: pd.DataFrame) -> pd.DataFrame:
    """The sampled trials' rows (baselines and confirmation runs left out)."""
    return table[table["kind"] == "search"]


def at_epoch(table: pd.DataFrame, epoch: int, metric: str) -> pd.Series:
    """The metric at `epoch` of every trial that reached it (index: trial_id)."""
    rows = table[table["epoch"] == epoch]
    return rows.set_index("trial_id")[metric].astype(float)


def levels(values: pd.Series, param: Parameter, bins: int = 4) -> pd.Series:
    """A factor's level per trial: the value for categorical and small int ranges, else a bin
    of the parameter's range (geometric for log ranges); INACTIVE where a condition was off."""
    present = values.notna()
    out = pd.Series(INACTIVE, index=values.index, dtype=object)
    if param.type == "categorical" or (param.type == "int" and values[present].nunique() <= 10):
        out[present] = values[present].map(lambda v: str(int(v)) if param.type == "int" else str(v))
        return out
    assert param.low is not None and param.high is not None
    edges = (np.geomspace(param.low, param.high, bins + 1) if param.log
             else np.linspace(param.low, param.high, bins + 1))
    labels = [f"{_num(a)}-{_num(b)}" for a, b in itertools.pairwise(edges)]
    binned = pd.cut(values[present].astype(float), edges, labels=labels, include_lowest=True)
    out[present] = binned.astype(str)
    return out


def _num(x: float) -> str:
    return f"{x:.2g}" if abs(x) < 10 else f"{x:.0f}"


def _level_order(param: Parameter, found: list[str]) -> list[str]:
    def key(level: str) -> tuple[int, float, str]:
        if level == INACTIVE:
            return (0, 0.0, level)
        try:
            return (1, float(level.split("-")[0]), level)
        except ValueError:
            return (1, float(param.choices.index(level)) if level in param.choices else math.inf, level)

    return sorted(found, key=key)


def factor_table(table: pd.DataFrame, space: SearchSpace) -> pd.DataFrame:
    """Per factor and level: trials, how many reached max_t, and at each rung the number of
    trials there with the best, mean and standard deviation of the metric at that epoch."""
    metric, max_t = space.study.metric, space.study.max_epochs
    rows = searched(table)
    per_trial = trials(rows)
    out = []
    for name, param in space.parameters.items():
        level = levels(per_trial[name], param)
        for value in _level_order(param, sorted(set(level))):
            ids = level.index[level == value]
            base = {"factor": name, "level": value, "trials": len(ids),
                    "reached_max_t": int((per_trial.loc[ids, "epochs_run"] >= max_t).sum())}
            for rung in rungs(space.study):
                vals = at_epoch(rows, rung, metric).reindex(ids).dropna()
                out.append({**base, "rung": rung, "n": len(vals), "best": _stat(vals, "max"),
                            "mean": _stat(vals, "mean"), "sd": _stat(vals, "std")})
    return pd.DataFrame(out)


def _stat(values: pd.Series, how: str) -> float:
    if how == "std" and len(values) < 2:
        return math.nan
    return float(getattr(values, how)()) if len(values) else math.nan


def interaction(table: pd.DataFrame, space: SearchSpace, rows_param: str, cols_param: str,
                rung: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean metric and trial count at `rung` for each (rows level, columns level) pair."""
    rows = searched(table)
    per_trial = trials(rows)
    values = at_epoch(rows, rung, space.study.metric)
    frame = pd.DataFrame({
        "a": levels(per_trial[rows_param], space.parameters[rows_param]),
        "b": levels(per_trial[cols_param], space.parameters[cols_param]),
        "value": values.reindex(per_trial.index),
    }).dropna(subset=["value"])
    mean = frame.pivot_table(index="a", columns="b", values="value", aggfunc="mean")
    count = frame.pivot_table(index="a", columns="b", values="value", aggfunc="count")
    order_a = _level_order(space.parameters[rows_param], list(mean.index))
    order_b = _level_order(space.parameters[cols_param], list(mean.columns))
    mean, count = mean.loc[order_a, order_b], count.loc[order_a, order_b]
    mean.index.name, mean.columns.name = rows_param, cols_param
    return mean, count


def rung_correlation(table: pd.DataFrame, space: SearchSpace) -> pd.DataFrame:
    """Spearman rank correlation between the metric at each rung and at every later rung,
    over the sampled trials that reached the later one. The column against max_t says whether
    ASHA's early decisions ranked trials as their final accuracy does."""
    rows, metric = searched(table), space.study.metric
    milestones = rungs(space.study)
    out = []
    for i, early in enumerate(milestones[:-1]):
        for late in milestones[i + 1:]:
            pair = pd.concat([at_epoch(rows, early, metric), at_epoch(rows, late, metric)], axis=1).dropna()
            rho = rank_agreement(pair.iloc[:, 0].tolist(), pair.iloc[:, 1].tolist())
            out.append({"rung": early, "against": late, "n": len(pair), "spearman": rho})
    return pd.DataFrame(out, columns=["rung", "against", "n", "spearman"])


def early_stopping_verdict(correlation: pd.DataFrame, max_t: int) -> tuple[bool, str]:
    """(trusted, plain sentences) from the rank correlations between rungs."""
    if correlation.empty:
        return True, "No rung before max_t: nothing was stopped early."
    known = correlation.dropna(subset=["spearman"])
    final = known[known["against"] == max_t]
    unchecked = "" if len(final) else (
        f" Fewer than {MIN_TRIALS} trials reached max_t = {max_t}, so the final ranking could not be checked.")
    if known.empty:
        return False, (f"Cannot tell: no pair of rungs has {MIN_TRIALS} or more trials, so the early stops could "
                       "not be checked. Treat early-stopped trials as unranked, or rerun with more samples or a "
                       "larger grace period.")
    worst = known.loc[known["spearman"].idxmin()]
    if worst["spearman"] < LOW_AGREEMENT:
        return False, (f"Warning: the ranking of trials at epoch {int(worst['rung'])} agrees poorly with their "
                       f"ranking at epoch {int(worst['against'])} (Spearman {worst['spearman']:.2f} over "
                       f"{int(worst['n'])} trials). Learning curves cross in this study, so early stopping may have "
                       "stopped trials that would have ended best; do not read early-stopped trials as worse."
                       + unchecked)
    return not unchecked, (f"Early ranks agree with later ranks (Spearman >= {known['spearman'].min():.2f} for "
                           "every pair of rungs with enough trials)." + unchecked)


def best_configs(table: pd.DataFrame, space: SearchSpace, ranking: list[str] | None = None,
                 top: int = 5) -> pd.DataFrame:
    """The best sampled trials in the study's ranking (trial ids, best first: the summary's,
    `StudyResults.ranking`); without one, the same ranking (study.ranking) of the table's trials."""
    from study.results import table_ranking

    metric = space.study.metric
    per_trial = trials(searched(table))
    if ranking is None:
        ranking = table_ranking(table, space, space.study.max_epochs)
    order = [t for t in ranking if t in per_trial.index][:top]
    columns = ["name", *space.parameters, "epochs_run", "outcome", metric, "test_acc"]
    return per_trial.loc[order, columns].reset_index()


def baseline_gain(table: pd.DataFrame, space: SearchSpace, ranking: list[str] | None = None) -> list[dict[str, Any]]:
    """Each baseline against the study's best sampled trial (see best_configs), on val and test."""
    metric = space.study.metric
    best = best_configs(table, space, ranking, top=1)
    per_trial = trials(table)
    out = []
    for _, base in per_trial[per_trial["kind"] == "baseline"].iterrows():
        row: dict[str, Any] = {"baseline": base["name"], f"baseline_{metric}": base[metric],
                               "baseline_test_acc": base.get("test_acc")}
        if not best.empty:
            top = best.iloc[0]
            row.update({"best": top["name"], f"best_{metric}": top[metric], "best_test_acc": top["test_acc"],
                        "best_reached_max_t": bool(top["epochs_run"] >= space.study.max_epochs)})
            row[f"gain_{metric}"] = _diff(top[metric], base[metric])
            row["gain_test_acc"] = _diff(top["test_acc"], base.get("test_acc"))
        out.append(row)
    return out


def _diff(a: Any, b: Any) -> float:
    try:
        return float(a) - float(b)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------- importance (Optuna storage)


def importance(storage: str, study_name: str, space: SearchSpace) -> pd.DataFrame:
    """PED-ANOVA and fANOVA importance of each parameter from the study's Optuna storage, at
    each rung (the trials' intermediate values at that epoch) and at max_t (COMPLETE trials).

    Conditional parameters are assessed twice: over every trial (common parameters only) and
    over the trials where all parameters were active.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    direction = study.directions[0]  # of the metric (a multi-objective study's first objective)
    frozen = [t for t in study.get_trials(deepcopy=False)
              if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    out = []
    for rung in rungs(space.study):
        at_rung = optuna.create_study(direction=direction)
        for t in frozen:
            # Optuna gives a PRUNED trial its last intermediate value: at max_t only COMPLETE count.
            complete = t.state == optuna.trial.TrialState.COMPLETE
            value = (t.values[0] if complete else None) if rung == space.study.max_epochs else \
                t.intermediate_values.get(rung)
            if value is not None and math.isfinite(value):
                at_rung.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                            value=value))
        everyone = len(at_rung.trials)
        for scope, params in _scopes(space, at_rung):
            n = len([t for t in at_rung.trials if all(p in t.params for p in params or [])])
            if params is not None and n == everyone:
                continue  # every trial had every parameter: the same as "all trials"
            for method, evaluator in _evaluators().items():
                out += _importances(at_rung, evaluator, params, n, rung=rung, scope=scope, method=method)
    return pd.DataFrame(out, columns=["rung", "scope", "method", "trials", "parameter", "importance", "note"])


def _scopes(space: SearchSpace, study: Any) -> list[tuple[str, list[str] | None]]:
    """Every trial with the parameters they all have; and, where a conditional parameter was
    sometimes inactive, the trials that have every parameter seen in the study."""
    scopes: list[tuple[str, list[str] | None]] = [("all trials", None)]
    seen = {p for t in study.trials for p in t.params}
    if any(p.when is not None for p in space.parameters.values()):
        scopes.append(("all parameters active", [p for p in space.parameters if p in seen]))
    return scopes


def _evaluators() -> dict[str, Any]:
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    return {"PED-ANOVA": PedAnovaImportanceEvaluator(), "fANOVA": FanovaImportanceEvaluator(seed=0)}


def _importances(study: Any, evaluator: Any, params: list[str] | None, n: int, **where: Any) -> list[dict]:
    import optuna

    if n < MIN_IMPORTANCE_TRIALS:
        return [{**where, "trials": n, "parameter": None, "importance": math.nan,
                 "note": f"fewer than {MIN_IMPORTANCE_TRIALS} trials"}]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator, params=params,
                                                             normalize=True)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return [{**where, "trials": n, "parameter": None, "importance": math.nan, "note": str(err).split("\n")[0]}]
    return [{**where, "trials": n, "parameter": k, "importance": float(v), "note": ""} for k, v in values.items()]


# ---------------------------------------------------------------- what the noise allows

ALPHA = 0.05
POWER = 0.8


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (family-wise error): the i-th smallest is
    multiplied by (m - i), kept monotone, capped at 1."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        out[i] = running
    return out


def comparison_rung(table: pd.DataFrame, space: SearchSpace) -> int | None:
    """The epoch the level comparisons are made at: max_t if some factor has two levels with two
    trials there, else the latest rung where one has (None: no rung has)."""
    rows = searched(table)
    per_trial = trials(rows)
    for rung in reversed(rungs(space.study)):
        values = at_epoch(rows, rung, space.study.metric)
        for name, param in space.parameters.items():
            level = levels(per_trial[name], param).reindex(values.index)
            if (level.value_counts() >= 2).sum() >= 2:
                return rung
    return None


def level_differences(table: pd.DataFrame, space: SearchSpace, rung: int, alpha: float = ALPHA) -> pd.DataFrame:
    """Each level of each factor against the factor's best level at `rung` (levels with at least
    two trials there): the difference of means (level minus best), its Welch 95% interval and
    p-value (scipy.stats.ttest_ind, unequal variances), the p-value after Holm's correction over
    every comparison at this rung, whether it is significant at `alpha`, and the smallest
    difference the two sides' sizes and spread could have detected (two-sided, `alpha` after
    Holm's first step, power POWER)."""
    from scipy import stats

    metric, sign = space.study.metric, direction(space.study.mode)
    rows = searched(table)
    per_trial = trials(rows)
    values = at_epoch(rows, rung, metric)
    out = []
    for name, param in space.parameters.items():
        level = levels(per_trial[name], param).reindex(values.index)
        groups = {lv: values[level == lv] for lv in _level_order(param, sorted(set(level.dropna())))}
        groups = {lv: v for lv, v in groups.items() if len(v) >= 2}
        if len(groups) < 2:
            continue
        best = max(groups, key=lambda lv: (sign * groups[lv].mean(), lv))
        for lv, group in groups.items():
            spread = math.sqrt((group.var() + groups[best].var()) / 2)
            if lv == best or spread == 0:  # no spread on either side: no test (a quantised metric, two trials)
                continue
            with warnings.catch_warnings():  # identical values: scipy warns and returns NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                test = stats.ttest_ind(group, groups[best], equal_var=False)
                low, high = test.confidence_interval(1 - alpha)
            out.append({"factor": name, "level": lv, "best_level": best, "n": len(group), "n_best": len(groups[best]),
                        "difference": float(group.mean() - groups[best].mean()), "low": float(low),
                        "high": float(high), "p": float(test.pvalue), "spread": spread})
    frame = pd.DataFrame(out)
    if frame.empty:
        return frame
    p = frame["p"].fillna(1.0).tolist()
    frame["p_holm"] = holm(p)
    frame["significant"] = frame["p_holm"] < alpha
    z = stats.norm.ppf(1 - alpha / (2 * len(frame))) + stats.norm.ppf(POWER)
    frame["detectable"] = z * frame["spread"] * np.sqrt(1 / frame["n"] + 1 / frame["n_best"])
    return frame


def detectable(differences: pd.DataFrame) -> dict[str, Any]:
    """The smallest difference the study could have detected, read on its best-filled comparison
    (the most trials on both sides; ties: the smaller difference)."""
    row = differences.assign(size=differences["n"] + differences["n_best"]).sort_values(
        ["size", "detectable"], ascending=[False, True]).iloc[0]
    return {"factor": row["factor"], "level": row["level"], "best_level": row["best_level"], "n": int(row["n"]),
            "n_best": int(row["n_best"]), "difference": float(row["detectable"])}


# ---------------------------------------------------------------- accuracy against cost

WITHIN_POINTS = 1.0  # "the cheapest configuration within this many points of the best"


def cost_candidates(table: pd.DataFrame, space: SearchSpace, finalists: list[dict[str, Any]] | None = None,
                    cost: str = "cost_flops_per_image") -> pd.DataFrame:
    """The configurations compared on accuracy and cost, at equal fidelity: the sampled trials
    that reached max_t, with the metric at max_t, or for a finalist its mean over seeds (and
    interval), and their cost. Trials without a cost are left out."""
    metric, max_t = space.study.metric, space.study.max_epochs
    rows = searched(table)
    if cost not in rows.columns:
        return pd.DataFrame()
    per_trial = trials(rows)
    done = per_trial[(per_trial["outcome"] == "completed") & per_trial[cost].notna()]
    values = at_epoch(rows, max_t, metric).reindex(done.index)
    out = pd.DataFrame({"name": done["name"], **{p: done[p] for p in space.parameters}, metric: values,
                        "seeds": 1, "low": np.nan, "high": np.nan,
                        **{c: done[c] for c in ("cost_flops_per_image", "cost_latency_ms_batch1",
                                                "cost_latency_ms_per_image", "cost_parameters") if c in done}})
    for named in finalists or []:
        if named["trial_id"] in out.index:
            out.loc[named["trial_id"], [metric, "seeds", "low", "high"]] = [
                named["mean"], named["seeds"], np.nan if named["low"] is None else named["low"],
                np.nan if named["high"] is None else named["high"]]
    return out.dropna(subset=[metric])


def pareto_front(candidates: pd.DataFrame, metric: str, mode: str, cost: str = "cost_flops_per_image") -> pd.DataFrame:
    """The non-dominated candidates (no other is at least as good on both the metric and the
    cost and better on one; equal points are all kept), cheapest first: the same sorting that
    MO-ASHA's rungs and the summary's front use (study.pareto.fronts)."""
    from study.pareto import fronts

    if candidates.empty:
        return candidates
    sign = direction(mode)
    points: list[tuple[float, ...]] = [(sign * float(v), -float(c))
                                       for v, c in zip(candidates[metric], candidates[cost], strict=True)]
    first = candidates.iloc[fronts(points)[0]]
    return first.assign(_score=sign * first[metric]).sort_values([cost, "_score"], ascending=[True, False],
                                                                 kind="stable").drop(columns="_score")


def cost_answer(candidates: pd.DataFrame, space: SearchSpace, cost: str = "cost_flops_per_image",
                within: float = WITHIN_POINTS, noise_sd: float | None = None) -> dict[str, Any]:
    """What the accuracy buys: the best configuration, the cheapest within `within` points of
    it, the best of each number of recursion steps with its cost, and one sentence: did looking
    longer (more recursion steps) pay in this study, and at what cost (`noise_sd`, the seed
    noise of one run where measured, says whether the gain is beyond it)."""
    metric, mode = space.study.metric, space.study.mode
    sign = direction(mode)
    if candidates.empty:
        return {"sentence": "No trial that reached max_t has a measured cost: nothing to compare."}
    best_id = (sign * candidates[metric]).idxmax()
    best = candidates.loc[best_id]
    near = candidates[sign * (candidates[metric] - best[metric]) >= -within / 100]
    cheap_id = near[cost].idxmin()
    cheap = candidates.loc[cheap_id]
    out: dict[str, Any] = {
        "best": {"trial_id": best_id, "name": best["name"], metric: float(best[metric]), cost: float(best[cost])},
        "cheapest_within": {"points": within, "trial_id": cheap_id, "name": cheap["name"],
                            metric: float(cheap[metric]), cost: float(cheap[cost])},
    }
    ratio = best[cost] / cheap[cost]
    fewer = f"{ratio:.2g}x fewer" if ratio >= 1.1 else f"{100 * (1 - 1 / ratio):.1f}% fewer"
    cheaper = "" if cheap_id == best_id else (
        f" Within {within:g} point of the best, {cheap['name']} ({metric} {cheap[metric]:.3f}) costs "
        f"{fewer} FLOPs an image.")
    if "recursion_steps" not in candidates or candidates["recursion_steps"].isna().all():
        out["sentence"] = f"The best configuration is {best['name']} ({metric} {best[metric]:.3f})." + cheaper
        return out
    per_steps = []
    for steps, group in candidates.dropna(subset=["recursion_steps"]).groupby("recursion_steps"):
        top = group.loc[(sign * group[metric]).idxmax()]
        per_steps.append({"recursion_steps": int(steps), "trials": len(group), "trial_id": top.name,
                          "name": top["name"], metric: float(top[metric]), cost: float(top[cost])})
    out["by_recursion_steps"] = per_steps
    once = next((r for r in per_steps if r["recursion_steps"] == 1), None)
    steps = int(best["recursion_steps"]) if best["recursion_steps"] == best["recursion_steps"] else None
    if once is None or steps is None:
        verdict = (f"No trial with one look (T = 1) reached max_t, so this study cannot say whether focusing "
                   f"longer paid; the best is {best['name']} ({metric} {best[metric]:.3f}).")
    elif steps == 1:
        verdict = (f"Focusing longer did not pay here: the best configuration looks once ({best['name']}, "
                   f"{metric} {best[metric]:.3f}).")
    else:
        gain = 100 * sign * (best[metric] - once[metric])
        noise = "" if noise_sd is None else (
            f", beyond the seed noise of one run ({100 * noise_sd:.1f} points)" if gain > 2 * 100 * noise_sd else
            f", within twice the seed noise of one run ({100 * noise_sd:.1f} points)")
        times = best[cost] / once[cost]
        price = "about the FLOPs an image" if abs(times - 1) < 0.05 else f"{times:.2g}x the FLOPs an image"
        verdict = (f"Focusing longer paid {gain:+.1f} points here{noise}: the best configuration looks T = {steps} "
                   f"times ({best['name']}, {metric} {best[metric]:.3f}, {price} of the best with one look, "
                   f"{once['name']}, {metric} {once[metric]:.3f}).")
    out["sentence"] = verdict + cheaper
    return out
