"""FIFO: every trial runs to the end; the searcher alone decides what to try."""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study.policies.asha import rungs

__all__ = ["build", "rungs"]  # the report compares trials at ASHA's rungs whatever stopped them


def build(record: Any) -> tuple[Any, TrialScheduler]:
    """(searcher, scheduler) of a study."""
    from study.searchers import make_searcher

    return make_searcher(record), FIFOScheduler()
