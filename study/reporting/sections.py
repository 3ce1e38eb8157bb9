"""The report's sections and `write_report`: the ablation report of a study (`python -m
study.report --name STUDY`).

Also written at the end of every study. It reads Tune's saved results into a tidy table
(trials.parquet), compares factors at equal fidelity (per rung), checks whether early
stopping could be trusted, computes importance from the Optuna storage, measures the gain over
the global-only baseline, draws the plots and the best trial's attention pictures, and writes
report.md and a self-contained report.html into STUDY/report/, all logged as artifacts of the
study's parent MLflow run. `--confirm-seeds N` first reruns the best configuration and
one-factor-at-a-time variations with N seeds at the full budget (see study.phases.confirm).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from study.record import StudyRecord

REPORT_DIR = "report"


def write_report(record: StudyRecord, pictures: bool = True, images: int = 4, mlflow: bool = True) -> Path:
    """Writes STUDY/report/ (tables, plots, report.md, report.html); returns the HTML path.

    With `mlflow`, MLflow is first made true to Tune's results (`study.tracking.reconnect`: what an
    outage kept from it is sent now), then checked against them, and the report is logged to
    the parent run.
    """
    import study.reporting.plots as plots
    from study.reporting.document import Document
    from study.results import load_results, save_table

    results = load_results(record)
    out = record.folder / REPORT_DIR
    figures = out / "figures"
    out.mkdir(parents=True, exist_ok=True)
    save_table(results.table, out / "trials.parquet")
    tracker = None
    if mlflow:
        from study import tracking

        tracker = tracking.reconnect(results)
    doc = Document(f"Ablation report: {record.name}")
    facts: dict[str, Any] = {"study": record.name, "metric": record.metric}
    _overview(doc, results, tracker, facts)
    _best(doc, results, facts)
    _gain(doc, results, facts)
    _early_stopping(doc, results, facts, out)
    _factors(doc, results, out, facts)
    _cost(doc, results, facts, figures / "accuracy_against_cost.png")
    _interaction(doc, results)
    _importance(doc, results, out)
    doc.heading("Plots")
    doc.image(plots.metric_by_factor(results.table, results.space, figures / "metric_by_factor.png"),
              f"{record.metric} against each factor, one colour per rung")
    doc.image(plots.learning_curves(results.table, results.space, figures / "learning_curves.png"),
              "learning curves coloured by each factor")
    doc.image(plots.rung_survival(results.table, results.space, figures / "rung_survival.png"),
              "trials that reached each rung")
    if pictures:
        _attention(doc, results, figures / "attention.png", images, facts)
    if results.confirm is not None:
        from study.reporting.confirmation import confirmation_section

        confirmation_section(doc, results, facts)
    doc.heading("Files")
    doc.text("`trials.parquet`: one row per trial per epoch (config, outcome, metrics); `factors.parquet`, "
             "`importance.parquet`, `rung_correlation.parquet`: the tables above; `report.json`: the key figures.")
    (out / "report.md").write_text(doc.markdown(out))
    html_path = out / "report.html"
    html_path.write_text(doc.html())
    (out / "report.json").write_text(json.dumps(_plain(facts), indent=2, allow_nan=False))
    if tracker is not None:
        tracking.log_report(tracker, str(out), REPORT_DIR)
    return html_path


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars as numbers, NaN as null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    import pandas as pd

    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


# ---------------------------------------------------------------- sections


def _cost(doc: Any, results: Any, facts: dict[str, Any], path: Path) -> None:
    """Accuracy against inference cost: the fronts (FLOPs, latency), the cheapest configuration
    near the best, the best of each number of recursion steps, and the one-sentence answer."""
    import pandas as pd

    import study.reporting.plots as plots
    from study.reporting.analysis import cost_answer, cost_candidates, pareto_front

    metric, mode = results.metric, results.space.study.mode
    named = results.summary.get("finalists") or []
    candidates = cost_candidates(results.table, results.space, named)
    doc.heading("Accuracy against inference cost")
    if candidates.empty:
        doc.text("No trial that reached max_t measured its inference cost (trials measure it with their first "
                 "epoch): nothing to compare.")
        facts["cost"] = None
        return
    noise = (results.summary.get("seed_noise") or {}).get("sd")
    answer = cost_answer(candidates, results.space, noise_sd=noise)
    fronts = {c: pareto_front(candidates, metric, mode, c) for c in ("cost_flops_per_image", "cost_latency_ms_batch1")
              if c in candidates and candidates[c].notna().all()}
    own = _study_front(results.summary, candidates)
    if own is not None:  # a multi-objective study's front is the one it named (the summary's, MLflow's)
        fronts[own[0]] = own[1]
    facts["cost"] = {**answer, "fronts": {c: list(f.index) for c, f in fronts.items()}}
    doc.text(f"**Does focusing longer pay?** {answer['sentence']}")
    doc.text(f"At equal fidelity: the {len(candidates)} sampled trials that reached max_t (a finalist at its mean over "
             "seeds), each with the inference cost it measured on its own device (FLOPs an image from PyTorch's "
             "counter with the LSTM and the crops, latency the median of timed passes after warm-up). The front "
             "holds the configurations no other beats on both accuracy and cost.")

    def row(r: Any) -> dict[str, Any]:
        interval = "-" if r["seeds"] <= 1 or r["low"] != r["low"] else f"{r['low']:.3f} to {r['high']:.3f}"
        return {"configuration": r["name"], metric: f"{r[metric]:.3f}", "seeds": int(r["seeds"]),
                "interval": interval, "FLOPs an image": f"{r['cost_flops_per_image']:.3g}",
                "latency, 1 image (ms)": f"{r.get('cost_latency_ms_batch1', float('nan')):.3g}"}

    for cost, front in fronts.items():
        label = "FLOPs" if cost == "cost_flops_per_image" else "latency"
        whose = "; the study's own front, on its objectives" if own is not None and cost == own[0] else ""
        doc.text(f"Front against {label} (cheapest first{whose}):")
        doc.table(pd.DataFrame([row(r) for _, r in front.iterrows()]))
    if answer.get("by_recursion_steps"):
        doc.text("The best of each number of recursion steps T (trials at max_t):")
        doc.table(pd.DataFrame([{"T": r["recursion_steps"], "trials": r["trials"], "best": r["name"],
                                 metric: f"{r[metric]:.3f}", "FLOPs an image": f"{r['cost_flops_per_image']:.3g}"}
                                for r in answer["by_recursion_steps"]]))
    doc.image(plots.accuracy_against_cost(candidates, fronts, metric, path),
              f"{metric} against FLOPs and latency, with the fronts")


def _study_front(summary: dict[str, Any], candidates: Any) -> tuple[str, Any] | None:
    """A multi-objective study's own front against its first cost, as rows of `candidates`
    (cheapest first), or None for a single-objective study or a cost the report has no column for."""
    objectives, front = summary.get("objectives") or [], summary.get("front")
    if len(objectives) < 2 or front is None or objectives[1][0] not in candidates:
        return None
    return objectives[1][0], candidates.loc[[e["trial_id"] for e in front if e["trial_id"] in candidates.index]]


def _stopped(per_trial: Any, policy: str, study: Any, milestones: list[int]) -> str:
    """Who stopped the trials that ended before max_t: the policy decides at its rungs, the
    epoch budget anywhere (a trial that ended between rungs was stopped by the budget; one that
    ended at a rung, by either, when there is a budget)."""
    early = per_trial[per_trial["outcome"] == "stopped_early"]
    if early.empty:
        return "none stopped early"
    between = int((~early["epochs_run"].isin(milestones)).sum())
    at_rung = len(early) - between
    if study.epoch_budget is None:
        return f"{len(early)} stopped early by the `{policy}` policy"
    if policy == "fifo":
        return f"{len(early)} stopped by the epoch budget ({study.epoch_budget} epochs)"
    return (f"{len(early)} stopped early: {at_rung} at a rung, by the `{policy}` policy or the epoch budget "
            f"({study.epoch_budget} epochs), {between} between rungs, by the budget")


def _overview(doc: Any, results: Any, tracker: Any, facts: dict[str, Any]) -> None:
    from study.policies.asha import rungs
    from study.reporting.analysis import searched
    from study.results import trials
    from study.tracking import disagreements

    space, table = results.space, results.table
    per_trial = trials(searched(table))
    counts = per_trial["outcome"].value_counts().to_dict()
    facts["trials"] = {"sampled": len(per_trial), **{k: int(v) for k, v in counts.items()}}
    dataset = table["config.dataset"].iloc[0]
    policy = str(results.record.settings.policy)
    milestones = rungs(space.study)
    doc.text(f"Space `{space.name}` on `{dataset}` ({table['config.backbone'].iloc[0]} backbone), policy "
             f"`{policy}`: {len(per_trial)} sampled trials ({counts.get('completed', 0)} reached max_t = "
             f"{space.study.max_epochs} epochs, {_stopped(per_trial, policy, space.study, milestones)}, "
             f"{counts.get('errored', 0)} errored) and {int((trials(table)['kind'] == 'baseline').sum())} "
             f"baseline(s). Metric `{results.metric}` ({space.study.mode}); compared at the rungs "
             f"{', '.join(map(str, milestones))} (the epochs where the ASHA family decides, from the grace "
             "period and the reduction factor, and max_t).")
    warm = list(results.record.settings.warm_start)
    if warm:
        facts["warm_start"] = warm
        doc.text(f"Warm-started: the sampler began from the trials of {', '.join(f'`{w}`' for w in warm)} "
                 "(parameters matched by name and range; those trials are not this study's and are not in its "
                 "tables).")
    grown = results.record.extensions
    if grown:
        facts["extensions"] = [e.line() for e in grown]
        doc.text(f"Extended {len(grown)} time(s) after it finished (`--extend`): "
                 + "; ".join(e.line() for e in grown) + ". The searcher and the policy's rungs knew every earlier "
                 "trial; the tables hold the trials of every part.")
    if tracker is None:
        return
    problems = disagreements(results, tracker)
    facts["mlflow_disagreements"] = problems
    if problems:
        doc.warn(f"The MLflow runs disagree with Tune's results on {len(problems)} point(s): "
                 + "; ".join(problems[:5]))
    else:
        doc.text(f"Checked against MLflow ({results.record.stores.tracking_uri}, experiment `{results.name}`): one run "
                 f"per trial, same outcome and the same `{results.metric}` at every epoch.")


def _best(doc: Any, results: Any, facts: dict[str, Any]) -> None:
    from study.reporting.analysis import best_configs

    best = best_configs(results.table, results.space, results.ranking)
    facts["best"] = best.head(1).to_dict("records")[0] if len(best) else None
    doc.heading("Best configurations")
    named = results.summary.get("finalists") or []
    order = ("its finalists first, by their mean over seeds (below), then by `{m}` at the last epoch of one run, "
             "trials that reached max_t first" if named else
             "by `{m}` at the last epoch of one run, trials that reached max_t first").format(m=results.metric)
    doc.text(f"The study's ranking (its summary's): {order}. Test accuracy "
             "is measured once, at the end of the study, on the best checkpoint (by validation) of the top "
             "trials; model selection never saw the test split.")
    doc.table(best)
    _finalists(doc, results, named, facts)


def _finalists(doc: Any, results: Any, named: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    """The noise-aware ending: each finalist's mean over seeds, interval, P(best)."""
    import pandas as pd

    noise = results.summary.get("seed_noise") or {}
    facts["finalists"], facts["seed_noise"] = named, noise or None
    if not named:
        doc.text("One run per configuration: the best is the maximum of noisy values, luckier than it is good on "
                 "average. `study.finalists` (or `--finalists K`) names it on several seeds instead.")
        return
    names = dict(zip(results.table["trial_id"], results.table["name"], strict=False))
    level = f"{100 * noise.get('confidence', 0.95):.0f}%"
    from study.noise import CALIBRATION

    left_out = (" The run that made each a finalist is left out of its figures: chosen for being high, it is "
                "the luckiest of many (the winner's curse).") if noise.get("selection_seed") is not None else ""
    stop = results.summary.get("race_stop")
    raced = (f" The re-runs were raced (a round at a time, to the finalists most likely the best): {stop}."
             if stop else "")
    doc.text(f"**Named on several seeds.** The {len(named)} best trials at max_t were trained again with new "
             f"seeds (the same for each), and the best is the one with the best mean.{raced}{left_out} Interval: "
             f"{level} "
             "interval of the mean on these seeds, from the finalist + seed fit (a seed's shared effect, the same "
             "for every finalist, is out of it); gap: the difference from the best's mean, with its interval. "
             "P(best): the probability that it is the best of the finalists, drawn from their means"
             + (" shrunk towards their average by the share of their spread the noise explains" if noise.get("shrunk")
                else "") + " and the seed noise measured here.")
    doc.table(pd.DataFrame([{"finalist": names.get(f["trial_id"], f["trial_id"]), "new seeds": f["seeds"],
                             f"mean {results.metric}": f"{f['mean']:.3f}",
                             f"{level} interval": "-" if f["low"] is None else f"{f['low']:.3f} to {f['high']:.3f}",
                             "gap to the best": "-" if f.get("gap_low") is None else
                             f"{f['gap']:+.3f} ({f['gap_low']:+.3f} to {f['gap_high']:+.3f})",
                             "P(best)": "-" if f["p_best"] is None else f"{f['p_best']:.2f}",
                             "runs": ", ".join(f"{v:.3f}" for v in f["values"]),
                             "choosing run": "-" if f.get("selection") is None else f"{f['selection']:.3f}"}
                            for f in named]))
    if noise.get("sd") is not None:
        doc.text(f"Seed noise: sd {100 * noise['sd']:.2f} points for one run ({noise['df']} degrees of freedom). "
                 f"How far such a P(best) holds: {CALIBRATION}")


