"""The search phase: the record's policy (scheduler + searcher) under Ray Tune, every trial
tracked in MLflow through the study's queue. Starts a study, continues it from its record, or
grows a finished one (`--extend`: the new trials in a Tune experiment of their own)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from study import execution
from study.keys import PARAMS, SHORT_NAMES
from study.record import SPACE_COPY, StudyRecord
from study.session import StudySession

PENDING = "TUNE_MAX_PENDING_TRIALS_PG"


@contextlib.contextmanager
def _pending(limit: int | None) -> Iterator[None]:
    """Tune's limit of pending trials set to `limit` while the block runs, unless the user set
    it (theirs wins); the variable is as it was afterwards, so a later study in the same process
    (the search benchmark runs many) does not inherit this one's."""
    before = os.environ.get(PENDING)
    if limit is None or before is not None:
        yield
        return
    os.environ[PENDING] = str(limit)
    try:
        yield
    finally:
        os.environ.pop(PENDING, None)


@dataclass
class Searched:
    """What the search left: Tune's saved experiment, and whether it ended before its end."""

    analysis: Any  # the study's Tune experiments (study.experiments), read after the search
    interrupted: bool


def start(record: StudyRecord) -> StudyRecord:
    """Writes a new study's record (its folder, the space copy); nothing runs yet."""
    from study.record import git_revision, library_versions

    record = dataclasses.replace(record, extra={"git_revision": git_revision(), "versions": library_versions()})
    record.folder.mkdir(parents=True, exist_ok=True)
    if record.space.path.is_file():
        (record.folder / SPACE_COPY).write_text(record.space.path.read_text())
    record.save()
    return record


def extend(record: StudyRecord) -> StudyRecord:
    """Writes an extended study's record (study.record.for_extend); its confirmation, made for
    the best before the extension, is set aside (STUDY/confirm-EXPERIMENT.parquet), so that the
    report does not read it as this one's."""
    from study.results import CONFIRM_FILE

    confirmed = record.folder / CONFIRM_FILE
    if confirmed.is_file():
        before = record.experiments[-2]
        kept = confirmed.with_name(f"confirm-{before}.parquet")
        confirmed.rename(kept)
        print(f"The confirmation of the study before this extension is kept as {kept}; confirm the new best with "
              f"python -m study.report --name {record.name} --out {record.folder.parent} --confirm-seeds N", flush=True)
    record.save()
    return record


def run(session: StudySession) -> Searched:
    """Runs (or continues) the study's trials; returns Tune's saved experiment."""
    from ray import tune

    from study import budget, experiments, searchers
    from study.phases.finalists import search_epochs
    from study.policies import load_policy
    from study.tracking import TrialRunsCallback

    record = session.record
    res = record.resources
    policy = load_policy(str(record.settings.policy))
    searcher, scheduler = policy.build(record)
    # The project's searchers limit concurrency themselves, from this run's flags (a restored
    # Tuner keeps the TuneConfig of the study's start); Ray's stock searcher gets Tune's limit.
    limit = session.concurrency
    own = isinstance(searcher, searchers.FidelitySearcher)
    epochs = search_epochs(record)  # the budget less the finalists' re-runs
    if epochs is not None:  # the epochs of the study's saved trials (its earlier experiments', a resumed one's)
        session.reached = budget.reached(experiments.read(record.tune_paths, missing_ok=True))
    tune_config, run_config = execution.tune_configs(
        record, record.experiment, searcher, record.expected_trials(), None if own else limit,
        # The best checkpoints by the study's metric, and always the latest (to resume from).
        tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=record.metric,
                              checkpoint_score_order=record.mode),
        TrialRunsCallback(record.name, record.max_epochs),
        scheduler=scheduler, stop=None if epochs is None else budget.EpochBudget(record.name, epochs),
        verbose=res.verbose, reporter=_reporter(record) if res.verbose else None)
    fn = execution.trainable(record, decisions=policy.rungs(record.space.study))
    # Tune lets a searcher it does not wrap itself keep one trial pending at a time; up to
    # `limit` may wait for a node at once, as with Tune's own limit (for this study only).
    with _pending(limit if own and limit is not None else None), execution.trials_without_results():
        execution.tuner(record.tune_path, fn, tune_config, run_config).fit()
        analysis = experiments.read(record.tune_paths)
    note = execution.missing_results(analysis)
    if note:
        print(note, flush=True)
    # After Ctrl-C, Tune reports the trials it stopped as terminated but saves them as pending:
    # the saved state of the experiment it ran says whether the study is done.
    saved = list(analysis.parts[-1].trials)
    spent = epochs is not None and sum(budget.reached(analysis).values()) >= epochs
    interrupted = not spent and (len(saved) < record.expected_trials() or any(
        t.status not in ("TERMINATED", "ERROR") for t in saved))
    if spent:
        searchers.prune_unfinished(record.stores.optuna_storage, record.name)
    return Searched(analysis, interrupted)


def _reporter(record: StudyRecord) -> Any:
    from ray.tune import CLIReporter

    metrics = {"epoch": "epoch", record.metric: record.metric, "train_loss": "loss"}
    params = {f"{PARAMS}/{name}": SHORT_NAMES.get(name, name) for name in record.space.parameters}
    return CLIReporter(metric_columns=metrics, parameter_columns=params, max_report_frequency=20,
                       max_progress_rows=12, sort_by_metric=True)
