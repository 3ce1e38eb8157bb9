"""Execution: Ray start-up, the trainable with its resources, Tune's configs and the Tuner,
checkpoints and test tasks. Ray and Tune only (MLflow is `study.tracking`); shared by the search
and the confirmation phases, it knows nothing of either.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any

from study.keys import NAME, TEST_METRICS
from study.record import Resources, StudyRecord

# Tune's classic reporter honours the columns we choose; the newer one prints every config key.
# Every checkpoint forces a small experiment-state snapshot, which Tune warns about; that is the
# intended trade (a crash loses at most one epoch per trial).
_RAY_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
            # A call to an unreachable MLflow server fails at once (MLflow's own retries would hold
            # the queue's thread for minutes without telling); the queue retries it itself.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
            # Tune's default loggers add a TensorBoard event file per trial, written on the
            # driver at every result; MLflow is the study's UI: `callbacks` keeps JSON and CSV.
            "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
            # Arrow's at-fork handlers rebuild its thread pools in every forked child, running code
            # that is not async-signal-safe in the child of a threaded process (apache/arrow#49146),
            # and a trial process is threaded; its DataLoader workers never use Arrow. A precaution,
            # not a measured fix (docs/reliability.md). Read when Arrow first makes a thread pool,
            # so set before Ray starts the trials' processes (they inherit it); cluster.yaml sets
            # it for `ray start`.
            "ARROW_REGISTER_ATFORK": "0"}


def set_ray_env() -> None:
    """Environment Tune and MLflow read at start-up (see _RAY_ENV); the user's own settings win."""
    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)