def _gain(doc: Any, results: Any, facts: dict[str, Any]) -> None:
    from study.reporting.analysis import baseline_gain

    gains = baseline_gain(results.table, results.space, results.ranking)
    facts["gain"] = gains
    doc.heading("Gain over the global-only baseline")
    if not gains:
        doc.text("This study ran no baseline (see the space's `baselines:`).")
        return
    import pandas as pd

    doc.table(pd.DataFrame(gains))
    g = gains[0]
    test = g.get("gain_test_acc", math.nan)
    claim = (f"The paper claims RRA is \"up to 2%\" better than the same backbone without it. Here the best "
             f"configuration is {100 * test:+.1f} points on test against `{g['baseline']}`"
             if isinstance(test, float) and not math.isnan(test) else
             "The paper claims RRA is \"up to 2%\" better than the same backbone without it; this study has no "
             "test accuracy for the pair")
    seeds = ("The confirmation below measures it with several seeds per side." if results.confirm is not None
             else "`--confirm-seeds N` measures it with N seeds per side.")
    doc.text(claim + f": one seed each, so the difference includes seed noise. {seeds}")


def _early_stopping(doc: Any, results: Any, facts: dict[str, Any], out: Path) -> None:
    from study.reporting.analysis import early_stopping_verdict, rung_correlation

    corr = rung_correlation(results.table, results.space)
    corr.to_parquet(out / "rung_correlation.parquet", index=False)
    trusted, sentence = early_stopping_verdict(corr, results.space.study.max_epochs)
    facts["early_stopping_trusted"] = trusted
    facts["early_stopping"] = sentence
    doc.heading("Could early stopping be trusted?")
    doc.text("Spearman rank correlation between the metric at a rung and at a later rung, over the sampled "
             "trials that reached the later one. The ASHA family stops by the early rank; if early ranks do not "
             "predict final ranks, it stops the wrong trials.")
    (doc.text if trusted else doc.warn)(sentence)
    doc.table(corr)


