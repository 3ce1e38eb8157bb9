"""ASHA with Hyperband's brackets: bracket s judges a trial first at grace_period x
reduction_factor^s, the last one not before max_t; each trial joins a bracket drawn uniformly
(fixed by its id). What `adaptive` does with measured weights, this does with equal ones."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import TrialScheduler

from study.keys import EPOCH
from study.policies.adaptive import brackets
from study.policies.asha import BaselineExemptASHA, StopListener, rungs
from study.spaces import StudySettings

__all__ = ["build", "rungs"]


def scheduler(settings: StudySettings, searcher: StopListener | None, tune_path: str | None) -> BaselineExemptASHA:
    return BaselineExemptASHA(searcher=searcher, history_from=tune_path, time_attr=EPOCH, max_t=settings.max_epochs,
                              grace_period=settings.grace_period, reduction_factor=settings.reduction_factor,
                              brackets=brackets(settings))


def build(record: Any) -> tuple[Any, TrialScheduler]:
    """(searcher, scheduler) of a study: the scheduler tells the searcher what it stops."""
    from study.searchers import FidelitySearcher, make_searcher

    searcher = make_searcher(record)
    listener = searcher if isinstance(searcher, FidelitySearcher) else None
    return searcher, scheduler(record.space.study, listener, record.tune_path)
