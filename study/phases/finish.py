"""The finish phase: the final test of the best trials (chosen on validation), the summary,
and the best trial's checkpoint and figures in MLflow (through the study's queue)."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from study import execution, summary
from study.record import StudyRecord

RANK_METRIC = "study_rank"  # a trial's place in the study's ranking (1 = best), on its MLflow run
FRONT_TAG = "pareto"  # "true" on the MLflow run of a trial on a multi-objective study's front
# The final test evaluates this many of the best trials, for the report, and the baselines.
TEST_TOP = 3


def best_checkpoint(analysis: Any, trial: Any, metric: str, mode: str) -> Any | None:
    """A trial's best checkpoint by the metric, else its latest; None if it never saved one
    (e.g. a trial that failed in its first epoch)."""
    return analysis.get_best_checkpoint(trial, metric, mode) or analysis.get_last_checkpoint(trial)


def finish(record: StudyRecord, analysis: Any, queue: Any) -> dict[str, Any]:
    """Re-runs the finalists (the noise-aware ending), tests the top trials and the baselines,
    writes and returns the summary, queues its MLflow part (best config, tags, the best trial's
    checkpoint)."""
    from study.analysis import trial_rows
    from study.phases import finalists
    from study.ranking import ranked
    from study.results import trials_table

    trials = {t.trial_id: t for t in analysis.trials}
    rows = trial_rows(trials_table(analysis, record.space), record.metric, list(record.space.parameters))
    ranking = [r["trial_id"] for r in ranked(rows, record.metric, record.mode, record.max_epochs)]
    reruns = finalists.run(record, rows, ranking)
    values = finalists.values_by_seed(rows, reruns, record.metric, record.train_seed, record.max_epochs)
    if record.space.study.ending == "fixed":
        finalists.warn_short(values, 1 + record.space.study.finalist_seeds)
    spent = 0 if reruns is None else int(reruns.groupby("trial_id")["epochs_run"].first().sum())
    race_stop = None if reruns is None else reruns.attrs.get("race_stop")
    first = summary.build(record, [dict(r) for r in rows], {}, values, spent, race_stop)
    tested: dict[str, dict[str, float]] = {}
    if record.settings["evaluate_test"]:
        chosen = [*first["ranking"][:TEST_TOP], *(b["trial_id"] for b in first["baselines"])]
        jobs = {}
        for trial_id in chosen:
            checkpoint = best_checkpoint(analysis, trials[trial_id], record.metric, record.mode)
            if checkpoint is not None:
                jobs[trial_id] = (trials[trial_id].config, checkpoint)
        tested = execution.test_checkpoints(record, jobs)
    result = summary.build(record, rows, tested, values, spent, race_stop)
    summary.save(result, record.folder)
    queue.put(lambda: log_best(queue.tracker, record, analysis, result))
    return result


def log_best(tracker: Any, record: StudyRecord, analysis: Any, result: dict[str, Any]) -> None:
    """MLflow: each run's place in the ranking, the best run's checkpoint, the parent's best
    config, best values and baselines; then the parent run ends (FINISHED)."""
    trials = {t.trial_id: t for t in analysis.trials}
    best = result["best"]
    config, local = None, None
    if best is not None:
        config = trials[best["trial_id"]].config
        checkpoint = best_checkpoint(analysis, trials[best["trial_id"]], record.metric, record.mode)
        local = _local_copy(checkpoint) if checkpoint is not None else None
    try:
        _log_best(tracker, record, result, config, local)
    finally:
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)


def _local_copy(checkpoint: Any) -> str:
    """The checkpoint's files in a local folder (read from Tune's storage, local or remote)."""
    folder = tempfile.mkdtemp(prefix="rra-best-")
    return str(checkpoint.to_directory(folder))


def _log_best(tracker: Any, record: StudyRecord, result: dict[str, Any], config: dict[str, Any] | None,
              checkpoint_dir: str | None) -> None:
    """MLflow: the parent's best config, best values and baselines; the best run's checkpoint."""
    from trainables.config import settings

    client, parent, metric = tracker.client, tracker.parent_run_id, record.metric
    runs = {r.data.tags.get("tune_trial_id"): r.info.run_id for r in tracker.child_runs()}
    for place, trial_id in enumerate(result["ranking"], 1):  # the UI's "best first" is the study's ranking
        if trial_id in runs:
            client.log_metric(runs[trial_id], RANK_METRIC, place)
    front = result.get("front")
    if front is not None:  # a multi-objective study: its front, on the runs and the parent
        for entry in front:
            if entry["trial_id"] in runs:
                client.set_tag(runs[entry["trial_id"]], FRONT_TAG, "true")
        client.set_tag(parent, "front", ", ".join(e["name"] for e in front)[:5000])
    best = result["best"]
    if best is not None:
        run = tracker.find_child(best["trial_id"])
        if run is not None:
            if checkpoint_dir is not None:
                client.log_artifacts(run.info.run_id, checkpoint_dir, "checkpoint")
            client.set_tag(run.info.run_id, "best", "true")
        if config is not None:
            client.log_dict(parent, settings(config), "best_config.json")
        client.set_tag(parent, "best_trial", best["name"])
        client.log_metric(parent, f"best_{metric}", float(best[metric]))
        named = best.get("noise_aware")
        if result.get("race_stop"):
            client.set_tag(parent, "race_stop", str(result["race_stop"]))
        if named is not None:  # named on several seeds: the mean, its interval, how sure
            client.log_metric(parent, f"best_{metric}_mean", float(named["mean"]))
            client.set_tag(parent, "best_seeds", str(named["seeds"]))
            if named["low"] is not None:
                client.log_metric(parent, f"best_{metric}_low", float(named["low"]))
                client.log_metric(parent, f"best_{metric}_high", float(named["high"]))
            if named["p_best"] is not None:
                client.log_metric(parent, "best_p_best", float(named["p_best"]))
            if run is not None:
                client.set_tag(run.info.run_id, "best_mean", f"{named['mean']:.4f} over {named['seeds']} seeds")
        if best.get("test_acc") is not None:
            client.log_metric(parent, "best_test_acc", float(best["test_acc"]))
    for row in result["baselines"]:
        if row.get(metric) is not None:
            client.log_metric(parent, f"{row['name']}_{metric}", float(row[metric]))
        if row.get("test_acc") is not None:
            client.log_metric(parent, f"{row['name']}_test_acc", float(row["test_acc"]))
    tracker.finish("FINISHED")