def _factors(doc: Any, results: Any, out: Path, facts: dict[str, Any]) -> None:
    from study.reporting.analysis import ALPHA, POWER, comparison_rung, detectable, factor_table, level_differences

    table = factor_table(results.table, results.space)
    table.to_parquet(out / "factors.parquet", index=False)
    rung = comparison_rung(results.table, results.space)
    diffs = level_differences(results.table, results.space, rung) if rung is not None else None
    if diffs is not None and not diffs.empty:
        diffs.to_parquet(out / "level_differences.parquet", index=False)
    doc.heading("Factors at equal fidelity")
    doc.text("Per level of each factor: trials, how many reached max_t, and at each rung (epoch) the trials "
             "that reached it with the best and mean ± sd of the metric at that epoch. Values from different "
             "epochs are never pooled. Continuous factors are binned over the searched range.")
    import pandas as pd

    for factor, rows in table.groupby("factor", sort=False):
        lines = []
        for level, group in rows.groupby("level", sort=False):
            first = group.iloc[0]
            lines.append({"level": level, "trials": first["trials"], "reached max_t": first["reached_max_t"],
                          **{f"epoch {r['rung']}": _cell(r) for _, r in group.iterrows()}})
        doc.text(f"**{factor}** (cells: best / mean ± sd (n))")
        doc.table(pd.DataFrame(lines))
        if diffs is not None and not diffs.empty and (diffs["factor"] == factor).any():
            mine = diffs[diffs["factor"] == factor]
            doc.text(f"Against its best level ({mine['best_level'].iloc[0]}) at epoch {rung}: difference of means "
                     "with its Welch 95% interval; p after Holm's correction over the "
                     f"{len(diffs)} comparisons at this epoch.")
            doc.table(pd.DataFrame([{"level": r["level"], "trials": int(r["n"]),
                                     "difference": f"{r['difference']:+.3f} ({r['low']:+.3f} to {r['high']:+.3f})",
                                     "p (Holm)": f"{r['p_holm']:.3g}",
                                     "beyond the noise": "yes" if r["significant"] else "no"}
                                    for _, r in mine.iterrows()]))
    if diffs is None or diffs.empty:
        doc.text("No factor has two levels with two trials at one epoch: no difference between levels can be "
                 "told from the noise here.")
        facts["level_differences"] = None
        return
    seed = (results.summary.get("seed_noise") or {}).get("sd")
    noise = f"; one run's seed noise, measured on the finalists, is {100 * seed:.2f} points" if seed else ""
    least = detectable(diffs)
    facts["level_differences"] = {"epoch": rung, "comparisons": len(diffs),
                                  "significant": diffs[diffs["significant"]][["factor", "level"]].to_dict("records"),
                                  "smallest_detectable": least, "seed_noise": seed}
    found = ", ".join(f"{r['factor']} {r['level']}" for _, r in diffs[diffs["significant"]].iterrows()) or "none"
    doc.text(f"**What the noise allows.** At epoch {rung}, levels differing from their factor's best beyond the "
             f"noise ({ALPHA:g} after Holm): {found}. The smallest difference this study could have detected "
             f"(power {POWER:g}) is {100 * least['difference']:.1f} points, on its best-filled comparison "
             f"({least['factor']} {least['level']} against {least['best_level']}, {least['n']} and "
             f"{least['n_best']} trials){noise}; smaller differences may be real, but this study cannot show them.")


