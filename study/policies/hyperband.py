"""ASHA with Hyperband's brackets: bracket s judges a trial first at grace_period x
reduction_factor^s, the last one not before max_t; each trial joins a bracket drawn uniformly
(fixed by its id). What `adaptive` does with measured weights, this does with equal ones."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import TrialScheduler

import study.policies.asha as asha
from study.policies.adaptive import brackets
from study.policies.asha import rungs

__all__ = ["build", "rungs"]


def build(record: Any) -> tuple[Any, TrialScheduler]:
    """(searcher, scheduler) of a study: the scheduler tells the searcher what it stops."""
    return asha.build(record, brackets=brackets(record.space.study))
