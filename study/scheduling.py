"""Trial schedulers, chosen by name: ASHA (early stopping) or FIFO (every trial to the end).

ASHA counts epochs (`time_attr="epoch"`, the trainable reports once per epoch) and never stops
a baseline trial: the gain over the baseline is measured at the full budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from study.search import KIND
from study.spaces import StudySettings

OnStop = Callable[[str], None]


class BaselineExemptASHA(AsyncHyperBandScheduler):
    """Ray's ASHA, except that trials marked as baselines always continue, and that every
    early stop is told to `on_stop` (the searcher: a trial that ends early without being
    stopped was interrupted, not pruned)."""

    def __init__(self, on_stop: OnStop | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_stop = on_stop

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if trial.config.get(KIND) == "baseline":
            return TrialScheduler.CONTINUE
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and self.on_stop is not None:
            self.on_stop(trial.trial_id)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        if trial.config.get(KIND) != "baseline":
            super().on_trial_complete(tune_controller, trial, result)


def _asha(settings: StudySettings, on_stop: OnStop | None) -> TrialScheduler:
    # metric and mode come from TuneConfig, named once.
    return BaselineExemptASHA(on_stop=on_stop, time_attr="epoch", max_t=settings.max_epochs,
                              grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)


SCHEDULERS: dict[str, Callable[[StudySettings, OnStop | None], TrialScheduler]] = {
    "asha": _asha,
    "fifo": lambda settings, on_stop: FIFOScheduler(),
}