def _cell(row: Any) -> str:
    if not row["n"]:
        return "-"
    spread = f" ± {row['sd']:.3f}" if row["sd"] == row["sd"] else ""
    return f"{row['best']:.3f} / {row['mean']:.3f}{spread} ({int(row['n'])})"


def _interaction(doc: Any, results: Any) -> None:
    from study.policies.asha import rungs
    from study.reporting.analysis import interaction

    names = list(results.space.parameters)
    pair = ("recursion_steps", "crop_scale") if {"recursion_steps", "crop_scale"} <= set(names) else names[:2]
    if len(pair) < 2:
        return
    doc.heading(f"Interaction: {pair[0]} x {pair[1]}")
    milestones = rungs(results.space.study)
    for rung in sorted({milestones[0], milestones[-1]}):
        mean, count = interaction(results.table, results.space, pair[0], pair[1], rung)
        if mean.empty:
            doc.text(f"Epoch {rung}: no trial reached it.")
            continue
        cells = mean.map(lambda v: "-" if v != v else f"{v:.3f}").astype(str)
        cells = cells + count.map(lambda c: "" if c != c else f" ({int(c)})")
        doc.text(f"Mean {results.metric} at epoch {rung} (number of trials); rows {pair[0]}, columns {pair[1]}.")
        doc.table(cells.replace(" (nan)", ""), index=True)


