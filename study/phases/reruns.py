"""Re-runs of chosen configurations with new seeds, at the full budget and without early
stopping: what the noise-aware ending (study.phases.finalists) and the confirmation
(study.phases.confirm) both are. One implementation: the seeds, the trial configs, the Tune
experiment beside the study's (restored when it exists, so an interrupted one continues), and
its table in the study's results model.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from study.keys import KIND, NAME, PARAMS, run_name, searched_values
from study.record import StudyRecord


def seeds(record: StudyRecord, count: int) -> list[int]:
    """The training seeds of re-runs: the ones after the study's own (`train_seed`), the same for
    every configuration re-run, so that they compare on shared seeds."""
    return [record.train_seed + 1 + i for i in range(count)]


def configs(record: StudyRecord, values: dict[str, Any], run_seeds: list[int], kind: str, prefix: str,
            searched: bool = True, **extra: Any) -> list[dict[str, Any]]:
    """The trial configs of one configuration with each seed, at the full budget: `values` are
    searched values (named PREFIX-T4-s0.35-...-seedS), or with `searched` False a baseline's
    overrides (named PREFIX-seedS, no searched values); `extra`: more driver keys."""
    space = record.space
    label = f"{prefix}-{run_name(values)}" if searched else prefix
    params = searched_values(space.parameters, values if searched else {})
    return [{**space.trial_config(values), "seed": seed, "epochs": space.study.max_epochs, KIND: kind,
             NAME: f"{label}-seed{seed}", PARAMS: params, **extra} for seed in run_seeds]


def run(record: StudyRecord, experiment: str, path: str, trial_configs: list[dict[str, Any]],
        test: bool) -> tuple[pd.DataFrame, bool]:
    """Runs (or continues) the configs under Tune, FIFO, on the Ray and MLflow queue the caller
    holds; returns their table (a row per trial per epoch; test metrics of the last epoch's
    checkpoint when `test`) and whether every run ended."""
    from ray import tune
    from ray.tune import ExperimentAnalysis

    from study import execution
    from study.results import trials_table
    from study.searchers import FixedConfigs
    from study.tracking import TrialRunsCallback

    tune_config, run_config = execution.tune_configs(
        record, experiment, FixedConfigs(trial_configs, record.metric, record.mode), len(trial_configs),
        execution.concurrency(record.resources), tune.CheckpointConfig(num_to_keep=1),
        TrialRunsCallback(record.name, record.max_epochs))
    with execution.trials_without_results():
        results = execution.tuner(path, execution.trainable(record), tune_config, run_config).fit()
    tested: dict[str, dict[str, float]] = {}
    if test:
        # No model selection in a re-run: every run is tested at its last epoch.
        finished = [results[i] for i in range(len(results))]
        jobs = {r.metrics["trial_id"]: (r.config, r.checkpoint) for r in finished if r.checkpoint and r.metrics}
        tested = execution.test_checkpoints(record, jobs)
    with execution.trials_without_results():
        analysis = ExperimentAnalysis(path)
    ended = len(analysis.trials) >= len(trial_configs) and all(
        t.status in ("TERMINATED", "ERROR") for t in analysis.trials)
    return trials_table(analysis, record.space, tested), ended