def concurrency(res: Resources) -> int | None:
    """Trials at once: the flag, else as many as a local Ray's CPUs hold; None on a cluster,
    which may autoscale (resources decide)."""
    if res.concurrency is not None:
        return res.concurrency
    if res.address is not None or res.cpus_per_trial <= 0:
        return None
    cpus = res.num_cpus or os.cpu_count() or 1
    return max(1, int(cpus // res.cpus_per_trial))


def init_ray(res: Resources) -> bool:
    """Starts (or joins) Ray unless this process already has it; True if it started it."""
    import ray

    if ray.is_initialized():
        return False
    if res.address is None:
        ray.init(num_cpus=res.num_cpus, include_dashboard=False, log_to_driver=res.verbose > 0,
                 logging_level=logging.WARNING)
    else:
        ray.init(address=res.address, log_to_driver=res.verbose > 0, logging_level=logging.WARNING)
    return True


def checkpoint_epochs(every: int, decisions: Iterable[int], last: int) -> tuple[int, ...]:
    """The epochs a trial checkpoints at: every `every`-th, each epoch where the policy decides
    whether it goes on (`decisions`), and its last."""
    return tuple(sorted({*range(every, last + 1, every), *(e for e in decisions if e <= last), last}))


def trainable_kind(record: StudyRecord) -> Any:
    """The study's kind of trial (trainables.registry: RRA, or the replay of a curve)."""
    from trainables.registry import TRAINABLES

    return TRAINABLES[str(record.settings.trainable)]


def trainable(record: StudyRecord, decisions: Iterable[int] = ()) -> Any:
    """The study's trainable with a trial's resources and the epochs it checkpoints at."""
    from ray import tune

    res = record.resources
    epochs = checkpoint_epochs(record.space.study.checkpoint_every, decisions, record.max_epochs)
    kind = trainable_kind(record)
    fn = tune.with_parameters(kind.train, checkpoint_epochs=epochs, **kind.train_options(record.settings.to_json()))
    return tune.with_resources(fn, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial})


def tune_configs(record: StudyRecord, name: str, search_alg: Any, num_samples: int, concurrency: int | None,
                 checkpoint_config: Any, tracking: Any, scheduler: Any = None, stop: Any = None, verbose: int = 0,
                 reporter: Any = None) -> tuple[Any, Any]:
    """Tune's TuneConfig and RunConfig of an experiment of the study (the search, or the
    confirmation): the study's metric and mode, trial names and folders, storage, retries, and
    the callbacks that keep Tune's result files and (`tracking`, study.tracking's Tune callback)
    the study's MLflow runs."""
    from ray import tune

    tune_config = tune.TuneConfig(
        metric=record.metric, mode=record.mode, search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
        max_concurrent_trials=concurrency, reuse_actors=bool(record.settings.reuse_actors),
        trial_name_creator=trial_name, trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=name, storage_path=record.stores.storage_path, stop=stop,
        failure_config=tune.FailureConfig(max_failures=int(record.settings.max_failures)),
        checkpoint_config=checkpoint_config,
        callbacks=callbacks(tracking), verbose=verbose,
        progress_reporter=reporter)
    return tune_config, run_config


def callbacks(*extra: Any) -> list[Any]:
    """Tune's callbacks: its JSON and CSV result files (what ExperimentAnalysis, the report and
    the MLflow sync read), then `extra`."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback(), *extra]


def best_checkpoint(analysis: Any, trial: Any, metric: str, mode: str) -> Any | None:
    """A trial's best checkpoint by the metric, else its latest; None if it never saved one
    (e.g. a trial that failed in its first epoch)."""
    return analysis.get_best_checkpoint(trial, metric, mode) or analysis.get_last_checkpoint(trial)


def trial_name(trial: Any) -> str:
    """Tune's trial name: the run name the searcher gave it."""
    return str(trial.config.get(NAME, trial.trial_id))


def trial_dirname(trial: Any) -> str:
    """A trial's folder: its name and id (Tune's default spells out the whole config)."""
    return f"{trial_name(trial)}_{trial.trial_id}"


def tuner(path: str, fn: Any, tune_config: Any, run_config: Any) -> Any:
    """A new Tuner of trainable `fn`, or the one saved at `path` when there is one (a resumed
    experiment)."""
    from ray import tune

    if tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, fn, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(fn, param_space={}, tune_config=tune_config, run_config=run_config)


class _NoMetricsYet(logging.Filter):
    """Drops Ray's "Failed to fetch metrics for N trial(s)" block, which ExperimentAnalysis logs
    each time it is built (Tune's ResultGrid builds one too) when a trial has no result file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to fetch metrics for")


@contextlib.contextmanager
def trials_without_results() -> Iterator[None]:
    """Ray's warning about trials without a result file silenced while the block runs: in a study
    these are trials the epoch budget stopped before their first epoch ended (or that failed at
    once), which the study counts and says in its own words (`missing_results`)."""
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    quiet = _NoMetricsYet()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def missing_results(analysis: Any) -> str | None:
    """One line on the trials of a saved experiment that have no result, if any."""
    frames = analysis.trial_dataframes
    empty = [t for t in analysis.trials if frames.get(t.trial_id) is None or frames[t.trial_id].empty]
    if not empty:
        return None
    errored = sum(t.status == "ERROR" for t in empty)
    return (f"{len(empty)} trial(s) ended before their first result ({len(empty) - errored} stopped when the "
            f"study ended, {errored} errored): they have no metrics")


def test_checkpoints(record: StudyRecord, jobs: dict[str, tuple[dict[str, Any], Any]]) -> dict[str, dict[str, float]]:
    """Evaluates checkpoints on the test split, as Ray tasks with a trial's resources.

    Args:
        jobs: trial id -> (trial config, Tune checkpoint).
    """
    import ray

    res = record.resources
    kind = trainable_kind(record)
    evaluate, extra = kind.evaluate, kind.evaluate_options(record.settings.to_json())
    task = ray.remote(evaluate).options(num_cpus=res.cpus_per_trial, num_gpus=res.gpus_per_trial)
    refs = {trial_id: task.remote(config, checkpoint, **extra) for trial_id, (config, checkpoint) in jobs.items()}
    results = dict(zip(refs, ray.get(list(refs.values())), strict=True))
    return {trial_id: {k: metrics[k] for k in TEST_METRICS} for trial_id, metrics in results.items()}