def _importance(doc: Any, results: Any, out: Path) -> None:
    from study.reporting.analysis import importance

    table = importance(results.record.stores.optuna_storage, results.name, results.space)
    table.to_parquet(out / "importance.parquet", index=False)
    doc.heading("Hyperparameter importance")
    doc.text("From the study's Optuna storage: PED-ANOVA (Optuna's default) and fANOVA, at each rung on the "
             "trials' values at that epoch (every trial that reached it), at max_t on the COMPLETE trials. "
             "Importances are normalised to sum to 1 within a column; with few trials they are rough.")
    for scope, rows in table.groupby("scope", sort=False):
        valid = rows.dropna(subset=["parameter"])
        if not valid.empty:
            wide = valid.pivot_table(index="parameter", columns=["rung", "method"], values="importance")
            wide.columns = [f"epoch {r} {m} (n={int(rows[(rows.rung == r)].trials.iloc[0])})" for r, m in wide.columns]
            doc.text(f"Scope: {scope}.")
            doc.table(wide, index=True)
        notes = rows[rows["parameter"].isna()]
        for _, row in notes.drop_duplicates(["rung", "method"]).iterrows():
            doc.text(f"{scope}, epoch {row['rung']}, {row['method']}: not computed ({row['note']}, n={row['trials']}).")


