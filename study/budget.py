"""The study's epoch budget (`study.epoch_budget`, `--epoch-budget N`): Tune ends the whole
study once its trials have run N epochs in all, however many of `num_samples` have started.

It makes studies of different policies cost the same (the search benchmark's equal budgets), and
bounds a study by what it costs rather than by a trial count a user has to guess. An epoch is a
trial's `training_iteration`; a resumed study counts the epochs its saved trials had reached.
Tune stops the trials still running (or waiting) when the budget runs out without telling the
searcher; the search phase then tells Optuna they were PRUNED (`searchers.prune_unfinished`).
The study is complete, not interrupted.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Stopper


def reached(analysis: Any) -> dict[str, int]:
    """The epochs each trial of a saved experiment (a Tune ExperimentAnalysis) had reached."""
    return {t.trial_id: int((t.last_result or {}).get("training_iteration", 0) or 0) for t in analysis.trials}


class EpochBudget(Stopper):
    """Ends the study when its trials have reached `epochs` epochs in all."""

    def __init__(self, study: str, epochs: int) -> None:
        self.study, self.epochs = study, epochs
        self._reached: dict[str, int] | None = None
        self.spent = 0

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if self._reached is None:
            # the epochs of the saved experiment, from the study's session in this process (a
            # restored Tuner brings back the stopper it was started with)
            from study.session import active

            session = active(self.study)
            self._reached = dict(session.reached) if session is not None else {}
            self.spent = sum(self._reached.values())
        epoch = int(result.get("training_iteration", 0) or 0)
        before = self._reached.get(trial_id, 0)
        if epoch > before:
            self._reached[trial_id] = epoch
            self.spent += epoch - before
        return False

    def stop_all(self) -> bool:
        return self.spent >= self.epochs
