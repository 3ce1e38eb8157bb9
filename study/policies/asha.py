"""ASHA (asynchronous successive halving) with the searcher it owns.

ASHA counts epochs (`time_attr="epoch"`: the trainable reports once per epoch), never stops a
baseline (the gain over the baseline is measured at the full budget), and tells its searcher
about every trial it stops, so the searcher records it as PRUNED, not as interrupted.

Tune does not save ASHA's rungs: a resumed study would judge its next trials against empty
rungs and stop none. Given the experiment's path, the scheduler rebuilds its rungs the first
time Tune uses it, from the results the experiment already recorded, each trial in its own
bracket, so a resumed study stops the trials an uninterrupted one would.

Ray keeps the rungs in private attributes; `rung_tables` and `_assign` are the only places
touch them (tests/study/test_policies.py fails loudly if Ray changes them).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any, Protocol

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from study.keys import BASELINE, EPOCH, KIND
from study.spaces import StudySettings

History = dict[str, dict[int, float]]  # trial id -> {epoch: metric}
log = logging.getLogger(__name__)


class StopListener(Protocol):
    def on_trial_stopped(self, trial_id: str) -> None: ...


# ---------------------------------------------------------------- Ray's internals, in one place


def rung_tables(scheduler: AsyncHyperBandScheduler) -> list[list[tuple[float, dict[str, float]]]]:
    """Per bracket, Ray's rungs: (milestone, {trial id: recorded metric x mode sign})."""
    return [list(bracket._rungs) for bracket in scheduler._brackets]


def _assign(scheduler: AsyncHyperBandScheduler, trial_id: str, index: int | None = None) -> None:
    """Puts a trial in bracket `index`, by default one chosen from its id (the same one on
    every run)."""
    brackets = scheduler._brackets
    if index is None:
        index = int(unit_draw(trial_id) * len(brackets))
    scheduler._trial_info[trial_id] = brackets[index]


def bracket_of(scheduler: AsyncHyperBandScheduler, trial_id: str) -> int:
    """The index of a trial's bracket."""
    return scheduler._brackets.index(scheduler._trial_info[trial_id])


def bracket_cuts(scheduler: AsyncHyperBandScheduler) -> list[list[float]]:
    """Per bracket, the milestones at which it may stop a trial (below max_t), lowest first."""
    return [sorted(m for m, _ in rungs if m < scheduler._max_t) for rungs in rung_tables(scheduler)]


def _assigned(scheduler: AsyncHyperBandScheduler, trial_id: str) -> bool:
    return trial_id in scheduler._trial_info


def unit_draw(trial_id: str) -> float:
    """A number in [0, 1) fixed by a trial's id."""
    return int(hashlib.sha256(trial_id.encode()).hexdigest()[:8], 16) / 2**32


# ---------------------------------------------------------------- the rungs, one definition


def milestones(settings: StudySettings) -> list[float]:
    """Ray's ASHA milestones of the first bracket, lowest first (floats for a non-integer
    reduction factor)."""
    scheduler = AsyncHyperBandScheduler(time_attr=EPOCH, metric="m", mode="max", max_t=settings.max_epochs,
                                        grace_period=settings.grace_period,
                                        reduction_factor=settings.reduction_factor)
    return sorted(m for m, _ in rung_tables(scheduler)[0])


def rungs(settings: StudySettings) -> list[int]:
    """The epochs at which ASHA judges trials (the first epoch at or past each milestone), and
    max_t: the epochs the report compares trials at."""
    return sorted({*(math.ceil(m) for m in milestones(settings) if m < settings.max_epochs), settings.max_epochs})


# ---------------------------------------------------------------- the scheduler


class BaselineExemptASHA(AsyncHyperBandScheduler):
    """Ray's ASHA, except that baselines always continue, every early stop is told to the
    searcher, trials keep their bracket across a resume, and the rungs are rebuilt on resume."""

    def __init__(self, searcher: StopListener | None = None, history_from: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.searcher = searcher
        self.history_from = history_from  # the experiment's path, to rebuild the rungs on resume
        self.rebuilt = False

    def rebuild(self, history: History) -> int:
        """Records each trial's metric at every rung of its bracket it reached, as ASHA would have
        when it saw the result (the first epoch at or past the milestone); returns how many."""
        assert self._metric_op is not None, "metric and mode are set (TuneConfig) before rungs are rebuilt"
        count = 0
        for trial_id, values in history.items():
            if not _assigned(self, trial_id):
                _assign(self, trial_id)
            bracket = self._trial_info[trial_id]
            for milestone, recorded in bracket._rungs:
                reached = [epoch for epoch in values if epoch >= milestone]
                if reached and trial_id not in recorded:
                    recorded[trial_id] = self._metric_op * values[min(reached)]
                    count += 1
        return count

    def _rebuild_once(self) -> None:
        if self.rebuilt or self.history_from is None or self._metric is None:
            return
        self.rebuilt = True
        history = saved_history(self.history_from, self._metric, self._time_attr)
        if history:
            count = self.rebuild(history)
            log.warning("ASHA: rungs rebuilt from %d recorded values of %d trials", count, len(history))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._rebuild_once()
        if not _assigned(self, trial.trial_id):
            _assign(self, trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.config.get(KIND) == BASELINE:
            return TrialScheduler.CONTINUE
        self._rebuild_once()
        if not _assigned(self, trial.trial_id):  # a restored trial Tune did not add again
            _assign(self, trial.trial_id)
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and self.searcher is not None:
            self.searcher.on_trial_stopped(trial.trial_id)
        return str(decision)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if trial.config.get(KIND) != BASELINE:
            if not _assigned(self, trial.trial_id):
                _assign(self, trial.trial_id)
            super().on_trial_complete(tune_controller, trial, result)


def saved_history(tune_path: str, metric: str, time_attr: str = EPOCH) -> History:
    """The metric at each epoch of every non-baseline trial a Tune experiment has recorded
    (empty when there is no experiment there yet)."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(tune_path)
    except (ValueError, FileNotFoundError, OSError):
        return {}
    frames = analysis.trial_dataframes
    history: History = {}
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id)
        if trial.config.get(KIND) == BASELINE or frame is None or frame.empty:
            continue
        if metric in frame and time_attr in frame:
            rows = frame[[time_attr, metric]].dropna()
            history[trial.trial_id] = {int(t): float(v) for t, v in zip(rows[time_attr], rows[metric], strict=True)}
    return history


def scheduler(settings: StudySettings, searcher: StopListener | None, tune_path: str | None,
              kind: type[BaselineExemptASHA] = BaselineExemptASHA, brackets: int = 1) -> BaselineExemptASHA:
    """The scheduler alone (metric and mode come from TuneConfig, named once): `kind` with
    `brackets` brackets (the hyperband and adaptive policies ask for several)."""
    return kind(searcher=searcher, history_from=tune_path, time_attr=EPOCH, max_t=settings.max_epochs,
                grace_period=settings.grace_period, reduction_factor=settings.reduction_factor, brackets=brackets)


def build(record: Any, kind: type[BaselineExemptASHA] = BaselineExemptASHA,
          brackets: int = 1) -> tuple[Any, TrialScheduler]:
    """(searcher, scheduler) of a study: the scheduler tells the searcher what it stops."""
    from study.searchers import FidelitySearcher, make_searcher

    searcher = make_searcher(record)
    listener = searcher if isinstance(searcher, FidelitySearcher) else None  # Ray's stock searcher is not told
    return searcher, scheduler(record.space.study, listener, record.tune_path, kind, brackets)
