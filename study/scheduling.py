"""Trial schedulers, chosen by name: ASHA (early stopping) or FIFO (every trial to the end).

ASHA counts epochs (`time_attr="epoch"`, the trainable reports once per epoch) and never stops
a baseline trial: the gain over the baseline is measured at the full budget.

Tune does not save ASHA's rungs: a resumed study would judge its next trials against empty
rungs and stop none of them. Given the experiment's path, the scheduler rebuilds its rungs,
the first time Tune uses it, from the results the experiment already recorded, so a resumed
study stops the trials an uninterrupted one would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from study.search import KIND
from study.spaces import StudySettings

OnStop = Callable[[str], None]
History = dict[str, dict[int, float]]  # trial id -> {epoch: metric}
log = logging.getLogger(__name__)


def saved_history(tune_path: str, metric: str, time_attr: str = "epoch") -> History:
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
        if trial.config.get(KIND) == "baseline" or frame is None or frame.empty:
            continue
        if metric in frame and time_attr in frame:
            rows = frame[[time_attr, metric]].dropna()
            history[trial.trial_id] = {int(t): float(v) for t, v in zip(rows[time_attr], rows[metric], strict=True)}
    return history


class BaselineExemptASHA(AsyncHyperBandScheduler):
    """Ray's ASHA, except that trials marked as baselines always continue, and that every
    early stop is told to `on_stop` (the searcher: a trial that ends early without being
    stopped was interrupted, not pruned)."""

    def __init__(self, on_stop: OnStop | None = None, history_from: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_stop = on_stop
        self.history_from = history_from  # the experiment's path, to rebuild the rungs on resume
        self.rebuilt = False

    def rebuild(self, history: History) -> int:
        """Records each trial's metric at every rung it reached, as ASHA would have when it saw
        the result (the first epoch at or past the milestone); returns the values recorded."""
        assert self._metric_op is not None, "metric and mode are set (TuneConfig) before rungs are rebuilt"
        count = 0
        for bracket in self._brackets:
            for milestone, recorded in bracket._rungs:
                for trial_id, values in history.items():
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
        super().on_trial_add(tune_controller, trial)
        self._rebuild_once()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.config.get(KIND) == "baseline":
            return TrialScheduler.CONTINUE
        self._rebuild_once()
        if trial.trial_id not in self._trial_info:  # a restored trial Tune did not add again
            self._trial_info[trial.trial_id] = self._brackets[0]
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and self.on_stop is not None:
            self.on_stop(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if trial.config.get(KIND) != "baseline":
            self._trial_info.setdefault(trial.trial_id, self._brackets[0])
            super().on_trial_complete(tune_controller, trial, result)


def _asha(settings: StudySettings, on_stop: OnStop | None, tune_path: str | None) -> TrialScheduler:
    # metric and mode come from TuneConfig, named once.
    return BaselineExemptASHA(on_stop=on_stop, history_from=tune_path, time_attr="epoch",
                              max_t=settings.max_epochs, grace_period=settings.grace_period,
                              reduction_factor=settings.reduction_factor)


SCHEDULERS: dict[str, Callable[[StudySettings, OnStop | None, str | None], TrialScheduler]] = {
    "asha": _asha,
    "fifo": lambda settings, on_stop, tune_path: FIFOScheduler(),
}
