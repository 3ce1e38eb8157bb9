"""The finish phase: the final test of the best trials (chosen on validation), the summary,
and the best trial's checkpoint and figures in MLflow (through the study's queue)."""

from __future__ import annotations

from typing import Any

from study import execution, summary
from study.keys import BASELINE
from study.record import StudyRecord

# The final test evaluates this many of the best trials, for the report, and the baselines.
TEST_TOP = 3


def finish(record: StudyRecord, analysis: Any, queue: Any) -> dict[str, Any]:
    """Re-runs the finalists (the noise-aware ending), tests the top trials and the baselines,
    writes and returns the summary, queues its MLflow part (best config, tags, the best trial's
    checkpoint)."""
    from study.phases import finalists
    from study.ranking import ranking as rank
    from study.results import trial_rows, trials_table
    from study.tracking import log_best

    trials = {t.trial_id: t for t in analysis.trials}
    rows = trial_rows(trials_table(analysis, record.space), record.metric, list(record.space.parameters))
    ranking = rank(rows, record.metric, record.mode, record.max_epochs)
    reruns = finalists.run(record, rows, ranking)
    values = finalists.values_by_seed(rows, reruns, record.metric, record.train_seed, record.max_epochs)
    if record.space.study.ending == "fixed":
        finalists.warn_short(values, 1 + record.space.study.finalist_seeds)
    spent = 0 if reruns is None else int(reruns.groupby("trial_id")["epochs_run"].first().sum())
    spent += finalists.earlier_epochs(record, reruns)  # an extended study's earlier endings
    race_stop = None if reruns is None else reruns.attrs.get("race_stop")
    tested: dict[str, dict[str, float]] = {}
    if record.settings.evaluate_test:
        named, _ = summary.noise_aware(values, record.mode, record.train_seed)
        order = summary.ordered(record, rows, named)
        chosen = [*(r["trial_id"] for r in order[:TEST_TOP]), *(r["trial_id"] for r in rows if r["kind"] == BASELINE)]
        jobs = {}
        for trial_id in chosen:
            checkpoint = execution.best_checkpoint(analysis, trials[trial_id], record.metric, record.mode)
            if checkpoint is not None:
                jobs[trial_id] = (trials[trial_id].config, checkpoint)
        tested = execution.test_checkpoints(record, jobs)
    result = summary.build(record, rows, tested, values, spent, race_stop)
    summary.save(result, record.folder)
    queue.put(lambda: log_best(queue.tracker, record, analysis, result))
    return result
