"""The verbs the phases call on a study's MLflow record: open the parent run and the queue,
settle them, log the best trial and the report, reconnect a report to a study whose
MLflow fell behind, and check MLflow against the study's table."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from typing import Any

from study.execution import best_checkpoint
from study.record import StudyRecord
from study.tracking.client import Tracker
from study.tracking.queue import MlflowQueue
from study.tracking.sync import sync

RANK_METRIC = "study_rank"  # a trial's place in the study's ranking (1 = best), on its MLflow run
FRONT_TAG = "pareto"  # "true" on the MLflow run of a trial on a multi-objective study's front


def parent_payload(record: StudyRecord) -> tuple[dict[str, str], dict[str, Any], dict[str, str]]:
    """Tags, params and artifacts of the study's parent MLflow run."""
    space = record.space
    tags = {"study": record.name, "space": space.name, "dataset": str(record.constant("dataset")),
            "searcher": str(record.settings.searcher), "policy": str(record.settings.policy),
            "git_revision": str(record.extra.get("git_revision", "unknown")),
            **({"warm_start": ", ".join(record.settings.warm_start)[:5000]} if record.settings.warm_start else {}),
            **{f"version.{k}": v for k, v in record.extra.get("versions", {}).items()}}
    params = {**{f"setting.{k}": v for k, v in record.settings.to_json().items()},
              **{f"study.{k}": v for k, v in dataclasses.asdict(space.study).items()}}
    artifacts = {"study.json": json.dumps(record.to_json(), indent=2)}
    return tags, params, artifacts


def start(record: StudyRecord, resume: bool, extending: bool = False) -> MlflowQueue:
    """The study's MLflow queue (its tracker: `queue.tracker`); the parent run is created (or
    reopened) first in the queue, and the record saved with its ids once it exists. `extending`:
    the reopened parent is tagged with the record's latest extension (its params keep the study's
    start: MLflow does not change a param) and given the record as it is now."""
    tracker = Tracker.of_record(record)
    queue = MlflowQueue(tracker, fresh=not resume)  # an extension's trials are new: no earlier run

    def parent() -> None:
        if (resume or extending) and tracker.parent_run_id is not None:
            tracker.reopen(counter="extensions" if extending else "resumes")
            if extending:
                count = len(record.extensions)
                tracker.client.set_tag(tracker.parent_run_id, f"extension.{count}", record.extensions[-1].line())
                tracker.log_texts({"study.json": json.dumps(record.to_json(), indent=2)}, "study")
            return
        tracker.start(*parent_payload(record))
        dataclasses.replace(record, experiment_id=tracker.experiment_id, parent_run_id=tracker.parent_run_id).save()

    queue.put(parent)
    return queue


def settle(record: StudyRecord, queue: MlflowQueue, analysis: Any | None, interrupted: bool,
           wait_s: float) -> tuple[StudyRecord, bool]:
    """Queues `sync` (MLflow made true to Tune's saved experiment `analysis`, if given), waits up
    to `wait_s` for the queue, then stops its thread; returns the record with the MLflow ids it
    now has, and whether every queued call was sent."""
    tracker = queue.tracker
    if analysis is not None:

        def synced() -> None:
            sent = sync(tracker, list(analysis.trials), analysis.trial_dataframes, record.max_epochs, interrupted,
                        book=queue.runs)
            if sent:
                print(f"MLflow: {sent} epoch(s) missing from the trials' runs were sent from Tune's results",
                      flush=True)

        queue.put(synced)
    drained = queue.drain(min(wait_s, 0.5))
    if not drained:
        print(f"Waiting up to {wait_s:.0f} s for MLflow at {tracker.tracking_uri} to take {queue.pending()} queued "
              "call(s) (RRA_MLFLOW_WAIT_S sets the wait; Ctrl-C skips it: Tune's storage keeps everything, and "
              f"`python -m study.report --name {record.name}` sends it later) ...", flush=True)
        try:
            drained = queue.drain(wait_s)
        except KeyboardInterrupt:
            print("MLflow wait skipped.", file=sys.stderr, flush=True)
    if not drained:
        print(f"warning: MLflow at {tracker.tracking_uri} did not answer within {wait_s:.0f} s; the study's results "
              "are kept in Tune's storage and are sent to MLflow by the next resume or report "
              f"(python -m study.report --name {record.name})", file=sys.stderr)
    queue.close(0)  # the thread stops; what it still held is sent by the next resume or report
    return dataclasses.replace(record, experiment_id=tracker.experiment_id,
                               parent_run_id=tracker.parent_run_id), drained


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


def reconnect(results: Any) -> Tracker:
    """The study's tracker, after MLflow was made true to Tune's results (`results`: the study's
    StudyResults): the parent run is made if MLflow never answered during the study, every trial's
    run is synced, and the end is logged if the study finished while MLflow did not answer."""
    record = results.record
    tracker = Tracker.of_record(record)
    if tracker.parent_run_id is None:  # MLflow never answered during the study
        tracker.start(*parent_payload(record))
        dataclasses.replace(record, experiment_id=tracker.experiment_id, parent_run_id=tracker.parent_run_id).save()
    analysis = results.analysis
    sync(tracker, list(analysis.trials), analysis.trial_dataframes, record.max_epochs, interrupted=False)
    if results.summary and tracker.client.get_run(tracker.parent_run_id).info.status == "RUNNING":
        log_best(tracker, record, analysis, results.summary)  # the study's end, recorded now
    return tracker


def log_report(tracker: Tracker, folder: str, artifact_dir: str) -> None:
    """The report's files as artifacts of the parent run, and a tag pointing to its HTML."""
    tracker.client.log_artifacts(tracker.parent_run_id, folder, artifact_dir)
    tracker.client.set_tag(tracker.parent_run_id, "report", f"{artifact_dir}/report.html")


def disagreements(record: Any, tracker: Any) -> list[str]:
    """Differences between the table and the study's MLflow child runs (empty: they agree).

    Compares, per trial, that there is exactly one run, its outcome tag, and the metric's value
    at every epoch.
    """
    import pandas as pd

    runs: dict[str, list[Any]] = {}
    for run in tracker.child_runs():
        runs.setdefault(run.data.tags.get("tune_trial_id", ""), []).append(run)
    problems = []
    metric = record.metric
    kinds = set(record.table["kind"])
    for trial_id, rows in record.table.groupby("trial_id", sort=False):
        found = runs.get(str(trial_id), [])
        name = rows["name"].iloc[0]
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} MLflow runs")
            continue
        run = found[0]
        if run.data.tags.get("outcome") != rows["outcome"].iloc[0]:
            problems.append(f"{name}: outcome {run.data.tags.get('outcome')} in MLflow, {rows['outcome'].iloc[0]} here")
        history = {int(m.step): m.value for m in tracker.client.get_metric_history(run.info.run_id, metric)}
        ours = {int(e): v for e, v in zip(rows["epoch"], rows[metric], strict=True) if pd.notna(e)}
        if set(history) != set(ours) or any(abs(history[e] - ours[e]) > 1e-9 for e in ours):
            problems.append(f"{name}: {metric} per epoch differs from MLflow")
    extra = [t for t, found in runs.items() if t not in set(record.table["trial_id"]) and
             any(r.data.tags.get("kind") in kinds for r in found)]
    problems += [f"MLflow run of unknown trial {t}" for t in extra]
    return problems