def _attention(doc: Any, results: Any, path: Path, images: int, facts: dict[str, Any]) -> None:
    from study.execution import trainable_kind
    from study.reporting.analysis import best_configs
    from study.reporting.plots import attention_pictures
    from trainables.explain import explain_checkpoint

    best = best_configs(results.table, results.space, results.ranking, top=1)
    doc.heading("What the best trial looks at")
    if best.empty:
        doc.text("No sampled trial has results.")
        return
    name, trial_id = best.iloc[0]["name"], best.iloc[0]["trial_id"]
    analysis = results.analysis
    trial = next(t for t in analysis.trials if t.trial_id == trial_id)
    checkpoint = analysis.get_best_checkpoint(trial, results.metric, results.space.study.mode)
    if not trainable_kind(results.record).explains:
        doc.text(f"{name} is a replayed curve (--trainable {results.record.settings.trainable}): there is no "
                 "model to explain.")
        return
    if checkpoint is None or not trial.config.get("local_stream", True):
        doc.text(f"{name} has no checkpoint or no local stream to explain.")
        return
    with checkpoint.as_directory() as folder:
        expl, coverage = explain_checkpoint(trial.config, folder, images)
    facts["crop_coverage"] = coverage
    names = [f"class {i}" for i in range(int(max(expl.labels.max(), expl.predictions.max())) + 1)]
    doc.image(attention_pictures(expl, names, path),
              f"{name} (best checkpoint by validation): crops, attention per step and Grad-CAM per step "
              "(gradient of the true class's score of that step, weight 1)")
    if coverage:
        split = int(coverage["of_images"])
        among = f" (of an even sample of the split's {split})" if coverage["looked_at"] < split else ""
        doc.text(f"Over {int(coverage['images'])} validation images with a part box{among}, the first crop covers "
                 f"{100 * coverage['part_covered']:.0f}% of the part on average and holds the whole part in "
                 f"{100 * coverage['whole_part_inside']:.0f}% of them; a centred crop of the same size covers "
                 f"{100 * coverage['centred_part_covered']:.0f}% and holds it whole in "
                 f"{100 * coverage['centred_whole_part_inside']:.0f}%.")

