"""A study's Tune experiments read as one: its own, then one per `--extend` (study.record).

Tune's `ExperimentAnalysis` reads one experiment. A study extended after it finished runs its
new trials in a new experiment (Tune restores a finished one with its sample count and its
search marked done; Ray's maintainers point iterative studies to new experiments,
ray-project/ray#33495), so what reads the study's trials (the results model, the ending, the
MLflow sync, the rungs of a resumed or extended policy, the epoch budget) reads them all here.
Tune's trial ids carry a prefix drawn per experiment, so they stay unique across a study.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class StudyExperiments:
    """The trials, result tables and checkpoints of several Tune experiments, with the members
    of `ExperimentAnalysis` the study reads: `trials`, `trial_dataframes`,
    `get_best_checkpoint`, `get_last_checkpoint`."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts  # one ExperimentAnalysis per experiment, in order
        self._owner: dict[str, Any] = {}
        for part in parts:
            for trial in part.trials:
                if trial.trial_id in self._owner:
                    raise ValueError(f"trial id {trial.trial_id} is in two of the study's Tune experiments")
                self._owner[trial.trial_id] = part

    @property
    def trials(self) -> list[Any]:
        return [t for part in self.parts for t in part.trials]

    @property
    def trial_dataframes(self) -> dict[str, Any]:
        return {k: v for part in self.parts for k, v in part.trial_dataframes.items()}

    def get_best_checkpoint(self, trial: Any, metric: str | None = None, mode: str | None = None) -> Any:
        return self._owner[trial.trial_id].get_best_checkpoint(trial, metric, mode)

    def get_last_checkpoint(self, trial: Any) -> Any:
        return self._owner[trial.trial_id].get_last_checkpoint(trial)


def read(paths: Iterable[str], missing_ok: bool = False) -> StudyExperiments:
    """The experiments at `paths` (Tune's storage, local or a URI). `missing_ok`: skip a path
    with no experiment yet (an extension before its first trial); else Tune's error is raised."""
    from ray.tune import ExperimentAnalysis, Tuner

    parts = []
    for path in paths:
        if missing_ok and not Tuner.can_restore(path):
            continue
        parts.append(ExperimentAnalysis(path))
    return StudyExperiments(parts)
